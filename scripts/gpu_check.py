"""The Python half of scripts/gpu_check.sh and scripts/gpu_bundle.sh (standard library
only, except ``data`` and the import check of ``install-check``).

On the machine that prepares a GPU call (scripts/gpu_bundle.sh):
  gpu_check.py bundle-data SOURCE ARCHIVE       # CIFAR-10 test + data_batch_1, MD5-checked
  gpu_check.py manifest BUNDLE REPO BUDGET      # BUNDLE/manifest.json, the size check, the call
On the machine that runs the check (scripts/gpu_check.sh):
  gpu_check.py install-check SITE               # what the bundle installed, what is unmet
  gpu_check.py env OUT PLATFORM BUNDLE REPO     # OUT/env.json: GPU, versions, backend, tree
  gpu_check.py data OUT REPO BUNDLE             # OUT/data.json: which data the runs use
  gpu_check.py summary OUT PLATFORM WALL BUDGET [--partial]  # summary.json/.md (printed)
  gpu_check.py pack OUT DEST                    # DEST: summary.md/.json + logs archive
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import importlib.metadata
import io
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

# airbench94's published figures (KellerJordan/cifar10-airbench, legacy/airbench94.py;
# arXiv 2404.00498): one A100, float16, the TTA evaluation included in the time.
AIRBENCH_A100_SECONDS = 3.83
AIRBENCH_MUON_A100_SECONDS = 2.59
AIRBENCH_MEAN_ACCURACY = 0.9401
# The training pair (LeNet, gpu_check.sh's PAIR arguments) on the partial data the bundle
# carries (data_batch_1.bin: 10,000 training images; the 10,000 test images) must end at
# least here. Measured on the CPU with the same images and arguments over seeds 0-7 by
# scripts/gpu_gate_seeds.py (record docs/records/gpu_gate.json, rendered in docs/gpu.md,
# "The training pair's gate"): every seed far above it, and 0.25 over chance: GPU numerics,
# which move a run about as much as another seed does, cannot fail it; a run that did not
# learn (loss stuck, wrong labels, non-finite steps skipped) does.
MIN_ACCURACY = 0.35
PAIR_MODEL = "lenet"
CIFAR10_NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()
# The published MD5s of the official binary release's files the bundle carries.
CIFAR10_MD5 = {
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
}
DATA_ARCHIVE = "cifar-10-partial.tar.xz"
# Delta (neighbouring pixel bytes) then LZMA2: 43.8 MB for the two files (61.5 MB raw;
# gzip -9: 56.6 MB), which leaves room under the 64 MiB a device call may carry.
XZ_FILTERS = [
    {"id": lzma.FILTER_DELTA, "dist": 1},
    {"id": lzma.FILTER_LZMA2, "preset": 9, "lc": 0, "pb": 0},
]
# What a device call may carry (the working tree with the carried folders), and what may
# come back per file.
CARRY_LIMIT_BYTES = 64 * 2**20
RETURN_FILE_LIMIT_BYTES = 16 * 2**20
# The archive of logs stays well under the 16 MiB a returned file may have.
PACK_LIMIT_BYTES = 12 * 2**20
PACK_FILE_LIMIT_BYTES = 2 * 2**20
# Never packed: model states (a resnet_small best/ is 14 MB), the staged data.
PACK_SKIP_DIRS = {"checkpoints", "best", "data_staged", "__pycache__"}
# The bundle's pinned pure-Python copies, which must shadow the image's (module: dist).
PINNED_MODULES = {
    "flax": "flax",
    "optax": "optax",
    "orbax.checkpoint": "orbax-checkpoint",
    "google.protobuf": "protobuf",
}


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _md5(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324 - the release's published checksums are MD5
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------- bundle-data


def _cifar10_folder(source: Path) -> Path | None:
    for folder in (
        source,
        source / "cifar-10-batches-bin",
        source / "cifar10" / "cifar-10-batches-bin",
    ):
        if all((folder / f).is_file() for f in CIFAR10_MD5):
            return folder
    return None


def bundle_data(source: str, archive: str) -> int:
    """Writes ``archive``: cifar-10-batches-bin/{test_batch,data_batch_1}.bin (checked
    against the published MD5s) and batches.meta.txt, xz-compressed, byte-identical for
    the same input (fixed times and owners), so a rebuilt bundle has the same sha256. An
    archive already there with the same sha256 recorded beside it is kept."""
    folder = _cifar10_folder(Path(source).resolve())
    if folder is None:
        print(
            f"error: no CIFAR-10 binary release under {source}: it needs "
            f"{' and '.join(CIFAR10_MD5)} (in it, or in its cifar-10-batches-bin/). Point "
            "GPU_BUNDLE_CIFAR10 at the folder that holds them.",
            file=sys.stderr,
        )
        return 1
    for name, md5 in CIFAR10_MD5.items():
        got = _md5(folder / name)
        if got != md5:
            print(
                f"error: {folder / name} has MD5 {got}, not the official {md5}: the file is "
                "not the official release (or is damaged). Use an official copy.",
                file=sys.stderr,
            )
            return 1
    out = Path(archive)
    sidecar = out.with_name(out.name + ".json")
    recorded = _read_json(sidecar) or {}
    if out.is_file() and recorded.get("sha256") == _sha256(out):
        print(f"{out}: kept ({out.stat().st_size:,} bytes, sha256 {recorded['sha256'][:16]})")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    names = "\n".join(CIFAR10_NAMES).encode() + b"\n\n"
    with lzma.open(tmp, "wb", format=lzma.FORMAT_XZ, filters=XZ_FILTERS) as xz:
        with tarfile.open(fileobj=xz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            members = [(n, (folder / n).read_bytes()) for n in CIFAR10_MD5]
            members.append(("batches.meta.txt", names))
            for name, payload in members:
                info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
                info.size, info.mtime, info.mode = len(payload), 0, 0o644
                tar.addfile(info, io.BytesIO(payload))
    os.replace(tmp, out)
    digest = _sha256(out)
    _write_json(sidecar, {"sha256": digest, "md5": CIFAR10_MD5, "source": str(folder)})
    print(f"{out}: written from {folder} ({out.stat().st_size:,} bytes, sha256 {digest[:16]})")
    return 0


def _extract_bundle_data(archive: Path, dest: Path) -> Path:
    """Extracts the bundle's data archive under ``dest`` and checks the MD5s; returns the
    folder holding cifar-10-batches-bin."""
    with tarfile.open(archive, "r:xz") as tar:
        try:
            tar.extractall(dest, filter="data")
        except TypeError:  # Python < 3.10.12 has no extraction filters
            tar.extractall(dest)  # noqa: S202 - an archive gpu_bundle.sh wrote
    folder = dest / "cifar-10-batches-bin"
    for name, md5 in CIFAR10_MD5.items():
        got = _md5(folder / name)
        if got != md5:
            raise ValueError(f"{folder / name}: MD5 {got}, not {md5}: the archive is damaged")
    return dest


# ------------------------------------------------------------------------------ manifest


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def manifest(bundle: str, repo: str, budget: str) -> int:
    """BUNDLE/manifest.json: the commit, the files that travel with their sha256 (the GPU
    check compares the tree it runs on with them), the wheels and the data; then checks
    that the tree and the bundle fit what a device call carries, and prints the call."""
    b, r = Path(bundle).resolve(), Path(repo).resolve()
    commit = _git(r, "rev-parse", "HEAD").strip()
    # What travels: tracked and untracked-but-not-ignored files (the device tool's rule).
    listed = _git(r, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    tree: dict[str, list[Any]] = {}
    for rel in sorted(set(filter(None, listed.split("\0")))):
        path = r / rel
        if path.is_file() and not path.is_symlink():
            tree[rel] = [path.stat().st_size, _sha256(path)]
    dirty = [x[3:] for x in _git(r, "status", "--porcelain").splitlines() if x.strip()]
    ignored = b.is_relative_to(r) and (
        subprocess.run(
            ["git", "-C", str(r), "check-ignore", "-q", f"{b.relative_to(r)}/"], check=False
        ).returncode
        == 0
    )
    if not ignored:
        print(
            f"error: {b} is not a folder of {r} that git ignores: a device call carries only "
            "ignored folders of the repository. Use the default, gpu_bundle/ (.gitignore "
            "has it).",
            file=sys.stderr,
        )
        return 1
    wheels = {w.name: _sha256(w) for w in sorted((b / "wheels").glob("*.whl"))}
    data = sorted((b / "data").glob("*.tar.xz"))
    tree_bytes = sum(size for size, _ in tree.values())
    info = {
        "commit": commit,
        "commit_short": commit[:12],
        "dirty": dirty,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "budget_s": int(budget),
        "tree": tree,
        "tree_bytes": tree_bytes,
        "wheels": wheels,
        "data": {d.name: {"bytes": d.stat().st_size, "sha256": _sha256(d)} for d in data},
    }
    _write_json(b / "manifest.json", info)
    total = tree_bytes + _dir_bytes(b)
    mib = 2**20
    wheel_bytes = sum((b / "wheels" / w).stat().st_size for w in wheels)
    print(
        f"tree {tree_bytes / mib:.1f} MiB ({len(tree)} files) + {b.name}/ "
        f"{_dir_bytes(b) / mib:.1f} MiB (wheels {wheel_bytes / mib:.1f}, data "
        f"{sum(d.stat().st_size for d in data) / mib:.1f}) = {total / mib:.1f} MiB of the "
        f"{CARRY_LIMIT_BYTES / mib:.0f} MiB a device call carries"
    )
    if total > CARRY_LIMIT_BYTES - mib:
        biggest = sorted(tree.items(), key=lambda kv: -kv[1][0])[:5]
        print(
            f"error: {total / mib:.1f} MiB would travel, over the {CARRY_LIMIT_BYTES / mib:.0f} "
            "MiB limit less 1 MiB of headroom. The largest tree files: "
            + ", ".join(f"{k} ({v[0] / mib:.1f} MiB)" for k, v in biggest)
            + ". Ignore or remove untracked files that need not travel.",
            file=sys.stderr,
        )
        return 1
    if dirty:
        print(
            f"note: the tree has {len(dirty)} uncommitted change(s); the check will report "
            f"commit {commit[:12]} + these changes (manifest.json lists them)."
        )
    return 0


# ------------------------------------------------------------------------ install-check


def _requirement_tools():
    try:
        from packaging.markers import default_environment
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors it
        from pip._vendor.packaging.markers import default_environment
        from pip._vendor.packaging.requirements import Requirement
    return Requirement, default_environment


def install_check(site: str) -> int:
    """After ``pip install --target SITE``: each bundled distribution's requirements that
    the environment (SITE first, then the image) does not meet, and where the packages the
    runs import come from (the bundle's pins must shadow the image's copies)."""
    Requirement, default_environment = _requirement_tools()
    env = default_environment()
    site_path = Path(site).resolve()
    unmet = []
    for dist_info in sorted(site_path.glob("*.dist-info")):
        dist = importlib.metadata.Distribution.at(dist_info)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker and not req.marker.evaluate({**env, "extra": ""}):
                continue
            try:
                have = importlib.metadata.version(req.name)
            except importlib.metadata.PackageNotFoundError:
                unmet.append(f"{dist.metadata['Name']} {dist.version} needs {req}: not installed")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                unmet.append(f"{dist.metadata['Name']} {dist.version} needs {req}: found {have}")
    result: dict[str, Any] = {"site": str(site_path), "unmet": unmet, "modules": {}}
    status = 0
    for module, dist in (
        ("flax", "flax"),
        ("optax", "optax"),
        ("orbax.checkpoint", "orbax-checkpoint"),
        ("google.protobuf", "protobuf"),
        ("grain", "grain"),
        ("clu", "clu"),
        ("ml_collections", "ml_collections"),
        ("tensorboardX", "tensorboardX"),
        ("jax", "jax"),
        ("jaxlib", "jaxlib"),
    ):
        try:
            mod = __import__(module, fromlist=["_"])
        except Exception as e:  # noqa: BLE001 - the import error is the finding
            result["modules"][module] = {"error": f"{type(e).__name__}: {e}"}
            status = 1
            continue
        path = str(Path(getattr(mod, "__file__", "") or "?").resolve())
        result["modules"][module] = {
            "version": importlib.metadata.version(dist),
            "from": "bundle" if path.startswith(str(site_path)) else path,
        }
    for module in ("cifar_jax.main", "cifar_jax.train", "cifar_jax.perf.bench"):
        try:
            __import__(module)
        except Exception as e:  # noqa: BLE001
            result["modules"][module] = {"error": f"{type(e).__name__}: {e}"}
            status = 1
    print(json.dumps(result, indent=2))
    for line in unmet:
        print(f"warning: unmet requirement: {line}")
    bundled = {_normalize(d.name.split("-")[0]) for d in site_path.glob("*.dist-info")}
    for module, dist in PINNED_MODULES.items():
        got = result["modules"].get(module, {})
        if _normalize(dist) in bundled and "error" not in got and got.get("from") != "bundle":
            print(f"error: {module} is imported from {got.get('from')}, not the bundle's pin")
            status = 1
    for module, got in result["modules"].items():
        if "error" in got:
            print(f"error: import {module}: {got['error']}")
    out = os.environ.get("GPU_CHECK_OUT")
    if out:
        _write_json(Path(out) / "install.json", {"mode": "bundle", **result})
    return status


# ----------------------------------------------------------------------------------- env


def _nvidia_smi() -> dict[str, Any]:
    """The GPUs as nvidia-smi reports them (a query only: it changes no setting)."""
    fields = "name,driver_version,memory.total,compute_cap"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": f"nvidia-smi: {e}"}
    gpus = [
        dict(zip(fields.split(","), (x.strip() for x in line.split(",")), strict=False))
        for line in out.splitlines()
        if line.strip()
    ]
    return {"gpus": gpus}


def tree_check(bundle: Path, repo: Path) -> dict[str, Any]:
    """Whether the files here are those gpu_bundle.sh listed (the commit it recorded, plus
    the uncommitted changes it listed): the copy that ran is the code the summary names."""
    info = _read_json(bundle / "manifest.json")
    if not info:
        return {"status": "no bundle manifest", "commit": None}
    changed, missing = [], []
    for rel, (size, digest) in info["tree"].items():
        path = repo / rel
        if not path.is_file():
            missing.append(rel)
        elif path.stat().st_size != size or _sha256(path) != digest:
            changed.append(rel)
    return {
        "status": "matches" if not (changed or missing) else "differs",
        "commit": info["commit"],
        "dirty": info.get("dirty", []),
        "bundle_created": info.get("created"),
        "files": len(info["tree"]),
        "changed": changed,
        "missing": missing,
    }


def env(out: str, platform: str, bundle: str = "", repo: str = "") -> int:
    info: dict[str, Any] = {"python": sys.version.split()[0], "nvidia_smi": _nvidia_smi()}
    for dist in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "protobuf", "torch"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    plugins = [
        f"{d.metadata['Name']} {d.version}"
        for d in importlib.metadata.distributions()
        if re.match(r"jax[-_]cuda\d+[-_](plugin|pjrt)", d.metadata["Name"] or "")
    ]
    info["jax_plugins"] = sorted(set(plugins))
    errors = []  # printed last, where the summary looks for the reason
    if bundle and repo:
        info["tree"] = tree_check(Path(bundle), Path(repo))
        if info["tree"]["status"] == "differs":
            errors.append(
                "the tree is not the one gpu_bundle.sh recorded (changed: "
                f"{info['tree']['changed'][:10]}, missing: {info['tree']['missing'][:10]}): "
                "the summary cannot name its code. Rerun scripts/gpu_bundle.sh just before "
                "the device call."
            )
    try:  # the host CPU, as every record names it (the CPU-mode rehearsal's numbers are its)
        from cifar_jax import runtime

        info["cpu"] = runtime.cpu_description()
    except Exception as e:  # noqa: BLE001
        info["cpu"] = f"{type(e).__name__}: {e}"
    try:
        from cifar_jax.kernels import onednn

        info["onednn"] = onednn.available() or onednn.unavailable_reason()
    except Exception as e:  # noqa: BLE001
        info["onednn"] = f"{type(e).__name__}: {e}"
    try:
        import jax

        devices = jax.devices()
        info["backend"] = jax.default_backend()
        info["devices"] = f"{len(devices)} x {devices[0].device_kind}"
    except Exception as e:  # noqa: BLE001 - any failure to start the backend is the finding
        info["backend_failure"] = f"{type(e).__name__}: {e}"
        errors.append(f"JAX did not start: {info['backend_failure']}")
    try:
        import torch

        info["torch_cuda"] = torch.cuda.is_available()
        if info["torch_cuda"]:
            info["torch_device"] = torch.cuda.get_device_name(0)
    except Exception as e:  # noqa: BLE001 - only the bench's torch side needs it
        info["torch_unavailable"] = f"{type(e).__name__}: {e}"
    if platform == "gpu" and "backend" in info and info["backend"] != "gpu":
        errors.append(f"JAX's backend is {info['backend']!r}, not the GPU")
    _write_json(Path(out) / "env.json", info)
    print(json.dumps(info, indent=2, default=str))
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    return 1 if errors else 0


# ---------------------------------------------------------------------------------- data


def _stage_names_file(candidate: Path, out: Path) -> Path:
    """``candidate`` itself, or, where it holds CIFAR-10 binary batches but no
    batches.meta.txt (only the .bin files were copied), a folder under ``out`` with links to
    them and the names file written (the ten class names, in the release's order)."""
    folder = candidate
    if not (folder / "test_batch.bin").is_file():
        folder = candidate / "cifar-10-batches-bin"
    if not (folder / "test_batch.bin").is_file() or (folder / "batches.meta.txt").is_file():
        return candidate
    staged = out / "data_staged" / "links" / "cifar-10-batches-bin"
    staged.mkdir(parents=True, exist_ok=True)
    for f in folder.glob("*.bin"):
        (staged / f.name).unlink(missing_ok=True)
        (staged / f.name).symlink_to(f.resolve())
    (staged / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    print(f"{folder} has no batches.meta.txt: using {staged} (links + the class names)")
    return staged


def data(out: str, repo: str, bundle: str = "") -> int:
    """Finds CIFAR-10 for the runs: $CIFAR_JAX_DATA, else the bundle's archive (extracted
    under OUT/data_staged, MD5-checked), else the package's default folder. Full, partial
    (some training batch files) or synthetic."""
    from cifar_jax import config as config_lib
    from cifar_jax.data import sources
    from cifar_jax.errors import CifarJaxError

    tried = []
    env_dir = os.environ.get("CIFAR_JAX_DATA", "")
    candidates = [env_dir] if env_dir else []
    archive = Path(bundle) / "data" / DATA_ARCHIVE if bundle else None
    if not env_dir and archive is not None and archive.is_file():
        recorded = ((_read_json(Path(bundle) / "manifest.json") or {}).get("data") or {}).get(
            DATA_ARCHIVE, {}
        )
        digest = _sha256(archive)
        if recorded and recorded.get("sha256") != digest:
            tried.append(f"{archive}: sha256 {digest[:16]} is not the manifest's: damaged")
        else:
            try:
                dest = Path(out) / "data_staged" / "bundle"
                candidates.append(str(_extract_bundle_data(archive, dest)))
            except (OSError, ValueError, tarfile.TarError, lzma.LZMAError) as e:
                tried.append(f"{archive}: {e}")
    if not env_dir:
        candidates.append("")  # the package's default folder
    for candidate in candidates:
        config = config_lib.base_config()  # "" -> its default folder
        if candidate:
            if not Path(candidate).exists():
                tried.append(f"{candidate}: does not exist")
                continue
            config.data_dir = str(_stage_names_file(Path(candidate), Path(out)))
        config.data_source = "files"
        config.allow_partial_train_files = True
        config.val_examples = 0
        try:
            loaded = sources.load_dataset(config)
        except CifarJaxError as e:
            tried.append(f"{config.data_dir}: {e}")
            continue
        kind = "full" if len(loaded.train) == 50_000 else "partial"
        result = {
            "kind": kind,
            "data_dir": config.data_dir,
            "source": loaded.source,
            "train_examples": len(loaded.train),
            "test_examples": len(loaded.test),
            "tried": tried,
        }
        break
    else:
        result = {
            "kind": "synthetic",
            "data_dir": "",
            "source": "synthetic (no CIFAR-10 found): timing only",
            "tried": tried,
        }
    _write_json(Path(out) / "data.json", result)
    print(json.dumps(result, indent=2))
    return 0


# ------------------------------------------------------------------------------- summary


def _stages(out: Path) -> dict[str, dict[str, Any]]:
    stages = {}
    path = out / "stages.tsv"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for line in lines:
        name, status, seconds, rc, note = (line.split("\t") + [""] * 5)[:5]
        stages[name] = {"status": status, "seconds": float(seconds or 0), "rc": rc, "note": note}
    return stages


def _log_lines(out: Path, name: str) -> list[str]:
    path = out / "logs" / f"{name}.log"
    try:
        return [x.rstrip() for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return []


def _last_line(out: Path, name: str) -> str:
    return (_log_lines(out, name) or [""])[-1].strip()[:200]


_ERROR = re.compile(r"error|Error|FAILED|Traceback|failed|Killed|Aborted")


def _last_error(out: Path, name: str) -> str:
    """The last line of a failed stage's log that looks like the error."""
    lines = _log_lines(out, name)
    hits = [x for x in lines if _ERROR.search(x)]
    return (hits or lines or [""])[-1].strip()[:200]


_RAISED = re.compile(r"^([\w.]*(Error|Exception)(:|$)|error:|.*configuration error)")


def _excerpt(out: Path, name: str, tail: int = 25) -> list[str]:
    """What summary.md shows of a stage that did not pass: pytest's FAILED/ERROR lines,
    the exceptions raised (the first is often the cause: a GPU plugin that did not load),
    the last line that looks like an error with its context, and the log's tail."""
    lines = _log_lines(out, name)
    picked: list[str] = [x for x in lines if x.startswith(("FAILED ", "ERROR "))][:15]
    raised = list(dict.fromkeys(x.strip() for x in lines if _RAISED.match(x.strip())))
    if raised:
        picked += ["exceptions raised, in order:"] + raised[:10]
    errors = [i for i, x in enumerate(lines) if _ERROR.search(x)]
    if errors and errors[-1] < len(lines) - tail:
        i = errors[-1]
        picked += ["..."] + lines[max(0, i - 5) : i + 3]
    picked += ["..."] + lines[-tail:] if len(lines) > tail else lines
    return [x[:300] for x in picked]


def _train_numbers(out: Path, name: str) -> dict[str, Any] | None:
    results = _read_json(out / "runs" / name / "results.json")
    if not results:
        return None
    keys = (
        "test_accuracy",
        "test_accuracy_tta",
        "steps",
        "train_seconds",
        "test_tta_seconds",
        "compile_seconds",
        "train_images_per_second",
        "state_sha256",
        "platform",
        "device_kind",
        "convolutions",
        "dataset_source",
        "train_examples",
    )
    return {k: results[k] for k in keys if k in results}


def _bench_rows(out: Path, dirname: str) -> list[dict[str, Any]]:
    report = _read_json(out / dirname / "bench.json") or {}
    rows = []
    for r in report.get("results", []):
        t = r["train"]
        rows.append(
            {
                "model": r["model"],
                "dtype": "bf16" if r.get("half_precision") else "float32",
                "batch_size": r["batch_size"],
                "jax_images_per_second": t["jax_images_per_second"],
                "torch_images_per_second": t["torch_images_per_second"],
                "torch_ratio": t["ratio"],
                "torch_device": r.get("torch_device"),
                "eval_torch_ratio": r["eval"]["ratio"],
                "train_compile_seconds": r["train_compile_seconds"],
                "loop_data_wait_fraction": r["loop_data_wait_fraction"],
            }
        )
    for name, rc in (report.get("failed") or {}).items():
        rows.append({"model": name, "dtype": dirname.split("_")[-1], "failed": rc})
    return rows


def _fmt(x: Any, spec: str = "{:,.0f}") -> str:
    return "-" if x is None else spec.format(x)


BAD = ("failed", "timeout")


def summary(out_dir: str, platform: str, wall: str, budget: str, *flags: str) -> int:
    """summary.json and summary.md from what the stages left in OUT. ``--partial``: written
    after each stage (not printed), so that a run stopped from outside still leaves one;
    the planned stages not recorded yet ($GPU_CHECK_PLAN) are listed as not reached."""
    partial = "--partial" in flags
    out = Path(out_dir)
    stages = _stages(out)
    plan = [x for x in os.environ.get("GPU_CHECK_PLAN", "").split(",") if x]
    for name in plan:
        if name not in stages:
            stages[name] = {
                "status": "not reached" if partial else "not run",
                "seconds": 0.0,
                "rc": "-",
                "note": "the run stopped before it (this summary was written after the "
                "last stage above)"
                if partial
                else "",
            }
    stages = {n: stages[n] for n in [*plan, *[n for n in stages if n not in plan]]}
    env_info = _read_json(out / "env.json") or {}
    data_info = _read_json(out / "data.json") or {"kind": "synthetic", "source": "unknown"}
    install = _read_json(out / "install.json") or {}
    synthetic = data_info["kind"] == "synthetic"
    check_accuracy = not synthetic and platform == "gpu"

    train = {f"{PAIR_MODEL}_{run}": _train_numbers(out, f"{PAIR_MODEL}_{run}") for run in "ab"}
    train["airbench94"] = _train_numbers(out, "airbench94")
    a, b = train[f"{PAIR_MODEL}_a"], train[f"{PAIR_MODEL}_b"]
    determinism = {
        PAIR_MODEL: {
            "state_sha256_a": a and a["state_sha256"],
            "state_sha256_b": b and b["state_sha256"],
            "equal": None if not (a and b) else a["state_sha256"] == b["state_sha256"],
        }
    }
    bench = _bench_rows(out, "bench_f32") + _bench_rows(out, "bench_bf16")

    # Key numbers per stage, and stages whose numbers are wrong although they ran.
    for run in "ab":
        st, nums = stages.get(f"train_{run}"), train[f"{PAIR_MODEL}_{run}"]
        if not st or not nums:
            continue
        acc = nums.get("test_accuracy")
        st["numbers"] = nums
        if synthetic:
            st["key"] = f"synthetic: timing only; {_fmt(nums.get('train_images_per_second'))} img/s"
        else:
            st["key"] = (
                f"{PAIR_MODEL} test acc {acc:.4f} (gate {MIN_ACCURACY}"
                + ("" if check_accuracy else ", checked on a GPU only")
                + f"), {nums['steps']} steps, "
                f"{_fmt(nums.get('train_images_per_second'))} img/s, compile "
                f"{_fmt(nums.get('compile_seconds'), '{:.1f}')} s"
            )
        if check_accuracy and st["status"] == "ok" and acc < MIN_ACCURACY:
            st["status"] = "failed"
            st["key"] += f" (**below the gate {MIN_ACCURACY}**: it did not learn)"
        if run == "b" and determinism[PAIR_MODEL]["equal"] is not None:
            same = determinism[PAIR_MODEL]["equal"]
            st["key"] += "; state_sha256 " + ("= run a" if same else "**differs** from run a")
            if not same and st["status"] == "ok":
                st["status"] = "failed"
    for dirname in ("bench_f32", "bench_bf16"):
        st = stages.get(dirname)
        rows = [
            r for r in bench if r["dtype"] == ("bf16" if dirname.endswith("bf16") else "float32")
        ]
        if st and rows:
            st["key"] = "; ".join(
                f"{r['model']} failed ({r['failed']})"
                if "failed" in r
                else f"{r['model']} {r['jax_images_per_second']:,.0f} img/s"
                + ("" if r["torch_ratio"] is None else f" ({r['torch_ratio']:.2f}x torch)")
                for r in rows
            )
    airbench = train["airbench94"]
    air: dict[str, Any] = {
        "published_a100_seconds": AIRBENCH_A100_SECONDS,
        "published_muon_a100_seconds": AIRBENCH_MUON_A100_SECONDS,
        "published_mean_accuracy": AIRBENCH_MEAN_ACCURACY,
    }
    if airbench and stages.get("airbench94"):
        seconds = airbench["train_seconds"] + airbench.get("test_tta_seconds", 0.0)
        air.update(
            train_seconds=airbench["train_seconds"],
            tta_seconds=airbench.get("test_tta_seconds"),
            train_and_tta_seconds=seconds,
            steps=airbench["steps"],
        )
        key = (
            f"{seconds:.2f} s train + TTA ({airbench['train_seconds']:.2f} + "
            f"{airbench.get('test_tta_seconds', 0.0):.2f}; published A100 "
            f"{AIRBENCH_A100_SECONDS} s, Muon {AIRBENCH_MUON_A100_SECONDS} s)"
        )
        if data_info["kind"] == "full":
            air["accuracy_tta"] = airbench.get("test_accuracy_tta")
            key += f"; TTA acc {_fmt(air['accuracy_tta'], '{:.4f}')} (published mean 0.9401)"
        else:
            key += f"; {data_info['kind']} data: time only"
        stages["airbench94"]["key"] = key
    for name in ("install", "env", "data"):
        st = stages.get(name)
        if not st or st["status"] != "ok":
            continue
        if name == "install" and install:
            mods = install.get("modules") or {}
            st["key"] = (
                f"mode {install.get('mode')}"
                + (
                    "; "
                    + ", ".join(
                        f"{m} {v['version']}"
                        for m, v in mods.items()
                        if m in ("flax", "optax", "orbax.checkpoint", "grain") and "version" in v
                    )
                    if mods
                    else ""
                )
                + (f"; {len(install.get('unmet') or [])} unmet requirement(s)" if mods else "")
            )
        if name == "env" and env_info:
            st["key"] = (
                f"backend {env_info.get('backend')}, {env_info.get('devices')}; jax "
                f"{env_info.get('jax')}; tree {(env_info.get('tree') or {}).get('status', '-')}"
            )
        if name == "data":
            st["key"] = data_info["kind"] + (
                f": {data_info['train_examples']:,} train images" if not synthetic else ""
            )
    for name in ("tests", "tests_cpu"):
        if stages.get(name, {}).get("status") in ("ok", "failed"):
            stages[name]["key"] = _last_line(out, name)  # pytest's counts
    excerpts = {}
    for name, st in stages.items():
        if st["status"] in BAD:
            st.setdefault("key", _last_error(out, name))
            excerpts[name] = _excerpt(out, name)

    gpus = (env_info.get("nvidia_smi") or {}).get("gpus") or []
    gpu = gpus[0]["name"] if gpus else (env_info.get("nvidia_smi") or {}).get("error", "none")
    bad = [n for n, s in stages.items() if s["status"] in BAD]
    tree = env_info.get("tree") or {}
    commit = os.environ.get("GPU_CHECK_COMMIT") or tree.get("commit") or "unknown"
    if tree.get("dirty"):
        commit += f" + {len(tree['dirty'])} uncommitted change(s)"
    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform,
        "complete": not partial,
        "wall_seconds": float(wall),
        "budget_seconds": float(budget),
        "gpu": gpu,
        "gpus": gpus,
        "env": env_info,
        "commit": commit,
        "install": install,
        "data": data_info,
        "stages": stages,
        "determinism": determinism,
        "min_accuracy": MIN_ACCURACY,
        "bench": bench,
        "airbench94": air,
        "train": train,
        "failed_stages": bad,
        "cut_stages": [n for n, s in stages.items() if s["status"] == "cut"],
        "excerpts": excerpts,
    }
    _write_json(out / "summary.json", report)
    md = markdown(report)
    (out / "summary.md").write_text(md, encoding="utf-8")
    if not partial:
        print(md, end="")
    return 1 if bad else 0


def markdown(r: dict[str, Any]) -> str:
    env_info, data_info = r["env"], r["data"]
    tree = env_info.get("tree") or {}
    lines = [
        f"# GPU check, {r['date']} ({r['platform']})"
        + ("" if r["complete"] else " — INCOMPLETE: written after the last stage listed"),
        "",
        f"GPU: {r['gpu']}"
        + (
            f" (driver {r['gpus'][0].get('driver_version')}, {r['gpus'][0].get('memory.total')})"
            if r["gpus"]
            else ""
        )
        + f"; JAX backend {env_info.get('backend')} ({env_info.get('devices')}); "
        f"jax {env_info.get('jax')}, jaxlib {env_info.get('jaxlib')}, plugins "
        f"{', '.join(env_info.get('jax_plugins') or []) or '-'}; torch {env_info.get('torch')}; "
        f"Python {env_info.get('python')}; oneDNN {env_info.get('onednn')}.",
        f"Commit {r['commit']}; tree {tree.get('status', '-')} "
        f"({tree.get('files', '-')} files of the bundle's manifest"
        + (
            f"; changed {tree['changed'][:5]}, missing {tree['missing'][:5]}"
            if tree.get("status") == "differs"
            else ""
        )
        + ").",
        f"Install: {r['install'].get('mode', 'skipped')}"
        + (
            f"; unmet requirements: {'; '.join(r['install']['unmet'])}"
            if r["install"].get("unmet")
            else ""
        )
        + f". Data: **{data_info['kind']}**: {data_info['source']}. Wall time "
        f"{r['wall_seconds']:.0f} s (budget {r['budget_seconds']:.0f} s).",
        "",
        f"## Determinism and learning ({PAIR_MODEL}, --config.deterministic=true, two runs, "
        f"same seed; gate {r['min_accuracy']} on real data)",
        "",
        "| model | state_sha256 run a | run b | equal | test acc a | test acc b |",
        "|---|---|---|---|---:|---:|",
    ]
    for model, d in r["determinism"].items():
        equal = {True: "yes", False: "**NO**", None: "-"}[d["equal"]]
        accs = [
            _fmt((r["train"].get(f"{model}_{x}") or {}).get("test_accuracy"), "{:.4f}")
            for x in "ab"
        ]
        lines.append(
            f"| {model} | {(d['state_sha256_a'] or '-')[:16]} | "
            f"{(d['state_sha256_b'] or '-')[:16]} | {equal} | {accs[0]} | {accs[1]} |"
        )
    air = r["airbench94"]
    lines += [
        "",
        "## airbench94 (configs/airbench94.py, bf16, once)",
        "",
        "| | train + TTA s | accuracy (TTA) |",
        "|---|---:|---:|",
        f"| this run | {_fmt(air.get('train_and_tta_seconds'), '{:.2f}')} | "
        f"{_fmt(air.get('accuracy_tta'), '{:.4f}')} |",
        f"| airbench94, published, one A100 (float16) | {AIRBENCH_A100_SECONDS} | "
        f"{AIRBENCH_MEAN_ACCURACY} (mean) |",
        f"| airbench94 Muon variant, published, one A100 | {AIRBENCH_MUON_A100_SECONDS} | - |",
        "",
        "## Throughput: train step, jax vs the PyTorch twin (python -m cifar_jax bench)",
        "",
        "| model | dtype | batch | jax img/s | torch img/s | jax/torch | torch on | compile s |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for b in r["bench"]:
        if "failed" in b:
            lines.append(f"| {b['model']} | {b['dtype']} | - | failed ({b['failed']}) |||||")
            continue
        lines.append(
            f"| {b['model']} | {b['dtype']} | {b['batch_size']} | "
            f"{_fmt(b['jax_images_per_second'])} | {_fmt(b['torch_images_per_second'])} | "
            f"{_fmt(b['torch_ratio'], '{:.2f}')} | {b['torch_device'] or '-'} | "
            f"{b['train_compile_seconds']:.1f} |"
        )
    for name, excerpt in r["excerpts"].items():
        lines += ["", f"## {name}: {r['stages'][name]['status']} (logs/{name}.log)", "", "```"]
        lines += [x.replace("```", "'''") for x in excerpt] + ["```"]
    lines += [
        "",
        "## Stages",
        "",
        "| stage | status | seconds | key numbers |",
        "|---|---|---:|---|",
    ]
    for name, st in r["stages"].items():
        key = st.get("key") or st.get("note", "")
        lines.append(f"| {name} | {st['status']} | {st['seconds']:.1f} | {key.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- pack


def pack(out_dir: str, dest_dir: str) -> int:
    """DEST gets summary.md, summary.json and gpu_check_logs.tar.gz: every log and record
    of OUT (stage logs, env/data/install JSON, the runs' results and metrics, the benches'
    reports), never a model state, each file cut to its last 2 MiB, the archive under 12 MiB
    (what did not fit is named in PACKED.txt inside). Three files, far under what a device
    call returns (8 files of at most 16 MiB)."""
    out, dest = Path(out_dir).resolve(), Path(dest_dir).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if (
            not path.is_file()
            or path.is_symlink()
            or set(rel.parts[:-1]) & PACK_SKIP_DIRS
            or path.resolve().is_relative_to(dest)
        ):
            continue
        files.append((rel, path))
    buf = io.BytesIO()
    left, notes = PACK_LIMIT_BYTES, []
    with tarfile.open(fileobj=buf, mode="w") as tar:
        # Small files first: many small records are worth more than one huge log.
        for rel, path in sorted(files, key=lambda x: x[1].stat().st_size):
            payload = path.read_bytes()
            if len(payload) > PACK_FILE_LIMIT_BYTES:
                notes.append(f"{rel}: {len(payload):,} bytes, only the last 2 MiB kept")
                payload = payload[-PACK_FILE_LIMIT_BYTES:]
            if len(payload) > left:
                notes.append(f"{rel}: {len(payload):,} bytes, left out (archive full)")
                continue
            left -= len(payload)
            info = tarfile.TarInfo(f"gpu_check_out/{rel}")
            info.size, info.mtime = len(payload), int(path.stat().st_mtime)
            tar.addfile(info, io.BytesIO(payload))
        listing = ("\n".join(notes) or "everything but model states and staged data") + "\n"
        info = tarfile.TarInfo("gpu_check_out/PACKED.txt")
        info.size = len(listing.encode())
        tar.addfile(info, io.BytesIO(listing.encode()))
    packed = gzip.compress(buf.getvalue(), compresslevel=6)
    tmp = dest / "gpu_check_logs.tar.gz.tmp"
    tmp.write_bytes(packed)
    os.replace(tmp, dest / "gpu_check_logs.tar.gz")
    for name in ("summary.md", "summary.json"):
        if (out / name).is_file() and out != dest:
            payload = (out / name).read_bytes()[-RETURN_FILE_LIMIT_BYTES // 2 :]
            (dest / (name + ".tmp")).write_bytes(payload)
            os.replace(dest / (name + ".tmp"), dest / name)
    return 0


def main(argv: list[str]) -> int:
    commands = {
        "bundle-data": bundle_data,
        "manifest": manifest,
        "install-check": install_check,
        "env": env,
        "data": data,
        "summary": summary,
        "pack": pack,
    }
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]](*argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
