"""Below the whole-step benchmark: single convolutions, and where a train step's time goes.

    python -m cifar_jax bench_ops convs --out=ops_out          # XLA vs oneDNN vs torch
    python -m cifar_jax bench_ops convs --shapes=airbench94 --dtype=bfloat16 --out=ops_out
    python -m cifar_jax bench_ops profile --models=airbench94 --batch_sizes=1024 \
        --override half_precision=true --override cpu_bf16_kernel_grads=true --out=ops_out
    python -m cifar_jax bench_ops profile --models=c100_bn --batch_sizes=128 --out=ops_out

``convs`` times each conv shape of ``CONV_SHAPES`` (the seed models' convs at batch 128 /
512; ``--shapes=airbench94``: airbench94's at 1024) on the CPU (also on a GPU host), in
float32 or ``--dtype=bfloat16`` (``--bf16_kernel_grads``: the kernel gradients from the
bf16 activations, as ``config.cpu_bf16_kernel_grads``): forward, forward + both gradients,
and each gradient alone (where a bf16 step's time goes: docs/fast.md), as XLA's
convolution, as the oneDNN kernel (:mod:`cifar_jax.kernels.onednn`) and, where torch is
installed, as torch's channels_last ``Conv2d``: min over repeats, ms, and the forward's
GFLOP/s (2 * multiply-adds / time), to compare with the machine's peak. Writes
``convs.json``.

``profile`` traces a config's real train step (``--step=eval``: eval step) as built by
:class:`cifar_jax.perf.bench.JaxSide` (the functions training runs) with ``jax.profiler`` and
sums each XLA op's time over all threads: the per-op numbers in docs/performance.md.
It also counts the page faults per step (``--default_malloc``: without
``runtime.configure_host_allocator``). ``--torch`` also profiles the PyTorch twin's step
(:class:`cifar_jax.perf.bench_torch.TorchRunner`, the one ``bench`` times) with
``torch.profiler``: its step time and each aten op's self time, ms per step, so the two
sides' convolution and non-convolution time can be set side by side. Writes
``profile_<step>.json``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

# (batch, size, in_channels, out_channels, kernel, stride, padding)
CONV_SHAPES = (
    (512, 32, 3, 6, 5, 1, 0),  # lenet / basenet conv1
    (512, 14, 6, 16, 5, 1, 0),  # lenet conv2
    (128, 32, 3, 32, 3, 1, 1),  # small CNNs' first conv
    (128, 32, 3, 64, 3, 1, 1),  # c100_bn_64_128's first conv
    (128, 32, 64, 64, 3, 1, 1),  # ResNet stage 1
    (128, 16, 64, 128, 3, 1, 1),
    (128, 16, 128, 256, 3, 2, 1),  # strided BasicBlock conv
    (128, 16, 128, 256, 1, 2, 0),  # 1x1 projection
    (128, 8, 256, 256, 3, 1, 1),
)
# airbench94's convs at its batch of 1024 (--shapes=airbench94; the 7x7 256->256 conv is
# the net's fourth and fifth): the whitening stem (2x2, no padding), then each group's two.
AIRBENCH94_CONV_SHAPES = (
    (1024, 32, 3, 24, 2, 1, 0),
    (1024, 31, 24, 64, 3, 1, 1),
    (1024, 15, 64, 64, 3, 1, 1),
    (1024, 15, 64, 256, 3, 1, 1),
    (1024, 7, 256, 256, 3, 1, 1),
    (1024, 3, 256, 256, 3, 1, 1),
)
SHAPE_SETS = {"seed": CONV_SHAPES, "airbench94": AIRBENCH94_CONV_SHAPES}
DTYPES = ("float32", "bfloat16")  # what convs are timed in


def _best_ms(fn: Callable[[], Any], repeats: int, block: Callable[[Any], Any]) -> float:
    block(fn())  # compile / warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        block(fn())
        best = min(best, time.perf_counter() - start)
    return round(best * 1e3, 3)


def time_conv(
    shape: tuple[int, ...],
    repeats: int = 5,
    dtype: str = "float32",
    bf16_kernel_grads: bool = False,
) -> dict[str, Any]:
    """ms of one conv shape on the CPU: forward, forward + input and kernel gradients, and
    each gradient alone (``input_grad_ms``, ``kernel_grad_ms``), in ``dtype`` ("float32"
    or "bfloat16": bf16 operands, kernel gradient rounded to bf16; oneDNN's from the bf16
    activations with ``bf16_kernel_grads``, else from float32 copies, as training).

    Pinned to the CPU backend whatever JAX's default is: the oneDNN custom call exists
    for the CPU only (lowered for a GPU default backend it fails), and the comparison is
    with torch on the same cores."""
    import jax

    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError as e:
        raise RuntimeError(
            f"bench_ops convs times convolutions on the CPU, which this process has not "
            f"started ({e}): leave JAX_PLATFORMS unset or list cpu in it (e.g. cuda,cpu)."
        ) from e
    with jax.default_device(cpu):
        return _time_conv_on_default_device(shape, repeats, dtype, bf16_kernel_grads)


def _time_conv_on_default_device(
    shape: tuple[int, ...], repeats: int, dtype: str, bf16_kernel_grads: bool
) -> dict[str, Any]:
    """:func:`time_conv` on JAX's default device; ``device``: where the convs ran."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from cifar_jax.kernels import onednn

    n, size, cin, cout, k, stride, pad = shape
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: time convs in float32 or bfloat16")
    x = jax.random.normal(jax.random.key(0), (n, size, size, cin)).astype(dtype)
    w = (jax.random.normal(jax.random.key(1), (k, k, cin, cout)) * 0.1).astype(dtype)
    strides, padding = (stride, stride), ((pad, pad), (pad, pad))

    def xla(x, w):
        return lax.conv_general_dilated(
            x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def dnnl(x, w):
        return onednn.conv(x, w, strides, padding)

    convs = {"xla": xla}
    if onednn.available():
        convs["onednn"] = dnnl
    out_size = (size + 2 * pad - k) // stride + 1
    flops = 2 * n * out_size * out_size * cin * cout * k * k  # forward: 2 x multiply-adds
    record: dict[str, Any] = {
        "shape": dict(zip(("n", "size", "cin", "cout", "k", "s", "p"), shape, strict=True)),
        "dtype": dtype,
        "bf16_kernel_grads": bf16_kernel_grads,
        "forward_flops": flops,
    }
    ran_on = set()
    for name, conv in convs.items():
        forward = jax.jit(conv)
        both = jax.jit(
            jax.grad(lambda x, w, c=conv: jnp.sum(c(x, w).astype(jnp.float32) ** 2), (0, 1))
        )
        dy = forward(x, w)

        def gradient(i, c=conv):  # one of the two, alone: XLA drops the other and the forward
            return jax.jit(lambda x, w, ct: jax.vjp(c, x, w)[1](ct)[i])

        timed = {
            "forward": (forward, (x, w)),
            "fwd_bwd": (both, (x, w)),
            "input_grad": (gradient(0), (x, w, dy)),
            "kernel_grad": (gradient(1), (x, w, dy)),
        }
        with onednn.bf16_kernel_grads(bf16_kernel_grads):  # traced at the first call
            for part, (fn, args) in timed.items():
                record[f"{name}_{part}_ms"] = _best_ms(
                    lambda f=fn, a=args: f(*a), repeats, jax.block_until_ready
                )
        ran_on |= {d.platform for d in dy.devices()}
    record["device"] = ",".join(sorted(ran_on))
    record.update(_time_torch_conv(shape, repeats, dtype))
    for name in ("xla", "onednn", "torch"):
        if f"{name}_forward_ms" in record:
            seconds = record[f"{name}_forward_ms"] / 1e3
            record[f"{name}_forward_gflop_per_s"] = round(flops / 1e9 / seconds, 1)
    return record


def _time_torch_conv(shape: tuple[int, ...], repeats: int, dtype: str) -> dict[str, float]:
    try:
        import torch
    except ImportError:
        return {}
    n, size, cin, cout, k, stride, pad = shape
    torch.set_num_threads(os.cpu_count() or 1)
    torch_dtype = getattr(torch, dtype)
    conv = torch.nn.Conv2d(cin, cout, k, stride=stride, padding=pad)
    conv = conv.to(dtype=torch_dtype, memory_format=torch.channels_last)
    x = torch.randn(n, cin, size, size, dtype=torch_dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)

    def forward():
        with torch.no_grad():
            return conv(x)

    def both():
        x.grad, conv.weight.grad = None, None
        conv(x).pow(2).sum().backward()
        return conv.weight.grad

    def block(_):
        return None  # torch CPU ops are synchronous

    return {
        "torch_forward_ms": _best_ms(forward, repeats, block),
        "torch_fwd_bwd_ms": _best_ms(both, repeats, block),
    }


def profile_step(
    config, batch_size: int, steps: int = 10, step: str = "train", torch_side: bool = False
) -> dict[str, Any]:
    """Per-op time of a config's train (or eval) step, summed over XLA's threads (ms per
    step); with ``torch_side`` also the torch twin's (:func:`profile_torch_step`)."""
    import jax
    import numpy as np
    from jax._src.lib import _profile_data  # noqa: PLC2701 - the profiler's own reader

    from cifar_jax import data
    from cifar_jax.perf import bench

    config = config.copy_and_resolve_references()
    config.batch_size = batch_size
    dataset = data.load_dataset(config)
    side = bench.JaxSide(config, dataset, None, [])
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8),
        "label": rng.integers(0, dataset.num_classes, batch_size).astype(np.int32),
    }
    if step == "eval":
        batch["mask"] = np.ones(batch_size, bool)
    batch = side.train.to_global(batch, side.batch_sharding)

    def run(n: int) -> float:
        state, out, start = side.state, None, time.perf_counter()
        for _ in range(n):
            if step == "eval":
                out = side.eval_step(state, batch)
            else:
                state, out = side.train_step(state, batch)
        jax.block_until_ready((state, out))
        side.state = state
        return time.perf_counter() - start

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    # Warm-up: compile, and let the heap grow to its steady size for ``steps`` queued
    # steps (with runtime.configure_host_allocator it then stays; without, it never does).
    for _ in range(3):
        faults_before = faults()
        run(steps)
        if faults() == faults_before:
            break
    faults_before = faults()
    step_ms = run(steps) / steps * 1e3
    # Pages the kernel had to map (and zero) per step: memory the allocator gave back
    # to the OS and XLA allocated again (runtime.configure_host_allocator).
    page_faults = (faults() - faults_before) / steps
    with tempfile.TemporaryDirectory(prefix="cifar_jax_profile_") as trace_dir:
        with jax.profiler.trace(trace_dir):
            run(steps)
        (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
        per_op: collections.Counter = collections.Counter()
        for plane in _profile_data.ProfileData.from_file(path).planes:
            for line in plane.lines:
                if "XLAEigen" not in line.name and "PjRt" not in line.name:
                    continue  # XLA's worker threads only
                for event in line.events:
                    if "Thunk" not in event.name:  # executor bookkeeping, not ops
                        per_op[event.name] += event.duration_ns
    by_kind: collections.Counter = collections.Counter()
    for name, ns in per_op.items():
        by_kind[re.sub(r"\.\d+$", "", name)] += ns

    def ms(counter: collections.Counter) -> dict[str, float]:
        return {k: round(v / 1e6 / steps, 3) for k, v in counter.most_common()}

    record = {
        "model": config.model,
        "step": step,
        "batch_size": batch_size,
        "step_ms": round(step_ms, 2),
        "images_per_second": round(batch_size / step_ms * 1e3, 1),
        "page_faults_per_step": round(page_faults),
        "op_ms_by_kind": ms(by_kind),
        "op_ms": dict(list(ms(per_op).items())[:40]),
    }
    if torch_side:
        host_batch = {k: np.asarray(v) for k, v in batch.items()}
        record["torch"] = profile_torch_step(config, side, host_batch, steps, step)
    return record


def profile_torch_step(config, side, batch: dict, steps: int, step: str) -> dict[str, Any]:
    """The torch twin's (``bench.TorchSide``) step time and each aten op's self CPU time
    (ms per step), from ``torch.profiler`` over ``steps`` steps after two warm-up steps."""
    from torch.profiler import ProfilerActivity, profile

    from cifar_jax.perf import bench

    twin = bench.TorchSide(config, side, [batch], [batch], os.cpu_count() or 1)
    run = twin.run_eval if step == "eval" else twin.run_train
    run(2)
    step_ms = run(steps) / steps * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(steps)
    self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    top = sorted(self_us.items(), key=lambda kv: -kv[1])
    return {
        "step_ms": round(step_ms, 2),
        "images_per_second": round(batch["image"].shape[0] / step_ms * 1e3, 1),
        "op_ms": {k: round(us / 1e3 / steps, 3) for k, us in top[:40] if us > 0},
    }


def main(argv: list[str] | None = None) -> int:
    from cifar_jax.perf import bench  # its --override and model grid

    p = argparse.ArgumentParser(prog="python -m cifar_jax bench_ops", description=__doc__)
    p.add_argument("what", choices=("convs", "profile"))
    p.add_argument("--models", default="c100_bn", help="profile: comma-separated config ids")
    p.add_argument("--batch_sizes", default="128", help="profile: comma-separated")
    p.add_argument("--step", default="train", choices=("train", "eval"), help="profile")
    p.add_argument("--torch", action="store_true", help="profile: the torch twin's step too")
    p.add_argument("--repeats", type=int, default=5, help="convs: timed repeats per shape")
    p.add_argument(
        "--shapes", default="seed", choices=tuple(SHAPE_SETS), help="convs: which conv shapes"
    )
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="convs")
    p.add_argument(
        "--bf16_kernel_grads",
        action="store_true",
        help="convs, bfloat16: kernel gradients from the bf16 activations "
        "(as config.cpu_bf16_kernel_grads; profile: --override cpu_bf16_kernel_grads=true)",
    )
    p.add_argument("--data_source", default="synthetic")
    bench.add_override_argument(p)
    p.add_argument("--default_malloc", action="store_true", help="glibc malloc unchanged")
    p.add_argument("--out", default="bench_results")
    args = p.parse_args(argv)
    if args.bf16_kernel_grads and args.dtype != "bfloat16":
        p.error("--bf16_kernel_grads is for bf16 convs: add --dtype=bfloat16")

    from cifar_jax import runtime

    runtime.configure_process(reuse_host_memory=not args.default_malloc)  # as training does
    results = []
    if args.what == "convs":
        for shape in SHAPE_SETS[args.shapes]:
            record = time_conv(shape, args.repeats, args.dtype, args.bf16_kernel_grads)
            results.append(record)
            print(json.dumps(record), flush=True)
    else:
        for name, config, batch_size in bench.model_batch_grid(args):
            record = profile_step(config, batch_size, step=args.step, torch_side=args.torch)
            record["config"] = name
            results.append(record)
            top = list(record["op_ms_by_kind"].items())[:8]
            print(
                f"{name} {args.step} b{batch_size}: {record['step_ms']} ms, "
                f"{record['page_faults_per_step']} page faults; {top}",
                flush=True,
            )
            if "torch" in record:
                torch_top = list(record["torch"]["op_ms"].items())[:8]
                print(f"  torch: {record['torch']['step_ms']} ms; {torch_top}", flush=True)
    filename = "convs.json" if args.what == "convs" else f"profile_{args.step}.json"
    bench.write_results(args.out, filename, results)
    return 0


def run() -> None:
    """``python -m cifar_jax bench_ops`` (cifar_jax/__main__.py)."""
    sys.exit(main())
