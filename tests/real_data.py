"""Where the real-data tests find CIFAR, so that a fresh clone passes its tests.

In order: the project's ``shared/data`` beside the repository or
``$CIFAR_JAX_SHARED_DATA`` (this project's machines); otherwise a test-data folder built in
the user's data folder (``$CIFAR_JAX_DATA``, else ``~/.cache/cifar_jax``), as a training
run would look there:

* ``cifar10/cifar-10-batches-bin``: the official CIFAR-10 binary release found there
  (folder or archive), else downloaded once with the package's own checked download;
* ``cifar100-mini/cifar-100-binary``: the subset the tests expect, built from the official
  CIFAR-100 binary release (found or downloaded the same way): the first 100 images of every
  fine class of the training split in official order, the first 80 of each class to
  ``train.bin``, the last 20 to ``test.bin`` (``shared/data/README.md`` describes it).

No network is used where the data is already there.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import numpy as np

from cifar_jax.config import default_data_dir
from cifar_jax.data import download

RECORD_100 = 2 + 32 * 32 * 3  # coarse label, fine label, pixels
CIFAR10_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
CIFAR100_FILES = ["train.bin", "fine_label_names.txt", "coarse_label_names.txt"]


def shared_data_root() -> Path | None:
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "data"]
    if os.environ.get("CIFAR_JAX_SHARED_DATA"):
        candidates.append(Path(os.environ["CIFAR_JAX_SHARED_DATA"]))
    return next((root for root in candidates if root.is_dir()), None)


def _official(folder_name: str, files: list[str], dataset: str, data_dir: Path) -> Path:
    """The official binary folder under ``data_dir``: found, extracted from the archive
    found there, or downloaded (MD5-checked) and extracted."""
    folder = data_dir / folder_name
    if all((folder / f).is_file() for f in files):
        return folder
    archive = download.download_archive(dataset, "binary", str(data_dir))  # reuses one there
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(folder_name + "/")]
        try:
            tar.extractall(data_dir, members=members, filter="data")
        except TypeError:  # Python < 3.10.12 has no extraction filters
            tar.extractall(data_dir, members=members)  # noqa: S202 - official archive
    return folder


def build_cifar100_mini(
    official: Path, out: Path, per_class: int = 100, train_per_class: int = 80
) -> Path:
    """Writes the mini subset of an official ``cifar-100-binary`` folder into ``out``."""
    records = np.fromfile(official / "train.bin", np.uint8).reshape(-1, RECORD_100)
    index_in_class = np.zeros(len(records), np.int64)
    seen = np.zeros(256, np.int64)
    for i, fine in enumerate(records[:, 1]):
        index_in_class[i] = seen[fine]
        seen[fine] += 1
    target = out / "cifar-100-binary"
    target.mkdir(parents=True, exist_ok=True)
    records[index_in_class < train_per_class].tofile(target / ".train.bin.tmp")
    chosen = (index_in_class >= train_per_class) & (index_in_class < per_class)
    records[chosen].tofile(target / ".test.bin.tmp")
    for name in ("fine_label_names.txt", "coarse_label_names.txt"):
        shutil.copyfile(official / name, target / name)
    os.replace(target / ".test.bin.tmp", target / "test.bin")
    os.replace(target / ".train.bin.tmp", target / "train.bin")  # last: marks it complete
    return out


def build_test_data_root(data_dir: Path) -> Path:
    """``<data_dir>/test-data`` with ``cifar10/`` and ``cifar100-mini/`` as the tests use."""
    root = data_dir / "test-data"
    cifar10 = _official("cifar-10-batches-bin", CIFAR10_FILES, "cifar10", data_dir)
    link = root / "cifar10" / "cifar-10-batches-bin"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(cifar10.resolve(), target_is_directory=True)
    mini = root / "cifar100-mini"
    if not (mini / "cifar-100-binary" / "train.bin").is_file():
        build_cifar100_mini(
            _official("cifar-100-binary", CIFAR100_FILES, "cifar100", data_dir), mini
        )
    return root


def real_data_root() -> Path:
    return shared_data_root() or build_test_data_root(Path(default_data_dir()).expanduser())
