#!/usr/bin/env bash
# The README's install, tested as a new user meets it: a fresh venv with only
# `pip install -e .` (no extras), then the user path on a tiny run: train, rerun to
# resume, evaluate, predict an image file, export StableHLO (checked), and
# cifar_jax.load_run(...).predict from Python. A dependency that only an extra brings
# (flatbuffers came only with [test] once) fails here. .ci/run runs it.
#
#   bash scripts/plain_install_check.sh [VENV_DIR]     (default: a temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
# Absolute: the user path below runs in a temporary folder (a relative VENV_DIR, as
# .ci/run passes, would not be found from there).
venv=$(realpath -m "${1:-$(mktemp -d)/venv}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e .
py="$venv/bin/python"
# Nothing of the extras may be here by accident: the check means nothing if they are.
if "$py" -c "import onnxruntime" 2>/dev/null || "$py" -c "import pytest" 2>/dev/null; then
  echo "plain_install_check: the plain venv has an extra's package installed" >&2; exit 1
fi

cd "$work"
tiny=(--config="$repo/configs/lenet.py" --config.data_source=synthetic
      --config.synthetic_train_examples=256 --config.synthetic_test_examples=64
      --config.batch_size=32 --config.val_examples=0 --config.log_every_steps=4)
echo "== train 4 steps, then rerun to 8 (resume)"
"$py" -m cifar_jax.main "${tiny[@]}" --config.num_train_steps=4 --workdir=run
"$py" -m cifar_jax.main "${tiny[@]}" --config.num_train_steps=8 --workdir=run | tee resume.log
grep -q "Resumed from checkpoint at step 4" resume.log
echo "== evaluate"
"$py" -m cifar_jax evaluate --workdir=run
echo "== predict an image file"
"$py" -c "from PIL import Image; Image.new('RGB', (40, 30), (200, 30, 30)).save('red.png')"
"$py" -m cifar_jax predict --workdir=run red.png --json > predict.json
"$py" -c "import json; p = json.load(open('predict.json')); assert p, p"
echo "== export stablehlo (checked against the package)"
"$py" -m cifar_jax export --workdir=run --format=stablehlo --out=run.jax
test -s run.jax
echo "== load_run(...).predict"
"$py" - <<'PY'
import numpy as np

import cifar_jax

run = cifar_jax.load_run("run")
images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
out = run.predict(images)
assert len(out.classes) == 3, out.classes
print("load_run(...).predict:", out.classes)
PY
echo "plain_install_check: passed"
