#!/usr/bin/env bash
# Data-parallel training over several processes with jax.distributed.
#
#   Local (one machine, N processes; one GPU each if GPUs are present, else CPU):
#     ./launch.sh --nproc 2 -- --config=configs/lenet.py --workdir=runs/lenet
#   More processes than GPUs is refused: NCCL does not let two ranks share a GPU, and each
#   process would preallocate 75% of every card. CUDA_VISIBLE_DEVICES limits the GPUs used.
#   Independent runs sharing one GPU are a sweep's job, not this script's:
#     python -m cifar_jax sweep --config=configs/sweeps/X.py --workdir=W --config.parallel_trials=4
#
#   One process per host on a cluster, started by your scheduler on every host:
#     ./launch.sh --coordinator HOST0:12355 --num-processes 4 --process-id "$RANK" -- --config=...
#
#   Slurm (srun starts one task per host or per GPU; JAX reads the Slurm variables):
#     srun --ntasks-per-node=1 ./launch.sh --slurm -- --config=configs/resnet.py --workdir=runs/r
#
# Everything after "--" goes to `python -m cifar_jax.main`. Each process reads only its
# slice of every global batch; process 0 writes logs and results; Orbax coordinates the
# checkpoints. The exit status is non-zero if any process fails (the others are stopped).
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

nproc=""; coordinator=""; num_processes=""; process_id=""; slurm=0
python="${PYTHON:-python}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nproc) nproc="$2"; shift 2 ;;
    --coordinator) coordinator="$2"; shift 2 ;;
    --num-processes) num_processes="$2"; shift 2 ;;
    --process-id) process_id="$2"; shift 2 ;;
    --slurm) slurm=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "launch.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ "$slurm" == 1 ]]; then
  export CIFAR_JAX_DISTRIBUTED=auto
  exec "$python" -m cifar_jax.main "$@"
fi

if [[ -n "$coordinator" ]]; then
  if [[ -z "$num_processes" || -z "$process_id" ]]; then
    echo "launch.sh: --coordinator needs --num-processes and --process-id" >&2; exit 2
  fi
  export CIFAR_JAX_COORDINATOR="$coordinator" CIFAR_JAX_NUM_PROCESSES="$num_processes"
  export CIFAR_JAX_PROCESS_ID="$process_id"
  exec "$python" -m cifar_jax.main "$@"
fi

nproc="${nproc:-1}"
if ! [[ "$nproc" =~ ^[1-9][0-9]*$ ]]; then
  echo "launch.sh: --nproc must be a positive integer, got '$nproc'" >&2; exit 2
fi
if [[ "$nproc" == 1 ]]; then
  exec "$python" -m cifar_jax.main "$@"
fi

# A free port on localhost for the coordinator.
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The GPUs this job may use: of the GPUs nvidia-smi lists, those in CUDA_VISIBLE_DEVICES if
# the user (or a scheduler) set it, else all.
visible=()
count=0
if command -v nvidia-smi >/dev/null 2>&1; then
  count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
fi
if [[ "$count" -gt 0 && -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  IFS=',' read -r -a visible <<< "$CUDA_VISIBLE_DEVICES"
else
  for ((g = 0; g < count; g++)); do visible+=("$g"); done
fi
gpus=${#visible[@]}
if [[ "$gpus" -gt 0 && "$gpus" -lt "$nproc" ]]; then
  echo "launch.sh: --nproc $nproc but only $gpus GPU(s) here: every process would see every" \
    "GPU and preallocate 75% of its memory, and NCCL does not let two ranks share a GPU." \
    "Use --nproc $gpus (one process per GPU). For several independent runs on one GPU, run" \
    "them as a sweep with --config.parallel_trials=N (each gets 0.9/N of the GPU's memory;" \
    "docs/gpu.md)." >&2
  exit 2
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup INT TERM
for ((i = 0; i < nproc; i++)); do
  (
    export CIFAR_JAX_COORDINATOR="127.0.0.1:$port" CIFAR_JAX_NUM_PROCESSES="$nproc"
    export CIFAR_JAX_PROCESS_ID="$i"
    if [[ "$gpus" -gt 0 ]]; then export CUDA_VISIBLE_DEVICES="${visible[$i]}"; fi
    exec "$python" -m cifar_jax.main "$@"
  ) &
  pids+=($!)
done

status=0
for p in "${pids[@]}"; do
  if ! wait "$p"; then status=1; cleanup; fi
done
exit "$status"
