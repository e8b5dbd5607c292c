"""Speed settings and measuring helpers. Nothing here changes results beyond float noise.

`apply_speed_settings` is what a training process calls once, first thing, before building models:

    from symattn.run.speed import apply_speed_settings
    state = apply_speed_settings(threads=None, flush_denormal=True, retain_memory=True)

- threads: intra-op threads (`torch.set_num_threads`); None leaves torch's default (one per core).
- flush_denormal: flush denormal floats (|x| < 1.2e-38) to zero, in EVERY thread of the compute
  pool. Pairwise attention with S ~ N(0, 1) produces denormals as training goes on, and x86 CPUs
  handle them up to ~100x slower. `torch.set_flush_denormal(True)` alone sets the flag in the calling
  thread only: the OpenMP worker threads that run half of every parallel op keep computing
  denormals. We copy the calling thread's floating-point environment to every OpenMP thread.
  Changes results only for values below 1.2e-38: float noise. False turns flushing off.
- retain_memory (Linux/glibc): keep freed memory in the process instead of handing it back
  to the kernel, so the next step reuses pages already mapped. A training step allocates and frees
  hundreds of MB, and every fresh page costs a page fault (measured counts and costs:
  benchmarks/README.md). Peak RSS stays at the step's peak.
  No effect on results. False leaves the allocator as it is (the setting cannot be undone).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import platform
import statistics
import sys
import time
from typing import Optional

import torch
import torch.nn.functional as F

# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def _openmp_library() -> Optional[ctypes.CDLL]:
    """The OpenMP runtime torch's thread pool lives in (libgomp, or libiomp5 with its GOMP layer)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {
                line.split()[-1]
                for line in maps
                if any(n in line for n in ("libgomp", "libiomp5", "libomp."))
            }
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
            lib.GOMP_parallel  # noqa: B018 - attribute lookup checks the symbol exists
            return lib
        except (OSError, AttributeError):
            continue
    return None


def _broadcast_fenv(threads: int) -> bool:
    """Copy the calling thread's floating-point environment (MXCSR: FTZ/DAZ) to every OpenMP thread.

    Runs `fesetenv(&env)` as the body of one OpenMP parallel region of `threads` threads, the team
    torch's parallel ops use. Returns False where that is not possible (no OpenMP, no libm)."""
    name = ctypes.util.find_library("m")
    lib = _openmp_library()
    if name is None or lib is None:
        return False
    libm = ctypes.CDLL(name)
    env = ctypes.create_string_buffer(512)  # fenv_t is 32 bytes on x86-64 glibc
    if libm.fegetenv(env) != 0:
        return False
    lib.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    lib.GOMP_parallel.restype = None
    lib.GOMP_parallel(
        ctypes.cast(libm.fesetenv, ctypes.c_void_p), ctypes.cast(env, ctypes.c_void_p), threads, 0
    )
    return True


def denormals_flushed() -> bool:
    """True when denormal results are flushed to zero in every thread of a parallel op."""
    x = torch.full((1 << 18,), 1e-39)  # large enough to be split over all threads
    return bool(((x * 0.5) == 0).all())


def set_flush_denormal(on: bool) -> bool:
    """Flush denormals to zero (or stop) in the calling thread and all of torch's OpenMP threads.

    Returns whether the setting is in force in every thread (checked by computing a denormal)."""
    if not torch.set_flush_denormal(on):  # CPU without the DAZ/FTZ flags
        return False
    if torch.get_num_threads() > 1:
        _broadcast_fenv(torch.get_num_threads())
    return denormals_flushed() == on


def retain_freed_memory() -> bool:
    """glibc: serve every allocation from the heap and never return freed memory to the kernel."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok)


def apply_speed_settings(
    threads: Optional[int] = None,
    flush_denormal: bool = True,
    retain_memory: bool = True,
) -> dict:
    """Apply the process-wide CPU speed settings; none changes results beyond float noise.

    Call once per process, before building models (calling again is harmless). Returns what is in
    force, for the run's record: {"threads", "flush_denormal", "retain_memory"}.
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        torch.set_num_threads(threads)
    state = {"threads": torch.get_num_threads()}
    in_force = set_flush_denormal(flush_denormal)
    state["flush_denormal"] = flush_denormal if in_force else denormals_flushed()
    state["retain_memory"] = retain_freed_memory() if retain_memory else False
    return state


# --- measuring ----------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    n: Optional[int] = None,
    seconds: float = 0.3,
    clock=time.perf_counter,
) -> float:
    """Measured matmul throughput in FLOP/s: the best of square n x n products run for `seconds`.

    The yardstick for MFU, measured on the spot so that it reflects this machine as it is now
    (clock, thermal state, other load). The product is `F.linear(a, b)` = a @ b^T, the layout of
    every projection (on CPUs without bf16 instructions the bf16 kernels differ by layout: 1.3
    GFLOP/s for a @ b against 8 for a @ b^T on the AMD EPYC measured)."""
    device = torch.device(device)
    n = n or (1024 if device.type == "cpu" else 8192)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    F.linear(a, b)  # warm-up
    synchronize(device)
    best, spent = math.inf, 0.0
    reps = 0
    while reps < 1 or (spent < seconds and reps < 50):
        t = clock()
        F.linear(a, b)
        synchronize(device)
        dt = clock() - t
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return 2 * n**3 / best


def spread(values: list[float]) -> tuple[float, float]:
    """(median, half the 10-90 percentile range) of a list of timings."""
    if not values:
        return math.nan, math.nan
    if len(values) < 3:
        return statistics.median(values), (max(values) - min(values)) / 2
    q = statistics.quantiles(values, n=10, method="inclusive")
    return statistics.median(values), (q[-1] - q[0]) / 2


@contextlib.contextmanager
def _native_stderr_silenced():
    """File descriptor 2 points at /dev/null inside the block (native code writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _profiled_peak_bytes(fn) -> int:
    """Peak bytes allocated on the CPU while `fn` runs, above what was allocated before.

    The profiler's memory events carry the running total of bytes allocated since profiling began
    (blocks allocated before it are left out, their frees too)."""
    import json
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced():  # the profiler's C++ side prints stage lines on every use
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(path)
            with open(path) as f:
                events = json.load(f)["traceEvents"]
    totals = [
        e["args"].get("Total Allocated", 0)
        for e in events
        if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0
    ]
    return max(totals, default=0)


def peak_step_memory(fn, device: torch.device | str = "cpu") -> int:
    """Peak bytes the call `fn()` allocates above what is live before it (activations, gradients,
    temporaries). CUDA: the caching allocator's peak; CPU: the profiler's allocation events."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return _profiled_peak_bytes(fn)
