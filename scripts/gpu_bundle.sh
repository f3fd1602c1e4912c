#!/usr/bin/env bash
# Builds what the lent GPU machine needs into gpu_bundle/ (gitignored), checks that the
# working tree and the bundle fit what one device call carries (64 MiB), and prints the
# device call to make. Run it in the repo, just before the call (docs/gpu.md):
#
#   scripts/gpu_bundle.sh
#
# gpu_bundle/wheels/   cp312 wheels the GPU image (Python 3.12, jax 0.11.2 + CUDA 13
#                      plugin, torch, flax/optax/orbax of its own; no network) lacks, and
#                      pinned pure-Python flax/optax/orbax-checkpoint/protobuf, so that its
#                      own versions of those do not matter. gpu_check.sh installs them with
#                      `pip install --no-index --no-deps --target` + PYTHONPATH, never into
#                      the image's environment.
# gpu_bundle/data/     cifar-10-partial.tar.xz: the official test_batch.bin and
#                      data_batch_1.bin (MD5-checked against the published sums), 43.8 MB.
# gpu_bundle/manifest.json  the commit, the uncommitted changes, every file of the tree
#                      that travels with its sha256 (the check compares), wheels, data.
#
# Environment (all optional):
#   GPU_BUNDLE_CIFAR10  the CIFAR-10 binary release (the folder holding test_batch.bin, or
#                       its parent); default: ../shared/data/cifar10 beside the repo, else
#                       $CIFAR_JAX_SHARED_DATA/cifar10, else $CIFAR_JAX_DATA or
#                       ~/.cache/cifar_jax
#   GPU_BUNDLE_PYTHON   the Python whose pip downloads the wheels (default python3; any
#                       version: the wheels are chosen for Python 3.12)
#   GPU_CHECK_BUDGET_S  the check's budget (default 300); the printed timeout_s adds 60
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bundle=$repo/gpu_bundle
py=${GPU_BUNDLE_PYTHON:-python3}
budget=${GPU_CHECK_BUDGET_S:-300}

# What the GPU image lacks (grain and the packages it imports, clu, ml_collections,
# tensorboardX; the image's package list: the device tool's KINDS.md, 2026-11-17), and
# the pure-Python packages pinned over the image's own: the versions a fresh
# `pip install -e .` resolves, as in CI (2026-12-07: the newest of each); keep them so.
# jax, jaxlib, numpy, scipy, tensorstore, msgpack and the other compiled packages are the
# image's. tqdm and flatbuffers (declared) are in the image.
PINNED=(flax==0.12.12 optax==0.2.8 orbax-checkpoint==0.12.8)
PURE_PROTOBUF=protobuf==7.36.2
MISSING=(grain==0.2.18 array_record==0.8.6 portpicker==1.6.0 clu==0.0.12
  ml_collections==1.1.0 tensorboardX==2.6.5)

echo "== wheels for Python 3.12 (x86-64 Linux) -> gpu_bundle/wheels"
rm -rf "$bundle/wheels"
mkdir -p "$bundle/wheels" "$bundle/data"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
  manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "$p")
done
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  "${platforms[@]}" -d "$bundle/wheels" "${PINNED[@]}" "${MISSING[@]}"
# protobuf's pure-Python wheel (py3-none-any), not its compiled one.
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation py --abi none --platform any \
  -d "$bundle/wheels" "$PURE_PROTOBUF"
n_wanted=$((${#PINNED[@]} + ${#MISSING[@]} + 1))
n_got=$(find "$bundle/wheels" -name '*.whl' | wc -l)
if [ "$n_got" -ne "$n_wanted" ]; then
  echo "error: gpu_bundle/wheels has $n_got wheels, not the $n_wanted asked for:" >&2
  ls "$bundle/wheels" >&2
  exit 1
fi
ls -1 "$bundle/wheels"

echo "== CIFAR-10 test + data_batch_1 -> gpu_bundle/data"
source=${GPU_BUNDLE_CIFAR10:-}
if [ -z "$source" ]; then
  for candidate in "$repo/../shared/data/cifar10" "${CIFAR_JAX_SHARED_DATA:-/nonexistent}/cifar10" \
    "${CIFAR_JAX_DATA:-$HOME/.cache/cifar_jax}"; do
    if [ -f "$candidate/cifar-10-batches-bin/test_batch.bin" ]; then source=$candidate; break; fi
  done
fi
if [ -z "$source" ]; then
  echo "error: no CIFAR-10 binary release found (../shared/data/cifar10, \$CIFAR_JAX_SHARED_DATA," \
    "\$CIFAR_JAX_DATA, ~/.cache/cifar_jax): set GPU_BUNDLE_CIFAR10 to the folder holding" \
    "cifar-10-batches-bin/ (python -m cifar_jax.main downloads it there on first use)." >&2
  exit 1
fi
"$py" scripts/gpu_check.py bundle-data "$source" "$bundle/data/cifar-10-partial.tar.xz"

echo "== manifest and size"
"$py" scripts/gpu_check.py manifest "$bundle" "$repo" "$budget"

cat <<EOF

== The device call (one try; docs/gpu.md). Pass to the device tool's run:
kind:      leave it out (an H100; the H200 runs it too)
carry:     ["gpu_bundle"]
timeout_s: $((budget + 60))
command:   GPU_CHECK_RETURN="\$OUT" bash scripts/gpu_check.sh
Make it before anything changes in the tree (the check compares the tree with
gpu_bundle/manifest.json). summary.md, summary.json and gpu_check_logs.tar.gz come back
in the call's files; the stage table is the end of its output.
EOF
