"""The Python half of scripts/gpu_check.sh (standard library only, except ``data``).

python scripts/gpu_check.py missing-wheels WHEELS   # the wheels whose package is absent
python scripts/gpu_check.py env OUT PLATFORM        # OUT/env.json: GPU, versions, backend
python scripts/gpu_check.py data OUT REPO           # OUT/data.json: which data the runs use
python scripts/gpu_check.py summary OUT PLATFORM WALL BUDGET  # summary.json/.md, printed
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

# airbench94's published figures (KellerJordan/cifar10-airbench, legacy/airbench94.py;
# arXiv 2404.00498): one A100, float16, the TTA evaluation included in the time.
AIRBENCH_A100_SECONDS = 3.83
AIRBENCH_MUON_A100_SECONDS = 2.59
AIRBENCH_MEAN_ACCURACY = 0.9401
# A real-data GPU check run must end at least here (chance is 0.10): it learned something.
MIN_ACCURACY = 0.25
CIFAR10_NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()
TRAIN_PAIRS = ("lenet", "resnet_small")


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=str) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------ missing-wheels


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_wheels(folder: str) -> int:
    """Prints the wheels of ``folder`` whose distribution is not installed (never replaces
    one the machine has: its jax, flax or protobuf stay as they are)."""
    for wheel in sorted(Path(folder).glob("*.whl")) if Path(folder).is_dir() else []:
        name = _normalize(wheel.name.split("-")[0])
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            print(wheel)
    return 0


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


def env(out: str, platform: str) -> int:
    info: dict[str, Any] = {"python": sys.version.split()[0], "nvidia_smi": _nvidia_smi()}
    for dist in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "torch"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    plugins = [
        d.metadata["Name"]
        for d in importlib.metadata.distributions()
        if re.match(r"jax[-_]cuda\d+[-_](plugin|pjrt)", d.metadata["Name"] or "")
    ]
    info["jax_plugins"] = sorted(set(plugins))
    status = 0
    try:
        import jax

        devices = jax.devices()
        info["backend"] = jax.default_backend()
        info["devices"] = f"{len(devices)} x {devices[0].device_kind}"
    except Exception as e:  # noqa: BLE001 - any failure to start the backend is the finding
        info["backend_error"] = f"{type(e).__name__}: {e}"
        status = 1
    try:
        import torch

        info["torch_cuda"] = torch.cuda.is_available()
        if info["torch_cuda"]:
            info["torch_device"] = torch.cuda.get_device_name(0)
    except Exception as e:  # noqa: BLE001
        info["torch_error"] = f"{type(e).__name__}: {e}"
    _write_json(Path(out) / "env.json", info)
    print(json.dumps(info, indent=2, default=str))
    if platform == "gpu" and info.get("backend") != "gpu":
        print(f"error: JAX's backend is {info.get('backend')!r}, not the GPU", file=sys.stderr)
        status = 1
    return status


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
    staged = out / "data_staged" / "cifar-10-batches-bin"
    staged.mkdir(parents=True, exist_ok=True)
    for f in folder.glob("*.bin"):
        (staged / f.name).unlink(missing_ok=True)
        (staged / f.name).symlink_to(f.resolve())
    (staged / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    print(f"{folder} has no batches.meta.txt: using {staged} (links + the class names)")
    return staged


def data(out: str, repo: str) -> int:
    """Finds CIFAR-10 for the runs: $CIFAR_JAX_DATA, else <repo>/gpu_data, else the
    package's default folder. Full, partial (some training batch files) or synthetic."""
    from cifar_jax import config_base
    from cifar_jax.data import sources
    from cifar_jax.errors import CifarJaxError

    env_dir = os.environ.get("CIFAR_JAX_DATA", "")
    candidates = [env_dir] if env_dir else [str(Path(repo) / "gpu_data"), ""]
    tried = []
    for candidate in candidates:
        config = config_base.base_config()  # "" -> its default folder
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
        return [x.strip() for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return []


def _last_line(out: Path, name: str) -> str:
    return (_log_lines(out, name) or [""])[-1][:200]


def _last_error(out: Path, name: str) -> str:
    """The last line of a failed stage's log that looks like the error."""
    lines = _log_lines(out, name)
    hits = [x for x in lines if re.search(r"error|Error|FAILED|Traceback|failed", x)]
    return (hits or lines or [""])[-1][:200]


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


def summary(out_dir: str, platform: str, wall: str, budget: str) -> int:
    out = Path(out_dir)
    stages = _stages(out)
    env_info = _read_json(out / "env.json") or {}
    data_info = _read_json(out / "data.json") or {"kind": "synthetic", "source": "unknown"}
    install = _read_json(out / "install.json") or {}
    synthetic = data_info["kind"] == "synthetic"
    check_accuracy = platform == "gpu" and not synthetic

    train = {}
    for model in (*TRAIN_PAIRS, "airbench94"):
        for run in ("a", "b") if model in TRAIN_PAIRS else ("",):
            name = f"{model}_{run}" if run else model
            train[name] = _train_numbers(out, name)
    determinism = {}
    for model in TRAIN_PAIRS:
        a, b = train[f"{model}_a"], train[f"{model}_b"]
        equal = None if not (a and b) else a["state_sha256"] == b["state_sha256"]
        determinism[model] = {
            "state_sha256_a": a and a["state_sha256"],
            "state_sha256_b": b and b["state_sha256"],
            "equal": equal,
        }
    bench = _bench_rows(out, "bench_f32") + _bench_rows(out, "bench_bf16")

    # Key numbers per stage, and stages whose numbers are wrong although they ran.
    for model in TRAIN_PAIRS:
        for run in ("a", "b"):
            st, nums = stages.get(f"train_{model}_{run}"), train[f"{model}_{run}"]
            if not st or not nums:
                continue
            acc = nums.get("test_accuracy")
            st["numbers"] = nums
            if synthetic:
                st["key"] = f"synthetic: timing only; {nums['train_images_per_second']:,.0f} img/s"
            else:
                st["key"] = (
                    f"test acc {acc:.4f}, {nums['steps']} steps, "
                    f"{nums['train_images_per_second']:,.0f} img/s"
                )
            if check_accuracy and st["status"] == "ok" and acc < MIN_ACCURACY:
                st["status"] = "failed"
                st["key"] += f" (below {MIN_ACCURACY}: it did not learn)"
            if run == "b" and determinism[model]["equal"] is not None:
                same = determinism[model]["equal"]
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
            st["key"] = f"mode {install.get('mode')}"
        if name == "env" and env_info:
            st["key"] = f"backend {env_info.get('backend')}, {env_info.get('devices')}"
        if name == "data":
            st["key"] = data_info["kind"] + (
                f": {data_info['train_examples']:,} train images" if not synthetic else ""
            )
    for name in ("tests", "tests_cpu"):
        if stages.get(name, {}).get("status") in ("ok", "failed"):
            stages[name]["key"] = _last_line(out, name)  # pytest's counts
    for name, st in stages.items():
        if st["status"] in ("failed", "timeout") and "key" not in st:
            st["key"] = _last_error(out, name)

    gpus = (env_info.get("nvidia_smi") or {}).get("gpus") or []
    gpu = gpus[0]["name"] if gpus else (env_info.get("nvidia_smi") or {}).get("error", "none")
    bad = [n for n, s in stages.items() if s["status"] in ("failed", "timeout")]
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "platform": platform,
        "wall_seconds": float(wall),
        "budget_seconds": float(budget),
        "gpu": gpu,
        "gpus": gpus,
        "env": env_info,
        "commit": os.environ.get("GPU_CHECK_COMMIT", "unknown"),
        "install": install,
        "data": data_info,
        "stages": stages,
        "determinism": determinism,
        "bench": bench,
        "airbench94": air,
        "train": train,
        "failed_stages": bad,
    }
    _write_json(out / "summary.json", report)
    md = markdown(report)
    (out / "summary.md").write_text(md, encoding="utf-8")
    print(md, end="")
    return 1 if bad else 0


def markdown(r: dict[str, Any]) -> str:
    env_info, data_info = r["env"], r["data"]
    lines = [
        f"# GPU check, {r['date']} ({r['platform']})",
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
        f"Python {env_info.get('python')}; commit {r['commit']}.",
        f"Install: {r['install'].get('mode', 'skipped')}. Data: **{data_info['kind']}**: "
        f"{data_info['source']}. Wall time {r['wall_seconds']:.0f} s "
        f"(budget {r['budget_seconds']:.0f} s).",
        "",
        "## Determinism (--config.deterministic=true, two runs, same seed)",
        "",
        "| model | state_sha256 run a | run b | equal |",
        "|---|---|---|---|",
    ]
    for model, d in r["determinism"].items():
        equal = {True: "yes", False: "**NO**", None: "-"}[d["equal"]]
        lines.append(
            f"| {model} | {(d['state_sha256_a'] or '-')[:16]} | "
            f"{(d['state_sha256_b'] or '-')[:16]} | {equal} |"
        )
    lines += [
        "",
        "## Throughput: train step, jax vs the PyTorch twin (python -m cifar_jax.bench)",
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
        "## Stages",
        "",
        "| stage | status | seconds | key numbers |",
        "|---|---|---:|---|",
    ]
    for name, st in r["stages"].items():
        key = st.get("key") or st.get("note", "")
        lines.append(f"| {name} | {st['status']} | {st['seconds']:.1f} | {key.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    commands = {"missing-wheels": missing_wheels, "env": env, "data": data, "summary": summary}
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]](*argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
