"""A/B of one CPU speed lever: the real train step with the lever on vs off, in one process.

    python -m cifar_jax bench_levers --lever=materialize --models=resnet_small,deepnet
    python -m cifar_jax bench_levers --lever=pool_broadcast --models=c100_bn --batch_sizes=128,512

The levers are the declared switches of :mod:`cifar_jax.kernels.levers`. Both variants are
compiled from the same config, the "off" one traced under ``levers.switched(lever=False)``,
then timed in alternated rounds (``bench.interleaved``), so load from other processes
affects both alike. This is how the per-lever numbers in docs/performance.md are measured;
``ratio`` = on / off. Writes ``levers.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator

from cifar_jax.kernels import levers

LEVERS = levers.NAMES


@contextlib.contextmanager
def lever_off(name: str) -> Iterator[None]:
    """Turns the CPU speed lever ``name`` off for the steps traced inside."""
    if name not in LEVERS:
        raise SystemExit(f"error: unknown lever {name!r}; choose from {', '.join(LEVERS)}")
    with levers.switched(**{name: False}):
        yield


def ab_lever(config, lever: str, batch_size: int, *, rounds: int, seconds: float, steps: int):
    """img/s of the train step with ``lever`` on and off (medians of alternated rounds)."""
    import jax

    from cifar_jax import data
    from cifar_jax.data import pipeline
    from cifar_jax.perf import bench

    config = config.copy_and_resolve_references()
    config.batch_size = batch_size
    dataset = data.load_dataset(config)
    mean, _ = pipeline.normalization_stats(config, dataset.mean, dataset.std)
    train_data = pipeline.config_train_dataset(config, dataset.train, mean, num_steps=8)
    on = bench.JaxSide(config, dataset, None, [])
    with lever_off(lever):
        off = bench.JaxSide(config, dataset, None, [])
    batches = [on.train.to_global(train_data[i], on.batch_sharding) for i in range(2)]

    def runner(side):
        def run(n: int) -> float:
            state, start = side.state, time.perf_counter()
            for i in range(n):
                state, _ = side.train_step(state, batches[i % 2])
            jax.block_until_ready(state)
            side.state = state
            return time.perf_counter() - start

        return run

    timed = bench.interleaved(runner(on), runner(off), batch_size, rounds, seconds, steps)
    return {
        "lever": lever,
        "model": config.model,
        "batch_size": batch_size,
        "on_images_per_second": timed["jax_images_per_second"],
        "off_images_per_second": timed["torch_images_per_second"],
        "ratio": timed["ratio"],
        "rounds": timed["rounds"],
        "steps_per_round": timed["steps_per_round"],
        "on_rounds": timed["jax_rounds"],
        "off_rounds": timed["torch_rounds"],
    }


def main(argv: list[str] | None = None) -> int:
    from cifar_jax.perf import bench  # its --override and model grid

    p = argparse.ArgumentParser(prog="python -m cifar_jax bench_levers", description=__doc__)
    p.add_argument("--lever", required=True, choices=LEVERS)
    p.add_argument("--models", required=True, help="comma-separated config ids")
    p.add_argument("--batch_sizes", default="128")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=1.0, help="target seconds per round")
    p.add_argument("--steps", type=int, default=0, help="steps per round (0 = auto)")
    p.add_argument("--data_source", default="synthetic")
    bench.add_override_argument(p)
    p.add_argument("--out", default="bench_results")
    args = p.parse_args(argv)

    from cifar_jax import runtime

    runtime.configure_process()  # as training does, before JAX starts
    results = []
    for name, config, batch_size in bench.model_batch_grid(args):
        r = ab_lever(
            config,
            args.lever,
            batch_size,
            rounds=args.rounds,
            seconds=args.seconds,
            steps=args.steps,
        )
        r["config"] = name
        results.append(r)
        print(
            f"{name} b{batch_size} {args.lever}: off {r['off_images_per_second']:,.0f} "
            f"img/s, on {r['on_images_per_second']:,.0f} img/s, on/off {r['ratio']:.3f}",
            flush=True,
        )
    bench.write_results(args.out, "levers.json", results)
    return 0


def run() -> None:
    """``python -m cifar_jax bench_levers`` (cifar_jax/__main__.py)."""
    sys.exit(main())
