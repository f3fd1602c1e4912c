#!/usr/bin/env bash
# The GPU check: one device call on a lent GPU machine, within a 300 s budget, so that a
# second call still fits in the loan's 15 minutes. Prepare it with scripts/gpu_bundle.sh,
# which prints the call (docs/gpu.md, "Running the GPU check").
#
#   scripts/gpu_check.sh                         # on the GPU machine, from anywhere
#   GPU_CHECK_PLATFORM=cpu scripts/gpu_check.sh  # the same stages on the CPU, tiny sizes
#
# Stages, cheap and decisive first; each has a time box (`timeout`), each is recorded in
# the summary whether it passed or not, and none stops the others:
#   install     the bundle's wheels (gpu_bundle/wheels) with `pip install --no-index
#               --no-deps --target $GPU_CHECK_SITE`, put first on PYTHONPATH: never into
#               the machine's own environment; then which requirements are unmet and
#               where flax, optax, orbax and protobuf are imported from (the bundle's pins)
#   env         GPU (nvidia-smi, read only), jax/jaxlib/plugins/torch, JAX's backend, and
#               whether the tree is the one the bundle recorded (its commit)
#   data        the bundle's CIFAR-10 (test + data_batch_1, MD5-checked), or $CIFAR_JAX_DATA,
#               or ~/.cache/cifar_jax; full, partial or none (synthetic: timing only)
#   tests       the tests marked `accelerator` (GPU set-up, bf16 step, the CUDA lowering of
#               the three models, the CPU-pinned conv timing), on the GPU
#   train_a/_b  LeNet, 300 steps of 1,024, twice with --config.deterministic=true: equal
#               state_sha256, and test accuracy at least the gate (scripts/gpu_check.py)
#   airbench94  configs/airbench94.py once (bf16), its time beside airbench's A100 figures
#   tests_cpu   tests that need CPU devices, on this GPU host (the suite forces the CPU
#               platform for itself: tests/conftest.py)
#   bench_bf16/bench_f32  python -m cifar_jax bench against the PyTorch twins on the GPU
# The boxes of the stages up to airbench94 fit in the default budget, so none of them can
# be cut by it; tests_cpu and the benches run in what the others leave. A stage whose
# box the budget shortened and that was stopped, or that had too little budget left to
# start, is `cut` (not a failure); one that ran past its own box is `timeout` (a failure).
# After every stage summary.md/.json are rewritten and, with the logs, copied to
# $GPU_CHECK_RETURN, so a call stopped from outside still returns them. The markdown is
# printed last, ending with the table of stages. Exit status 1 if a stage failed or
# timed out.
#
# Environment (all optional):
#   GPU_CHECK_BUNDLE    what gpu_bundle.sh built (default gpu_bundle/ in the repo)
#   GPU_CHECK_RETURN    also write summary.md, summary.json and gpu_check_logs.tar.gz here
#                       (the device call's $OUT); default $GPU_CHECK_OUT/return
#   GPU_CHECK_OUT       working folder (default gpu_check_out/ in the repo)
#   GPU_CHECK_SITE      where the bundle's wheels are installed (default
#                       ${TMPDIR:-/tmp}/cifar_jax_gpu_site, emptied first)
#   GPU_CHECK_INSTALL   auto (default: bundle if it has wheels, else skip), bundle, skip
#   GPU_CHECK_PLATFORM  gpu (default) or cpu (tiny sizes: a rehearsal)
#   GPU_CHECK_BUDGET_S  the whole run's budget in seconds (default 300 on a GPU, 1500 on
#                       the CPU)
#   GPU_CHECK_STAGES    comma-separated stages to run (default all; the rest are recorded
#                       as not selected)
#   GPU_CHECK_TESTS     the pytest arguments of the tests stage
#   GPU_CHECK_TESTS_CPU the pytest arguments of the tests_cpu stage
#   GPU_CHECK_COMMIT    the commit to report (default: the bundle's, else git's)
#   GPU_CHECK_PYTHON    the Python to use (default python3)
#   CIFAR_JAX_DATA      CIFAR-10 to use instead of the bundle's (full or partial)
#
# It never changes the GPU's settings (nvidia-smi is only queried) and sets no
# CUDA_VISIBLE_DEVICES.

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2

PLATFORM=${GPU_CHECK_PLATFORM:-gpu}
OUT=${GPU_CHECK_OUT:-$REPO/gpu_check_out}
BUNDLE=${GPU_CHECK_BUNDLE:-$REPO/gpu_bundle}
SITE=${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/cifar_jax_gpu_site}
INSTALL=${GPU_CHECK_INSTALL:-auto}
PY=${GPU_CHECK_PYTHON:-python3}
STAGES=${GPU_CHECK_STAGES:-all}
case "$PLATFORM" in
  gpu) BUDGET=${GPU_CHECK_BUDGET_S:-300} ;;
  cpu) BUDGET=${GPU_CHECK_BUDGET_S:-1500} ;;
  *) echo "error: GPU_CHECK_PLATFORM=$PLATFORM: use gpu or cpu" >&2; exit 2 ;;
esac
case "$BUNDLE" in /*) ;; *) BUNDLE=$REPO/$BUNDLE ;; esac
if [ "$INSTALL" = auto ]; then
  INSTALL=skip
  compgen -G "$BUNDLE/wheels/*.whl" >/dev/null && INSTALL=bundle
fi
case "$INSTALL" in
  bundle | skip) ;;
  *) echo "error: GPU_CHECK_INSTALL=$INSTALL: use auto, bundle or skip" >&2; exit 2 ;;
esac
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
RETURN_DIR=${GPU_CHECK_RETURN:-$OUT/return}
# Only what this script writes is removed: earlier runs' workdirs would be resumed.
rm -rf "$OUT/runs" "$OUT/logs" "$OUT/bench_f32" "$OUT/bench_bf16" "$OUT/data_staged" \
  "$OUT/return"
rm -f "$OUT/stages.tsv" "$OUT"/{env,data,install,summary}.json "$OUT/summary.md"
mkdir -p "$OUT/logs" "$OUT/runs" "$RETURN_DIR" || exit 2

now() { date +%s.%N; }
START=$(now)
RESERVE=10  # seconds kept for the summary
export PYTHONUNBUFFERED=1 GPU_CHECK_OUT=$OUT
if [ -z "${GPU_CHECK_COMMIT:-}" ] && ! { [ "$INSTALL" = bundle ] && [ -f "$BUNDLE/manifest.json" ]; }; then
  GPU_CHECK_COMMIT=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
fi
export GPU_CHECK_COMMIT=${GPU_CHECK_COMMIT:-}
# The package runs from this checkout (no `pip install -e .` anywhere); the bundle's
# packages come first.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
[ "$INSTALL" = bundle ] && export PYTHONPATH="$SITE:$PYTHONPATH"
if [ "$PLATFORM" = cpu ]; then export JAX_PLATFORMS=cpu; else export JAX_PLATFORMS=cuda; fi

# name:box in seconds, in the order they run. GPU boxes: estimates (no GPU has run this
# yet); those up to airbench94 add up to 280 s, which with the 10 s reserve and the
# summaries written after each stage stays inside the 300 s default budget. CPU boxes: the
# 2-core CI machine's times (docs/gpu.md) with a margin.
if [ "$PLATFORM" = gpu ]; then
  PLAN=(install:30 env:25 data:15 tests:80 train_a:40 train_b:40 airbench94:50 tests_cpu:60
    bench_bf16:90 bench_f32:90)
else
  PLAN=(install:120 env:90 data:90 tests:420 train_a:120 train_b:120 airbench94:180
    tests_cpu:360 bench_bf16:180 bench_f32:180)
fi
declare -A BOX
names=()
for entry in "${PLAN[@]}"; do BOX[${entry%%:*}]=${entry##*:}; names+=("${entry%%:*}"); done
GPU_CHECK_PLAN=$(IFS=,; echo "${names[*]}")
export GPU_CHECK_PLAN

log() { echo "[gpu_check $(date +%H:%M:%S)] $*" >&2; }
elapsed() { awk -v s="$START" -v n="$(now)" 'BEGIN{printf "%.1f", n - s}'; }

selected() {
  [ "$STAGES" = all ] && return 0
  case ",$STAGES," in *",$1,"*) return 0 ;; esac
  return 1
}

# record NAME STATUS SECONDS RC NOTE
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$OUT/stages.tsv"; }

# The summary so far and the logs, to $RETURN_DIR (a call stopped later still returns them).
checkpoint_summary() {
  timeout 30 "$PY" scripts/gpu_check.py summary "$OUT" "$PLATFORM" "$(elapsed)" "$BUDGET" \
    --partial >/dev/null 2>>"$OUT/logs/summary.log"
  timeout 30 "$PY" scripts/gpu_check.py pack "$OUT" "$RETURN_DIR" 2>>"$OUT/logs/summary.log"
}

# stage NAME CMD...: run CMD (a program, not a function) under `timeout` with the stage's
# box, cut to what is left of the budget; output to logs/NAME.log; record ok / failed /
# timeout (ran past its own box) / cut (stopped by the budget, or not started for it).
stage() {
  local name=$1 box=${BOX[$1]} left limit start rc status secs note
  shift
  if ! selected "$name"; then
    record "$name" "not selected" 0 - "GPU_CHECK_STAGES=$STAGES"
    return 0
  fi
  left=$(awk -v s="$START" -v n="$(now)" -v b="$BUDGET" -v r="$RESERVE" 'BEGIN{printf "%d", b - (n - s) - r}')
  if [ "$left" -lt 10 ] || { [ "$left" -lt "$box" ] && [ "$left" -lt 20 ]; }; then
    record "$name" cut 0 - "not started: ${left} s of the ${BUDGET} s budget left (box ${box} s)"
    log "$name: cut (budget)"
    checkpoint_summary
    return 0
  fi
  limit=$box
  [ "$left" -lt "$box" ] && limit=$left
  log "$name: started (box ${box} s, limit ${limit} s)"
  start=$(now)
  timeout --kill-after=5 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
  rc=$?
  secs=$(awk -v s="$start" -v n="$(now)" 'BEGIN{printf "%.1f", n - s}')
  note="logs/$name.log (box ${box} s"
  [ "$limit" -lt "$box" ] && note+=", cut to ${limit} s by the budget"
  note+=")"
  status=failed
  if [ "$rc" = 0 ]; then
    status=ok
  elif { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } &&
    awk -v s="$secs" -v l="$limit" 'BEGIN{exit !(s >= l - 0.5)}'; then
    if [ "$limit" -lt "$box" ]; then status="cut"; else status="timeout"; fi
  fi
  record "$name" "$status" "$secs" "$rc" "$note"
  log "$name: $status in ${secs} s (logs/$name.log)"
  checkpoint_summary
  return 0
}

# ------------------------------------------------------------------------------ install

# shellcheck disable=SC2329  # run by `bash -c "$(declare -f install_bundle)..."`
install_bundle() {
  echo "mode: bundle: pip install --no-index --no-deps --target $SITE $BUNDLE/wheels/*.whl"
  rm -rf "$SITE" && mkdir -p "$SITE" || return 1
  # No pip configuration of the machine's (a constraints file, an index) can interfere:
  # its PIP_* variables are dropped and no config file is read.
  local unset_pip=()
  mapfile -t unset_pip < <(env | sed -n 's/^\(PIP_[A-Za-z0-9_]*\)=.*/-u\n\1/p')
  env "${unset_pip[@]}" PIP_CONFIG_FILE=/dev/null "$PY" -m pip install --no-index --no-deps \
    --no-compile --no-cache-dir --disable-pip-version-check --no-warn-script-location \
    --target "$SITE" "$BUNDLE"/wheels/*.whl || return 1
  # What is unmet, where the pinned packages come from, and what a run imports.
  "$PY" scripts/gpu_check.py install-check "$SITE"
}
export PY BUNDLE SITE
if [ "$INSTALL" = bundle ]; then
  stage install bash -c "$(declare -f install_bundle); install_bundle"
else
  record install skipped 0 - "GPU_CHECK_INSTALL=skip: the environment as it is"
fi

ENV_ARGS=("$OUT" "$PLATFORM")
[ "$INSTALL" = bundle ] && ENV_ARGS+=("$BUNDLE" "$REPO")
stage env "$PY" scripts/gpu_check.py env "${ENV_ARGS[@]}"
stage data "$PY" scripts/gpu_check.py data "$OUT" "$REPO" "$BUNDLE"

# ------------------------------------------------------------------------- sizes

DATA_KIND=synthetic
DATA_DIR=
if [ -f "$OUT/data.json" ]; then
  DATA_KIND=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['kind'])" "$OUT/data.json")
  DATA_DIR=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['data_dir'])" "$OUT/data.json")
fi
# The accelerator tests (GPU set-up, the bf16 step, the CUDA lowering of the three models,
# the CPU-pinned conv timing, the session's platform), with the GPU as JAX's default; in
# the CPU mode the same tests on the CPU.
TEST_ARGS=(tests/test_runtime.py tests/test_half_precision.py tests/test_lowering.py
  tests/test_bench.py tests/test_platforms.py -m "accelerator and not slow"
  -k "not every_config or lenet or resnet_small or airbench94")
# With the GPU there but not chosen: 8 forced CPU devices (in-process and in subprocesses),
# the oneDNN custom call (skipped where oneDNN is not installed, as on the GPU image).
TEST_CPU_ARGS=(tests/test_platforms.py
  tests/test_materialize.py::test_conv_input_adds_no_communication_on_a_sharded_batch
  tests/test_onednn.py::test_outside_the_steps_multi_device_meshes_and_the_switch_keep_xla_convs
  tests/test_onednn.py::test_conv_hook_uses_onednn_on_one_cpu_device
  tests/test_train.py::test_batch_size_the_devices_cannot_split_is_a_clear_error)
if [ "$PLATFORM" = cpu ]; then
  SYN=(--config.synthetic_train_examples=512 --config.synthetic_test_examples=128)
  PAIR=(--config.num_train_steps=3 --config.batch_size=32 --config.log_every_steps=1)
  AIRBENCH=(--config.num_train_steps=2 --config.batch_size=32 --config.log_every_steps=1
    "--config.widths=(8,8,8)" --config.data_init_examples=64 --config.eval_batch_size=128
    --config.warmup_epochs=0)
  BENCH=(--models=lenet --batch_sizes=32 --steps=1 --rounds=1 --seconds=0.05
    --override=synthetic_train_examples=2048 --override=synthetic_test_examples=128)
  BENCH_BF16=("${BENCH[@]}")
else
  SYN=(--config.synthetic_train_examples=50000 --config.synthetic_test_examples=10000)
  # The pair whose gate was measured (scripts/gpu_check.py MIN_ACCURACY, by
  # scripts/gpu_gate_seeds.py with these arguments): change them
  # together.
  PAIR=(--config.num_train_steps=300)
  AIRBENCH=()
  # shellcheck disable=SC2054  # the commas are --models' own
  BENCH=(--models=resnet_small,airbench94,lenet --batch_sizes=512 --rounds=3 --seconds=0.3)
  # shellcheck disable=SC2054
  BENCH_BF16=(--models=airbench94,resnet_small --batch_sizes=512 --rounds=3 --seconds=0.3)
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
# Without torch the benches measure the jax side only (asked only when a bench runs).
if { selected bench_bf16 || selected bench_f32; } && ! "$PY" -c "import torch" >/dev/null 2>&1; then
  BENCH_DATA+=(--no_torch)
fi
# GPU_CHECK_TESTS(_CPU) are split as the shell splits a command line (quotes kept), e.g.
# 'tests/test_bench.py -k "lenet"'.
if [ -n "${GPU_CHECK_TESTS:-}" ]; then
  eval "TEST_ARGS=($GPU_CHECK_TESTS)"
fi
if [ -n "${GPU_CHECK_TESTS_CPU:-}" ]; then
  eval "TEST_CPU_ARGS=($GPU_CHECK_TESTS_CPU)"
fi

# ------------------------------------------------------------------------------ stages

# The suite chooses its own platform (tests/conftest.py sets JAX_PLATFORMS): the CPU unless
# CIFAR_JAX_TEST_PLATFORM asks for the GPU.
TEST_PLATFORM=()
[ "$PLATFORM" = gpu ] && TEST_PLATFORM=(CIFAR_JAX_TEST_PLATFORM=cuda)
stage tests env -u JAX_PLATFORMS "${TEST_PLATFORM[@]}" "$PY" -m pytest -q -p no:cacheprovider \
  "${TEST_ARGS[@]}"

# train WORKDIR CONFIG: the training command (then its own flags), as TRAIN=(...).
train() {
  TRAIN=("$PY" -m cifar_jax.main "--config=configs/$2.py" "--workdir=$OUT/runs/$1"
    --config.checkpoint_every_steps=100000 "${DATA[@]}")
}
for run in a b; do
  train "lenet_$run" lenet
  stage "train_$run" "${TRAIN[@]}" --config.deterministic=true --config.val_examples=0 \
    "${PAIR[@]}"
done
train airbench94 airbench94
stage airbench94 "${TRAIN[@]}" --config.half_precision=true "${AIRBENCH[@]}"

stage tests_cpu env -u JAX_PLATFORMS -u CIFAR_JAX_TEST_PLATFORM "$PY" -m pytest -q \
  -p no:cacheprovider "${TEST_CPU_ARGS[@]}"

BENCH_CMD=("$PY" -m cifar_jax bench "${BENCH_DATA[@]}")
stage bench_bf16 "${BENCH_CMD[@]}" "--out=$OUT/bench_bf16" "${BENCH_BF16[@]}" \
  --override=half_precision=true
stage bench_f32 "${BENCH_CMD[@]}" "--out=$OUT/bench_f32" "${BENCH[@]}"

# --------------------------------------------------------------------------- summary

wall=$(elapsed)
timeout 60 "$PY" scripts/gpu_check.py summary "$OUT" "$PLATFORM" "$wall" "$BUDGET"
rc=$?
timeout 60 "$PY" scripts/gpu_check.py pack "$OUT" "$RETURN_DIR" ||
  echo "error: packing the logs into $RETURN_DIR failed" >&2
exit $rc
