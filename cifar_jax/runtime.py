"""Process-level set-up that must happen before JAX starts its backend.

* XLA:CPU flags. In jaxlib 0.10 convolutions on CPU go through YNNPACK, which keeps
  only ~1.4 of 2 cores busy; ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``
  sends them back to XLA's Eigen path, measured 2.5-4x faster for the conv nets here
  (``python -m cifar_jax bench`` measures it). It is set only if the installed jaxlib
  knows it (XLA aborts on an unknown flag). XLA reads ``XLA_FLAGS`` when the backend
  starts (the first ``jax.devices()`` or computation), not at ``import jax``.
* The host allocator (glibc malloc). XLA:CPU allocates a step's temporary buffers
  (tens of MB to GB) afresh on every run of a compiled step and frees them after. glibc
  serves blocks that large with ``mmap`` and returns them with ``munmap``, so every step
  page-faults all its activation memory in again and the kernel zeroes it: 16k page
  faults per c100_bn b128 train step here, 200k per resnet_small step
  (``python -m cifar_jax bench_ops profile --default_malloc``; docs/performance.md item 9).
  :func:`configure_host_allocator` makes malloc keep freed memory for reuse (no ``mmap``
  for large blocks, no trimming, one arena so XLA's threads share it): 0 faults per
  step after the first. The cost is that the process keeps its peak memory until it
  exits, as a caching GPU allocator does. Must run before JAX starts its thread pools.
* ``jax.distributed`` for multi-process runs (see ``launch.sh``).

The flag and the allocator are for CPU runs only: :func:`configure_process` decides the
run's platform before JAX starts (:func:`run_platform`) and leaves GPU/TPU processes as
they are.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CPU_FAST_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def backend_started() -> bool:
    """Whether JAX has already created its backends (flags set now would be ignored)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge._backends)  # noqa: SLF001 - no public query exists
    except (ImportError, AttributeError):
        return False


GPU_DETERMINISM_FLAGS = (
    "--xla_gpu_deterministic_ops=true",
    "--xla_gpu_exclude_nondeterministic_ops=true",
)


def configure_xla_flags(cpu_fast_conv: bool = True, deterministic: bool = False) -> None:
    """Adds the package's XLA flags to ``XLA_FLAGS``, leaving flags the user set alone."""
    wanted = []
    if cpu_fast_conv:
        wanted.append(CPU_FAST_CONV_FLAG)
    if deterministic:
        wanted.extend(GPU_DETERMINISM_FLAGS)
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in wanted:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    os.environ["XLA_FLAGS"] = flags


# mallopt(3) parameters (glibc malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_HOST_ALLOCATOR = {"status": "default (not configured)"}


def configure_host_allocator(reuse_freed_memory: bool = True) -> str:
    """Makes glibc malloc keep freed memory for reuse (see the module docstring).

    Call before JAX starts its backend: a thread that allocated before this keeps its own
    malloc arena, whose large blocks are still mmap'd. Returns (and :func:`host_allocator`
    reports) what was done; without glibc (macOS, musl) nothing changes.
    """
    if not reuse_freed_memory:
        status = "default (reuse_host_memory=False)"
    elif sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        status = f"default (not glibc: {sys.platform} {platform.libc_ver()[0] or '?'})"
    else:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        # -1 disables trimming (mallopt(3)); each call returns 1 on success.
        done = [
            mallopt(_M_MMAP_MAX, 0),
            mallopt(_M_TRIM_THRESHOLD, -1),
            mallopt(_M_ARENA_MAX, 1),
        ]
        status = "glibc, freed memory reused" if all(done) else f"default (mallopt: {done})"
    _HOST_ALLOCATOR["status"] = status
    return status


def host_allocator() -> str:
    """What :func:`configure_host_allocator` did in this process (for logs and benches)."""
    return _HOST_ALLOCATOR["status"]


_ACCELERATOR_PLUGINS = {  # distribution name prefix -> (platform, device files)
    "jax-cuda": ("cuda", ("/dev/nvidia0", "/dev/nvidiactl")),
    "jax_cuda": ("cuda", ("/dev/nvidia0", "/dev/nvidiactl")),
    "jax-rocm": ("rocm", ("/dev/kfd",)),
    "jax_rocm": ("rocm", ("/dev/kfd",)),
    "libtpu": ("tpu", ("/dev/accel0", "/dev/vfio/0")),
}


def run_platform() -> tuple[str, str]:
    """The platform this process's JAX will run on, and why, decided before JAX starts
    (so that CPU-only set-up is applied to CPU runs only): ``JAX_PLATFORMS`` if set, else
    an installed GPU/TPU plugin with its device present, else the CPU."""
    chosen = os.environ.get("JAX_PLATFORMS", "").strip()
    if chosen:
        return chosen.split(",")[0].strip().lower(), f"JAX_PLATFORMS={chosen}"
    import importlib.metadata

    names = {(d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions()}
    for prefix, (platform_name, devices) in _ACCELERATOR_PLUGINS.items():
        plugin = next((n for n in sorted(names) if n.startswith(prefix)), None)
        device = next((d for d in devices if os.path.exists(d)), None)
        if plugin and device:
            return platform_name, f"{plugin} is installed and {device} exists"
    return "cpu", "no GPU/TPU plugin with a device here"


def xla_flag_known(flag: str) -> bool:
    """Whether the installed jaxlib knows an XLA flag: XLA aborts the process on a flag it
    does not know, so a flag the package adds is checked first. The flag names are strings
    in jaxlib's shared libraries; a cheap scan of them, no JAX start."""
    import importlib.util
    import mmap

    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return False
    name = flag.lstrip("-").split("=")[0].encode()
    for folder in spec.submodule_search_locations:
        for path in sorted(Path(folder).rglob("*.so")):
            with contextlib.suppress(OSError, ValueError), open(path, "rb") as f:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    if data.find(name) >= 0:
                        return True
    return False


_PROCESS = {"status": "not configured"}


def configure_process(
    reuse_host_memory: bool = True, cpu_fast_conv: bool = True, deterministic: bool = False
) -> str:
    """What every entry point (training CLIs and benchmarks) sets up before JAX starts, so
    a benchmark measures the process training runs in. CPU runs only: the host allocator
    (:func:`configure_host_allocator`) and the XLA:CPU conv flag, the latter only if the
    installed jaxlib knows it. Every run: ``--config.deterministic``'s GPU flags. Returns
    (and :func:`process_setup` reports) what was done and why, for the log."""
    platform_name, why = run_platform()
    if platform_name == "cpu":
        configure_host_allocator(reuse_host_memory)
        known = not cpu_fast_conv or xla_flag_known(CPU_FAST_CONV_FLAG)
        configure_xla_flags(cpu_fast_conv and known, deterministic)
        flag = CPU_FAST_CONV_FLAG.split("=")[0]
        conv = (
            f"{flag} set" if cpu_fast_conv and known
            else f"{flag} not set (this jaxlib does not know it)" if cpu_fast_conv
            else f"{flag} off (cpu_fast_conv_flags=False)"
        )  # fmt: skip
        status = f"CPU run ({why}): {conv}"
    else:
        _HOST_ALLOCATOR["status"] = f"default (a {platform_name} run: CPU-only set-up skipped)"
        configure_xla_flags(False, deterministic)
        status = f"{platform_name} run ({why}): no CPU-only flags or allocator changes"
    _PROCESS["status"] = status
    return status


def process_setup() -> str:
    """What :func:`configure_process` did in this process, and why."""
    return _PROCESS["status"]


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Joins a multi-process run; returns False (and does nothing) for a single process.

    Explicit arguments win; otherwise ``CIFAR_JAX_COORDINATOR``, ``CIFAR_JAX_NUM_PROCESSES``
    and ``CIFAR_JAX_PROCESS_ID`` (set by ``launch.sh``) are read; otherwise, on a cluster
    JAX knows (Slurm, Open MPI, ...), ``jax.distributed.initialize()`` finds them itself
    when ``CIFAR_JAX_DISTRIBUTED=auto``.
    """
    import jax

    coordinator_address = coordinator_address or os.environ.get("CIFAR_JAX_COORDINATOR")
    if num_processes is None and os.environ.get("CIFAR_JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["CIFAR_JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("CIFAR_JAX_PROCESS_ID"):
        process_id = int(os.environ["CIFAR_JAX_PROCESS_ID"])
    if coordinator_address and num_processes and num_processes > 1:
        # CPU processes need a collectives implementation; it does not affect GPU/TPU.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
        return True
    if os.environ.get("CIFAR_JAX_DISTRIBUTED") == "auto":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize()
        return jax.process_count() > 1
    return False


_IMPORTED_AT = time.monotonic()  # the fallback start where /proc cannot say


def process_seconds() -> float:
    """Seconds since this process started (Linux: its start time in ``/proc/self/stat``
    against the boot clock, so interpreter start-up and imports count); elsewhere, since
    this module was imported. ``results.json``'s ``wall_seconds`` and time to target are
    measured with it."""
    try:
        with open("/proc/self/stat", encoding="utf-8") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        started = start_ticks / os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic() - _IMPORTED_AT


@functools.cache
def git_commit() -> str:
    """The commit of the cifar_jax checkout this code runs from (``-dirty`` with local
    changes), or ``unknown`` for an installed copy without git: every results file
    carries it, so a number can be traced to the code that made it. Read once per
    process (training asks at its start): a commit made while a long run trains must not
    relabel the code that run had loaded."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "") if commit else "unknown"


def cpu_description() -> str:
    """CPU model with family/model numbers and vector ISA (and AMX where the CPU exposes
    it), e.g. ``AMD EPYC 9B45 (family 26, AVX512)``. Conv kernels are picked per ISA, so
    times and speed ratios measured on an AVX2 machine do not carry over to an AVX-512
    one: every number records it."""
    cpu, family, model, flags = platform.processor(), "", "", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                cpu = value.strip()
            elif key == "cpu family":
                family = value.strip()
            elif key == "model":
                model = value.strip()
            elif key == "flags":
                flags = set(value.split())
                break
    isa = next((i for i in ("avx512f", "avx2", "avx") if i in flags), "unknown")
    # AMX (the bf16 tile unit) decides bf16 speed: the same family and model runs bf16
    # several times slower where the VM does not expose it (2026-12-07, docs/fast.md).
    amx = ", AMX" if "amx_bf16" in flags else ""
    if family:
        cpu = f"{cpu} (family {family}, model {model}, {isa.removesuffix('f').upper()}{amx})"
    if limits := isa_limits():
        cpu = f"{cpu}, kernels limited by {', '.join(limits)}"
    return cpu


def isa_limits() -> list[str]:
    """The settings that keep this process's kernels off the CPU's newest instructions,
    e.g. ``ONEDNN_MAX_CPU_ISA=AVX2`` and ``--xla_cpu_max_isa=AVX2``: they make an AVX-512
    machine time an AVX2 one's code paths (not its caches or clocks), so a number measured
    under them says so."""
    limits = [
        f"{name}={os.environ[name]}"
        for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
        if os.environ.get(name)
    ]
    xla = re.search(r"--xla_cpu_max_isa=(\S+)", os.environ.get("XLA_FLAGS", ""))
    if xla:
        limits.append(f"--xla_cpu_max_isa={xla.group(1)}")
    return limits


def machine_info() -> dict[str, Any]:
    """The machine, software and commit a measurement was made with (bench, sweeps,
    reproductions). Starts JAX's backend: call it after :func:`configure_process`."""
    import jax
    import jaxlib

    from cifar_jax.kernels import onednn

    devices = jax.devices()
    info = {
        "cpu": cpu_description(),
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "backend": jax.default_backend(),
        "devices": f"{len(devices)} x {devices[0].device_kind}",
        "commit": git_commit(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "conv_backend": onednn.conv_backend(),
        # What a bf16 (half_precision) measurement's convs run on; where their kernel
        # gradients come from is the measurement's config (cpu_bf16_kernel_grads).
        "bf16_convs": onednn.half_precision_note(None)[0],
        "host_allocator": host_allocator(),
        "process_setup": process_setup(),
    }
    with contextlib.suppress(ImportError):
        import torch

        info["torch"] = torch.__version__
    return info
