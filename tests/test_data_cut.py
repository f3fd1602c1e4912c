"""Folders holding a class-subset cut of the official files (shared/data/cifar100-first20:
CIFAR-100's train.bin / test.bin with every record of fine label >= 20 removed).

Read with the recipe's class subset, such a cut gives exactly the images, order, validation
split and batches the complete files give; what the files hold is said in ``CifarData.files``
(results.json's ``data_files``) and, for a cut, in ``source`` (the run's "Data:" line); a
class the config asks for that the files lack is a DataError.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import real_data
from test_data_sources import FINE_NAMES, files_config, make_release, write_folder

from cifar_jax.config import default_data_dir
from cifar_jax.data import load_dataset, pipeline, sources
from cifar_jax.errors import DataError

RECORD = 2 + 32 * 32 * 3  # CIFAR-100 binary: coarse label byte, fine label byte, pixels


def cut_folder(official: Path, out: Path, low: int, high: int) -> Path:
    """``out/cifar-100-binary``: the records of ``official``'s train.bin and test.bin whose
    fine label is in ``low..high-1``, in their order, byte for byte (how the shared
    cifar100-first20 folder was cut, with 0..20), and the two label-name files."""
    target = out / "cifar-100-binary"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("test.bin", "train.bin"):  # train.bin last: marks the folder complete
        records = np.fromfile(official / name, np.uint8).reshape(-1, RECORD)
        keep = (records[:, 1] >= low) & (records[:, 1] < high)
        records[keep].tofile(target / f".{name}.tmp")
        os.replace(target / f".{name}.tmp", target / name)
    for name in ("fine_label_names.txt", "coarse_label_names.txt"):
        shutil.copyfile(official / name, target / name)
    return out


def first20_folder(real_data_root: Path) -> Path:
    """The shared cifar100-first20 folder; where it is absent (a fresh clone's test-data root,
    tests/real_data.py), the same cut of the official CIFAR-100 files found or downloaded
    in the user's data folder, written beside the other test data."""
    folder = real_data_root / "cifar100-first20"
    if (folder / "cifar-100-binary" / "train.bin").is_file():
        return folder
    files = [*real_data.CIFAR100_FILES, "test.bin"]
    data_dir = Path(default_data_dir()).expanduser()
    return cut_folder(real_data._official("cifar-100-binary", files, "cifar100", data_dir), folder,
                      0, 20)  # fmt: skip


@pytest.fixture
def small_official(monkeypatch):
    """Make 6 training + 2 test records per fine class CIFAR-100's official counts, so that
    small synthetic files can be complete (600 + 200 records) or a cut of them."""
    monkeypatch.setitem(sources._TRAIN_PER_CLASS, ("cifar100", "fine"), 6)
    monkeypatch.setitem(sources._TEST_PER_CLASS, ("cifar100", "fine"), 2)


@pytest.fixture
def complete_and_cut(tmp_path) -> tuple[Path, Path]:
    """A synthetic complete CIFAR-100 binary release (6 + 2 records of each of the 100 fine
    classes, shuffled as in the official files) and its cut to fine classes 0-19."""
    complete = write_folder(tmp_path / "complete", "cifar100", "binary",
                            make_release("cifar100", 600, 200, seed=4))  # fmt: skip
    cut = cut_folder(complete, tmp_path / "first20", 0, 20)
    return complete, cut / "cifar-100-binary"


def recipe(data_dir: Path, **overrides):
    """Report 003's way of reading the data: classes 0-19, a seeded validation split."""
    fields = {"class_subset": 20, "val_examples": 20, "seed": 7, "batch_size": 16}
    return files_config(data_dir, "cifar100", **{**fields, **overrides})


# -------------------------------------------------- the cut reads as the complete files


def test_cut_gives_the_images_order_and_split_of_the_complete_files(complete_and_cut):
    complete, cut = complete_and_cut
    whole, first20 = load_dataset(recipe(complete)), load_dataset(recipe(cut))

    assert (len(whole.train), len(whole.val), len(whole.test)) == (100, 20, 40)
    for name in ("train", "val", "test"):
        a, b = getattr(whole, name), getattr(first20, name)
        np.testing.assert_array_equal(b.images, a.images, err_msg=name)
        np.testing.assert_array_equal(b.labels, a.labels, err_msg=name)
    assert np.bincount(first20.val.labels).tolist() == [1] * 20  # stratified
    assert first20.class_names == whole.class_names == tuple(FINE_NAMES[:20])
    assert first20.num_classes == 20
    assert (first20.mean, first20.std) == (whole.mean, whole.std)


def test_cut_gives_the_training_batches_of_the_complete_files(complete_and_cut):
    """The batches a run trains on (experiment's train_iterator: config_train_dataset
    through iterate), over an epoch boundary (6 steps per epoch), augmentation included."""
    batches = []
    for folder in complete_and_cut:
        config = recipe(folder)
        data = load_dataset(config)
        dataset = pipeline.config_train_dataset(config, data.train, data.mean, num_steps=8)
        batches.append(pipeline.take(pipeline.iterate(dataset, prefetch=2), 8))
    for step, (a, b) in enumerate(zip(*batches, strict=True)):
        assert a["image"].shape == (16, 32, 32, 3)
        np.testing.assert_array_equal(b["image"], a["image"], err_msg=f"step {step}")
        np.testing.assert_array_equal(b["label"], a["label"], err_msg=f"step {step}")


# ----------------------------------------------------------- what the files hold


CUT_TEXT = (
    "the official files cut to fine classes 0-19 (120 train + 40 test records; complete for "
    "those classes)"
)


def test_complete_files_are_described_and_the_source_is_unchanged(small_official, complete_and_cut):
    complete, _ = complete_and_cut
    data = load_dataset(recipe(complete))
    assert data.files == (
        "the complete official files (600 train + 200 test records, 6 + 2 of each of the 100 "
        "fine classes)"
    )
    assert data.source == f"CIFAR-100 binary files under {complete}"


def test_a_cut_is_recognised_in_files_and_source(small_official, complete_and_cut):
    _, cut = complete_and_cut
    data = load_dataset(recipe(cut))
    assert data.files == CUT_TEXT
    assert data.source == f"CIFAR-100 binary files under {cut}; {CUT_TEXT}"


def test_fewer_records_of_every_class_are_a_subset(small_official, tmp_path):
    """The CIFAR-100 mini subset's shape: every class, fewer records of each."""
    official = write_folder(tmp_path / "complete", "cifar100", "binary",
                            make_release("cifar100", 600, 200, seed=4))  # fmt: skip
    mini = real_data.build_cifar100_mini(official, tmp_path / "mini", per_class=5,
                                         train_per_class=4)  # fmt: skip
    data = load_dataset(files_config(mini, "cifar100"))
    assert data.files == (
        "fewer records than the official files: fine classes 0-99 (all 100), 4 train + 1 test "
        "records of each (400 train + 100 test records; the official files have 6 + 2 of each "
        "of the 100)"
    )
    # Every class is there: nothing was cut, so the source line stays as it was.
    assert data.source == f"CIFAR-100 binary files under {mini / 'cifar-100-binary'}"


def test_partial_cifar10_training_files_are_a_subset(tmp_path):
    folder = write_folder(tmp_path, "cifar10", "binary", make_release("cifar10", 500, 20))
    for k in range(2, 6):
        (folder / f"data_batch_{k}.bin").unlink()
    data = load_dataset(files_config(tmp_path, allow_partial_train_files=True))
    counts = np.bincount(data.train.labels, minlength=10)
    assert len(data.train) == 100 and 0 < counts.min() < counts.max()
    assert data.files == (
        f"fewer records than the official files: classes 0-9 (all 10), {counts.min()}-"
        f"{counts.max()} train + 2 test records of each (100 train + 20 test records; the "
        "official files have 5,000 + 1,000 of each of the 10)"
    )


def test_synthetic_data_describes_no_files():
    config = files_config("/nonexistent/never/read", data_source="synthetic")
    assert load_dataset(config).files == ""


# ------------------------------------------------ classes the files do not hold


@pytest.mark.parametrize(("class_subset", "asked"), [(0, "all 100 fine classes"),
                                                     (30, "fine classes 0-29")])  # fmt: skip
def test_asking_for_more_classes_than_the_cut_holds_is_an_error(
    small_official, complete_and_cut, class_subset, asked
):
    _, cut = complete_and_cut
    config = recipe(cut, class_subset=class_subset)
    with pytest.raises(DataError) as info:
        load_dataset(config)
    message = str(info.value)
    assert message.startswith(f"CIFAR-100 binary files under {cut}: {CUT_TEXT}.")
    missing = "20-99" if class_subset == 0 else "20-29"
    assert f"no training images of fine classes {missing}" in message
    assert f"asks for class_subset={class_subset} ({asked})" in message
    assert "point --config.data_dir at the complete official CIFAR-100 files" in message
    assert "set --config.class_subset to 20 or less" in message
    # reproduce counts each folder's images before training: the same refusal there.
    with pytest.raises(DataError, match=f"no training images of fine classes {missing}"):
        sources.held_train_examples(config)
    assert sources.held_train_examples(recipe(cut)) == 120


@pytest.mark.parametrize("class_subset", [20, 0])
def test_a_cut_to_other_classes_is_never_relabelled(tmp_path, class_subset):
    """Fine classes 20-39 only: nothing of classes 0-19, and labels are never renumbered."""
    complete = write_folder(tmp_path / "complete", "cifar100", "binary",
                            make_release("cifar100", 600, 200, seed=4))  # fmt: skip
    cut = cut_folder(complete, tmp_path / "cut", 20, 40) / "cifar-100-binary"
    with pytest.raises(DataError) as info:
        load_dataset(recipe(cut, class_subset=class_subset))
    message = str(info.value)
    assert f"CIFAR-100 binary files under {cut}: fewer records than the official files: " in (
        message
    )
    assert "fine classes 20-39 (20 of 100)" in message
    missing = "0-19" if class_subset == 20 else "0-19, 40-99"
    assert f"no training images of fine classes {missing}," in message
    assert "labels are never renumbered" in message
    assert "class_subset to" not in message  # no class_subset would do


# ------------------------------------------------------------------ real data


def test_real_first20_is_the_official_files_cut_to_classes_0_to_19(real_data_root):
    folder = first20_folder(real_data_root)
    data = load_dataset(files_config(folder, "cifar100", class_subset=20))
    text = (
        "the official files cut to fine classes 0-19 (10,000 train + 2,000 test records; "
        "complete for those classes)"
    )
    assert data.files == text
    assert data.source.endswith(f"cifar100-first20/cifar-100-binary; {text}")
    assert np.bincount(data.train.labels).tolist() == [500] * 20
    assert np.bincount(data.test.labels).tolist() == [100] * 20
    assert data.class_names[:3] == ("apple", "aquarium_fish", "baby")
    assert data.class_names[-1] == "cattle" and data.num_classes == 20

    with pytest.raises(DataError, match="no training images of fine classes 20-99"):
        load_dataset(files_config(folder, "cifar100"))
