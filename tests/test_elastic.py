"""Elastic resume: a run checkpointed on one machine shape resumes on another.

The parameters are replicated and batch t is a function of (seed, t) alone, so a run
continues with the same data order on any number of devices and processes. Only the order
of the per-device partial sums changes, so the result matches an uninterrupted run up to
float rounding, not bitwise. Each test takes a copy of 8 steps trained on one shape (a
module fixture trains all of them), trains steps 9-16 on another, and compares with 16
uninterrupted steps on one device.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Several processes each (jax.distributed on localhost): minutes; CI runs them.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

ARGS = [
    f"--config={REPO / 'configs' / 'cnn_bn_dropout.py'}",  # BatchNorm and dropout
    "--config.data_source=synthetic",
    "--config.synthetic_train_examples=384",
    "--config.synthetic_test_examples=512",
    "--config.widths=(8,8,8)",
    "--config.head_widths=(16,16)",
    "--config.batch_size=32",
    "--config.eval_batch_size=32",
    "--config.val_examples=64",
    "--config.test_checkpoint=final",
    "--config.early_stopping_patience=0",
    "--config.log_every_steps=2",
    "--config.checkpoint_every_steps=4",
]


def train(workdir: Path, steps: int, devices: int = 1, processes: int = 1,
          check: bool = True, *extra: str) -> subprocess.CompletedProcess:  # fmt: skip
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    if devices // processes > 1:  # devices in all, over the processes
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices // processes}"
    args = [*ARGS, f"--config.num_train_steps={steps}", *extra, f"--workdir={workdir}"]
    if processes > 1:
        cmd = ["bash", str(REPO / "launch.sh"), "--nproc", str(processes), "--", *args]
    else:
        cmd = [sys.executable, "-m", "cifar_jax.main", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, out.stderr[-4000:]
    return out


def results(workdir: Path) -> dict:
    return json.loads((workdir / "results.json").read_text())


def final_variables(workdir: Path) -> dict:
    """Step, parameters and BatchNorm statistics of the run's newest checkpoint, as NumPy
    arrays: read straight from its Orbax files, with no model built and no devices needed
    (a checkpoint written on 4 devices reads in this 1-device process)."""
    import jax
    import orbax.checkpoint as ocp

    step = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    path = workdir / "checkpoints" / str(step) / "state"
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    return {"step": int(state["step"]), "params": state["params"],
            "batch_stats": state["batch_stats"]}  # fmt: skip


def assert_same_variables(resumed: dict, straight: dict, atol: float) -> None:
    """Every parameter and BatchNorm statistic within ``atol`` of the uninterrupted run's
    (same tree, same shapes), naming the leaf that is not."""
    import jax

    assert resumed["step"] == straight["step"]
    for name in ("params", "batch_stats"):
        got = jax.tree_util.tree_flatten_with_path(resumed[name])
        want = jax.tree_util.tree_flatten_with_path(straight[name])
        assert got[1] == want[1], f"{name}: another tree than the uninterrupted run's"
        for (path, a), (_, b) in zip(got[0], want[0], strict=True):
            where = f"{name}{jax.tree_util.keystr(path)}"
            np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=where)


# The runs the tests start from, (steps, devices, processes, extra args): independent of
# each other, so a module fixture trains them two at a time (a tiny run is mostly
# single-threaded start-up and compiling, and CI has 2 cores). "one_device" is started
# last: by then "straight" has put the 1-device programs in the compilation cache.
BATCH_36 = ("--config.batch_size=36", "--config.eval_batch_size=36")
FIRST_RUNS = {
    "straight": (16, 1, 1, ()),  # the uninterrupted reference
    "eight_devices": (8, 8, 1, ()),
    "two_processes": (8, 2, 2, ()),
    "batch_36": (8, 1, 1, BATCH_36),  # 36 splits over 1 device, not over 8
    "one_device": (8, 1, 1, ()),
}


@pytest.fixture(scope="module")
def first_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("first_runs")

    def run(name: str) -> tuple[str, Path]:
        steps, devices, processes, extra = FIRST_RUNS[name]
        train(root / name, steps, devices, processes, True, *extra)
        return name, root / name

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, FIRST_RUNS))


def copy_of(first_runs: dict[str, Path], name: str, workdir: Path) -> Path:
    """A private copy of a first run, to resume (its checkpoints at steps 4 and 8)."""
    shutil.copytree(first_runs[name], workdir, dirs_exist_ok=True)
    return workdir


@pytest.fixture(scope="module")
def straight(first_runs) -> dict:
    return results(first_runs["straight"])


@pytest.mark.parametrize(
    "first, then",
    [("eight_devices", (1, 1)), ("one_device", (4, 1)), ("two_processes", (1, 1))],
    ids=["8_devices_to_1", "1_device_to_4", "2_processes_to_1"],
)
def test_resume_on_another_machine_shape(tmp_path, first_runs, straight, first, then):
    _, devices, processes, _ = FIRST_RUNS[first]
    devices2, processes2 = then
    copy_of(first_runs, first, tmp_path)
    assert results(tmp_path)["num_devices"] == devices
    out = train(tmp_path, 16, devices2, processes2)
    assert "Resumed from checkpoint at step 8" in out.stdout
    assert (
        f"checkpoint 8 was written with {devices} device(s) in {processes} process(es), "
        f"this run has {devices2} in {processes2}"
    ) in out.stdout
    resumed = results(tmp_path)
    assert resumed["steps"] == 16 and resumed["num_devices"] == devices2
    assert abs(resumed["test_accuracy"] - straight["test_accuracy"]) <= 0.005
    np.testing.assert_allclose(resumed["test_loss"], straight["test_loss"], rtol=1e-3)
    # The weights themselves, not only what they score: the final checkpoint's parameters
    # and BatchNorm statistics match the uninterrupted run's. Not bitwise: sums over the
    # batch are split differently over the devices, so float rounding differs
    # (train.resume). Measured over the three shapes (CPU, float32, 16 steps): the largest
    # difference is 3.7e-5 (2 processes to 1), in the conv biases that feed a BatchNorm,
    # whose true gradient is zero, so Adam steps them on rounding noise at ~lr-size; every
    # other leaf is within 1.4e-5 (BatchNorm means), most within 1e-7. The tolerance is
    # ~10x the largest; absolute, as the leaves are O(0.01-1) with entries near 0 where a
    # relative difference means nothing. An Adam step moves a weight by ~lr (1e-3 here),
    # so a step trained on the wrong batch, or one weight changed, is far outside it.
    assert_same_variables(final_variables(tmp_path), final_variables(first_runs["straight"]),
                          atol=4e-4)  # fmt: skip


def test_same_shape_resume_says_nothing_about_shape(tmp_path, first_runs):
    copy_of(first_runs, "one_device", tmp_path)
    out = train(tmp_path, 16)
    assert "Resumed from checkpoint at step 8" in out.stdout
    assert "machine shape changed" not in out.stdout


def test_batch_the_new_shape_cannot_split_stops_before_touching_the_checkpoints(
    tmp_path, first_runs
):
    copy_of(first_runs, "batch_36", tmp_path)

    def digest() -> str:
        h = hashlib.sha256()
        for p in sorted((tmp_path / "checkpoints").rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(tmp_path)).encode() + p.read_bytes())
        return h.hexdigest() + (tmp_path / "results.json").read_text()

    before = digest()
    out = train(tmp_path, 16, 8, 1, False, *BATCH_36)
    assert out.returncode == 1
    assert "batch_size=36 cannot be split evenly over the 8 devices" in out.stderr
    assert "Resumed" not in out.stdout
    assert digest() == before
