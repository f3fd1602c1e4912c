#!/usr/bin/env bash
# The GPU check: one call on a machine with an NVIDIA GPU, under 8 minutes, install included.
#
#   scripts/gpu_check.sh                         # on the GPU machine, from anywhere
#   GPU_CHECK_PLATFORM=cpu scripts/gpu_check.sh  # the same stages on the CPU, tiny budgets
#
# Stages, each time-boxed (`timeout`), each recorded in the summary whether it passed or
# not, none stopping the others; a stage that would start too close to the whole-run
# budget is recorded as skipped:
#   install       pip install -e ".[cuda12]" (+ ".[bench]" where torch is missing) if the
#                 network answers; else `pip install --no-deps -e .` over the machine's jax
#                 plus the wheels in $GPU_CHECK_WHEELS that the machine lacks (never one it
#                 has); skipped on the CPU
#   env           GPU name (nvidia-smi, read only), jax/jaxlib/torch versions, the backend
#   data          which data the runs use: full CIFAR-10, part of it (some data_batch_*.bin
#                 files: --config.allow_partial_train_files) or none (synthetic)
#   train_*_a/_b  LeNet and resnet_small, a short fixed number of steps, twice each with
#                 --config.deterministic=true: test accuracy and state_sha256 equality
#   bench_f32/bf16  python -m cifar_jax.bench against the PyTorch twins on the same GPU,
#                 float32 and bf16 (--override=half_precision=true)
#   airbench94    configs/airbench94.py once (bf16), its time beside airbench's A100 figures
#   tests         the GPU-relevant tests (those marked `accelerator`), on the GPU
#                 (CIFAR_JAX_TEST_PLATFORM=cuda: tests/platforms.py)
#   tests_cpu     tests that need CPU devices, on this GPU host: the suite forces the CPU
#                 platform for itself (tests/conftest.py)
# Then $GPU_CHECK_OUT/summary.json and summary.md; the markdown is printed last, ending
# with the table of stages. Exit status 1 if a stage failed or timed out.
#
# Environment (all optional):
#   CIFAR_JAX_DATA      the CIFAR-10 binary release: its folder (cifar-10-batches-bin, or
#                       the folder holding it) or cifar-10-binary.tar.gz's folder; may hold
#                       only some data_batch_*.bin (plus test_batch.bin). Default: gpu_data/
#                       in the repo if present, else ~/.cache/cifar_jax; none: synthetic.
#   GPU_CHECK_OUT       output folder (default gpu_check_out/ in the repo)
#   GPU_CHECK_WHEELS    folder of wheels for an offline machine (default gpu_wheels/)
#   GPU_CHECK_PLATFORM  gpu (default) or cpu (no install, tiny budgets: a smoke test)
#   GPU_CHECK_INSTALL   auto (default: online if pypi.org answers in 3 s), online, offline,
#                       skip
#   GPU_CHECK_BUDGET_S  the whole run's budget in seconds (default 450 on a GPU)
#   GPU_CHECK_STAGES    comma-separated stages to run (default all; the rest are recorded
#                       as not selected)
#   GPU_CHECK_TESTS     the pytest arguments of the tests stage
#   GPU_CHECK_TESTS_CPU the pytest arguments of the tests_cpu stage
#   GPU_CHECK_COMMIT    the commit, where the copy has no .git
#   GPU_CHECK_PYTHON    the Python to use (default python3)
#
# It never changes the GPU's settings (nvidia-smi is only queried) and sets no
# CUDA_VISIBLE_DEVICES. README.md ("GPU check") and docs/gpu.md say what to carry.

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2

PLATFORM=${GPU_CHECK_PLATFORM:-gpu}
OUT=${GPU_CHECK_OUT:-$REPO/gpu_check_out}
WHEELS=${GPU_CHECK_WHEELS:-$REPO/gpu_wheels}
INSTALL=${GPU_CHECK_INSTALL:-auto}
PY=${GPU_CHECK_PYTHON:-python3}
STAGES=${GPU_CHECK_STAGES:-all}
case "$PLATFORM" in
  gpu) BUDGET=${GPU_CHECK_BUDGET_S:-450} ;;
  cpu) BUDGET=${GPU_CHECK_BUDGET_S:-600} ;;
  *) echo "error: GPU_CHECK_PLATFORM=$PLATFORM: use gpu or cpu" >&2; exit 2 ;;
esac
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
case "$WHEELS" in /*) ;; *) WHEELS=$REPO/$WHEELS ;; esac
# Only what this script writes is removed: earlier runs' workdirs would be resumed.
rm -rf "$OUT/runs" "$OUT/logs" "$OUT/bench_f32" "$OUT/bench_bf16" "$OUT/data_staged"
rm -f "$OUT/stages.tsv" "$OUT"/{env,data,install,summary}.json "$OUT/summary.md"
mkdir -p "$OUT/logs" "$OUT/runs"

now() { date +%s.%N; }
START=$(now)
RESERVE=20  # seconds kept for the summary
export PYTHONUNBUFFERED=1
export GPU_CHECK_COMMIT=${GPU_CHECK_COMMIT:-$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
# The package runs from this checkout even where `pip install -e .` cannot run.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ "$PLATFORM" = cpu ]; then export JAX_PLATFORMS=cpu; else export JAX_PLATFORMS=cuda; fi

log() { echo "[gpu_check $(date +%H:%M:%S)] $*" >&2; }

selected() {
  [ "$STAGES" = all ] && return 0
  case ",$STAGES," in *",$1,"*) return 0 ;; esac
  return 1
}

# record NAME STATUS SECONDS RC NOTE
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$OUT/stages.tsv"; }

# stage NAME TIMEOUT_S CMD...: run CMD (a program, not a function) under `timeout`, output
# to logs/NAME.log, and record
# ok / failed / timeout / skipped (not selected, or too little of the budget left).
stage() {
  local name=$1 limit=$2 left start rc status secs
  shift 2
  if ! selected "$name"; then
    record "$name" "not selected" 0 - "GPU_CHECK_STAGES=$STAGES"
    return 0
  fi
  left=$(awk -v s="$START" -v n="$(now)" -v b="$BUDGET" -v r="$RESERVE" 'BEGIN{printf "%d", b - (n - s) - r}')
  if [ "$left" -lt 10 ]; then
    record "$name" skipped 0 - "too little of the ${BUDGET} s budget left"
    log "$name: skipped (budget)"
    return 0
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  log "$name: started (time box ${limit} s)"
  start=$(now)
  timeout --kill-after=10 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
  rc=$?
  secs=$(awk -v s="$start" -v n="$(now)" 'BEGIN{printf "%.1f", n - s}')
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  record "$name" "$status" "$secs" "$rc" "logs/$name.log (time box ${limit} s)"
  log "$name: $status in ${secs} s (logs/$name.log)"
  return 0
}

# ------------------------------------------------------------------------------ install

install_online() {
  local extras=cuda12
  # torch from PyPI is GBs of CUDA wheels: only where the machine has none.
  "$PY" -c "import torch" 2>/dev/null || extras=cuda12,bench
  echo "mode: online (pip install -e .[$extras])"
  "$PY" -m pip install --progress-bar off -e ".[$extras]"
}

install_offline() {
  echo "mode: offline (pip install --no-deps -e . over the machine's jax, wheels from $WHEELS)"
  # --no-build-isolation: no index to fetch setuptools from. If even that fails, the
  # package still runs from the checkout (PYTHONPATH above).
  "$PY" -m pip install --no-deps --no-build-isolation --no-index -e . ||
    echo "pip install -e . failed; the package runs from $REPO through PYTHONPATH"
  local missing=()
  mapfile -t missing < <("$PY" scripts/gpu_check.py missing-wheels "$WHEELS")
  if [ "${#missing[@]}" -gt 0 ]; then
    "$PY" -m pip install --no-index --no-deps --no-compile "${missing[@]}" || return 1
  fi
}

install_stage() {
  local mode=$INSTALL
  if [ "$mode" = auto ]; then
    mode=offline
    if timeout 5 "$PY" -c "import urllib.request as u; u.urlopen('https://pypi.org/simple/pip/', timeout=3)" >/dev/null 2>&1; then
      mode=online
    fi
  fi
  printf '{"mode": "%s"}\n' "$mode" >"$OUT/install.json"
  case $mode in
    online) install_online || return 1 ;;
    offline) install_offline || return 1 ;;
    skip) echo "mode: skip (GPU_CHECK_INSTALL=skip)" ;;
    *) echo "GPU_CHECK_INSTALL=$mode: use auto, online, offline or skip"; return 2 ;;
  esac
  # What a training run imports (grain, clu, ml_collections, tensorboardX, ...).
  "$PY" -c "import cifar_jax.main, cifar_jax.train, cifar_jax.bench; print('imports ok')"
}

export PY WHEELS INSTALL OUT REPO
if [ "$PLATFORM" = cpu ]; then
  record install skipped 0 - "GPU_CHECK_PLATFORM=cpu"
else
  stage install 240 bash -c "$(declare -f install_online install_offline install_stage); install_stage"
fi

stage env 60 "$PY" scripts/gpu_check.py env "$OUT" "$PLATFORM"
stage data 60 "$PY" scripts/gpu_check.py data "$OUT" "$REPO"

# ------------------------------------------------------------------------- budgets

DATA_KIND=synthetic
DATA_DIR=
if [ -f "$OUT/data.json" ]; then
  DATA_KIND=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['kind'])" "$OUT/data.json")
  DATA_DIR=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['data_dir'])" "$OUT/data.json")
fi
if [ "$PLATFORM" = cpu ]; then
  SYN=(--config.synthetic_train_examples=512 --config.synthetic_test_examples=128)
  LENET=(--config.num_train_steps=3 --config.batch_size=32 --config.log_every_steps=1)
  RESNET=(--config.num_train_steps=2 --config.batch_size=32 --config.log_every_steps=1
    "--config.widths=(8,8,8)" --config.stem_width=8 --config.val_examples=64)
  AIRBENCH=(--config.num_train_steps=2 --config.batch_size=32 --config.log_every_steps=1
    "--config.widths=(8,8,8)" --config.data_init_examples=64 --config.eval_batch_size=128
    --config.warmup_epochs=0)
  BENCH=(--models=lenet --batch_sizes=32 --steps=1 --rounds=1 --seconds=0.05
    --override=synthetic_train_examples=2048 --override=synthetic_test_examples=128)
  BENCH_BF16_MODELS=lenet
  TEST_ARGS=(tests/test_runtime.py -k "gpu_run or deterministic_adds")
  TEST_CPU_ARGS=(tests/test_platforms.py -k "chosen")
else
  SYN=(--config.synthetic_train_examples=50000 --config.synthetic_test_examples=10000)
  LENET=(--config.num_train_steps=300)
  RESNET=(--config.num_train_steps=300 --config.val_examples=1000)
  AIRBENCH=()
  # shellcheck disable=SC2054  # the commas are --models' own
  BENCH=(--models=lenet,resnet_small,airbench94 --batch_sizes=512 --rounds=3 --seconds=0.3)
  BENCH_BF16_MODELS=resnet_small,airbench94
  # Unit tests of the GPU set-up, the bf16 step, the CUDA lowering of the three models, the
  # CPU-pinned conv benchmark and the session's platform, with the GPU as JAX's default.
  TEST_ARGS=(tests/test_runtime.py tests/test_half_precision.py tests/test_lowering.py
    tests/test_bench.py tests/test_platforms.py -m "accelerator and not slow"
    -k "not every_config or lenet or resnet_small or airbench94")
  # With the GPU there but not chosen: 8 forced CPU devices (in-process and in
  # subprocesses), the oneDNN custom call (skipped without the oneDNN wheels).
  TEST_CPU_ARGS=(tests/test_platforms.py
    tests/test_materialize.py::test_conv_input_adds_no_communication_on_a_sharded_batch
    tests/test_onednn.py::test_outside_the_steps_multi_device_meshes_and_the_switch_keep_xla_convs
    tests/test_onednn.py::test_conv_hook_uses_onednn_on_one_cpu_device
    tests/test_train.py::test_batch_size_the_devices_cannot_split_is_a_clear_error)
fi
if [ "$DATA_KIND" = synthetic ]; then
  DATA=(--config.data_source=synthetic "${SYN[@]}")
  BENCH_DATA=(--data_source=synthetic)
else
  DATA=(--config.data_source=files "--config.data_dir=$DATA_DIR" --config.allow_partial_train_files=true)
  BENCH_DATA=(--data_source=files "--override=data_dir=$DATA_DIR" --override=allow_partial_train_files=true)
fi
# The configs' own validation splits (lenet's 10,000) must fit in one data_batch file;
# resnet_small's plateau schedule needs one.
BENCH_DATA+=(--override=val_examples=1000)

# ------------------------------------------------------------------ train and compare

# train WORKDIR CONFIG: the training command (then its own flags), as TRAIN=(...).
train() {
  TRAIN=("$PY" -m cifar_jax.main "--config=configs/$2.py" "--workdir=$OUT/runs/$1"
    --config.checkpoint_every_steps=100000 "${DATA[@]}")
}
for run in a b; do
  train "lenet_$run" lenet
  stage "train_lenet_$run" 90 "${TRAIN[@]}" --config.deterministic=true \
    --config.val_examples=0 "${LENET[@]}"
done
for run in a b; do
  train "resnet_small_$run" resnet_small
  stage "train_resnet_small_$run" 120 "${TRAIN[@]}" --config.deterministic=true "${RESNET[@]}"
done

BENCH_CMD=("$PY" -m cifar_jax.bench "${BENCH_DATA[@]}")
stage bench_f32 150 "${BENCH_CMD[@]}" "--out=$OUT/bench_f32" "${BENCH[@]}"
train airbench94 airbench94
stage airbench94 150 "${TRAIN[@]}" --config.half_precision=true "${AIRBENCH[@]}"
BF16=()
for arg in "${BENCH[@]}"; do
  case $arg in --models=*) BF16+=("--models=$BENCH_BF16_MODELS") ;; *) BF16+=("$arg") ;; esac
done
stage bench_bf16 120 "${BENCH_CMD[@]}" "--out=$OUT/bench_bf16" "${BF16[@]}" \
  --override=half_precision=true

# The suite chooses its own platform (tests/conftest.py sets JAX_PLATFORMS): the CPU unless
# CIFAR_JAX_TEST_PLATFORM asks for the GPU. GPU_CHECK_TESTS(_CPU) are split as the shell
# splits a command line (quotes kept), e.g. 'tests/test_bench.py -k "lenet"'.
if [ -n "${GPU_CHECK_TESTS:-}" ]; then
  eval "TEST_ARGS=($GPU_CHECK_TESTS)"
fi
if [ -n "${GPU_CHECK_TESTS_CPU:-}" ]; then
  eval "TEST_CPU_ARGS=($GPU_CHECK_TESTS_CPU)"
fi
TEST_PLATFORM=()
[ "$PLATFORM" = gpu ] && TEST_PLATFORM=(CIFAR_JAX_TEST_PLATFORM=cuda)
stage tests 120 env -u JAX_PLATFORMS "${TEST_PLATFORM[@]}" "$PY" -m pytest -q -p no:cacheprovider \
  "${TEST_ARGS[@]}"
stage tests_cpu 120 env -u JAX_PLATFORMS -u CIFAR_JAX_TEST_PLATFORM "$PY" -m pytest -q \
  -p no:cacheprovider "${TEST_CPU_ARGS[@]}"

# --------------------------------------------------------------------------- summary

end=$(now)
timeout 60 "$PY" scripts/gpu_check.py summary "$OUT" "$PLATFORM" \
  "$(awk -v s="$START" -v n="$end" 'BEGIN{printf "%.1f", n - s}')" "$BUDGET"
