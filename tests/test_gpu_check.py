"""scripts/gpu_check.sh in its CPU mode (GPU_CHECK_PLATFORM=cpu) on synthetic data, and the
parts of scripts/gpu_check.py a GPU call depends on: every stage in the summary, a failing
stage recorded with its log's excerpt without stopping the script, a stage the budget
stops recorded as `cut` (not failed), the training pair's gate and determinism, the
archive of logs that comes back (no model states, under the size limit), the bundle's data
archive and the tree check.

Only a few stages run here, to stay around a minute; the whole CPU mode on what the GPU
machine has (Python 3.12, jax 0.11.2, the bundle's wheels only, no oneDNN) is
scripts/py312_check.sh, a stage of .ci/run (docs/gpu.md)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
STAGES = [
    "install",
    "env",
    "data",
    "tests",
    "train_a",
    "train_b",
    "airbench94",
    "tests_cpu",
    "bench_bf16",
    "bench_f32",
]
needs_bash = pytest.mark.skipif(sys.platform != "linux", reason="bash and coreutils' timeout")


def _gpu_check_module():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    return gpu_check


def _run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out"
    full_env = dict(
        os.environ,
        GPU_CHECK_PLATFORM="cpu",
        GPU_CHECK_OUT=str(out),
        GPU_CHECK_RETURN=str(tmp_path / "back"),
        GPU_CHECK_BUNDLE=str(tmp_path / "no_bundle"),  # nothing there: install skipped
        GPU_CHECK_PYTHON=sys.executable,
        CIFAR_JAX_DATA=str(tmp_path / "no_data"),  # nothing there: synthetic
        **env,
    )
    proc = subprocess.run(
        ["bash", str(SCRIPT)], env=full_env, capture_output=True, text=True, timeout=400
    )
    return proc, json.loads((out / "summary.json").read_text())


@needs_bash
@pytest.mark.slow
def test_cpu_mode_on_synthetic_data_records_every_stage_and_prints_the_table_last(tmp_path):
    proc, summary = _run(
        tmp_path,
        GPU_CHECK_STAGES="data,train_a,train_b,tests",
        GPU_CHECK_TESTS="tests/no_such_test_file.py",  # a stage that fails
    )
    assert proc.returncode == 1, proc.stderr  # the failing tests stage
    assert list(summary["stages"]) == STAGES
    status = {name: s["status"] for name, s in summary["stages"].items()}
    assert status["install"] == "skipped"
    assert status["data"] == status["train_a"] == status["train_b"] == "ok"
    assert status["tests"] == "failed" and summary["failed_stages"] == ["tests"]
    assert status["bench_f32"] == "not selected"
    assert summary["complete"] is True
    assert summary["data"]["kind"] == "synthetic"
    assert summary["determinism"]["lenet"]["equal"] is True
    assert "synthetic: timing only" in summary["stages"]["train_a"]["key"]

    lines = [x for x in proc.stdout.splitlines() if x.strip()]
    header = lines.index("| stage | status | seconds | key numbers |")
    assert lines[header + 2 :] == [x for x in lines[header + 2 :] if x.startswith("| ")]
    assert [x.split("|")[1].strip() for x in lines[header + 2 :]] == STAGES
    back = tmp_path / "back"
    assert (back / "summary.md").read_text().splitlines()[-1] == lines[-1]
    # The failed stage's log excerpt is in the summary: enough to see why.
    md = (back / "summary.md").read_text()
    assert "## tests: failed (logs/tests.log)" in md
    assert "no_such_test_file.py" in md.split("## tests: failed")[1].split("## Stages")[0]
    # What comes back: three files, the logs and records, no model state.
    assert sorted(p.name for p in back.iterdir()) == [
        "gpu_check_logs.tar.gz",
        "summary.json",
        "summary.md",
    ]
    with tarfile.open(back / "gpu_check_logs.tar.gz") as tar:
        names = tar.getnames()
    assert "gpu_check_out/logs/tests.log" in names
    assert "gpu_check_out/runs/lenet_a/results.json" in names
    assert not [n for n in names if "/checkpoints/" in n]


@needs_bash
@pytest.mark.slow
def test_a_stage_the_budget_stops_is_cut_and_not_a_failure(tmp_path):
    """A stage that would run on past the budget is stopped and recorded as `cut`, the next
    one, with too little budget left, is not started (`cut`), and the check passes. The
    stopped stage's pytest waits on an event nothing sets: it cannot end by itself."""
    blocked = tmp_path / "test_blocked.py"
    blocked.write_text("import threading\n\ndef test_wait():\n    threading.Event().wait()\n")
    proc, summary = _run(
        tmp_path,
        GPU_CHECK_STAGES="tests,tests_cpu",
        GPU_CHECK_TESTS=f"{blocked} -p no:cacheprovider",
        GPU_CHECK_BUDGET_S="40",  # 10 s reserved for the summary: the tests stage gets ~29
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    tests, tests_cpu = summary["stages"]["tests"], summary["stages"]["tests_cpu"]
    assert tests["status"] == "cut", tests
    assert "cut to" in tests["note"] and "by the budget" in tests["note"]
    assert tests_cpu["status"] == "cut" and tests_cpu["note"].startswith("not started")
    assert summary["failed_stages"] == [] and summary["cut_stages"] == ["tests", "tests_cpu"]


def _results(folder: Path, accuracy: float, sha: str) -> None:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(
        json.dumps(
            {
                "test_accuracy": accuracy,
                "steps": 300,
                "train_seconds": 2.0,
                "train_images_per_second": 150_000.0,
                "compile_seconds": 3.0,
                "state_sha256": sha,
            }
        )
    )


@pytest.mark.parametrize(
    "acc_a,acc_b,sha_b,expected",
    [
        (0.44, 0.44, "aa", {"train_a": "ok", "train_b": "ok"}),
        (0.12, 0.12, "aa", {"train_a": "failed", "train_b": "failed"}),  # did not learn
        (0.44, 0.45, "bb", {"train_a": "ok", "train_b": "failed"}),  # not deterministic
    ],
)
def test_the_training_pair_is_gated_on_accuracy_and_equal_states(
    tmp_path, monkeypatch, capsys, acc_a, acc_b, sha_b, expected
):
    gpu_check = _gpu_check_module()
    _results(tmp_path / "runs" / "lenet_a", acc_a, "aa")
    _results(tmp_path / "runs" / "lenet_b", acc_b, sha_b)
    (tmp_path / "data.json").write_text(
        json.dumps({"kind": "partial", "source": "x", "train_examples": 10_000})
    )
    (tmp_path / "stages.tsv").write_text("train_a\tok\t20\t0\t-\ntrain_b\tok\t20\t0\t-\n")
    monkeypatch.setenv("GPU_CHECK_PLAN", "train_a,train_b")
    rc = gpu_check.summary(str(tmp_path), "gpu", "50", "300")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {n: s["status"] for n, s in summary["stages"].items()} == expected
    assert rc == (0 if set(expected.values()) == {"ok"} else 1)
    assert gpu_check.MIN_ACCURACY > 0.12  # a run at chance level fails
    capsys.readouterr()


def test_pack_returns_logs_without_model_states_under_the_limit(tmp_path):
    gpu_check = _gpu_check_module()
    out, back = tmp_path / "out", tmp_path / "back"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "tests.log").write_text("FAILED tests/x.py::y\n")
    big = os.urandom(3 * 2**20)  # over the 2 MiB a packed file keeps
    (out / "logs" / "airbench94.log").write_bytes(big)
    run = out / "runs" / "resnet_small_a"
    for states in ("checkpoints", "best"):
        (run / states / "100").mkdir(parents=True)
        (run / states / "100" / "params").write_bytes(os.urandom(20 * 2**20))
    (run / "results.json").write_text("{}")
    (out / "summary.md").write_text("# GPU check\n")
    (out / "summary.json").write_text("{}")
    assert gpu_check.pack(str(out), str(back)) == 0
    assert sorted(p.name for p in back.iterdir()) == [
        "gpu_check_logs.tar.gz",
        "summary.json",
        "summary.md",
    ]
    archive = back / "gpu_check_logs.tar.gz"
    assert archive.stat().st_size < gpu_check.RETURN_FILE_LIMIT_BYTES
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        kept = tar.extractfile("gpu_check_out/logs/airbench94.log").read()
        packed = tar.extractfile("gpu_check_out/PACKED.txt").read().decode()
    assert "gpu_check_out/logs/tests.log" in names
    assert "gpu_check_out/runs/resnet_small_a/results.json" in names
    assert not [n for n in names if "/checkpoints/" in n or "/best/" in n]
    assert kept == big[-gpu_check.PACK_FILE_LIMIT_BYTES :]  # the end of the log, where errors are
    assert "logs/airbench94.log" in packed


def test_bundle_data_is_checked_reproducible_and_extracts(tmp_path, monkeypatch, capsys):
    gpu_check = _gpu_check_module()
    source = tmp_path / "src" / "cifar-10-batches-bin"
    source.mkdir(parents=True)
    files = {"test_batch.bin": os.urandom(3073 * 20), "data_batch_1.bin": os.urandom(3073 * 30)}
    for name, payload in files.items():
        (source / name).write_bytes(payload)
    # Files that are not the official ones are refused, naming the problem.
    archive = tmp_path / "bundle" / "data" / gpu_check.DATA_ARCHIVE
    assert gpu_check.bundle_data(str(source.parent), str(archive)) == 1
    assert "not the official" in capsys.readouterr().err
    md5s = {n: hashlib.md5(p).hexdigest() for n, p in files.items()}  # noqa: S324
    monkeypatch.setattr(gpu_check, "CIFAR10_MD5", md5s)
    assert gpu_check.bundle_data(str(source.parent), str(archive)) == 0
    first = gpu_check._sha256(archive)
    archive.unlink()
    assert gpu_check.bundle_data(str(source.parent), str(archive)) == 0
    assert gpu_check._sha256(archive) == first  # the same bytes for the same input
    folder = gpu_check._extract_bundle_data(archive, tmp_path / "staged")
    for name, payload in files.items():
        assert (folder / "cifar-10-batches-bin" / name).read_bytes() == payload
    names = (folder / "cifar-10-batches-bin" / "batches.meta.txt").read_text().split()
    assert names == gpu_check.CIFAR10_NAMES


def test_tree_check_finds_a_changed_file_of_the_same_size(tmp_path):
    gpu_check = _gpu_check_module()
    repo, bundle = tmp_path / "repo", tmp_path / "bundle"
    (repo / "scripts").mkdir(parents=True)
    bundle.mkdir()
    (repo / "scripts" / "a.py").write_text("x = 1\n")
    (repo / "b.md").write_text("b\n")
    tree = {
        rel: [(repo / rel).stat().st_size, gpu_check._sha256(repo / rel)]
        for rel in ("scripts/a.py", "b.md")
    }
    (bundle / "manifest.json").write_text(
        json.dumps({"commit": "c0ffee", "tree": tree, "dirty": []})
    )
    assert gpu_check.tree_check(bundle, repo)["status"] == "matches"
    (repo / "scripts" / "a.py").write_text("x = 2\n")  # same size, other code
    (repo / "b.md").unlink()
    check = gpu_check.tree_check(bundle, repo)
    assert check["status"] == "differs"
    assert check["changed"] == ["scripts/a.py"] and check["missing"] == ["b.md"]


def test_the_gate_was_measured_with_the_pairs_own_arguments():
    """scripts/gpu_gate_seeds.py (the record behind MIN_ACCURACY) must train the pair as
    gpu_check.sh does on a GPU: a change to one and not the other would leave the gate
    measured on another run."""
    import importlib.util
    import re

    spec = importlib.util.spec_from_file_location("gate", REPO / "scripts/gpu_gate_seeds.py")
    gate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gate)
    script = (REPO / "scripts/gpu_check.sh").read_text()
    gpu_branch = script[script.index("\nelse\n  SYN=") :]
    pair = re.search(r"\n  PAIR=\(([^)]*)\)", gpu_branch).group(1).split()
    stage = re.search(r'stage "train_\$run" "\$\{TRAIN\[@\]\}" ([^"]*)\\\n', script).group(1)
    train = re.search(r"TRAIN=\([^)]*\n\s*(--config[^\"]*) \"\$\{DATA", script).group(1)
    expected = set(pair) | set(stage.split()) | set(train.split())
    expected |= {"--config.data_source=files", "--config.allow_partial_train_files=true"}
    assert expected == set(gate.PAIR_ARGS), expected ^ set(gate.PAIR_ARGS)
