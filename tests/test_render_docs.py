"""scripts/render_docs.py: every results table in README.md and docs/*.md is what the
committed records give, and a number typed by hand, a stale table or a record that cannot
back a number is caught, naming it.

Bugs these catch: a table edited by hand (or a record changed without re-rendering)
passing CI; a run without a commit, with an unexplained ``-dirty`` commit or without its
precision backing a number; a table name in a doc that no builder makes; a rendered table
whose timing column says another thing than the records' fields add up to."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("render_docs", REPO / "scripts/render_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rd():
    return _load()


@pytest.fixture
def tree(tmp_path, rd, monkeypatch):
    """A copy of the docs and their records, for the renderer to work on."""
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    monkeypatch.setattr(rd, "ROOT", tmp_path)
    return tmp_path


def test_the_committed_docs_match_their_records(rd, capsys):
    """What `.ci/run` runs: fails when a table was typed or edited by hand, or a record
    changed without `python scripts/render_docs.py` being run."""
    assert rd.main(["--check"]) == 0, capsys.readouterr().err
    assert f"{len(rd.TABLES)} tables match" in capsys.readouterr().out  # every one placed


def test_a_hand_edited_number_is_named_and_rendering_restores_it(rd, tree, capsys):
    fast = tree / "docs/fast.md"
    text = fast.read_text()
    row = next(x for x in text.splitlines() if x.startswith("| [muon_bf16_10ep_376a3f5]"))
    assert "94.14 ± 0.05" in row
    fast.write_text(text.replace(row, row.replace("94.14 ± 0.05", "94.41 ± 0.05")))
    assert rd.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "docs/fast.md: table 'airbench_runs'" in err
    assert "README.md" not in err  # only the edited table is named
    assert fast.read_text() != text  # --check changes nothing
    assert rd.main([]) == 0
    assert fast.read_text() == text
    assert rd.main(["--check"]) == 0


def test_a_changed_record_makes_its_tables_stale(rd, tree, capsys):
    path = tree / "docs/fast/runs/muon_bf16_10ep/seed_0/results.json"
    record = json.loads(path.read_text())
    record["test_accuracy_tta"] = 0.9999
    path.write_text(json.dumps(record))
    assert rd.main(["--check"]) == 1
    err = capsys.readouterr().err
    # The folder is in the fast page's table and in the README's headline.
    assert "docs/fast.md: table 'airbench_runs'" in err
    assert "README.md: table 'readme_headline'" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"commit": None}, "no commit recorded"),
        ({"commit": "unknown"}, "no commit recorded"),
        ({"commit": "376a3f557001-dirty"}, "no commit_note saying why"),
        ({"cpu": None}, "no cpu recorded"),
    ],
)
def test_a_record_that_cannot_back_a_number_stops_both_modes(rd, tree, capsys, change, message):
    path = tree / "docs/fast/runs/muon_bf16_10ep_376a3f5/seed_1/results.json"
    record = json.loads(path.read_text())
    record.update(change)
    path.write_text(json.dumps(record))
    before = (tree / "docs/fast.md").read_text()
    for argv in (["--check"], []):
        assert rd.main(argv) == 1
        err = capsys.readouterr().err
        assert "docs/fast/runs/muon_bf16_10ep_376a3f5/seed_1/results.json" in err
        assert message in err
    assert (tree / "docs/fast.md").read_text() == before  # nothing rendered from it


def test_a_run_without_its_precision_needs_a_note(rd, tree, capsys):
    path = tree / "docs/fast/runs/float32/seed_2/results.json"
    record = json.loads(path.read_text())
    del record["config"]["half_precision"]
    path.write_text(json.dumps(record))
    assert rd.main(["--check"]) == 1
    assert "no config.half_precision and no precision with a precision_note" in (
        capsys.readouterr().err
    )
    record.update(precision="float32", precision_note="before the option existed")
    path.write_text(json.dumps(record))
    assert rd.main(["--check"]) == 0


def test_an_unknown_table_name_is_an_error(rd, tree):
    doc = tree / "docs/sweeps.md"
    doc.write_text(doc.read_text() + "\n<!-- render:typo_table -->\n<!-- /render:typo_table -->\n")
    with pytest.raises(SystemExit, match="docs/sweeps.md: unknown table 'typo_table'"):
        rd.main(["--check"])


def test_the_timing_column_is_the_sum_of_the_fields_it_names(rd):
    """The airbench table's time is train + test + TTA seconds, no more: a run whose
    compile or checkpoint time grows does not change it, its wall time does."""
    run = {
        "train_seconds": 500.0,
        "test_seconds": 10.0,
        "test_tta_seconds": 30.0,
        "compile_seconds": 999.0,
        "time": {"wall_seconds": 2000.0, "checkpoint_seconds": 77.0},
    }
    assert rd.to_tta_seconds(run) == 540.0
    record = {
        **run,
        "test_accuracy_tta": 0.94,
        "seed": 0,
        "epochs": 10.0,
        "cpu": "Intel(R) Xeon(R) Processor (family 6, model 207, AVX512)",
        "commit": "abcdef123456",
        "config": {"model": "airbench94", "half_precision": False},
    }
    row = rd._fast_row("g", [record], "fast/runs")
    assert "| 9.0 (9.0-9.0) | 33.3 (33.3-33.3) |" in row
    assert "Emerald Rapids class" in row and "float32" in row and "abcdef1" in row


def test_cpu_labels_keep_the_isa_limits_a_run_was_held_to(rd):
    held = (
        "Intel(R) Xeon(R) Processor (family 6, model 167, AVX512), kernels limited by "
        "ONEDNN_MAX_CPU_ISA=AVX2, --xla_cpu_max_isa=AVX2"
    )
    assert rd.cpu_label(held) == (
        "Intel Xeon, family 6 model 167 (Granite Rapids class), AVX-512, held to "
        "ONEDNN_MAX_CPU_ISA=AVX2, --xla_cpu_max_isa=AVX2"
    )
    assert rd.cpu_label("AMD EPYC (family 26, AVX512)") == "AMD EPYC, family 26 (Zen 5), AVX-512"
    assert rd.cpu_label("Intel(R) Xeon(R) Processor (family 6, model 207, AVX512, AMX)") == (
        "Intel Xeon, family 6 model 207 (Emerald Rapids class), AVX-512 with AMX"
    )


def test_every_committed_record_names_its_commit_and_machine(rd, tree, capsys):
    """Not only the records a table reads: a bench or profile record without its commit
    (docs/bench/bench.json once had none) or with an unexplained -dirty one stops both
    modes, naming it."""
    assert rd.audit_records() == []
    (tree / "docs/bench/new.json").write_text(json.dumps({"machine": {"cpu": "x"}}))
    dirty = tree / "docs/fast/granite/profile_f32_3b5db94.json"
    record = json.loads(dirty.read_text())
    del record["machine"]["commit_note"]
    dirty.write_text(json.dumps(record))
    assert rd.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "docs/bench/new.json: no commit recorded" in err
    assert "docs/fast/granite/profile_f32_3b5db94.json: commit f6ba6c9f05c8-dirty is -dirty" in err


def test_no_record_under_docs_is_ignored_by_git():
    """A record git ignores (`runs/` in .gitignore also matches docs/fast/runs/...) renders
    here and is missing from every clean clone, where the check then fails: add it with
    `git add -f`."""
    import subprocess

    ignored = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "docs"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert [p for p in ignored if p.endswith((".json", ".jsonl"))] == []


def test_a_change_from_the_baseline_is_read_from_the_recorded_config(rd):
    """Bug caught: a recorded config read back from JSON has lists where the config file
    has tuples, so every field of tuple type (widths, ...) would be named as a change;
    and the seed or the data folder, which every run sets, named as one."""
    from cifar_jax import config as config_lib

    base = config_lib.load_config_file(str(REPO / "configs" / "cnn_baseline.py")).to_dict()
    recorded = json.loads(json.dumps(base))  # tuples become lists, as in results.json
    assert any(isinstance(v, tuple) for v in base.values())
    recorded.update(seed=2, data_dir="/elsewhere")
    assert rd._change_from(base, recorded) == "none (the baseline)"
    recorded.update(label_smoothing=0.3, l2_penalty=0.01)
    assert rd._change_from(base, recorded) == "l2_penalty=0.01, label_smoothing=0.3"


def test_the_time_split_is_each_phase_of_the_records_and_its_share(rd):
    """Bug caught: a phase read from the wrong key or a share of the wrong total: every
    cell is the mean of its phase over the group's records, and its share of their mean
    wall time."""
    import statistics

    from cifar_jax.train import PhaseClock

    # The phases are the trainer's own, in its order, with the saves inside training and
    # what no phase names at the end.
    phases = list(PhaseClock.PHASES)
    phases.insert(phases.index("training_seconds") + 1, "checkpoint_seconds")
    assert [key for key, _ in rd._PHASES] == [*phases, "other_seconds"]
    table = rd.table_fast_time_split()
    timed = [(n, rs) for n, rs in rd._fast_groups() if all(r.get("time") for r in rs)]
    assert timed
    for name, rs in timed:
        row = next(line for line in table.splitlines() if line.startswith(f"| [{name}]"))
        wall = statistics.fmean(r["time"]["wall_seconds"] for r in rs)
        for key, _ in rd._PHASES:
            mean = statistics.fmean(r["time"][key] for r in rs)
            assert f"| {mean:.0f} s ({100 * mean / wall:.0f}%) |" in row, key
