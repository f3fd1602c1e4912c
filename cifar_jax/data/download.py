"""Download of the official CIFAR archives, checked and written atomically.

The archive is streamed into a temporary file next to its final name, its MD5 compared
with the published checksum, and only then renamed into place with ``os.replace``: an
interrupted or corrupt download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from cifar_jax.errors import ConfigError, DataError

DEFAULT_URL_BASE = "https://www.cs.toronto.edu/~kriz/"
# Overrides DEFAULT_URL_BASE, e.g. for a mirror that serves the same files.
URL_BASE_ENV = "CIFAR_JAX_DOWNLOAD_URL_BASE"
LAYOUTS = ("python", "binary")

# (dataset, layout) -> (archive file name, published MD5).
ARCHIVES = {
    ("cifar10", "python"): ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    ("cifar100", "python"): ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
    ("cifar10", "binary"): ("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),
    ("cifar100", "binary"): ("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8"),
}

_CHUNK = 1 << 20
_TIMEOUT_S = 60


def archive_name(dataset: str, layout: str) -> str:
    """File name of the official archive, e.g. ``cifar-10-python.tar.gz``."""
    try:
        return ARCHIVES[(dataset, layout)][0]
    except KeyError:
        raise ConfigError(
            f"no official archive for dataset={dataset!r}, layout={layout!r}; dataset must be "
            f"'cifar10' or 'cifar100' and layout one of {LAYOUTS}"
        ) from None


def archive_url(dataset: str, layout: str) -> str:
    """Where the archive is downloaded from: ``$CIFAR_JAX_DOWNLOAD_URL_BASE`` or Toronto."""
    base = os.environ.get(URL_BASE_ENV) or DEFAULT_URL_BASE
    return base.rstrip("/") + "/" + archive_name(dataset, layout)


def _fetch(url: str, out, fix: str, show_progress: bool) -> str:
    """Stream ``url`` into the open file ``out``; returns the MD5 hex digest."""
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(
                total=expected,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"Downloading {url.rsplit('/', 1)[-1]}",
                disable=not show_progress,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DataError(f"downloading {url} failed: HTTP {e.code} {e.reason}. {fix}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"downloading {url} failed: {reason}. {fix}") from e
    if expected is not None and received != expected:
        raise DataError(f"downloading {url} stopped after {received} of {expected} bytes. {fix}")
    return digest.hexdigest()


def download_archive(
    dataset: str,
    layout: str,
    data_dir: str,
    url: str | None = None,
    md5: str | None = None,
    *,
    show_progress: bool = True,
) -> str:
    """Download the official ``dataset`` archive in ``layout`` into ``data_dir``.

    Returns the archive path. An archive already in place is reused (it can only have got
    there complete and checked, or been put there by the user). ``url``/``md5`` default to
    the official (or ``$CIFAR_JAX_DOWNLOAD_URL_BASE`` mirror) URL and published checksum.
    """
    name = archive_name(dataset, layout)
    url = url or archive_url(dataset, layout)
    md5 = (md5 or ARCHIVES[(dataset, layout)][1]).lower()
    folder = Path(data_dir).expanduser()
    dest = folder / name
    if dest.is_file():
        return str(dest)
    fix = (
        f"Check the network (or set ${URL_BASE_ENV} to a mirror), or download {name} "
        f"yourself from {DEFAULT_URL_BASE}{name} and put it in {folder} "
        "(or set --config.data_dir / $CIFAR_JAX_DATA to the folder holding it)"
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    except OSError as e:
        raise DataError(
            f"cannot write the download to {folder}: {e}. Set --config.data_dir (or "
            "$CIFAR_JAX_DATA) to a writable folder"
        ) from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _fetch(url, out, fix, show_progress)
        if actual != md5:
            raise DataError(
                f"downloaded {url} has MD5 {actual}, expected {md5}: the file is corrupt or "
                f"not the official archive; it was deleted. {fix}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return str(dest)
