"""Downloading the official archives, against a local HTTP server (never the network)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from cifar_jax.config import base_config
from cifar_jax.data import download, download_archive, load_dataset
from cifar_jax.errors import DataError

NAME = "cifar-10-python.tar.gz"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        if self.path.endswith("/cut-short"):
            # Announce more bytes than are sent, then hang up: an interrupted download.
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "served"``; yields (url, folder, log)."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(served))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def cifar10_python_archive(num_train: int = 50, num_test: int = 20) -> tuple[bytes, dict]:
    """A small ``cifar-10-python.tar.gz`` in the official format, and its contents."""
    rng = np.random.default_rng(0)
    release = {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, obj: dict) -> None:
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))

        for split, n in (("train", num_train), ("test", num_test)):
            images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
            labels = np.arange(n) % 10
            release[split] = (images, labels)
            rows = images.transpose(0, 3, 1, 2).reshape(n, 3072)
            names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
            for name, idx in zip(names, np.array_split(np.arange(n), len(names)), strict=True):
                add(name, {b"data": rows[idx], b"labels": labels[idx].tolist()})
        add("batches.meta", {b"label_names": [f"c{k}".encode() for k in range(10)]})
    return buffer.getvalue(), release


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_download_success_atomic_with_progress(server, tmp_path, capsys):
    url, served, _ = server
    payload = np.random.default_rng(1).bytes(3_000_000)
    (served / NAME).write_bytes(payload)
    dest = tmp_path / "data"

    path = download_archive("cifar10", "python", str(dest), url=url + NAME, md5=md5(payload))

    assert path == str(dest / NAME)
    assert Path(path).read_bytes() == payload
    assert [p.name for p in dest.iterdir()] == [NAME]  # no temp file left behind
    assert "Downloading cifar-10-python.tar.gz" in capsys.readouterr().err


def test_existing_archive_is_reused(server, tmp_path):
    url, _, requests = server
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / NAME).write_bytes(b"already here")
    assert download_archive("cifar10", "python", str(dest), url=url + NAME) == str(dest / NAME)
    assert requests == []


def test_md5_mismatch_leaves_nothing(server, tmp_path):
    url, served, _ = server
    payload = b"not the real archive" * 1000
    (served / NAME).write_bytes(payload)
    dest = tmp_path / "data"
    with pytest.raises(DataError) as info:
        download_archive("cifar10", "python", str(dest), url=url + NAME)
    message = str(info.value)
    assert "c58f30108f718f92721af3b95e74349a" in message  # expected (the published MD5)
    assert md5(payload) in message  # actual
    assert list(dest.iterdir()) == []


def test_http_404(server, tmp_path):
    url, _, _ = server
    dest = tmp_path / "data"
    with pytest.raises(DataError, match="HTTP 404") as info:
        download_archive("cifar100", "binary", str(dest), url=url + "missing.tar.gz")
    assert url + "missing.tar.gz" in str(info.value)
    assert "cifar-100-binary.tar.gz" in str(info.value)  # the fix names the file to fetch
    assert list(dest.iterdir()) == []


def test_interrupted_download(server, tmp_path):
    url, _, _ = server
    dest = tmp_path / "data"
    with pytest.raises(DataError, match="cut-short"):
        download_archive("cifar10", "binary", str(dest), url=url + "cut-short", md5="0" * 32)
    assert list(dest.iterdir()) == []


def test_unreachable_server(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "data"
    with pytest.raises(DataError, match=f"downloading http://127.0.0.1:{port}/"):
        download_archive("cifar10", "python", str(dest), url=f"http://127.0.0.1:{port}/{NAME}")
    assert list(dest.iterdir()) == []


def test_url_base_from_environment(monkeypatch):
    monkeypatch.delenv(download.URL_BASE_ENV, raising=False)
    assert download.archive_url("cifar100", "python") == (
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    )
    monkeypatch.setenv(download.URL_BASE_ENV, "http://mirror.example/cifar")
    assert download.archive_url("cifar10", "binary") == (
        "http://mirror.example/cifar/cifar-10-binary.tar.gz"
    )


@pytest.mark.parametrize("data_source", ["auto", "download"])
def test_load_dataset_downloads_when_missing(server, tmp_path, monkeypatch, data_source):
    url, served, requests = server
    archive, release = cifar10_python_archive()
    (served / NAME).write_bytes(archive)
    monkeypatch.setenv(download.URL_BASE_ENV, url)
    # The served archive is a small stand-in: expect its checksum instead of the published one.
    monkeypatch.setitem(download.ARCHIVES, ("cifar10", "python"), (NAME, md5(archive)))
    config = base_config()
    config.update(data_dir=str(tmp_path / "data"), data_source=data_source)

    data = load_dataset(config)

    assert data.source == f"CIFAR-10 python archive {tmp_path / 'data' / NAME} (downloaded)"
    np.testing.assert_array_equal(data.train.images, release["train"][0])
    np.testing.assert_array_equal(data.test.labels, release["test"][1])
    assert data.class_names == tuple(f"c{k}" for k in range(10))
    assert (tmp_path / "data" / NAME).read_bytes() == archive
    assert requests == ["/" + NAME]

    again = load_dataset(config)  # reads the archive now in data_dir: no second request
    assert again.source == f"CIFAR-10 python archive {tmp_path / 'data' / NAME}"
    assert requests == ["/" + NAME]


def test_load_dataset_checks_the_published_md5(server, tmp_path, monkeypatch):
    url, served, _ = server
    archive, _ = cifar10_python_archive()
    (served / NAME).write_bytes(archive)
    monkeypatch.setenv(download.URL_BASE_ENV, url)
    config = base_config()
    config.update(data_dir=str(tmp_path / "data"), data_source="auto")
    with pytest.raises(DataError, match="expected c58f30108f718f92721af3b95e74349a"):
        load_dataset(config)
    assert list((tmp_path / "data").iterdir()) == []


def test_files_source_makes_no_request(server, tmp_path, monkeypatch):
    url, served, requests = server
    (served / NAME).write_bytes(cifar10_python_archive()[0])
    monkeypatch.setenv(download.URL_BASE_ENV, url)
    config = base_config()
    config.update(data_dir=str(tmp_path / "data"), data_source="files")
    with pytest.raises(DataError, match="no CIFAR-10 data found"):
        load_dataset(config)
    assert requests == []
