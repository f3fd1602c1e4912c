"""Reading CIFAR: official layouts (written here in the exact official formats), TFDS,
synthetic data, load_dataset's config handling, and the real data in shared/data."""

from __future__ import annotations

import collections
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cifar_jax.config import base_config
from cifar_jax.data import (
    ArraySplit,
    channel_mean_std,
    load_dataset,
    read_official,
    synthetic_data,
)
from cifar_jax.data.sources import expected_train_examples
from cifar_jax.errors import ConfigError, DataError
from cifar_jax.validation import validate_config

FOLDERS = {
    ("cifar10", "binary"): "cifar-10-batches-bin",
    ("cifar10", "python"): "cifar-10-batches-py",
    ("cifar100", "binary"): "cifar-100-binary",
    ("cifar100", "python"): "cifar-100-python",
}
ARCHIVES = {
    ("cifar10", "binary"): "cifar-10-binary.tar.gz",
    ("cifar10", "python"): "cifar-10-python.tar.gz",
    ("cifar100", "binary"): "cifar-100-binary.tar.gz",
    ("cifar100", "python"): "cifar-100-python.tar.gz",
}
CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
]  # fmt: skip
FINE_NAMES = [f"fine_{k}" for k in range(100)]
COARSE_NAMES = [f"coarse_{k}" for k in range(20)]


# ------------------------------------------------------- official-format writers


def make_release(dataset: str, num_train: int, num_test: int, seed: int = 0) -> dict:
    """Random images with labels: fine cycles through all classes, coarse = fine // 5."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if dataset == "cifar10" else 100
    out = {}
    for split, n in (("train", num_train), ("test", num_test)):
        fine = (np.arange(n) % num_classes).astype(np.int32)
        rng.shuffle(fine)
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        out[split] = {"images": images, "fine": fine, "coarse": fine // 5}
    return out


def to_rows(images: np.ndarray) -> np.ndarray:
    """NHWC -> (N, 3072) rows: the red plane, then green, then blue, each row-major."""
    return images.transpose(0, 3, 1, 2).reshape(images.shape[0], 3072)


def write_folder(root: Path, dataset: str, layout: str, release: dict) -> Path:
    """Write ``release`` as the official extracted folder ``root/<folder>``."""
    folder = root / FOLDERS[(dataset, layout)]
    folder.mkdir(parents=True)
    train, test = release["train"], release["test"]
    if dataset == "cifar10":
        # The official training set comes in five batches.
        parts = np.array_split(np.arange(len(train["fine"])), 5)
        batches = [(f"data_batch_{i + 1}", idx) for i, idx in enumerate(parts)]
        batches.append(("test_batch", None))
        for name, idx in batches:
            split = test if idx is None else {k: v[idx] for k, v in train.items()}
            rows, labels = to_rows(split["images"]), split["fine"]
            if layout == "binary":
                records = np.concatenate([labels[:, None].astype(np.uint8), rows], axis=1)
                (folder / f"{name}.bin").write_bytes(records.tobytes())
            else:
                batch = {
                    b"batch_label": name.encode(),
                    b"labels": [int(x) for x in labels],
                    b"data": rows,
                    b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
                }
                (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        if layout == "binary":
            (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
        else:
            meta = {
                b"num_cases_per_batch": 10000,
                b"label_names": [n.encode() for n in CIFAR10_NAMES],
                b"num_vis": 3072,
            }
            (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    else:
        for name, split in (("train", train), ("test", test)):
            rows = to_rows(split["images"])
            if layout == "binary":
                labels = np.stack([split["coarse"], split["fine"]], axis=1).astype(np.uint8)
                (folder / f"{name}.bin").write_bytes(np.concatenate([labels, rows], 1).tobytes())
            else:
                batch = {
                    b"filenames": [f"img_{i}.png".encode() for i in range(len(rows))],
                    b"batch_label": f"{name} batch".encode(),
                    b"fine_labels": [int(x) for x in split["fine"]],
                    b"coarse_labels": [int(x) for x in split["coarse"]],
                    b"data": rows,
                }
                (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        if layout == "binary":
            (folder / "fine_label_names.txt").write_text("\n".join(FINE_NAMES) + "\n")
            (folder / "coarse_label_names.txt").write_text("\n".join(COARSE_NAMES) + "\n")
        else:
            meta = {
                b"fine_label_names": [n.encode() for n in FINE_NAMES],
                b"coarse_label_names": [n.encode() for n in COARSE_NAMES],
            }
            (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def write_archive(root: Path, dataset: str, layout: str, release: dict) -> Path:
    """Write ``release`` as the official ``.tar.gz`` (members under the folder name)."""
    staging = root / ".staging"
    folder = write_folder(staging, dataset, layout, release)
    archive = root / ARCHIVES[(dataset, layout)]
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    shutil.rmtree(staging)
    return archive


def files_config(data_dir: Path, dataset: str = "cifar10", **overrides):
    config = base_config()
    config.dataset = dataset
    config.data_dir = str(data_dir)
    config.data_source = "files"
    for key, value in overrides.items():
        config[key] = value
    return config


# ------------------------------------------------------------ official layouts


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("layout", ["binary", "python"])
@pytest.mark.parametrize("packing", ["archive", "folder", "data_dir_is_folder"])
def test_official_layouts_round_trip(tmp_path, dataset, layout, packing):
    release = make_release(dataset, num_train=250, num_test=120)
    if packing == "archive":
        write_archive(tmp_path, dataset, layout, release)
        data_dir = tmp_path
    else:
        folder = write_folder(tmp_path, dataset, layout, release)
        data_dir = folder if packing == "data_dir_is_folder" else tmp_path

    train, test, names = read_official(str(data_dir), dataset)

    for split, expected in ((train, release["train"]), (test, release["test"])):
        assert split.images.dtype == np.uint8 and split.images.flags.c_contiguous
        assert split.labels.dtype == np.int32
        np.testing.assert_array_equal(split.images, expected["images"])
        np.testing.assert_array_equal(split.labels, expected["fine"])
    assert names == tuple(CIFAR10_NAMES if dataset == "cifar10" else FINE_NAMES)
    if packing == "archive":
        assert sorted(p.name for p in tmp_path.iterdir()) == [ARCHIVES[(dataset, layout)]]


@pytest.mark.parametrize("layout", ["binary", "python"])
def test_cifar100_coarse_labels(tmp_path, layout):
    release = make_release("cifar100", num_train=200, num_test=100)
    write_archive(tmp_path, "cifar100", layout, release)
    train, test, names = read_official(str(tmp_path), "cifar100", label_type="coarse")
    np.testing.assert_array_equal(train.labels, release["train"]["coarse"])
    np.testing.assert_array_equal(test.labels, release["test"]["coarse"])
    assert names == tuple(COARSE_NAMES)

    data = load_dataset(files_config(tmp_path, "cifar100", label_type="coarse"))
    assert data.num_classes == 20 and data.class_names == tuple(COARSE_NAMES)


def test_pixel_layout_binary_record_written_by_hand(tmp_path):
    """One record built byte by byte: R, G, B planes of 32x32, row-major -> NHWC."""
    folder = write_folder(tmp_path, "cifar10", "binary", make_release("cifar10", 10, 10))
    record = bytearray(3073)
    record[0] = 7  # label
    offset = 1 * 32 + 2  # row 1, column 2
    record[1 + offset] = 11  # red plane
    record[1 + 1024 + offset] = 22  # green plane
    record[1 + 2048 + offset] = 33  # blue plane
    (folder / "test_batch.bin").write_bytes(bytes(record))

    _, test, _ = read_official(str(tmp_path), "cifar10")
    assert test.labels.tolist() == [7]
    assert test.images[0, 1, 2].tolist() == [11, 22, 33]
    assert test.images[0, 2, 1].tolist() == [0, 0, 0]
    assert int(test.images.sum()) == 11 + 22 + 33


def test_pixel_layout_python_row_written_by_hand(tmp_path):
    folder = write_folder(tmp_path, "cifar100", "python", make_release("cifar100", 100, 100))
    row = np.zeros((1, 3072), dtype=np.uint8)
    offset = 31 * 32 + 0  # row 31, column 0
    row[0, [offset, 1024 + offset, 2048 + offset]] = [200, 100, 50]
    batch = {b"data": row, b"fine_labels": [42], b"coarse_labels": [3]}
    (folder / "test").write_bytes(pickle.dumps(batch, protocol=2))

    _, test, _ = read_official(str(tmp_path), "cifar100")
    assert test.labels.tolist() == [42]
    assert test.images[0, 31, 0].tolist() == [200, 100, 50]
    assert int(test.images.sum()) == 350


def test_record_count_comes_from_the_file_size(tmp_path):
    """No hard-coded counts: the complete official files have 50,000/10,000 records."""
    write_folder(tmp_path, "cifar100", "binary", make_release("cifar100", 1234, 567))
    train, test, _ = read_official(str(tmp_path), "cifar100")
    assert (len(train), len(test)) == (1234, 567)


def test_extracted_folder_preferred_over_archive(tmp_path):
    release = make_release("cifar10", 50, 20, seed=1)
    write_folder(tmp_path, "cifar10", "python", release)
    write_archive(tmp_path, "cifar10", "binary", make_release("cifar10", 30, 10, seed=2))
    data = load_dataset(files_config(tmp_path))
    assert len(data.train) == 50
    assert data.source == f"CIFAR-10 python files under {tmp_path / 'cifar-10-batches-py'}"


# ------------------------------------------------------------------ bad files


def test_truncated_binary_file_names_the_file(tmp_path):
    folder = write_folder(tmp_path, "cifar10", "binary", make_release("cifar10", 50, 20))
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated") as info:
        read_official(str(tmp_path), "cifar10")
    assert str(path) in str(info.value)
    assert "cifar-10-binary.tar.gz" in str(info.value)  # the fix: where to get it again


def test_truncated_file_inside_archive_names_the_member(tmp_path):
    release = make_release("cifar100", 100, 100)
    staging = write_folder(tmp_path / "staging", "cifar100", "binary", release)
    (staging / "test.bin").write_bytes((staging / "test.bin").read_bytes()[:5000])
    archive = tmp_path / "data" / "cifar-100-binary.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging, arcname=staging.name)
    with pytest.raises(DataError, match="truncated") as info:
        read_official(str(archive.parent), "cifar100")
    assert f"cifar-100-binary/test.bin in {archive}" in str(info.value)


def test_binary_label_out_of_range(tmp_path):
    folder = write_folder(tmp_path, "cifar10", "binary", make_release("cifar10", 50, 20))
    path = folder / "data_batch_2.bin"
    raw = bytearray(path.read_bytes())
    raw[3 * 3073] = 10  # label byte of record 3
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"record 3 has label 10, outside 0\.\.9") as info:
        read_official(str(tmp_path), "cifar10")
    assert str(path) in str(info.value)


def test_python_label_out_of_range(tmp_path):
    folder = write_folder(tmp_path, "cifar100", "python", make_release("cifar100", 100, 100))
    batch = pickle.loads((folder / "train").read_bytes(), encoding="bytes")
    batch[b"coarse_labels"][5] = 20
    (folder / "train").write_bytes(pickle.dumps(batch, protocol=2))
    read_official(str(tmp_path), "cifar100", label_type="fine")  # fine labels still fine
    with pytest.raises(DataError, match="has label 20, outside 0..19") as info:
        read_official(str(tmp_path), "cifar100", label_type="coarse")
    assert str(folder / "train") in str(info.value)


def test_python_wrong_data_shape(tmp_path):
    folder = write_folder(tmp_path, "cifar10", "python", make_release("cifar10", 50, 20))
    batch = {b"data": np.zeros((4, 3000), np.uint8), b"labels": [0, 1, 2, 3]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"\(4, 3000\), expected uint8 \(N, 3072\)") as info:
        read_official(str(tmp_path), "cifar10")
    assert str(folder / "test_batch") in str(info.value)


def test_python_label_count_mismatch(tmp_path):
    folder = write_folder(tmp_path, "cifar10", "python", make_release("cifar10", 50, 20))
    batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="expected 4 integer labels"):
        read_official(str(tmp_path), "cifar10")


def test_pickle_with_foreign_objects_is_refused(tmp_path):
    """The official pickles hold only dicts, lists and arrays; anything else is refused."""
    folder = write_folder(tmp_path, "cifar10", "python", make_release("cifar10", 50, 20))
    (folder / "batches.meta").write_bytes(pickle.dumps(collections.OrderedDict(a=1)))
    with pytest.raises(DataError, match="refusing to load collections.OrderedDict") as info:
        read_official(str(tmp_path), "cifar10")
    assert str(folder / "batches.meta") in str(info.value)


@pytest.mark.parametrize("damage", ["garbage", "cut_short"])
def test_corrupt_archive(tmp_path, damage):
    archive = write_archive(tmp_path, "cifar10", "python", make_release("cifar10", 200, 50))
    raw = archive.read_bytes()
    archive.write_bytes(
        b"this is not a tar file" * 50 if damage == "garbage" else raw[: len(raw) // 2]
    )
    with pytest.raises(DataError, match="corrupt") as info:
        read_official(str(tmp_path), "cifar10")
    assert str(archive) in str(info.value)
    assert "cifar-10-python.tar.gz" in str(info.value)


def test_missing_member_in_folder(tmp_path):
    folder = write_folder(tmp_path, "cifar10", "python", make_release("cifar10", 50, 20))
    (folder / "data_batch_2").unlink()
    with pytest.raises(DataError, match="is missing") as info:
        read_official(str(tmp_path), "cifar10")
    assert str(folder / "data_batch_2") in str(info.value)


def test_missing_member_in_archive(tmp_path):
    staging = write_folder(
        tmp_path / "staging", "cifar100", "python", make_release("cifar100", 100, 100)
    )
    (staging / "test").unlink()
    archive = tmp_path / "data" / "cifar-100-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging, arcname=staging.name)
    with pytest.raises(DataError, match="has no member cifar-100-python/test") as info:
        read_official(str(archive.parent), "cifar100")
    assert str(archive) in str(info.value)


def test_wrong_number_of_class_names(tmp_path):
    folder = write_folder(tmp_path, "cifar10", "binary", make_release("cifar10", 50, 20))
    (folder / "batches.meta.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="lists 2 class names, expected 10"):
        read_official(str(tmp_path), "cifar10")


def test_files_source_never_downloads_and_lists_paths(tmp_path, monkeypatch):
    # A download would fail loudly here; "files" must not even try.
    monkeypatch.setenv("CIFAR_JAX_DOWNLOAD_URL_BASE", "http://127.0.0.1:9/")
    with pytest.raises(DataError) as info:
        load_dataset(files_config(tmp_path / "nothing_here"))
    message = str(info.value)
    for searched in ("cifar-10-batches-bin", "cifar-10-batches-py", "cifar-10-python.tar.gz"):
        assert str(tmp_path / "nothing_here" / searched) in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "CIFAR_JAX_DATA" in message and "data_dir" in message
    assert not (tmp_path / "nothing_here").exists()


def test_data_dir_holding_the_other_dataset(tmp_path):
    folder = write_folder(tmp_path, "cifar10", "binary", make_release("cifar10", 50, 20))
    with pytest.raises(DataError, match="set --config.dataset=cifar10"):
        load_dataset(files_config(folder, "cifar100"))


# ------------------------------------------------------------- load_dataset


def test_load_dataset_subset_val_and_max_train(tmp_path):
    release = make_release("cifar100", num_train=1000, num_test=300)
    write_archive(tmp_path, "cifar100", "binary", release)
    config = files_config(
        tmp_path, "cifar100", class_subset=20, val_examples=40, max_train_examples=100, seed=3
    )
    data = load_dataset(config)

    assert data.num_classes == 20 and data.class_names == tuple(FINE_NAMES[:20])
    assert len(data.val) == 40 and np.bincount(data.val.labels).tolist() == [2] * 20
    assert len(data.train) == 100 and np.bincount(data.train.labels).tolist() == [5] * 20
    keep = release["test"]["fine"] < 20
    np.testing.assert_array_equal(data.test.images, release["test"]["images"][keep])
    assert data.mean == channel_mean_std(data.train.images)[0]
    assert data.std == channel_mean_std(data.train.images)[1]
    assert data.source == f"CIFAR-100 binary archive {tmp_path / 'cifar-100-binary.tar.gz'}"

    again = load_dataset(config)
    np.testing.assert_array_equal(again.train.images, data.train.images)
    np.testing.assert_array_equal(again.val.images, data.val.images)


def test_load_dataset_without_val_and_max_larger_than_train(tmp_path):
    write_folder(tmp_path, "cifar10", "binary", make_release("cifar10", 50, 20))
    data = load_dataset(files_config(tmp_path, max_train_examples=10_000))
    assert data.val is None and len(data.train) == 50 and len(data.test) == 20


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dataset": "cifar1000"}, "dataset='cifar1000' is unknown"),
        ({"label_type": "coarse"}, "label_type='coarse' only exists for cifar100"),
        ({"label_type": "medium"}, "label_type='medium' is unknown"),
        ({"data_source": "web"}, "data_source='web' is unknown"),
        ({"class_subset": -1}, "class_subset=-1 must be a non-negative integer"),
        ({"val_examples": 50}, "val_examples=50 leaves no training data"),
    ],
)
def test_load_dataset_config_errors(tmp_path, overrides, message):
    write_folder(tmp_path, "cifar10", "binary", make_release("cifar10", 50, 20))
    with pytest.raises(ConfigError, match=message):
        load_dataset(files_config(tmp_path, **overrides))


def test_class_subset_bound_is_checked_before_any_file_is_read(tmp_path):
    """class_subset against the class count is the config validator's check; the folder
    holds no data at all, so a check after reading would fail differently."""
    config = files_config(tmp_path, "cifar100", label_type="coarse", class_subset=21)
    with pytest.raises(ConfigError, match="class_subset=21 but cifar100.*has only 20 classes"):
        validate_config(config)
    config = files_config(tmp_path, class_subset=11)
    with pytest.raises(ConfigError, match="class_subset=11 but cifar10"):
        validate_config(config)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, 50_000),
        ({"class_subset": 3}, 15_000),
        ({"dataset": "cifar100", "class_subset": 20}, 10_000),
        ({"dataset": "cifar100", "label_type": "coarse", "class_subset": 2}, 5_000),
        ({"data_source": "tfds", "dataset": "cifar100"}, 50_000),
        ({"allow_partial_train_files": True}, None),
        ({"allow_partial_train_files": True, "dataset": "cifar100"}, 50_000),
    ],
)
def test_expected_train_examples_from_the_source_definition(overrides, expected):
    config = base_config()
    config.update(overrides)
    assert expected_train_examples(config) == expected


@pytest.mark.parametrize(("count", "subset"), [(128, 0), (128, 3), (39, 7), (2048, 10)])
def test_expected_train_examples_matches_the_synthetic_data(count, subset):
    config = synthetic_config(synthetic_train_examples=count, class_subset=subset)
    assert expected_train_examples(config) == len(load_dataset(config).train)


# ------------------------------------------------------------------ synthetic


def synthetic_config(**overrides):
    config = base_config()
    config.data_source = "synthetic"
    config.data_dir = "/nonexistent/never/read"
    for key, value in overrides.items():
        config[key] = value
    return config


def test_synthetic_is_seeded_and_learnable():
    data = load_dataset(synthetic_config(seed=5))
    assert (len(data.train), len(data.test)) == (2048, 512)
    assert data.num_classes == 10 and data.source == "synthetic (random images, seed 5)"
    assert np.bincount(data.train.labels).min() >= 204

    same = load_dataset(synthetic_config(seed=5))
    other = load_dataset(synthetic_config(seed=6))
    np.testing.assert_array_equal(same.train.images, data.train.images)
    np.testing.assert_array_equal(same.test.labels, data.test.labels)
    assert not np.array_equal(other.train.images, data.train.images)

    # A nearest-class-mean classifier does far better than chance: there is signal.
    train_x = data.train.images.reshape(len(data.train), -1).astype(np.float32)
    means = np.stack([train_x[data.train.labels == k].mean(0) for k in range(10)])
    test_x = data.test.images.reshape(len(data.test), -1).astype(np.float32)
    distances = ((test_x[:, None, :] - means[None]) ** 2).sum(-1)
    accuracy = (distances.argmin(1) == data.test.labels).mean()
    assert accuracy > 0.9


def test_synthetic_cifar100_coarse_and_sizes():
    train, test, names = synthetic_data("cifar100", "coarse", 300, 40, seed=0)
    assert len(names) == 20 and set(np.unique(train.labels)) == set(range(20))
    assert (len(train), len(test)) == (300, 40)
    config = synthetic_config(dataset="cifar100", synthetic_test_examples=5, class_subset=50)
    data = load_dataset(config)  # a tiny test split may lack classes: still fine
    assert data.num_classes == 50 and data.test.labels.max() < 50


def test_synthetic_bad_sizes():
    with pytest.raises(ConfigError, match="synthetic_train_examples=0 must be positive"):
        load_dataset(synthetic_config(synthetic_train_examples=0))


# ----------------------------------------------------------------------- TFDS


def prepare_tfds(data_dir: Path, dataset: str, release: dict) -> None:
    """Prepare a tiny TFDS ``dataset`` in array_record format offline, without TensorFlow.

    The official builder's features and version, with examples from ``release`` instead of
    the download; images are given as PIL images, which TFDS encodes without TF.
    """
    import PIL.Image
    from tensorflow_datasets.image_classification import cifar

    base = cifar.Cifar10 if dataset == "cifar10" else cifar.Cifar100

    class Tiny(base, skip_registration=True):
        name = dataset

        def _split_generators(self, dl_manager):
            if dataset == "cifar10":
                self.info.features["label"].names = CIFAR10_NAMES
            else:
                self.info.features["label"].names = FINE_NAMES
                self.info.features["coarse_label"].names = COARSE_NAMES
            return {split: self._examples(release[split]) for split in ("train", "test")}

        def _examples(self, split):
            for i, (image, fine, coarse) in enumerate(
                zip(split["images"], split["fine"], split["coarse"], strict=True)
            ):
                example = {"id": str(i), "image": PIL.Image.fromarray(image), "label": int(fine)}
                if dataset == "cifar100":
                    example["coarse_label"] = int(coarse)
                yield i, example

    Tiny(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def as_sorted_pairs(images: np.ndarray, labels: np.ndarray) -> list:
    """TFDS shuffles examples when it prepares them: compare as sorted (image, label) pairs."""
    return sorted(zip([i.tobytes() for i in images], labels.tolist(), strict=True))


@pytest.mark.parametrize(("dataset", "label_type"), [("cifar10", "fine"), ("cifar100", "coarse")])
def test_tfds_array_record(tmp_path, monkeypatch, dataset, label_type):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # TFDS leaves empty temp dirs
    release = make_release(dataset, num_train=120, num_test=100)
    prepare_tfds(tmp_path, dataset, release)
    config = base_config()
    config.update(
        dataset=dataset, label_type=label_type, data_source="tfds", tfds_data_dir=str(tmp_path)
    )
    data = load_dataset(config)

    key = "coarse" if label_type == "coarse" else "fine"
    for split, expected in ((data.train, release["train"]), (data.test, release["test"])):
        assert as_sorted_pairs(split.images, split.labels) == as_sorted_pairs(
            expected["images"], expected[key]
        )
    names = {"cifar10": CIFAR10_NAMES, "cifar100": COARSE_NAMES}[dataset]
    assert data.class_names == tuple(names)
    assert data.source == f"TFDS {dataset} (array_record) in {tmp_path}"


@pytest.mark.parametrize("prepared", ["nothing", "other_dataset"])
def test_tfds_missing_dataset_is_a_clear_error(tmp_path, monkeypatch, prepared):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    if prepared == "other_dataset":
        prepare_tfds(tmp_path / "empty", "cifar100", make_release("cifar100", 100, 100))
        (tmp_path / "empty" / "cifar10").mkdir()  # a folder, but nothing prepared in it
    config = base_config()
    config.update(data_source="tfds", tfds_data_dir=str(tmp_path / "empty"))
    with pytest.raises(DataError) as info:
        load_dataset(config)
    message = str(info.value)
    assert "'cifar10'" in message and str(tmp_path / "empty") in message
    assert "array_record" in message and "tfds build cifar10" in message
    # TFDS was not allowed to download and prepare the data set itself.
    cifar10_dir = tmp_path / "empty" / "cifar10"
    assert not cifar10_dir.exists() or not any(cifar10_dir.iterdir())


# ------------------------------------------------------------------ real data


def test_real_cifar10(real_data_root):
    data_dir = real_data_root / "cifar10"
    data = load_dataset(files_config(data_dir))
    assert (len(data.train), len(data.test)) == (50_000, 10_000)
    assert np.bincount(data.train.labels).tolist() == [5000] * 10
    assert np.bincount(data.test.labels).tolist() == [1000] * 10
    assert data.class_names == tuple(CIFAR10_NAMES)
    np.testing.assert_allclose(data.mean, (0.4914, 0.4822, 0.4465), atol=1e-4)
    np.testing.assert_allclose(data.std, (0.2470, 0.2435, 0.2616), atol=1e-4)
    assert isinstance(data.train, ArraySplit) and data.train.images.flags.c_contiguous
    assert data.files == (
        "the complete official files (50,000 train + 10,000 test records, 5,000 + 1,000 of "
        "each of the 10 classes)"
    )  # and so nothing is added to the source line
    assert data.source == f"CIFAR-10 binary files under {data_dir / 'cifar-10-batches-bin'}"


def test_real_cifar100_mini(real_data_root):
    data_dir = real_data_root / "cifar100-mini"
    data = load_dataset(files_config(data_dir, "cifar100"))
    assert (len(data.train), len(data.test)) == (8000, 2000)
    assert data.num_classes == 100 and data.class_names[:3] == ("apple", "aquarium_fish", "baby")
    assert np.bincount(data.train.labels).tolist() == [80] * 100
    mini = (
        "fewer records than the official files: fine classes 0-99 (all 100), 80 train + 20 "
        "test records of each (8,000 train + 2,000 test records; the official files have "
        "500 + 100 of each of the 100)"
    )
    assert data.files == mini

    subset = load_dataset(files_config(data_dir, "cifar100", class_subset=20))
    assert subset.files == mini  # what the files hold, before the class subset
    assert set(np.unique(subset.train.labels)) == set(range(20))
    assert set(np.unique(subset.test.labels)) == set(range(20))
    assert (len(subset.train), len(subset.test)) == (1600, 400)

    coarse = load_dataset(files_config(data_dir, "cifar100", label_type="coarse"))
    assert coarse.num_classes == 20 and coarse.class_names[0] == "aquatic_mammals"
