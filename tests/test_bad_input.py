"""The bad-input table (docs/errors.md): every case exits non-zero with one clear paragraph.

Each case runs the real command line in a subprocess, as a user would. All cases are
started together by a module fixture (they are mostly start-up time) and then checked one
by one: non-zero exit, an ``error:`` paragraph naming the problem, no Python traceback,
and no good checkpoint or result file changed (each case's workdir holds a good run
first, compared byte for byte after).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import held
import numpy as np
import pytest
from test_data_sources import make_release, write_folder

REPO = Path(__file__).resolve().parents[1]

# SGD throughout: nan_loss resumes the good run seeded into its workdir, whose optimizer
# state must match; one good run then serves every case.
SMALL = [
    "--config.data_source=synthetic",
    "--config.optimizer=sgd",
    "--config.synthetic_train_examples=128",
    "--config.synthetic_test_examples=32",
    "--config.batch_size=32",
    "--config.val_examples=0",
    "--config.num_train_steps=4",
    "--config.checkpoint_every_steps=2",
]


@dataclass
class Case:
    """One row of the table: how to provoke it and what the message must name."""

    name: str
    args: list[str]
    expect: list[str]  # substrings of the error paragraph (case-insensitive)
    config: str = "lenet"
    workdir: bool = True
    env: dict[str, str] = field(default_factory=dict)
    prepare: str = ""  # name of a set-up function below
    ulimit_kb: int = 0  # simulate a full disk with `ulimit -f`
    exit_code: int | None = None  # None = any non-zero


def _binary_dir(root: Path) -> Path:
    write_folder(root, "cifar10", "binary", make_release("cifar10", 100, 20))
    return root / "cifar-10-batches-bin"


def prepare_missing_file(root: Path) -> list[str]:
    (_binary_dir(root) / "data_batch_3.bin").unlink()
    return [f"--config.data_dir={root}", "--config.data_source=files"]


def prepare_truncated(root: Path) -> list[str]:
    path = _binary_dir(root) / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-100])
    return [f"--config.data_dir={root}", "--config.data_source=files"]


def prepare_label_out_of_range(root: Path) -> list[str]:
    path = _binary_dir(root) / "test_batch.bin"
    raw = bytearray(path.read_bytes())
    raw[0] = 12  # the first record's label byte
    path.write_bytes(bytes(raw))
    return [f"--config.data_dir={root}", "--config.data_source=files"]


def prepare_corrupt_archive(root: Path) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cifar-10-binary.tar.gz").write_bytes(b"\x1f\x8b\x08 this is not a gzip stream")
    return [f"--config.data_dir={root}", "--config.data_source=files"]


def prepare_wrong_image_size(root: Path) -> list[str]:
    write_folder(root, "cifar10", "python", make_release("cifar10", 100, 20))
    path = root / "cifar-10-batches-py" / "data_batch_1"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    batch[b"data"] = np.zeros((len(batch[b"labels"]), 28 * 28 * 3), np.uint8)
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return [f"--config.data_dir={root}", "--config.data_source=files"]


def prepare_wrong_archive_member(root: Path) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        readme = root / "README"
        readme.write_text("not CIFAR")
        tar.add(readme, arcname="cifar-10-batches-py/README")
    return [f"--config.data_dir={root}", "--config.data_source=files"]


def prepare_file_as_workdir(root: Path) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "a_file").write_text("x")
    return []


EIGHT_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}

# fmt: off
CASES = [
    # ---- config
    Case("unknown_field", ["--config.learnin_rate=0.1"], ["learnin_rate", "config/fields.py"],
         exit_code=2),
    Case("wrong_type", ["--config.batch_size=abc"], ["batch_size", "abc"], exit_code=2),
    Case("zero_learning_rate", ["--config.learning_rate=0"], ["learning_rate", "> 0"]),
    Case("negative_learning_rate", ["--config.learning_rate=-0.1"], ["learning_rate"]),
    Case("batch_not_divisible_by_devices", ["--config.batch_size=12"],
         ["batch_size=12", "multiple of 8"], env=EIGHT_DEVICES),
    Case("eval_batch_not_divisible", ["--config.eval_batch_size=20"],
         ["eval_batch_size=20", "multiple of 8"], env=EIGHT_DEVICES),
    Case("batch_larger_than_dataset", ["--config.batch_size=256"], ["batch_size=256", "smaller"]),
    Case("unknown_model", ["--config.model=resnet9000"], ["resnet9000", "lenet"]),
    Case("unknown_dataset", ["--config.dataset=mnist"], ["dataset", "cifar10"]),
    Case("unknown_optimizer", ["--config.optimizer=lion"], ["optimizer", "adamw"]),
    Case("unknown_schedule", ["--config.schedule=exponential"], ["schedule", "cosine"]),
    Case("unknown_activation", ["--config.activation=swish2"], ["swish2", "relu"]),
    Case("unknown_augmentation_mode", ["--config.crop_padding_mode=wrap"],
         ["crop_padding_mode", "reflect"]),
    Case("unknown_normalization", ["--config.normalization=zscore"], ["normalization", "mean_std"]),
    Case("class_subset_too_large", ["--config.class_subset=11"], ["class_subset", "11"]),
    Case("val_split_too_large", ["--config.val_examples=500"], ["val_examples"]),
    Case("coarse_labels_on_cifar10", ["--config.label_type=coarse"], ["coarse", "cifar100"]),
    Case("best_test_before_first_validation",
         ["--config.val_examples=32", "--config.early_stopping_patience=3",
          "--config.eval_every_epochs=2"],
         ["best-validation", "step 4", "first validation at step 6", "test_checkpoint=final"]),
    Case("missing_config_file", [], ["nope.py", "config"], config="nope", exit_code=2),
    Case("missing_workdir_flag", [], ["workdir"], workdir=False, exit_code=2),
    # ---- data
    Case("missing_data_dir", ["--config.data_source=files", "--config.data_dir=/nonexistent/cifar"],
         ["/nonexistent/cifar", "data_dir"]),
    Case("missing_data_file", [], ["data_batch_3.bin"], prepare="prepare_missing_file"),
    Case("truncated_record_file", [], ["data_batch_2.bin", "truncated"],
         prepare="prepare_truncated"),
    Case("label_out_of_range", [], ["test_batch.bin", "12"], prepare="prepare_label_out_of_range"),
    Case("corrupt_archive", [], ["cifar-10-binary.tar.gz"], prepare="prepare_corrupt_archive"),
    Case("wrong_image_size", [], ["data_batch_1", "3072"], prepare="prepare_wrong_image_size"),
    Case("archive_missing_members", [], ["cifar-10-python.tar.gz", "data_batch_1"],
         prepare="prepare_wrong_archive_member"),
    # ---- training
    # Resume the good SGD run at step 2 and fail after training has started: nothing of
    # the good run may change (config.json kept learning_rate=1e30 on main).
    Case("nan_loss", ["--config.optimizer=sgd", "--config.learning_rate=1e30"],
         ["loss is nan", "step 4", "learning_rate"]),
    Case("full_disk_during_save", [], ["could not write checkpoint 4", "are kept"],
         ulimit_kb=200),
    # ---- workdir (checkpoint cases with a finished run are in test_reliability.py)
    Case("workdir_is_a_file", [], ["workdir", "not a folder"], prepare="prepare_file_as_workdir"),
]
# fmt: on


def _command(case: Case, root: Path) -> tuple[list[str], dict[str, str]]:
    config = REPO / "configs" / f"{case.config}.py"
    args = [sys.executable, "-m", "cifar_jax.main", f"--config={config}", *SMALL]
    if case.prepare:
        args += globals()[case.prepare](root / "data")
    args += case.args
    if case.workdir:
        workdir = root / "run"
        if case.name == "workdir_is_a_file":
            workdir = root / "data" / "a_file" / "run"
        args.append(f"--workdir={workdir}")
    env = dict(os.environ, **case.env)
    if "XLA_FLAGS" not in case.env:
        env.pop("XLA_FLAGS", None)
    if case.ulimit_kb:  # `ulimit -f` caps file size: what a full disk looks like to a writer
        args = ["bash", "-c", f'ulimit -f {case.ulimit_kb}; exec "$@"', "bash", *args]
    return args, env


def good_files_digest(workdir: Path) -> str:
    """sha256 over the path and bytes of every file of the workdir (config.json,
    inference.json, metrics.jsonl, TensorBoard events, checkpoints, results.json), except
    the lock (it says who is running, not what ran: a killed case leaves its own) and
    Orbax's temporary folders of a save that never completed (never read as a
    checkpoint; cleared by the next run)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in workdir.rglob("*") if p.is_file()):
        rel = path.relative_to(workdir)
        if rel.name == ".cifar_jax.lock" or any("orbax-checkpoint-tmp" in x for x in rel.parts):
            continue
        digest.update(str(rel).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class Outcome:
    out: subprocess.CompletedProcess
    workdir: Path | None = None  # the case's workdir, seeded with a good run
    before: str = ""  # good_files_digest of it before the case ran


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Runs every case at once (2 cores: mostly start-up time) and keeps the results.

    Each case's workdir first receives a copy of a good run (2 steps, a checkpoint and
    results.json), so every case also shows that a bad command leaves them as they were.
    """
    base = tmp_path_factory.mktemp("bad_input")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    good = base / "good_run"
    made = subprocess.run(
        [sys.executable, "-m", "cifar_jax.main", f"--config={REPO / 'configs' / 'lenet.py'}",
         *SMALL, "--config.num_train_steps=2", f"--workdir={good}"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]

    def run(case: Case) -> Outcome:
        args, env = _command(case, base / case.name)
        workdir = base / case.name / "run"
        seeded = case.workdir and case.name != "workdir_is_a_file"
        if seeded:
            shutil.copytree(good, workdir)
        before = good_files_digest(workdir) if seeded else ""
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        return Outcome(out, workdir if seeded else None, before)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = {case.name: pool.submit(run, case) for case in CASES}
        return {name: f.result() for name, f in futures.items()}


def error_paragraph(stderr: str) -> str:
    assert "error: " in stderr, stderr[-2000:]
    return stderr[stderr.index("error: ") :].strip()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_paragraph(case: Case, outcomes):
    out = outcomes[case.name].out
    assert out.returncode != 0, out.stdout[-2000:]
    if case.exit_code is not None:
        assert out.returncode == case.exit_code
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    message = error_paragraph(out.stderr)
    assert "\n\n" not in message and len(message) < 1500, message
    for needle in case.expect:
        assert needle.lower() in message.lower(), (needle, message)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.workdir and c.name != "workdir_is_a_file"],
    ids=lambda c: c.name,
)  # fmt: skip
def test_bad_input_leaves_the_good_checkpoints_and_results_untouched(case: Case, outcomes):
    outcome = outcomes[case.name]
    assert outcome.out.returncode != 0
    assert (outcome.workdir / "results.json").exists()
    assert (outcome.workdir / "checkpoints" / "2").is_dir()
    assert good_files_digest(outcome.workdir) == outcome.before


def test_bad_input_leaves_every_file_of_the_good_run(outcomes):
    """The digest is of every file: a good run's workdir holds them all."""
    workdir = outcomes["nan_loss"].workdir
    names = {p.relative_to(workdir).parts[0] for p in workdir.rglob("*") if p.is_file()}
    assert {"config.json", "inference.json", "metrics.jsonl", "tensorboard", "checkpoints",
            "results.json"} <= names  # fmt: skip


def test_a_rerun_killed_at_its_first_save_leaves_the_good_run(outcomes, tmp_path):
    """kill -9 as the resumed rerun saves its first checkpoint (a hold point at the save
    of step 4): every file of the good run is as it was, and the next rerun resumes."""
    workdir = tmp_path / "run"
    shutil.copytree(outcomes["nan_loss"].workdir.parent.parent / "good_run", workdir)
    before = good_files_digest(workdir)
    holds_dir = tmp_path / "holds"
    holds_dir.mkdir()
    args, _ = _command(Case("killed", ["--config.learning_rate=0.01"], []), tmp_path)
    proc = subprocess.Popen(args, env=held.env(holds_dir, "save@4"), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        held.wait(holds_dir, "save@4", [proc])
    finally:
        proc.kill()
        proc.wait()
    assert good_files_digest(workdir) == before
    out = subprocess.run(args, env=held.env(holds_dir), capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Resumed from checkpoint at step 2" in out.stdout
    config = json.loads((workdir / "config.json").read_text())
    assert config["learning_rate"] == 0.01 and config["num_train_steps"] == 4


def test_debug_flag_shows_the_traceback(tmp_path):
    args, env = _command(CASES[2], tmp_path)  # zero learning rate
    out = subprocess.run([*args, "--debug"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_table_in_docs_lists_every_case():
    doc = (REPO / "docs" / "errors.md").read_text()
    for case in CASES:
        assert f"`{case.name}`" in doc, case.name


def test_launch_sh_rejects_bad_process_count():
    out = subprocess.run(["bash", str(REPO / "launch.sh"), "--nproc", "zero", "--"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "--nproc" in out.stderr
