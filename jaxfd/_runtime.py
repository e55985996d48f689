"""Opt-in process settings that make single operator calls on CPU fast.

Two costs dominate one-off applications outside a compiled loop on CPU
(measured on the project machine, see docs/benchmarks.md):

* **fresh output memory**: results of 64 MiB and more are a new `mmap` per
  call, and every 4 KiB page faults on first touch (4096^2 float32: 23 ms
  against 6 ms for the stencil itself). glibc can be told to keep freed
  memory in its heap and reuse it (`mallopt`): no `mmap`/`munmap` per call,
  no page faults.
* **asynchronous dispatch**: on CPU it adds tens of microseconds per call,
  more than a 256^2 stencil takes. Synchronous dispatch removes it.
* **strict floating-point order in fused loops** (`fast_math=True`, off by
  default): XLA's CPU code generator keeps IEEE evaluation order unless told
  otherwise, and some stencil loops then run 4x slower than others that
  differ by one multiplication (a heat step `u + dt * (nu * laplacian(u))`
  with a runtime `nu`: 1230 against 291 us per 1024^2 step on one core).
  Allowing reassociation and contraction, while still honouring NaN,
  infinity and division semantics, removes that cliff but creates others:
  a single periodic Laplacian ran 2.9x slower with it (789 against 275 us at
  1024^2 float32, one core). Results change at round-off level. Measure your
  own loop with and without it.

All are process-wide and change behaviour beyond jaxfd (memory is never
returned to the operating system; Python waits for each JAX call; every XLA
CPU program may reassociate floating-point sums), so they are opt-in: call `tune_cpu_runtime()` before the first JAX computation, or
set `JAXFD_TUNE_CPU=1` in the environment before importing jaxfd.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings

import jax

__all__ = ["tune_cpu_runtime"]

# XLA CPU: fast-math code generation (reassociation, contraction) that still
# honours NaNs and infinities (non-finite checks keep working), division and
# library functions.
_FAST_MATH_FLAGS = (
    "--xla_cpu_enable_fast_math=true",
    "--xla_cpu_fast_math_honor_nans=true",
    "--xla_cpu_fast_math_honor_infs=true",
    "--xla_cpu_fast_math_honor_division=true",
    "--xla_cpu_fast_math_honor_functions=true",
)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(getattr(xla_bridge, "_backends", None))
    except ImportError:  # pragma: no cover - private layout changed
        return False


def tune_cpu_runtime(*, sync_dispatch: bool = True, keep_memory: bool = True,
                     fast_math: bool = False) -> dict:
    """Apply the CPU settings described above; returns what was applied.

    Arguments:
        sync_dispatch: turn off JAX's asynchronous CPU dispatch.
        fast_math: let XLA's CPU code generator reassociate and contract
            floating-point arithmetic (NaN, infinity and division semantics
            kept), through `XLA_FLAGS`; takes effect only before the backend
            starts. Off by default: it speeds some loops up 4x and slows
            others down 3x (see above).
        keep_memory: glibc keeps large freed blocks for reuse (`M_MMAP_MAX=0`,
            `M_TRIM_THRESHOLD` maximal) in one arena (`M_ARENA_MAX=1`), so
            XLA's output buffers are recycled without page faults. Linux with
            glibc only; ignored elsewhere.

    Call it before JAX runs anything: the allocator settings do not reach
    memory already handed out, and JAX reads the dispatch setting when its
    CPU backend starts. A warning says so if the backend is already running.
    """
    applied = {}
    if _backend_started():
        warnings.warn(
            "jaxfd.tune_cpu_runtime(): the JAX backend is already running; call it before the "
            "first JAX computation (or set JAXFD_TUNE_CPU=1 before importing jaxfd) for the "
            "full effect.",
            stacklevel=2,
        )
    if sync_dispatch:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
        applied["sync_dispatch"] = True
    if fast_math and not _backend_started():
        flags = os.environ.get("XLA_FLAGS", "").split()
        names = {f.split("=")[0] for f in flags}
        flags += [f for f in _FAST_MATH_FLAGS if f.split("=")[0] not in names]  # the user's win
        os.environ["XLA_FLAGS"] = " ".join(flags)
        applied["fast_math"] = True
    if keep_memory and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:
            libc = None
        if libc is not None and hasattr(libc, "mallopt"):
            applied["arena_max"] = bool(libc.mallopt(_M_ARENA_MAX, 1))
            applied["mmap_max"] = bool(libc.mallopt(_M_MMAP_MAX, 0))
            applied["trim_threshold"] = bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return applied


if os.environ.get("JAXFD_TUNE_CPU", "") not in ("", "0"):
    tune_cpu_runtime()
