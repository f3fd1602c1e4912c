#!/usr/bin/env bash
# Data-parallel training over several processes with jax.distributed.
#
#   Local (one machine, N processes; one GPU each if GPUs are present, else CPU):
#     ./launch.sh --nproc 2 -- --config=configs/lenet.py --workdir=runs/lenet
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

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

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
gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then gpus=$(nvidia-smi -L 2>/dev/null | wc -l || echo 0); fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup INT TERM
for ((i = 0; i < nproc; i++)); do
  (
    export CIFAR_JAX_COORDINATOR="127.0.0.1:$port" CIFAR_JAX_NUM_PROCESSES="$nproc"
    export CIFAR_JAX_PROCESS_ID="$i"
    if [[ "$gpus" -ge "$nproc" ]]; then export CUDA_VISIBLE_DEVICES="$i"; fi
    exec "$python" -m cifar_jax.main "$@"
  ) &
  pids+=($!)
done

status=0
for p in "${pids[@]}"; do
  if ! wait "$p"; then status=1; cleanup; fi
done
exit "$status"
