"""What the per-step stop agreement (cifar_jax/preemption.py, StopRequest.poll) costs.

In a multi-process run every train step is followed by ``poll()``: a tiny all-reduce of
one int32 pair per device, dispatched now and read one step later. This script starts 2
processes on localhost (as launch.sh does), runs a data-parallel step whose gradient-like
all-reduce is the size of a small CNN's (``--params``), and times rounds of steps without
and with ``poll()`` alternately; process 0 writes the per-step times to ``--out``.

    python scripts/stop_agreement_cost.py --out=docs/notes/stop_agreement_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def worker(args: argparse.Namespace) -> None:
    from cifar_jax import runtime

    runtime.initialize_distributed()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from cifar_jax import parallel, preemption

    mesh = parallel.create_mesh()
    batch_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())

    @jax.jit
    def step(w, x):  # a forward/backward-sized matmul and a gradient all-reduce
        g = jax.grad(lambda w: jnp.mean(jnp.tanh(x @ w) ** 2))(w)
        return w - 0.01 * g

    w = jax.device_put(jnp.zeros((args.width, args.params // args.width)), replicated)
    local = np.ones((args.batch // jax.process_count(), args.width), np.float32)
    x = jax.make_array_from_process_local_data(batch_sharding, local)
    stop = preemption.StopRequest(mesh)
    times: dict[str, list[float]] = {"without_poll": [], "with_poll": []}
    for _ in range(3):
        w = step(w, x)  # warm
        stop.poll()
    jax.block_until_ready(w)
    for _ in range(args.rounds):
        for name in times:
            start = time.perf_counter()
            for _ in range(args.steps):
                w = step(w, x)
                if name == "with_poll":
                    stop.poll()
            jax.block_until_ready(w)
            times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    if jax.process_index() == 0:
        median = {k: statistics.median(v) for k, v in times.items()}
        record = {
            "what": "ms per step, 2 processes on localhost (gloo), median of rounds",
            "step_ms_without_poll": median["without_poll"],
            "step_ms_with_poll": median["with_poll"],
            "poll_ms_per_step": median["with_poll"] - median["without_poll"],
            "rounds": times,
            "params": args.params,
            "batch": args.batch,
            "steps_per_round": args.steps,
            "cpu": runtime.cpu_description(),
            "commit": runtime.git_commit(),
            "jax": jax.__version__,
            "platform": jax.devices()[0].platform,
        }
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        print(json.dumps({k: v for k, v in record.items() if k != "rounds"}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--params", type=int, default=65536)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for i in range(2):
        env = dict(os.environ, CIFAR_JAX_COORDINATOR=f"127.0.0.1:{port}",
                   CIFAR_JAX_NUM_PROCESSES="2", CIFAR_JAX_PROCESS_ID=str(i))  # fmt: skip
        env.pop("XLA_FLAGS", None)
        procs.append(subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--worker"],
                                      env=env))  # fmt: skip
    sys.exit(max(p.wait() for p in procs))


if __name__ == "__main__":
    main()
