"""Part of CIFAR-10 (say data_batch_1.bin and test_batch.bin, as scripts/gpu_check.sh gets on
a machine the full data cannot be copied to): a clear error by default, read only when
``allow_partial_train_files`` asks for it, from a folder or a ``.tar.gz`` archive."""

from __future__ import annotations

import os
import tarfile

import numpy as np
import pytest

from cifar_jax import config as config_lib
from cifar_jax.data import sources
from cifar_jax.errors import DataError

FOLDER = "cifar-10-batches-bin"
PARTIAL = ("data_batch_1.bin", "test_batch.bin", "batches.meta.txt")


@pytest.fixture(scope="module")
def full_folder(real_data_root):
    return real_data_root / "cifar10" / FOLDER


@pytest.fixture()
def partial_folder(tmp_path, full_folder):
    """data_batch_1.bin, test_batch.bin and the names file only (links: no 60 MB copy)."""
    folder = tmp_path / FOLDER
    folder.mkdir()
    for name in PARTIAL:
        os.symlink(full_folder / name, folder / name)
    return folder


def _config(data_dir, partial: bool):
    config = config_lib.base_config()
    config.data_dir = str(data_dir)
    config.data_source = "files"
    config.val_examples = 0
    config.allow_partial_train_files = partial
    return config


def test_missing_training_files_are_an_error_by_default_naming_the_option(partial_folder):
    with pytest.raises(DataError, match=r"data_batch_2\.bin is missing") as e:
        sources.load_dataset(_config(partial_folder.parent, partial=False))
    assert "allow_partial_train_files=true" in str(e.value)
    with pytest.raises(DataError, match=r"data_batch_2\.bin is missing"):
        sources.read_official(str(partial_folder), "cifar10")


def test_partial_folder_reads_the_batch_that_is_there_when_asked(partial_folder, full_folder):
    data = sources.load_dataset(_config(partial_folder.parent, partial=True))
    raw = np.fromfile(full_folder / "data_batch_1.bin", dtype=np.uint8).reshape(-1, 3073)
    assert len(data.train) == 10_000 and len(data.test) == 10_000
    np.testing.assert_array_equal(data.train.labels, raw[:, 0])
    np.testing.assert_array_equal(
        data.train.images[0], raw[0, 1:].reshape(3, 32, 32).transpose(1, 2, 0)
    )
    assert data.class_names[0] == "airplane"
    assert "partial: training files data_batch_1.bin only" in data.source
    # The full folder with the option on is read whole, and says nothing about it.
    full = sources.load_dataset(_config(full_folder, partial=True))
    assert len(full.train) == 50_000 and "partial" not in full.source


def test_partial_archive_reads_the_batch_that_is_there_when_asked(tmp_path, full_folder):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for name in ("data_batch_1.bin", "test_batch.bin", "batches.meta.txt"):
            tar.add(full_folder / name, arcname=f"{FOLDER}/{name}")
    with pytest.raises(DataError, match=r"has no member cifar-10-batches-bin/data_batch_2\.bin"):
        sources.read_official(str(tmp_path), "cifar10")
    train, test, names = sources.read_official(str(tmp_path), "cifar10", allow_partial_train=True)
    assert len(train) == 10_000 and len(test) == 10_000 and len(names) == 10


def test_no_training_file_at_all_is_an_error_even_when_asked(partial_folder):
    (partial_folder / "data_batch_1.bin").unlink()
    with pytest.raises(DataError, match="none of the training files"):
        sources.load_dataset(_config(partial_folder.parent, partial=True))
