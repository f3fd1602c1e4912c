"""The report and compare commands on tiny trained runs."""

import json

import numpy as np
import pytest
from tiny_runs import run_command, trained

from cifar_jax import comparison as compare
from cifar_jax import reporting as report
from cifar_jax import runs
from cifar_jax.errors import CifarJaxError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC and path.stat().st_size > 2000


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return trained(tmp_path_factory, "lenet")


def test_report_writes_every_figure_and_the_page(workdir, tmp_path):
    run = runs.load_run(str(workdir))
    path = report.write_report(run, str(tmp_path / "rep"), num_examples=8)
    page = (tmp_path / "rep" / "report.md").read_text()
    assert path == str(tmp_path / "rep" / "report.md")
    for figure in report.FIGURES:
        assert _is_png(tmp_path / "rep" / figure), figure
        assert f"]({figure})" in page, figure
    assert "Trainable params: 62,006" in page  # the per-layer table
    assert "| class_0 |" in page and "macro precision / recall / F1" in page
    assert "accuracy with TTA flip" in page


def test_report_writes_the_model_card_into_the_workdir(workdir, tmp_path):
    run = runs.load_run(str(workdir))
    report.write_report(run, str(tmp_path / "rep"), num_examples=4)
    card = (workdir / report.MODEL_CARD).read_text()
    results = json.loads((workdir / "results.json").read_text())
    for heading in ("## Data", "## Recipe", "## Parameters", "## Test metrics (100 images)",
                    "## Intended use", "## Known limits", "## Using it"):  # fmt: skip
        assert heading in card, heading
    assert "62,006 trainable" in card and f"state_sha256 `{run.state_sha256()}`" in card
    assert f"| {100 * results['test_accuracy']:.2f}% |" in card  # the run's own test numbers
    assert f"commit {results['commit']}" in card  # the commit that trained it
    assert "Calibration: expected calibration error" in card
    assert "class_0, class_1" in card and "adam, learning rate 0.003" in card


def test_first_layer_kernel_is_the_first_conv(workdir):
    run = runs.load_run(str(workdir))
    path, kernel = report.first_layer_kernel(run)
    assert path == "stage1_conv1/conv" and kernel.shape == (5, 5, 3, 6)


def test_select_examples():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3], [0.45, 0.55], [0.3, 0.7]])
    labels = np.array([0, 0, 1, 1, 0, 1])  # wrong: 3 (conf .7) and 4 (conf .55)
    well, wrong = report.select_examples(probs, labels, 3)
    # The most confident correct per class (0: idx 0, 1: idx 2), then the next (idx 1).
    assert well.tolist() == [0, 2, 1]
    assert wrong.tolist() == [3, 4]  # most confident first


def test_compare_two_runs(workdir, tmp_path_factory, tmp_path):
    other = trained(tmp_path_factory, "bn")
    table, path = compare.compare(
        [str(workdir), str(other)], str(tmp_path / "cmp"), names=["lenet", "bn"]
    )
    lines = table.splitlines()
    assert lines[0].startswith("| run | model | params | test acc | test acc TTA")
    assert lines[2].startswith("| lenet | lenet | 62,006 |")
    assert lines[3].startswith("| bn | c100_bn |")
    results = json.loads((workdir / "results.json").read_text())
    assert f"{100 * results['test_accuracy']:.2f}%" in lines[2]
    for figure in ("curves.png", "accuracy.png", "confusion_matrices.png"):
        assert _is_png(tmp_path / "cmp" / figure), figure
        assert f"]({figure})" in (tmp_path / "cmp" / "compare.md").read_text()
    with pytest.raises(CifarJaxError, match="names"):
        compare.compare([str(workdir)], str(tmp_path / "x"), names=["a", "b"])


def test_run_names_disambiguate_equal_folder_names():
    assert compare.run_names(["/a/x/run", "/a/y/run"]) == ["x/run", "y/run"]
    assert compare.run_names(["/a/one", "/b/two"]) == ["one", "two"]


def test_report_and_compare_commands(workdir, tmp_path):
    out = run_command("report", f"--workdir={workdir}", "--num_examples=6")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (workdir / "report" / "report.md").exists()
    out = run_command("compare", str(workdir), str(workdir), f"--out={tmp_path / 'c'}",
                      "--confusion=false")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("| 62,006 |") == 2
    assert not (tmp_path / "c" / "confusion_matrices.png").exists()
    out = run_command("compare", f"--out={tmp_path / 'c'}")
    assert out.returncode == 1 and "no workdirs given" in out.stderr
    assert "Traceback" not in out.stderr
