"""Read CIFAR-10/100 into memory, once, as uint8 NHWC arrays.

Sources, chosen by ``config.data_source`` (never silently):

* the official releases, python (pickled) or binary layout, as the ``.tar.gz`` archive or
  its extracted folder under ``config.data_dir`` (or ``data_dir`` being that folder);
  ``auto``/``download`` fetch the python archive when nothing is there, ``files`` never do;
* ``tfds``: a TFDS dataset prepared in array_record format, read with ``tfds.data_source``;
* ``synthetic``: seeded random images with a class-dependent pattern, for smoke tests.

Every reader checks what it reads (record sizes, shapes, label ranges, member files) and
raises :class:`DataError` naming the file, the problem and the fix.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import tarfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cifar_jax.data.download import DEFAULT_URL_BASE, archive_name, download_archive
from cifar_jax.data.splits import (
    IMAGE_SHAPE,
    ArraySplit,
    balanced_subset,
    channel_mean_std,
    stratified_split,
)
from cifar_jax.errors import ConfigError, DataError

DATASETS = ("cifar10", "cifar100")
LABEL_TYPES = ("fine", "coarse")
DATA_SOURCES = ("auto", "files", "download", "tfds", "synthetic")

_PRETTY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
_NUM_CLASSES = {("cifar10", "fine"): 10, ("cifar100", "fine"): 100, ("cifar100", "coarse"): 20}
_PIXELS = 32 * 32 * 3
_TFDS_CHUNK = 4096
_STREAM_SYNTHETIC = 3


@dataclasses.dataclass(frozen=True, eq=False)
class CifarData:
    """Everything training needs from the data: the splits and their description."""

    train: ArraySplit
    val: ArraySplit | None  # None when config.val_examples == 0
    test: ArraySplit
    num_classes: int  # after class_subset / label_type
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]  # per-channel mean of the final train split, in [0, 1]
    std: tuple[float, float, float]  # per-channel std of the final train split, in [0, 1]
    source: str  # human-readable origin of the images
    # What the official files read hold, against the official release: complete, a cut to
    # classes 0..k-1, or a subset (see describe_files); '' for synthetic and TFDS data.
    # Files lacking some classes (a cut) are also named in ``source`` (the "Data:" log line).
    files: str = ""


@dataclasses.dataclass(frozen=True)
class _Layout:
    """One official release layout: its folder and member files."""

    dataset: str
    kind: str  # "binary" or "python"
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    fine_names_file: str
    coarse_names_file: str | None

    def names_file(self, label_type: str) -> str:
        return self.coarse_names_file if label_type == "coarse" else self.fine_names_file

    def url(self) -> str:
        return DEFAULT_URL_BASE + archive_name(self.dataset, self.kind)


_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
# Search order within a data_dir: binary first (no unpickling), then python.
_LAYOUTS = (
    _Layout(
        "cifar10",
        "binary",
        "cifar-10-batches-bin",
        tuple(f + ".bin" for f in _CIFAR10_TRAIN),
        ("test_batch.bin",),
        "batches.meta.txt",
        None,
    ),
    _Layout(
        "cifar10",
        "python",
        "cifar-10-batches-py",
        _CIFAR10_TRAIN,
        ("test_batch",),
        "batches.meta",
        None,
    ),
    _Layout(
        "cifar100",
        "binary",
        "cifar-100-binary",
        ("train.bin",),
        ("test.bin",),
        "fine_label_names.txt",
        "coarse_label_names.txt",
    ),
    _Layout("cifar100", "python", "cifar-100-python", ("train",), ("test",), "meta", "meta"),
)


@dataclasses.dataclass(frozen=True)
class _Found:
    """An official release found on disk: an extracted folder or an archive."""

    layout: _Layout
    path: Path
    is_archive: bool

    def describe(self) -> str:
        what = "archive" if self.is_archive else "files under"
        return f"{_PRETTY[self.layout.dataset]} {self.layout.kind} {what} {self.path}"

    def where(self, member: str) -> str:
        """How to name a member file in messages."""
        if self.is_archive:
            return f"{self.layout.folder}/{member} in {self.path}"
        return str(self.path / member)


# ------------------------------------------------------------------ checks


def _check_dataset(dataset: str, label_type: str) -> int:
    """Number of classes of (dataset, label_type); ConfigError for unknown values."""
    if dataset not in DATASETS:
        raise ConfigError(
            f"dataset={dataset!r} is unknown; set --config.dataset to one of {DATASETS}"
        )
    if label_type not in LABEL_TYPES:
        raise ConfigError(
            f"label_type={label_type!r} is unknown; set --config.label_type to one of {LABEL_TYPES}"
        )
    if (dataset, label_type) not in _NUM_CLASSES:
        raise ConfigError(
            f"label_type={label_type!r} only exists for cifar100 (its 20 superclasses); "
            f"use --config.label_type=fine with dataset={dataset!r}"
        )
    return _NUM_CLASSES[(dataset, label_type)]


def num_classes(dataset: str, label_type: str) -> int:
    """The classes of (dataset, label_type); ConfigError for unknown values."""
    return _check_dataset(dataset, label_type)


# Training images per class in the official releases (TFDS holds the same images); the
# synthetic source deals its labels out round-robin (see synthetic_data).
_TRAIN_PER_CLASS = {("cifar10", "fine"): 5000, ("cifar100", "fine"): 500}
_TRAIN_PER_CLASS[("cifar100", "coarse")] = 2500
# Test images per class in the official releases.
_TEST_PER_CLASS = {("cifar10", "fine"): 1000, ("cifar100", "fine"): 100}
_TEST_PER_CLASS[("cifar100", "coarse")] = 500


def expected_train_examples(config) -> int | None:
    """The training images the config's source holds (after class_subset, before the
    validation split), from the source's definition, without reading a file: so the config
    validator can reject a too-large val_examples or batch_size before any data is read.

    None when only the files can tell: CIFAR-10 with ``allow_partial_train_files`` (which
    batch files are there). :func:`load_dataset` checks the images actually read too, for
    files that hold fewer images than the official release.
    """
    classes = _check_dataset(config.dataset, config.label_type)
    subset = int(config.class_subset) or classes
    if config.data_source == "synthetic":
        count = int(config.synthetic_train_examples)
        # Labels are a permutation of arange(count) % classes: count those below subset.
        return subset * (count // classes) + min(count % classes, subset)
    if config.dataset == "cifar10" and config.get("allow_partial_train_files", False):
        return None
    return subset * _TRAIN_PER_CLASS[(config.dataset, config.label_type)]


def held_train_examples(config) -> int | None:
    """The training images the config's data really holds (after class_subset, before the
    validation split), counted in the files under ``data_dir``: a folder may hold fewer
    than the official release (e.g. the CIFAR-100 mini subset), which
    :func:`expected_train_examples` cannot see without reading it.

    The source's definition for synthetic and TFDS data; None when no release of the
    dataset is under ``data_dir`` yet (a run would download the official one). Reads the
    training files once: call it once per data folder, not per run.
    """
    dataset, label_type = config.dataset, config.label_type
    classes = _check_dataset(dataset, label_type)
    if config.data_source in ("synthetic", "tfds"):
        return expected_train_examples(config)
    if not config.data_dir:
        return None
    found, _ = _find_official(config.data_dir, dataset)
    if found is None:
        return None
    train, test, _, _ = _read_found(
        found, label_type, bool(config.get("allow_partial_train_files", False))
    )
    subset = int(config.class_subset) or classes
    # Files that lack classes the config asks for are refused here as load_dataset does.
    held = describe_files(dataset, label_type, train, test)
    check_classes_held(held, int(config.class_subset), found.describe())
    return int(np.count_nonzero(train.labels < subset))


# ------------------------------------------------------- what the files hold


@dataclasses.dataclass(frozen=True)
class FilesHeld:
    """What official-layout files hold, against the official release.

    ``kind``: "complete" (every class, each with the official record count in both
    splits), "cut" (only classes 0..k-1, each complete: the official files with every
    record of a class >= k removed), or "subset" (anything else: fewer records per class,
    as the CIFAR-100 mini subset or CIFAR-10 with allow_partial_train_files, or classes
    that are not 0..k-1). ``text`` says it in words, for the log and results.json.
    """

    kind: str
    text: str
    dataset: str
    label_type: str
    train_counts: np.ndarray  # training records per class (label)
    test_counts: np.ndarray  # test records per class (label)

    @property
    def lacks_classes(self) -> bool:
        """Some class of the data set has no record in either split (a class-subset cut)."""
        return bool(np.any((self.train_counts == 0) & (self.test_counts == 0)))


def _ranges(classes: Sequence[int]) -> str:
    """Sorted class numbers as runs: [0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    runs: list[list[int]] = []
    for c in map(int, classes):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _class_word(dataset: str, label_type: str, count: int) -> str:
    word = "class" if count == 1 else "classes"
    return word if dataset == "cifar10" else f"{label_type} {word}"


def _per_class(counts: np.ndarray) -> str:
    low, high = int(counts.min()), int(counts.max())
    return f"{low:,}" if low == high else f"{low:,}-{high:,}"


def describe_files(dataset: str, label_type: str, train: ArraySplit, test: ArraySplit) -> FilesHeld:
    """What the train and test splits read from official-layout files hold, counted per
    class (``label_type``'s labels) against the official release (CIFAR-10: 5,000 + 1,000
    records per class; CIFAR-100: 500 + 100 per fine class, 2,500 + 500 per coarse one)."""
    classes = _NUM_CLASSES[(dataset, label_type)]
    train_counts = np.bincount(train.labels, minlength=classes)
    test_counts = np.bincount(test.labels, minlength=classes)
    per_train = _TRAIN_PER_CLASS[(dataset, label_type)]
    per_test = _TEST_PER_CLASS[(dataset, label_type)]
    present = np.flatnonzero((train_counts > 0) | (test_counts > 0))
    k = len(present)
    records = f"{len(train):,} train + {len(test):,} test records"
    prefix = k > 0 and int(present[-1]) == k - 1  # exactly the classes 0..k-1
    official = bool(
        np.all(train_counts[present] == per_train) and np.all(test_counts[present] == per_test)
    )
    if prefix and official and k == classes:
        text = (
            f"the complete official files ({records}, {per_train:,} + {per_test:,} of each of "
            f"the {classes} {_class_word(dataset, label_type, classes)})"
        )
        return FilesHeld("complete", text, dataset, label_type, train_counts, test_counts)
    if prefix and official:
        text = (
            f"the official files cut to {_class_word(dataset, label_type, k)} "
            f"{_ranges(present)} ({records}; complete for those classes)"
        )
        return FilesHeld("cut", text, dataset, label_type, train_counts, test_counts)
    which = f"all {classes}" if k == classes else f"{k} of {classes}"
    text = (
        f"fewer records than the official files: {_class_word(dataset, label_type, k)} "
        f"{_ranges(present)} ({which}), {_per_class(train_counts[present])} train + "
        f"{_per_class(test_counts[present])} test records of each ({records}; the official "
        f"files have {per_train:,} + {per_test:,} of each of the {classes})"
    )
    return FilesHeld("subset", text, dataset, label_type, train_counts, test_counts)


def check_classes_held(held: FilesHeld, class_subset: int, where: str) -> None:
    """DataError when the files have no training records of a class the config uses
    (labels ``0..class_subset-1``; ``class_subset`` 0 = all): e.g. a folder cut to
    CIFAR-100's fine classes 0-19 read with class_subset=0 or 30. Labels are never
    renumbered, so files holding other classes (say 20-39) cannot stand in for 0-19."""
    classes = len(held.train_counts)
    wanted = class_subset or classes
    missing = np.flatnonzero(held.train_counts[:wanted] == 0)
    if not missing.size:
        return
    dataset, label_type = held.dataset, held.label_type
    asked = (
        f"class_subset={class_subset} (all {classes} {_class_word(dataset, label_type, 2)})"
        if not class_subset
        else f"class_subset={class_subset} ({_class_word(dataset, label_type, wanted)} "
        f"{_ranges(range(wanted))})"
    )
    # The classes 0..j-1 the files hold from 0 (j = 0: not even class 0).
    j = int(np.argmin(held.train_counts > 0)) if np.any(held.train_counts == 0) else classes
    fix = f"point --config.data_dir at the complete official {_PRETTY[dataset]} files"
    if j:
        fix += f", or set --config.class_subset to {j} or less"
    else:
        fix += (
            f" (labels are never renumbered: these files cannot stand in for "
            f"{_class_word(dataset, label_type, wanted)} {_ranges(range(wanted))})"
        )
    raise DataError(
        f"{where}: {held.text}. There are no training images of "
        f"{_class_word(dataset, label_type, missing.size)} {_ranges(missing)}, but the config "
        f"asks for {asked}. To train on those classes, {fix}"
    )


def _check_labels(labels: np.ndarray, num_classes: int, where: str, fix: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(
            f"{where}: record {bad[0]} has label {labels[bad[0]]}, outside 0..{num_classes - 1} "
            f"({bad.size} bad labels in the file): the file is corrupt or not the official one. "
            f"{fix}"
        )


def _replace_fix(layout: _Layout) -> str:
    return (
        f"Replace it with the official file from {layout.url()} (delete the folder or archive "
        "and let data_source=auto download it again)"
    )


# ---------------------------------------------------------------- parsing


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the official CIFAR pickles hold (dicts, lists, numpy arrays).

    ``pickle.load`` on a downloaded file would run whatever code the file names; this
    refuses every global outside numpy's array reconstruction.
    """

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core.") :]  # NumPy 2 moved it
        return super().find_class(module, name)


def _unpickle(raw: bytes, where: str, fix: str) -> dict:
    try:
        obj = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # any unpickling failure means a bad file
        raise DataError(f"{where}: cannot be unpickled ({e}). {fix}") from e
    if not isinstance(obj, dict):
        raise DataError(f"{where}: holds a {type(obj).__name__}, expected a dict. {fix}")
    return obj


def _planes_to_nhwc(rows: Sequence[np.ndarray]) -> np.ndarray:
    """(n, 3072) rows of R, G, B planes (each 32x32 row-major) -> one (N, 32, 32, 3) array."""
    images = np.empty((sum(r.shape[0] for r in rows), *IMAGE_SHAPE), dtype=np.uint8)
    start = 0
    for r in rows:
        images[start : start + r.shape[0]] = r.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        start += r.shape[0]
    return images


def _parse_binary(
    files: Sequence[tuple[str, bytes]], layout: _Layout, label_type: str
) -> ArraySplit:
    """Records of ``header`` label bytes + 3072 pixel bytes (R, G, B planes, row-major)."""
    header = 1 if layout.dataset == "cifar10" else 2  # CIFAR-100: coarse byte, fine byte
    label_col = 0 if layout.dataset == "cifar10" or label_type == "coarse" else 1
    record = header + _PIXELS
    num_classes = _NUM_CLASSES[(layout.dataset, label_type)]
    fix = _replace_fix(layout)
    rows = []
    for where, raw in files:
        if not raw or len(raw) % record:
            raise DataError(
                f"{where}: {len(raw)} bytes is not a whole number of {record}-byte "
                f"{_PRETTY[layout.dataset]} records: the file is truncated or not a "
                f"{_PRETTY[layout.dataset]} binary file. {fix}"
            )
        rows.append(np.frombuffer(raw, dtype=np.uint8).reshape(-1, record))
        _check_labels(rows[-1][:, label_col], num_classes, where, fix)
    labels = np.concatenate([r[:, label_col] for r in rows]).astype(np.int32)
    images = _planes_to_nhwc([r[:, header:] for r in rows])
    return ArraySplit(images=images, labels=labels)


def _parse_python(
    files: Sequence[tuple[str, bytes]], layout: _Layout, label_type: str
) -> ArraySplit:
    """Pickled dicts with b'data' (N, 3072) uint8 rows and the label list."""
    if layout.dataset == "cifar10":
        key = b"labels"
    else:
        key = b"coarse_labels" if label_type == "coarse" else b"fine_labels"
    num_classes = _NUM_CLASSES[(layout.dataset, label_type)]
    fix = _replace_fix(layout)
    images, labels = [], []
    for where, raw in files:
        batch = _unpickle(raw, where, fix)
        if b"data" not in batch or key not in batch:
            raise DataError(
                f"{where}: has keys {sorted(batch)}, expected b'data' and {key!r}: not a "
                f"{_PRETTY[layout.dataset]} python batch. {fix}"
            )
        data = np.asarray(batch[b"data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
            raise DataError(
                f"{where}: b'data' is {data.dtype} {data.shape}, expected uint8 (N, {_PIXELS}) "
                f"rows of 32x32 RGB images. {fix}"
            )
        batch_labels = np.asarray(batch[key])
        if batch_labels.shape != (data.shape[0],) or not np.issubdtype(
            batch_labels.dtype, np.integer
        ):
            raise DataError(
                f"{where}: {key!r} is {batch_labels.dtype} {batch_labels.shape}, expected "
                f"{data.shape[0]} integer labels (one per image). {fix}"
            )
        _check_labels(batch_labels, num_classes, where, fix)
        images.append(data)
        labels.append(batch_labels.astype(np.int32))
    return ArraySplit(images=_planes_to_nhwc(images), labels=np.concatenate(labels))


def _parse_names(raw: bytes, found: _Found, label_type: str) -> tuple[str, ...]:
    layout = found.layout
    member = layout.names_file(label_type)
    where = found.where(member)
    fix = _replace_fix(layout)
    if layout.kind == "binary":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: not a text file of class names ({e}). {fix}") from e
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
    else:
        key = {
            "cifar10": b"label_names",
            "fine": b"fine_label_names",
            "coarse": b"coarse_label_names",
        }["cifar10" if layout.dataset == "cifar10" else label_type]
        meta = _unpickle(raw, where, fix)
        if key not in meta:
            raise DataError(f"{where}: has keys {sorted(meta)}, expected {key!r}. {fix}")
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[key])
    expected = _NUM_CLASSES[(layout.dataset, label_type)]
    if len(names) != expected:
        raise DataError(f"{where}: lists {len(names)} class names, expected {expected}. {fix}")
    return names


# ---------------------------------------------------------------- finding


def _looks_like(folder: Path, layout: _Layout) -> bool:
    return (folder / layout.test_files[0]).is_file() and (folder / layout.fine_names_file).is_file()


def _find_official(data_dir: str, dataset: str) -> tuple[_Found | None, list[Path]]:
    """The first official release of ``dataset`` under ``data_dir``, and the paths searched.

    Order: ``data_dir`` itself being an extracted folder, extracted folders inside it, then
    archives (extracted folders first: they are faster to read).
    """
    root = Path(data_dir).expanduser()
    layouts = [layout for layout in _LAYOUTS if layout.dataset == dataset]
    if root.is_dir():
        for layout in _LAYOUTS:
            if root.name == layout.folder or _looks_like(root, layout):
                if layout.dataset != dataset:
                    raise DataError(
                        f"{root} holds {_PRETTY[layout.dataset]} ({layout.folder}) but the "
                        f"config asks for dataset={dataset!r}; set --config.dataset="
                        f"{layout.dataset}, or point --config.data_dir at the folder holding "
                        f"the {_PRETTY[dataset]} files"
                    )
                return _Found(layout, root, is_archive=False), [root]
    searched = []
    for layout in layouts:
        folder = root / layout.folder
        searched.append(folder)
        if folder.is_dir():
            return _Found(layout, folder, is_archive=False), searched
    for layout in layouts:
        archive = root / archive_name(dataset, layout.kind)
        searched.append(archive)
        if archive.is_file():
            return _Found(layout, archive, is_archive=True), searched
    return None, searched


def _missing_message(data_dir: str, dataset: str, searched: Sequence[Path]) -> str:
    urls = [layout.url() for layout in _LAYOUTS if layout.dataset == dataset]
    return (
        f"no {_PRETTY[dataset]} data found under {data_dir} (searched: "
        f"{', '.join(str(p) for p in searched)}). Download {' or '.join(urls)} and put the "
        "archive (or its extracted folder) there, or set --config.data_dir (or "
        "$CIFAR_JAX_DATA) to the folder that holds it, or use --config.data_source=auto to "
        "download it automatically"
    )


def _read_archive_members(
    found: _Found, members: Sequence[str], optional: frozenset[str] = frozenset()
) -> dict[str, bytes]:
    """Read the wanted members straight from the tar (one streaming pass, nothing extracted).

    A missing member is an error unless it is in ``optional`` (then it is left out)."""
    layout = found.layout
    wanted = {f"{layout.folder}/{m}": m for m in members}
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(found.path, mode="r|*") as tar:
            for info in tar:
                member = wanted.get(info.name.removeprefix("./"))
                if member is None or not info.isfile():
                    continue
                fileobj = tar.extractfile(info)
                assert fileobj is not None
                contents[member] = fileobj.read()
                if len(contents) == len(wanted):
                    break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{found.path}: not a readable .tar.gz archive ({e}); it is corrupt or was cut "
            f"short. Delete it and download it again from {layout.url()}"
        ) from e
    for name, member in wanted.items():
        if member not in contents and member not in optional:
            raise DataError(
                f"{found.path}: has no member {name}, so it is not the official "
                f"{_PRETTY[layout.dataset]} {layout.kind} archive. Delete it and download "
                f"{layout.url()}"
            )
    return contents


def _read_folder_members(
    found: _Found, members: Sequence[str], optional: frozenset[str] = frozenset()
) -> dict[str, bytes]:
    """Read the member files; a missing one is an error unless it is in ``optional``."""
    layout = found.layout
    contents = {}
    for member in members:
        path = found.path / member
        try:
            contents[member] = path.read_bytes()
        except FileNotFoundError:
            if member in optional:
                continue
            partial = (
                " (or set --config.allow_partial_train_files=true to train on the training "
                "files that are there)"
                if member in layout.train_files and len(layout.train_files) > 1
                else ""
            )
            raise DataError(
                f"{path} is missing: {found.path} is not a complete {_PRETTY[layout.dataset]} "
                f"{layout.kind} folder (it needs {', '.join(members)}). Extract the official "
                f"archive again ({layout.url()}), or delete the folder and let "
                f"data_source=auto download the data{partial}"
            ) from None
        except OSError as e:
            raise DataError(
                f"{path}: cannot be read ({e}). Check the file and its permissions"
            ) from e
    return contents


def _read_found(
    found: _Found, label_type: str, allow_partial_train: bool = False
) -> tuple[ArraySplit, ArraySplit, tuple[str, ...], str]:
    """(train, test, class names, note): ``note`` names the training files read when
    ``allow_partial_train`` let some of CIFAR-10's five be missing ('' otherwise)."""
    layout = found.layout
    names_file = layout.names_file(label_type)
    members = list(dict.fromkeys(layout.train_files + layout.test_files + (names_file,)))
    optional = frozenset(layout.train_files) if allow_partial_train else frozenset()
    read = _read_archive_members if found.is_archive else _read_folder_members
    contents = read(found, members, optional)
    train_files = [m for m in layout.train_files if m in contents]
    if not train_files:
        raise DataError(
            f"{found.describe()} has none of the training files {', '.join(layout.train_files)}; "
            f"allow_partial_train_files needs at least one of them. Copy one there, or extract "
            f"the official archive again ({layout.url()})"
        )
    note = ""
    if len(train_files) < len(layout.train_files):
        note = f" (partial: training files {', '.join(train_files)} only)"
    parse: Callable[..., ArraySplit] = _parse_binary if layout.kind == "binary" else _parse_python
    names = _parse_names(contents[names_file], found, label_type)
    train = parse([(found.where(m), contents.pop(m)) for m in train_files], layout, label_type)
    test = parse([(found.where(m), contents.pop(m)) for m in layout.test_files], layout, label_type)
    return train, test, names, note


def read_official(
    data_dir: str, dataset: str, label_type: str = "fine", allow_partial_train: bool = False
) -> tuple[ArraySplit, ArraySplit, tuple[str, ...]]:
    """Read an official CIFAR release (either layout, archive or folder) under ``data_dir``.

    Returns ``(train, test, class_names)``. Never downloads: raises DataError listing the
    paths searched when nothing is there. ``allow_partial_train``: read the CIFAR-10
    training batch files that are there (at least one) instead of failing on a missing one.
    """
    _check_dataset(dataset, label_type)
    found, searched = _find_official(data_dir, dataset)
    if found is None:
        raise DataError(_missing_message(data_dir, dataset, searched))
    train, test, names, _ = _read_found(found, label_type, allow_partial_train)
    return train, test, names


# ------------------------------------------------------------ other sources


def read_tfds(
    dataset: str, label_type: str = "fine", tfds_data_dir: str = ""
) -> tuple[ArraySplit, ArraySplit, tuple[str, ...]]:
    """Read a TFDS dataset prepared in array_record format (``tfds.data_source``, no TF)."""
    num_classes = _check_dataset(dataset, label_type)
    where = tfds_data_dir or "TFDS's default data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    fix = (
        "tfds.data_source only reads datasets prepared in array_record format; prepare it "
        f"where TensorFlow is installed with `tfds build {dataset} --file_format=array_record "
        "--data_dir=DIR`, copy DIR here and set --config.tfds_data_dir=DIR, or use "
        "--config.data_source=auto to read the official files instead"
    )
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"data_source='tfds' needs tensorflow-datasets ({e}); pip install it"
        ) from e
    if tfds_data_dir and not (Path(tfds_data_dir).expanduser() / dataset).is_dir():
        raise DataError(
            f"no prepared TFDS dataset {dataset!r} in {tfds_data_dir} (no {dataset}/ folder "
            f"there). {fix}"
        )
    label_key = "coarse_label" if label_type == "coarse" else "label"
    splits = []
    names: tuple[str, ...] = ()
    for split in ("train", "test"):
        what = f"TFDS dataset {dataset!r} split {split!r} in {where}"
        try:
            # download=False: never let TFDS fetch and build the data set behind our back.
            source = tfds.data_source(
                dataset, split=split, data_dir=tfds_data_dir or None, download=False
            )
            count = len(source)
            names = tuple(source.dataset_info.features[label_key].names)
            images = np.empty((count, *IMAGE_SHAPE), dtype=np.uint8)
            labels = np.empty(count, dtype=np.int32)
            for start in range(0, count, _TFDS_CHUNK):
                keys = list(range(start, min(start + _TFDS_CHUNK, count)))
                for i, example in zip(keys, source.__getitems__(keys), strict=True):
                    image = np.asarray(example["image"])
                    if image.shape != IMAGE_SHAPE or image.dtype != np.uint8:
                        raise DataError(
                            f"{what}: example {i} has a {image.dtype} {image.shape} image, "
                            "expected uint8 (32, 32, 3); it is not a CIFAR dataset"
                        )
                    images[i] = image
                    labels[i] = example[label_key]
        except DataError:
            raise
        except Exception as e:  # tfds raises many types; all mean "cannot use it"
            message = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise DataError(f"cannot read {what}: {type(e).__name__}: {message}. {fix}") from e
        if len(names) != num_classes:
            raise DataError(f"{what}: has {len(names)} {label_key} classes, expected {num_classes}")
        _check_labels(labels, num_classes, what, fix)
        splits.append(ArraySplit(images=images, labels=labels))
    return splits[0], splits[1], names


def synthetic_data(
    dataset: str, label_type: str, num_train: int, num_test: int, seed: int
) -> tuple[ArraySplit, ArraySplit, tuple[str, ...]]:
    """Seeded random images: a blocky per-class colour pattern plus noise.

    For smoke tests without real data; the class pattern lets a model learn something,
    so a run can show that the loss goes down.
    """
    num_classes = _check_dataset(dataset, label_type)
    for name, value in (
        ("synthetic_train_examples", num_train),
        ("synthetic_test_examples", num_test),
    ):
        if value <= 0:
            raise ConfigError(f"{name}={value} must be positive; set --config.{name}")
    rng = np.random.default_rng(
        np.random.SeedSequence([_STREAM_SYNTHETIC, int(seed) & (2**64 - 1)])
    )
    # One 4x4 colour grid per class, blown up to 32x32.
    patterns = rng.integers(0, 256, size=(num_classes, 4, 4, 3), dtype=np.int16)
    patterns = patterns.repeat(8, axis=1).repeat(8, axis=2)

    def make(count: int) -> ArraySplit:
        labels = rng.permutation(np.arange(count) % num_classes).astype(np.int32)
        images = np.empty((count, *IMAGE_SHAPE), dtype=np.uint8)
        for start in range(0, count, 1024):
            part = labels[start : start + 1024]
            noise = rng.integers(-96, 97, size=(part.shape[0], *IMAGE_SHAPE), dtype=np.int16)
            images[start : start + 1024] = np.clip(patterns[part] // 2 + 64 + noise, 0, 255)
        return ArraySplit(images=images, labels=labels)

    names = tuple(f"class_{k}" for k in range(num_classes))
    return make(num_train), make(num_test), names


# -------------------------------------------------------------- the entry


def _non_negative_int(config, field: str) -> int:
    value = config[field]
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ConfigError(f"{field}={value!r} must be a non-negative integer; set --config.{field}")
    return int(value)


def _load_source(
    config, dataset: str, label_type: str, class_subset: int
) -> tuple[ArraySplit, ArraySplit, tuple[str, ...], str, str]:
    """(train, test, class names, source, files): ``files`` describes what official files
    hold (describe_files; '' for synthetic and TFDS data). Official files without a class
    ``class_subset`` asks for are refused (check_classes_held)."""
    data_source = config.data_source
    if data_source not in DATA_SOURCES:
        raise ConfigError(
            f"data_source={data_source!r} is unknown; set --config.data_source to one of "
            f"{DATA_SOURCES}"
        )
    if data_source == "synthetic":
        seed = int(config.seed)
        train, test, names = synthetic_data(
            dataset,
            label_type,
            int(config.synthetic_train_examples),
            int(config.synthetic_test_examples),
            seed,
        )
        return train, test, names, f"synthetic (random images, seed {seed})", ""
    if data_source == "tfds":
        train, test, names = read_tfds(dataset, label_type, config.tfds_data_dir)
        where = config.tfds_data_dir or "the default TFDS data dir"
        return train, test, names, f"TFDS {dataset} (array_record) in {where}", ""
    data_dir = config.data_dir
    if not data_dir:
        raise ConfigError("data_dir is empty; set --config.data_dir (or $CIFAR_JAX_DATA)")
    found, searched = _find_official(data_dir, dataset)
    note = ""
    if found is None:
        if data_source == "files":
            raise DataError(_missing_message(data_dir, dataset, searched))
        layout = next(x for x in _LAYOUTS if x.dataset == dataset and x.kind == "python")
        path = download_archive(dataset, "python", data_dir)
        found, note = _Found(layout, Path(path), is_archive=True), " (downloaded)"
    train, test, names, partial = _read_found(
        found, label_type, bool(config.get("allow_partial_train_files", False))
    )
    held = describe_files(dataset, label_type, train, test)
    check_classes_held(held, class_subset, found.describe())
    source = found.describe() + partial + note
    # Files cut to some of the classes read like the complete files for those classes: say
    # so wherever source is shown (the run's "Data:" line, results.json, reports).
    if held.lacks_classes:
        source += f"; {held.text}"
    return train, test, names, source, held.text


def load_dataset(config) -> CifarData:
    """Load the data set the config describes, with its class subset, validation split,
    training subset and normalisation statistics.

    ``config`` is an ``ml_collections.ConfigDict`` with the fields of
    :func:`cifar_jax.config_lib.base_config`.
    """
    dataset, label_type = config.dataset, config.label_type
    _check_dataset(dataset, label_type)
    num_subset = _non_negative_int(config, "class_subset")
    val_examples = _non_negative_int(config, "val_examples")
    max_train = _non_negative_int(config, "max_train_examples")
    seed = int(config.seed)
    # class_subset <= num_classes, and val_examples against the source's definition, are
    # checked by validation.validate_config before any data is read.
    train, test, names, source, files = _load_source(config, dataset, label_type, num_subset)
    if num_subset:
        # Checked against the class count by validate_config, not against the labels present (a tiny
        # synthetic split may lack some classes), so not via class_subset(); official files
        # without a training image of a class asked for were refused by _load_source.
        train, test = (s.take(np.flatnonzero(s.labels < num_subset)) for s in (train, test))
        names = names[:num_subset]
    val = None
    if val_examples:
        # Checked again on the images read: files may hold fewer than the official release
        # (or, with allow_partial_train_files, only the batch files present tell).
        if val_examples >= len(train):
            raise ConfigError(
                f"val_examples={val_examples} leaves no training data: the training split has "
                f"{len(train)} examples; set --config.val_examples below {len(train)}"
            )
        train, val = stratified_split(train, val_examples, seed)
    # A maximum: a split already that small is used whole.
    if max_train and max_train < len(train):
        train = balanced_subset(train, max_train, seed)
    mean, std = channel_mean_std(train.images)
    return CifarData(
        train=train,
        val=val,
        test=test,
        num_classes=len(names),
        class_names=names,
        mean=mean,
        std=std,
        source=source,
        files=files,
    )
