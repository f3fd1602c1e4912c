"""A/B of one CPU speed lever: the real train step with the lever on vs off, in one process.

    python -m cifar_jax.bench_levers --lever=materialize --models=resnet_small,deepnet
    python -m cifar_jax.bench_levers --lever=pool_broadcast --models=c100_bn --batch_sizes=128,512

Both variants are compiled from the same config (the lever is switched at trace time by
patching the module attribute that selects it), then timed in alternated rounds
(``bench.interleaved``), so load from other processes affects both alike. This is how
the per-lever numbers in docs/performance.md are measured; ``ratio`` = on / off.
Writes ``levers.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any


def _levers() -> dict[str, tuple[Any, str, Any]]:
    """name -> (module, attribute, value that turns the lever off)."""
    from cifar_jax.kernels import fast_ops, onednn, small_conv
    from cifar_jax.models import layers

    return {
        # conv inputs kept in memory for the kernel-gradient transposes
        "materialize": (fast_ops, "materialize", lambda x: x),
        # convolutions through oneDNN (FFI custom call) instead of XLA's
        "onednn": (onednn, "use_onednn", lambda *args: False),
        # LeNet's first conv as a direct tap sum
        "small_conv": (small_conv, "use_small_cin", lambda *args: False),
        # max-pool gradient as one broadcast select (16+ channels)
        "pool_broadcast": (fast_ops, "POOL_BROADCAST_MIN_CHANNELS", sys.maxsize),
        # max-pool without select-and-scatter on CPU
        "cpu_pool": (layers, "max_pool2x2", lambda x, *_: fast_ops.max_pool2x2_window(x)),
        # im2col for convs on maps smaller than the kernel
        "im2col": (fast_ops, "use_im2col", lambda *args: False),
        # training-mode BatchNorm with the hand-written gradient
        "fast_bn": (fast_ops, "use_fast_batch_norm", lambda x: False),
    }


LEVERS = (
    "onednn",
    "materialize",
    "small_conv",
    "pool_broadcast",
    "cpu_pool",
    "im2col",
    "fast_bn",
)


@contextlib.contextmanager
def lever_off(name: str) -> Iterator[None]:
    """Turns the CPU speed lever ``name`` off while models are traced inside."""
    levers = _levers()
    if name not in levers:
        raise SystemExit(f"error: unknown lever {name!r}; choose from {', '.join(LEVERS)}")
    module, attribute, off = levers[name]
    saved = getattr(module, attribute)
    setattr(module, attribute, off)
    try:
        yield
    finally:
        setattr(module, attribute, saved)


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
    p = argparse.ArgumentParser(prog="python -m cifar_jax.bench_levers", description=__doc__)
    p.add_argument("--lever", required=True, choices=LEVERS)
    p.add_argument("--models", required=True, help="comma-separated config ids")
    p.add_argument("--batch_sizes", default="128")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=1.0, help="target seconds per round")
    p.add_argument("--steps", type=int, default=0, help="steps per round (0 = auto)")
    p.add_argument("--data_source", default="synthetic")
    p.add_argument("--out", default="bench_results")
    args = p.parse_args(argv)

    from cifar_jax import runtime
    from cifar_jax.perf import bench

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


if __name__ == "__main__":
    raise SystemExit(main())
