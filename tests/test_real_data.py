"""A fresh clone's real-data tests: the data is found where a run looks, or fetched once."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import real_data
from test_data_sources import make_release, write_folder

from cifar_jax.data import download, load_dataset
from cifar_jax.errors import DataError


def test_cifar100_mini_is_the_first_images_of_each_class_in_official_order(tmp_path):
    release = make_release("cifar100", 700, 0)  # 7 images of each fine class
    official = write_folder(tmp_path, "cifar100", "binary", release)
    out = real_data.build_cifar100_mini(official, tmp_path / "mini", per_class=5,
                                        train_per_class=4)  # fmt: skip
    folder = out / "cifar-100-binary"
    train = np.fromfile(folder / "train.bin", np.uint8).reshape(-1, real_data.RECORD_100)
    test = np.fromfile(folder / "test.bin", np.uint8).reshape(-1, real_data.RECORD_100)
    assert np.bincount(train[:, 1], minlength=100).tolist() == [4] * 100
    assert np.bincount(test[:, 1], minlength=100).tolist() == [1] * 100
    fine = release["train"]["fine"]
    rank = np.array([np.sum(fine[:i] == fine[i]) for i in range(len(fine))])
    records = np.fromfile(official / "train.bin", np.uint8).reshape(-1, real_data.RECORD_100)
    np.testing.assert_array_equal(train, records[rank < 4])  # official order kept
    np.testing.assert_array_equal(test, records[rank == 4])
    assert (folder / "fine_label_names.txt").read_bytes() == (
        official / "fine_label_names.txt"
    ).read_bytes()


def test_test_data_is_built_from_the_users_data_folder(tmp_path):
    """CIFAR-10 as an extracted folder, CIFAR-100 as the official archive: no download."""
    write_folder(tmp_path, "cifar10", "binary", make_release("cifar10", 50, 10))
    staging = tmp_path / "staging"
    write_folder(staging, "cifar100", "binary", make_release("cifar100", 8200, 100))
    with tarfile.open(tmp_path / "cifar-100-binary.tar.gz", "w:gz") as tar:
        tar.add(staging / "cifar-100-binary", arcname="cifar-100-binary")
    root = real_data.build_test_data_root(tmp_path)
    assert (root / "cifar10" / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    mini = root / "cifar100-mini" / "cifar-100-binary"
    train = np.fromfile(mini / "train.bin", np.uint8).reshape(-1, real_data.RECORD_100)
    assert np.bincount(train[:, 1], minlength=100).tolist() == [80] * 100
    # The package reads what was built, as the real-data tests do.
    from test_data_sources import files_config

    data = load_dataset(files_config(root / "cifar100-mini", "cifar100", class_subset=20))
    assert (len(data.train), len(data.test)) == (1600, 40)
    assert real_data.build_test_data_root(tmp_path) == root  # a second call reuses it


def test_missing_data_is_downloaded_with_the_checked_download(tmp_path, monkeypatch):
    calls = []

    def fake_download(dataset, layout, data_dir, *args, **kwargs):
        calls.append((dataset, layout, data_dir))
        raise DataError("no network here")

    monkeypatch.setattr(download, "download_archive", fake_download)
    with pytest.raises(DataError, match="no network"):
        real_data.build_test_data_root(tmp_path)
    assert calls == [("cifar10", "binary", str(tmp_path))]
