"""Multi-process data parallelism: 2 processes on localhost == 1 process, same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

ARGS = [
    f"--config={REPO / 'configs' / 'cnn_bn_dropout.py'}",
    "--config.data_source=synthetic",
    "--config.synthetic_train_examples=384",
    "--config.synthetic_test_examples=100",
    "--config.widths=(8,8,8)",
    "--config.head_widths=(16,16)",
    "--config.batch_size=32",
    "--config.eval_batch_size=32",
    "--config.val_examples=64",
    "--config.num_train_steps=16",
    "--config.log_every_steps=2",
    "--config.checkpoint_every_steps=8",
]


def _launch(workdir: Path, nproc: int) -> dict:
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("XLA_FLAGS", None)
    cmd = ["bash", str(REPO / "launch.sh"), "--nproc", str(nproc), "--", *ARGS]
    out = subprocess.run(
        [*cmd, f"--workdir={workdir}"], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads((workdir / "results.json").read_text())


_SHARED: dict[str, Path] = {}


def one_process_run(tmp_path_factory) -> Path:
    """The 1-process run of ARGS through launch.sh, trained once per session: the
    reference of this file and of tests/test_launch.py's cluster paths."""
    if "one" not in _SHARED:
        workdir = tmp_path_factory.mktemp("one_process") / "run"
        _launch(workdir, 1)
        _SHARED["one"] = workdir
    return _SHARED["one"]


def _train_losses(workdir: Path) -> list[float]:
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r.get("split") == "train"]


def test_two_processes_match_one_process(tmp_path, tmp_path_factory):
    # A model with BatchNorm and dropout: BN statistics must span the global batch and the
    # dropout masks must not depend on how the batch is split.
    one_dir = one_process_run(tmp_path_factory)
    one = json.loads((one_dir / "results.json").read_text())
    two = _launch(tmp_path / "two", 2)
    assert one["num_processes"] == 1 and two["num_processes"] == 2
    assert two["num_devices"] == 2
    np.testing.assert_allclose(_train_losses(one_dir), _train_losses(tmp_path / "two"),
                               rtol=2e-4)  # fmt: skip
    assert abs(one["test_accuracy"] - two["test_accuracy"]) <= 0.011
    np.testing.assert_allclose(one["test_loss"], two["test_loss"], rtol=1e-3)
    # Only process 0 writes the results and the logs; checkpoints exist once.
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["16", "8"]
