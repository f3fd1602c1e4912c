"""Benchmark: the package's real train / eval steps next to PyTorch eager, same machine.

    python -m cifar_jax bench                                  # every configs/*.py, b128 + b512
    python -m cifar_jax bench --models=lenet,resnet --batch_sizes=128,512 --out=bench_out
    python -m cifar_jax bench --models=resnet_small --override=half_precision=true  # bf16
    python -m cifar_jax bench --models=lenet,vgg_a_bn --precisions=float32,bf16  # each in both

On the CPU both sides share the cores; where JAX's backend is a GPU and torch sees CUDA,
the torch twin runs on that GPU too. ``--override=field=value`` (repeatable) sets a config
field of every model benchmarked, e.g. ``half_precision=true`` (the twin then runs under
``torch.autocast`` in bfloat16).

For each model config and batch size it measures

* the jitted train step and eval step that :func:`cifar_jax.train.train_and_evaluate` runs
  (built by :func:`cifar_jax.experiment.build`, through :func:`cifar_jax.steps.jit_steps`,
  from the config's model, optimizer, loss and normalization; fed as the training loop
  feeds it: next batch of the config's Grain pipeline -> ``to_global`` -> step):
  images/s, compile seconds, and the step's memory from XLA's memory analysis;
* a PyTorch eager twin of the same architecture (:mod:`cifar_jax.perf.bench_torch`: same
  layers, widths and parameter count, asserted; channels_last; same optimizer; uint8 in,
  normalized in the step), timed in the same process, *interleaved* round by round with
  the jax step so both see the same machine load; the ratio is the median of the
  per-round ratios;
* the Grain input pipeline of the config (its own augmentation): images/s produced on
  their own, and the share of the jax train rounds in which the step waited for data:
  the device idle between one step's end and the next step's dispatch (next batch,
  ``to_global``, dispatch), with one step running while the host prepares the next, as
  in the training loop. (The torch twin gets pre-made batches, so it never waits for
  data.)

Each model runs in its own subprocess (clean peak-RSS and compile caches). The result is
``bench.json`` and ``bench.md`` in ``--out``. ``torch`` comes with the ``[bench]`` extra;
without it (``--no_torch``) only the jax side is measured.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import math
import os
import queue
import resource
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cifar_jax import config as config_lib
from cifar_jax import runtime, validation

CONFIG_DIR = Path(config_lib.resolve_config_path("configs"))  # as --config=configs/<id>.py
TARGET_TRAIN_RATIO = 1.0
TARGET_EVAL_RATIO = 1.0
TARGET_PIPELINE_FACTOR = 3.0
TARGET_DATA_WAIT = 0.05
HEAVY_STEP_SECONDS = 4.0


# ------------------------------------------------------------------------------- configs


def seed_models(config_dir: Path = CONFIG_DIR) -> list[str]:
    """The model config ids: every ``configs/<id>.py``."""
    return sorted(p.stem for p in config_dir.glob("*.py") if not p.stem.startswith("_"))


def load_config(name: str, config_dir: Path = CONFIG_DIR):
    path = config_dir / f"{name}.py"
    if not path.exists():
        raise SystemExit(f"error: no config {path}; choose from {', '.join(seed_models())}")
    return config_lib.load_config_file(str(path))


# ------------------------------------------------------------------------------- timing


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])


def _steps_for(seconds_per_step: float, target_seconds: float, cap: int) -> int:
    return max(1, min(cap, int(target_seconds / max(seconds_per_step, 1e-6))))


class JaxSide:
    """The package's compiled train/eval steps and a state to run them on."""

    def __init__(self, config, dataset, iterator, eval_batches):
        import jax

        from cifar_jax import experiment, train

        self.jax, self.train = jax, train
        # The run's own set-up (data-dependent init included) and jitted steps.
        exp = experiment.build(config, dataset=dataset)
        self.batch_sharding = exp.batch_sharding
        self.mean, self.std, self.model = exp.mean, exp.std, exp.model
        self.state = exp.state
        self.num_params = exp.trainable_params()
        example = exp.example_batch()
        train_step, eval_step = exp.train_step, exp.eval_step
        start = time.perf_counter()
        self.train_step = train_step.lower(self.state, example).compile()
        self.train_compile_seconds = time.perf_counter() - start
        example_eval = exp.example_batch(mask=True)
        start = time.perf_counter()
        self.eval_step = eval_step.lower(self.state, example_eval).compile()
        self.eval_compile_seconds = time.perf_counter() - start
        self.train_memory_bytes = _xla_memory(self.train_step)
        self.eval_memory_bytes = _xla_memory(self.eval_step)
        self.iterator, self.eval_batches = iterator, eval_batches
        self.waited = 0.0  # seconds the device sat idle between steps during run_train
        self.in_next = 0.0  # seconds spent in next(iterator) during run_train
        self.trained = 0.0  # seconds of run_train

    def run_train(self, n: int) -> float:
        """``n`` steps of the training loop as train_and_evaluate runs it: the next batch
        from the Grain iterator -> ``to_global`` -> step, then wait for the previous
        step's metrics (``LossMonitor.add`` checks its loss), so one step runs while the
        host prepares the next.

        ``self.waited`` adds up the gaps in which the device had nothing to run: from a
        step's outputs being ready (:class:`_ReadyTimes`) to the next step's dispatch
        returning. ``self.in_next`` adds up the time in ``next(iterator)``, most of which
        overlaps the running step.
        """
        state, previous = self.state, None
        ready, dispatched = _ReadyTimes(self.jax), []
        start = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            host_batch = next(self.iterator)
            self.in_next += time.perf_counter() - t
            state, metrics = self.train_step(
                state, self.train.to_global(host_batch, self.batch_sharding)
            )
            dispatched.append(time.perf_counter())
            ready.add(metrics)
            if previous is not None:
                self.jax.block_until_ready(previous)
            previous = metrics
        self.jax.block_until_ready(state)
        self.state = state
        seconds = time.perf_counter() - start
        self.trained += seconds
        finished = ready.close()
        self.waited += sum(max(0.0, d - f) for d, f in zip(dispatched[1:], finished, strict=False))
        return seconds

    def run_eval(self, n: int) -> float:
        start = time.perf_counter()
        out = None
        for i in range(n):
            batch = self.eval_batches[i % len(self.eval_batches)]
            out = self.eval_step(self.state, self.train.to_global(batch, self.batch_sharding))
        self.jax.block_until_ready(out)
        return time.perf_counter() - start


class _ReadyTimes:
    """When each dispatched step's outputs became ready: a thread waits on them in order
    (``block_until_ready`` releases the GIL), so the loop it measures never blocks on
    them. Its wake-up after a step ends (tens of microseconds) makes the idle gaps
    measured with these times slightly short."""

    def __init__(self, jax_module):
        self._jax = jax_module
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._times: list[float] = []
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def add(self, outputs) -> None:
        self._queue.put(outputs)

    def _wait(self) -> None:
        while (outputs := self._queue.get()) is not None:
            self._jax.block_until_ready(outputs)
            self._times.append(time.perf_counter())

    def close(self) -> list[float]:
        """Waits for every added output; their ready times, in order."""
        self._queue.put(None)
        self._thread.join()
        return self._times


def _xla_memory(compiled) -> int | None:
    """Bytes the compiled step needs: arguments + outputs + temporaries - donated aliases."""
    try:
        m = compiled.memory_analysis()
        return int(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        )
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


class TorchSide:
    """The PyTorch eager twin (see :mod:`cifar_jax.perf.bench_torch`)."""

    def __init__(self, config, jax_side: JaxSide, batches, eval_batches, threads: int):
        import torch

        from cifar_jax.perf import bench_torch

        gpu = jax_side.jax.default_backend() == "gpu" and torch.cuda.is_available()
        self.device = "cuda" if gpu else "cpu"
        self.runner = bench_torch.TorchRunner(
            config,
            jax_side.model,
            jax_side.num_params,
            jax_side.mean,
            jax_side.std,
            threads,
            device=self.device,
        )
        self.num_params = self.runner.num_params
        self.batches, self.eval_batches = batches, eval_batches

    def run_train(self, n: int) -> float:
        return self.runner.time_steps(self.runner.train_step, self.batches, n)

    def run_eval(self, n: int) -> float:
        return self.runner.time_steps(self.runner.eval_step, self.eval_batches, n)


def interleaved(
    jax_run, torch_run, batch_size: int, rounds: int, seconds: float, steps: int
) -> dict[str, Any]:
    """Warm up, then ``rounds`` x (jax n steps, torch n steps); medians of img/s and ratios.

    ``n`` is ``steps``, or (0) as many steps as take ``seconds``. Warm-up: jax, torch,
    jax (and one more pair for small models). Big models (a step over
    ``HEAVY_STEP_SECONDS``) then run 3 rounds of 1 step, to keep a full run short; 3, not
    2, so one round slowed by another process cannot decide the median. The
    warm-up matters beyond caches: with the host allocator
    (runtime.configure_host_allocator) a side's first steps grow the heap, page-faulting
    their memory in, and torch's first step keeps its state (weights, optimizer moments)
    where jax's step buffers were, so jax's next step grows it once more (measured: the
    first timed jax round of the b512 ResNets at half speed without that second step).
    """
    first = jax_run(1)
    heavy = not steps and first > HEAVY_STEP_SECONDS
    torch_first = torch_run(1) if torch_run else 0.0
    slowest = max(jax_run(1), torch_first)
    if not heavy and slowest < seconds:  # one more warm pair for the small models
        slowest = max(jax_run(1), torch_run(1) if torch_run else 0.0)
    n = steps or _steps_for(slowest, seconds, 200)
    if heavy or (not steps and slowest > 2 * seconds):
        rounds = min(rounds, 3)
    jax_ips, torch_ips, ratios = [], [], []
    for _ in range(rounds):
        jax_ips.append(n * batch_size / jax_run(n))
        if torch_run:
            torch_ips.append(n * batch_size / torch_run(n))
            ratios.append(jax_ips[-1] / torch_ips[-1])
    return {
        "steps_per_round": n,
        "rounds": rounds,
        "jax_images_per_second": _median(jax_ips),
        "torch_images_per_second": _median(torch_ips) if torch_run else None,
        "ratio": _median(ratios) if torch_run else None,
        "jax_rounds": jax_ips,
        "torch_rounds": torch_ips,
    }


def pipeline_throughput(make_iterator, batch_size: int, seconds: float) -> float:
    """Images/s the input pipeline produces on its own (after its first batch)."""
    it = make_iterator()
    next(it)
    n, start = 0, time.perf_counter()
    while n < 5 or time.perf_counter() - start < seconds:
        next(it)
        n += 1
        if n >= 500:
            break
    return n * batch_size / (time.perf_counter() - start)


# -------------------------------------------------------------------------- one model


def bench_model(
    config,
    batch_sizes: list[int],
    *,
    rounds: int = 5,
    seconds: float = 1.0,
    steps: int = 0,
    use_torch: bool = True,
    threads: int = 0,
    name: str | None = None,
    overrides: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Benchmarks one model config at each batch size (in this process)."""
    import jax

    from cifar_jax import data
    from cifar_jax.data import pipeline

    threads = threads or os.cpu_count() or 1
    if use_torch:
        import torch

        torch.set_num_threads(threads)
    name = name or config.model
    config = config.copy_and_resolve_references()
    dataset = data.load_dataset(config)
    records = []
    for batch_size in batch_sizes:
        load_before = os.getloadavg()[0]
        config.batch_size = batch_size
        mean, std = pipeline.normalization_stats(config, dataset.mean, dataset.std)

        def make_iterator(config=config, mean=mean):
            train_data = pipeline.config_train_dataset(config, dataset.train, mean, 10_000)
            return pipeline.iterate(train_data, config.prefetch_batches)

        it = make_iterator()
        batches = [next(it) for _ in range(4)]  # torch's (pre-made, so it never waits)
        eval_data = pipeline.eval_dataset(dataset.test, global_batch_size=batch_size)
        eval_batches = [eval_data[i] for i in range(min(2, len(eval_data)))]

        jax_side = JaxSide(config, dataset, it, eval_batches)
        torch_side = None
        if use_torch:
            torch_side = TorchSide(config, jax_side, batches, eval_batches, threads)
        if torch_side is not None and torch_side.num_params != jax_side.num_params:
            raise AssertionError(f"{name}: torch {torch_side.num_params} != {jax_side.num_params}")

        train_res = interleaved(
            jax_side.run_train,
            torch_side.run_train if torch_side else None,
            batch_size,
            rounds,
            seconds,
            steps,
        )
        eval_res = interleaved(
            jax_side.run_eval,
            torch_side.run_eval if torch_side else None,
            batch_size,
            rounds,
            seconds / 2,
            steps,
        )
        wait_fraction = jax_side.waited / jax_side.trained
        next_fraction = jax_side.in_next / jax_side.trained
        pipe_ips = pipeline_throughput(make_iterator, batch_size, seconds)
        fastest = max(train_res["jax_images_per_second"], train_res["torch_images_per_second"] or 0)
        record = {
            "model": name,
            "config_model": config.model,
            "half_precision": bool(config.half_precision),
            "cpu_bf16_kernel_grads": bool(config.cpu_bf16_kernel_grads),
            "backend": jax.default_backend(),
            "torch_device": torch_side.device if torch_side else None,
            "params": jax_side.num_params,
            "batch_size": batch_size,
            "optimizer": config.optimizer,
            "overrides": list(overrides or []),
            "train": train_res,
            "eval": eval_res,
            "train_compile_seconds": jax_side.train_compile_seconds,
            "eval_compile_seconds": jax_side.eval_compile_seconds,
            "train_step_memory_mb": _mb(jax_side.train_memory_bytes),
            "eval_step_memory_mb": _mb(jax_side.eval_memory_bytes),
            "pipeline_images_per_second": pipe_ips,
            "pipeline_factor": pipe_ips / fastest,
            "loop_data_wait_fraction": wait_fraction,  # the device idle, waiting for data
            "loop_next_fraction": next_fraction,  # time in next(), mostly overlapping a step
            "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            # 1-min load average before / after (other processes on the machine; above
            # the core count torch's OpenMP threads slow down far more than XLA's).
            "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        records.append(record)
        print(format_line(record), file=sys.stderr, flush=True)
        del jax_side, torch_side
        jax.clear_caches()
    return records


def _mb(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / 2**20


def format_line(r: dict[str, Any]) -> str:
    t, e = r["train"], r["eval"]
    ratio = "" if t["ratio"] is None else f" ratio {t['ratio']:.2f} (eval {e['ratio']:.2f})"
    return (
        f"{r['model']:>16} b{r['batch_size']:<4} train {t['jax_images_per_second']:8,.0f} img/s"
        f"{ratio} | compile {r['train_compile_seconds']:.1f}s | pipeline "
        f"{r['pipeline_images_per_second']:,.0f} img/s | wait {r['loop_data_wait_fraction']:.1%}"
    )


# ------------------------------------------------------------------------------ report


def best_ratio(side: dict[str, Any]) -> float | None:
    """jax / torch of the best round of each: other processes only ever slow a round
    down, so the fastest rounds are the closest to an unloaded machine."""
    if not side.get("torch_rounds"):
        return None
    return max(side["jax_rounds"]) / max(side["torch_rounds"])


def _ratio_cell(side: dict[str, Any]) -> str:
    if side["ratio"] is None:
        return "-"
    return f"{side['ratio']:.2f} / {best_ratio(side):.2f}"


def missed_targets(r: dict[str, Any]) -> list[str]:
    """The targets one bench row misses: train / eval >= the ratios (median and best
    rounds both), the pipeline's margin, the loop never waiting for data."""
    t, e = r["train"], r["eval"]
    missed = []
    if t["ratio"] is not None and min(t["ratio"], best_ratio(t)) < TARGET_TRAIN_RATIO:
        missed.append("train")
    if e["ratio"] is not None and min(e["ratio"], best_ratio(e)) < TARGET_EVAL_RATIO:
        missed.append("eval")
    if r["pipeline_factor"] < TARGET_PIPELINE_FACTOR:
        missed.append("pipeline")
    if r["loop_data_wait_fraction"] >= TARGET_DATA_WAIT:
        missed.append("wait")
    return missed


# --precisions: the overrides each precision adds to a model's config.
# float32 is set, not assumed: a recipe config may ask for bf16 itself (configs/fast94.py).
# Neither looks at half_precision_fallback: the bench measures the precision it names.
PRECISIONS = {
    "float32": ["--override=half_precision=false", "--override=cpu_bf16_kernel_grads=false"],
    "bf16": ["--override=half_precision=true"],
}


def precision_of(record: dict[str, Any]) -> str:
    """A bench record's precision as the table and --precisions name it."""
    return "bf16" if record.get("half_precision") else "float32"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; commit "
        f"{m.get('commit') or 'not recorded'}; jax {m['jax']}, "
        f"torch {m.get('torch', '-')}; XLA_FLAGS=`{m['xla_flags']}`; jax convolutions: "
        f"{m.get('conv_backend', 'xla')}; host malloc (both sides): "
        f"{m.get('host_allocator', 'default')}.",
        f"Run: {report['started']} .. {report['finished']} ({report['wall_seconds'] / 60:.1f} "
        f"min); load average before / after: {report['loadavg_before']} / "
        f"{report['loadavg_after']}.",
        f"Command: `{report['command']}`",
        "",
        "img/s = images per second, median of the interleaved rounds; ratio = jax / torch: "
        "median of the per-round ratios / ratio of the best rounds (a target counts as met "
        "only if both are >= 1); pipeline = Grain batches on their own, as a multiple "
        "of the fastest train step's consumption; wait = share of the real loop's time in "
        "which the device sat idle between steps, waiting for the next batch; mem = XLA "
        "memory analysis of the train step; load = the machine's 1-min load average around "
        "the measurement (other processes).",
        "",
        "| model | params | batch | precision | jax train | torch train | train ratio | "
        "jax eval | torch eval | eval ratio | compile (s) | mem (MB) | pipeline img/s (x) | "
        "wait | load | targets met |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        t, e = r["train"], r["eval"]
        missed = missed_targets(r)
        met = "yes" if not missed else "**NO** (" + ", ".join(missed) + ")"

        def f(x, fmt="{:,.0f}"):
            return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)

        label = r["model"] + "".join(f" `{o}`" for o in r.get("overrides") or [])
        lines.append(
            f"| {label} | {r['params']:,} | {r['batch_size']} | {precision_of(r)} | "
            f"{f(t['jax_images_per_second'])} | {f(t['torch_images_per_second'])} | "
            f"{_ratio_cell(t)} | {f(e['jax_images_per_second'])} | "
            f"{f(e['torch_images_per_second'])} | {_ratio_cell(e)} | "
            f"{r['train_compile_seconds']:.1f} | {f(r['train_step_memory_mb'])} | "
            f"{r['pipeline_images_per_second']:,.0f} ({r['pipeline_factor']:.1f}x) | "
            f"{r['loop_data_wait_fraction']:.1%} | {max(r.get('loadavg') or [0]):.1f} | {met} |"
        )
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------- main


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m cifar_jax bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--models", default="", help="comma-separated config ids (default: all)")
    p.add_argument("--batch_sizes", default="128,512")
    p.add_argument("--steps", type=int, default=0, help="timed steps per round (0 = auto)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians)")
    p.add_argument("--seconds", type=float, default=0.6, help="target seconds per train round")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--out", default="bench_results", help="folder for bench.json / bench.md")
    p.add_argument("--data_source", default="synthetic", help="config.data_source to use")
    p.add_argument("--no_torch", action="store_true", help="measure the jax side only")
    p.add_argument(
        "--precisions",
        default="float32",
        help="comma-separated float32,bf16: each model in each (bf16: half_precision=true, "
        "the PyTorch twin under torch.autocast in bfloat16)",
    )
    add_override_argument(p)
    p.add_argument("--table_from", default="", help="only re-render this bench.json's table")
    p.add_argument(
        "--default_malloc",
        action="store_true",
        help="leave glibc malloc as it is (config.reuse_host_memory=False), for both sides",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _parse_value(text: str, current: Any, key: str) -> Any:
    """``text`` as a value of the type of the field's ``current`` value."""
    try:
        if isinstance(current, bool):
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError("expected true or false")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, (tuple, list)):
            value = ast.literal_eval(text)
            return tuple(value) if isinstance(value, (tuple, list)) else (value,)
        if isinstance(current, str):
            return text
    except (ValueError, SyntaxError) as e:
        raise SystemExit(f"error: --override {key}={text}: {e}") from None
    raise SystemExit(f"error: --override {key}: only plain fields can be set ({key} is a group)")


def add_override_argument(parser: argparse.ArgumentParser) -> None:
    """``--override FIELD=VALUE`` (repeatable), read by :func:`model_batch_grid`: every
    benchmark command takes it."""
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="set a config field of every model (repeatable), e.g. half_precision=true",
    )


def apply_overrides(config, overrides: list[str]):
    """``config`` with each ``field=value`` of ``overrides`` set (dotted fields for groups,
    e.g. ``param_groups.norm_bias.lr_scale=32``), checked as training checks a config."""
    from cifar_jax.errors import ConfigError

    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --override {item!r}: expected FIELD=VALUE")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if part not in node:
                raise SystemExit(f"error: --override {key}: the config has no field {part!r}")
            node = node[part]
        if leaf not in node:
            raise SystemExit(
                f"error: --override {key}: the config has no field {leaf!r} (the fields are "
                "listed in cifar_jax/config/fields.py)"
            )
        node[leaf] = _parse_value(text, node[leaf], key)
    if overrides:
        try:
            validation.validate_config(config)
        except ConfigError as e:
            raise SystemExit(f"error: --override: {e}") from None
    return config


def _bench_config(name: str, args: argparse.Namespace):
    config = load_config(name)
    config.data_source = args.data_source
    if args.data_source == "synthetic":
        config.synthetic_train_examples = 50_000
        config.synthetic_test_examples = 10_000
    return apply_overrides(config, args.override)


def model_batch_grid(args: argparse.Namespace) -> Iterator[tuple[str, Any, int]]:
    """(config id, config, batch size) for each of ``--models`` x ``--batch_sizes`` (the
    companion CLIs bench_levers and bench_ops)."""
    for name in [m for m in args.models.split(",") if m]:
        config = _bench_config(name, args)
        for batch_size in [int(b) for b in args.batch_sizes.split(",") if b]:
            yield name, config, batch_size


def write_results(out: str, filename: str, results: list[dict[str, Any]]) -> None:
    """``out/filename``: the machine and ``results``, as JSON."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, filename), "w", encoding="utf-8") as f:
        json.dump({"machine": runtime.machine_info(), "results": results}, f, indent=2)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.table_from:  # re-render the table of an earlier bench.json
        with open(args.table_from, encoding="utf-8") as f:
            write_markdown(json.load(f), args.out)
        return 0
    runtime.configure_process(reuse_host_memory=not args.default_malloc)  # as training does
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    names = [m for m in args.models.split(",") if m] or seed_models()
    if args.worker:  # one model, in this process; JSON records on stdout
        records = bench_model(
            _bench_config(names[0], args),
            batch_sizes,
            rounds=args.rounds,
            seconds=args.seconds,
            steps=args.steps,
            use_torch=not args.no_torch,
            threads=args.threads,
            name=names[0],
            overrides=args.override,
        )
        print(json.dumps(records))
        return 0

    os.makedirs(args.out, exist_ok=True)
    given = sys.argv[1:] if argv is None else argv
    command = "python -m cifar_jax bench " + " ".join(shlex.quote(a) for a in given)
    started = time.time()
    report: dict[str, Any] = {
        "command": command.strip(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "machine": runtime.machine_info(),
        "results": [],
        "failed": {},
    }
    passthrough = [
        f"--batch_sizes={args.batch_sizes}",
        f"--steps={args.steps}",
        f"--rounds={args.rounds}",
        f"--seconds={args.seconds}",
        f"--threads={args.threads}",
        f"--out={args.out}",
        f"--data_source={args.data_source}",
    ]
    passthrough += [f"--override={o}" for o in args.override]
    passthrough += ["--no_torch"] if args.no_torch else []
    passthrough += ["--default_malloc"] if args.default_malloc else []
    precisions = [x for x in args.precisions.split(",") if x]
    if set(precisions) - set(PRECISIONS):
        raise SystemExit(f"error: --precisions={args.precisions}: use {', '.join(PRECISIONS)}")
    for name, precision in [(n, x) for n in names for x in precisions]:
        cmd = [sys.executable, "-m", "cifar_jax", "bench", "--worker", f"--models={name}"]
        cmd += passthrough + PRECISIONS[precision]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode:
            report["failed"][name] = proc.returncode
            print(f"error: {name} failed with status {proc.returncode}", file=sys.stderr)
            continue
        report["results"].extend(json.loads(proc.stdout.strip().splitlines()[-1]))
    report["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    report["wall_seconds"] = time.time() - started
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    with open(os.path.join(args.out, "bench.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    write_markdown(report, args.out)
    return 1 if report["failed"] else 0


def write_markdown(report: dict[str, Any], out: str) -> None:
    table = markdown(report)
    with open(os.path.join(out, "bench.md"), "w", encoding="utf-8") as f:
        f.write(table)
    print(table)


def run() -> None:
    """``python -m cifar_jax bench`` (cifar_jax/__main__.py)."""
    sys.exit(main())
