#!/usr/bin/env bash
# The GPU check rehearsed without a GPU, on what the lent GPU machine has: a fresh Python
# 3.12 venv with the newest jax that pyproject.toml allows on 3.12 (today 0.11.2, the GPU
# image's; JAX_VERSION picks another, e.g. the index's newest) and its CUDA 13 plugin
# (--no-deps),
# plus the packages of the GPU image that the package uses (and nothing the image lacks:
# checked against its package list), no oneDNN. Then scripts/gpu_bundle.sh, and
# scripts/gpu_check.sh in its CPU mode with its install stage: the bundle's wheels only,
# offline, into a --target folder on PYTHONPATH, as on the GPU machine. It must pass every
# stage, with the bundle's pinned flax/optax/orbax/protobuf shadowing the image's newer
# ones, on the bundle's CIFAR-10 (partial). Meant as a stage of .ci/run (docs/gpu.md).
#
#   bash scripts/py312_check.sh [VENV_DIR]     (default: a temporary folder)
#
# Environment: PY312 (the Python 3.12 to use; default python3.12, or pyenv's),
# JAX_VERSION (default: the newest pyproject.toml allows on Python 3.12),
# PY312_CHECK_KEEP (a folder to keep the written-back summary.md/.json and logs in).
set -euo pipefail
cd "$(dirname "$0")/.."
# Python 3.12: $PY312, else a python3.12 on the PATH that runs (a pyenv shim may not), else
# pyenv's newest 3.12.
py312=${PY312:-}
if [ -z "$py312" ] && python3.12 -c "" 2>/dev/null; then py312=$(command -v python3.12); fi
if [ -z "$py312" ]; then
  for candidate in "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.12*/bin/python3.12; do
    [ -x "$candidate" ] && py312=$candidate
  done
fi
if [ -z "$py312" ] || ! "$py312" -c "import sys; assert sys.version_info[:2] == (3, 12)"; then
  echo "py312_check: no Python 3.12 found (PATH, pyenv): install one or set PY312" >&2
  exit 1
fi
venv=$(realpath -m "${1:-$(mktemp -d)/venv}")  # absolute: stages run elsewhere
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

# The GPU image's Python packages (the device tool's KINDS.md, read 2026-11-17): the venv
# may hold these and no others, so a package the bundle forgot fails here, not there.
IMAGE_HAS="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio
attrs botorch build certifi charset-normalizer chex click cloudpickle cmake colorama
contourpy coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x
cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader
lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests
rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp"
# What the package and the check use of them (their own dependencies come along). flax,
# optax and orbax-checkpoint at the index's newest: the bundle's pins must win over them.
# python-dateutil 3+ (matplotlib's) needs tzdata, which the image lacks: its dateutil is 2.x.
USES=(flax optax orbax-checkpoint chex absl-py matplotlib pillow tqdm flatbuffers
  cloudpickle etils fsspec zipp psutil pytest "python-dateutil<3")

echo "== venv: $("$py312" --version) at $venv"
"$py312" -m venv --clear "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
if [ -z "${JAX_VERSION:-}" ]; then
  # The newest jax pyproject.toml allows on Python 3.12 (today 0.11.2, the GPU image's).
  spec=$("$py" - <<'PY'
import tomllib

from pip._vendor.packaging.requirements import Requirement

with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
(spec,) = [r.specifier for r in map(Requirement, deps)
           if r.name == "jax" and (r.marker is None or r.marker.evaluate())]
print(spec)
PY
)
  "$py" -m pip install --quiet "jax$spec" "jaxlib$spec"
  JAX_VERSION=$("$py" -c "import importlib.metadata as m; print(m.version('jax'))")
fi
"$py" -m pip install --quiet "jax==$JAX_VERSION" "jaxlib==$JAX_VERSION" "${USES[@]}"
# The CUDA plugin as the image has it; its NVIDIA runtime wheels (GBs) are not needed to
# import it, and JAX_PLATFORMS=cpu never starts it.
"$py" -m pip install --quiet --no-deps "jax-cuda13-plugin==$JAX_VERSION" \
  "jax-cuda13-pjrt==$JAX_VERSION"
echo "== scripts/gpu_bundle.sh"
GPU_BUNDLE_PYTHON="$py" bash scripts/gpu_bundle.sh

# What the bundle's wheels require and do not bring themselves must be in the image (its
# list): the venv gets those, as the image has them, and nothing else.
mapfile -t needs < <("$py" - "$IMAGE_HAS" gpu_bundle/wheels <<'PY'
import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from pip._vendor.packaging.requirements import Requirement

norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
allowed = {norm(n) for n in sys.argv[1].split()}
wheels = sorted(Path(sys.argv[2]).glob("*.whl"))
bundled = {norm(w.name.split("-")[0]) for w in wheels}
needs, missing = {}, []
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(z.read(meta).decode())
    for line in headers.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        if norm(req.name) in bundled:
            continue
        if norm(req.name) not in allowed:
            missing.append(f"{wheel.name} needs {req}")
        needs.setdefault(norm(req.name), []).append(str(req.specifier))
if missing:
    sys.exit("py312_check: the bundle lacks what the GPU image lacks too: " + "; ".join(missing))
for name, specs in sorted(needs.items()):
    print(name + ",".join(s for s in dict.fromkeys(specs) if s))
PY
)
echo "the image's packages the bundle relies on: ${needs[*]}"
"$py" -m pip install --quiet "jax==$JAX_VERSION" "jaxlib==$JAX_VERSION" "${needs[@]}" \
  "python-dateutil<3"
"$py" - "$IMAGE_HAS" <<'PY'
import importlib.metadata as md
import re
import sys
import sysconfig

norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
allowed = {norm(n) for n in sys.argv[1].split()}
site = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
here = {norm(d.metadata["Name"]) for d in md.distributions(path=site)}
extra = sorted(here - allowed)
if extra:
    sys.exit(f"py312_check: the venv has packages the GPU image does not: {extra}")
for name in ("grain", "clu", "ml-collections", "tensorboardx", "array-record", "portpicker",
             "onednn-cpu-gomp", "onednn-devel-cpu-gomp", "cifar-jax"):
    if name in here:
        sys.exit(f"py312_check: {name} is in the venv: the check would not test the bundle")
print("venv: only packages the GPU image has;", ", ".join(
    f"{n} {md.version(n)}" for n in ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "optax",
                                     "orbax-checkpoint", "protobuf", "numpy")))
PY

echo "== scripts/gpu_check.sh, CPU mode, the bundle installed offline, no oneDNN"
out="$work/out"
rc=0
GPU_CHECK_PLATFORM=cpu GPU_CHECK_PYTHON="$py" GPU_CHECK_INSTALL=bundle \
  GPU_CHECK_OUT="$out" GPU_CHECK_SITE="$work/site" GPU_CHECK_RETURN="$work/return" \
  PIP_NO_INDEX=1 bash scripts/gpu_check.sh || rc=$?
if [ -n "${PY312_CHECK_KEEP:-}" ]; then  # what a GPU call would return, kept for the record
  mkdir -p "$PY312_CHECK_KEEP" && cp "$work"/return/* "$PY312_CHECK_KEEP"/
fi

"$py" - "$out" "$work/return" "$rc" "$JAX_VERSION" gpu_bundle/wheels <<'PY'
import json
import sys
import tarfile
from pathlib import Path

out, back, rc, jax_version = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
pins = {w.name.split("-")[0].lower(): w.name.split("-")[1] for w in Path(sys.argv[5]).glob("*")}
s = json.loads((out / "summary.json").read_text())
problems = []
status = {name: st["status"] for name, st in s["stages"].items()}
if rc != 0 or any(v != "ok" for v in status.values()):
    problems.append(f"exit {rc}; stages {status}")
mods = s["install"].get("modules", {})
for module, wheel in (("flax", "flax"), ("optax", "optax"), ("orbax.checkpoint",
                      "orbax_checkpoint"), ("google.protobuf", "protobuf")):
    got, version = mods.get(module, {}), pins.get(wheel)
    if got.get("version") != version or got.get("from") != "bundle":
        problems.append(f"{module}: {got}, not the bundle's {version}")
if s["env"].get("jax") != jax_version:
    problems.append(f"jax {s['env'].get('jax')}, not {jax_version}")
if "not installed" not in str(s["env"].get("onednn")):
    problems.append(f"oneDNN: {s['env'].get('onednn')!r}: it must be absent here")
if s["data"]["kind"] != "partial" or s["data"]["train_examples"] != 10_000:
    problems.append(f"data: {s['data']}")
if s["env"].get("tree", {}).get("status") != "matches":
    problems.append(f"tree: {s['env'].get('tree')}")
if s["determinism"]["lenet"]["equal"] is not True:
    problems.append(f"determinism: {s['determinism']}")
tests_cpu = (out / "logs" / "tests_cpu.log").read_text()
if "SKIPPED" not in tests_cpu or "oneDNN unavailable" not in tests_cpu:
    problems.append("tests_cpu: the oneDNN test was not skipped for oneDNN's absence")
returned = sorted(p.name for p in back.iterdir())
if returned != ["gpu_check_logs.tar.gz", "summary.json", "summary.md"]:
    problems.append(f"written back: {returned}")
with tarfile.open(back / "gpu_check_logs.tar.gz") as tar:
    names = tar.getnames()
if not any(n.endswith("logs/tests.log") for n in names) or any("checkpoints" in n for n in names):
    problems.append(f"the logs archive: {names[:20]}")
if problems:
    sys.exit("py312_check: FAILED:\n  " + "\n  ".join(problems))
print(f"py312_check: the GPU check's CPU mode passed on Python 3.12, jax {jax_version}, the "
      f"bundle only, no oneDNN ({len(status)} stages ok, wall {s['wall_seconds']:.0f} s)")
PY
echo "py312_check: passed in $(($(date +%s) - start)) s"
