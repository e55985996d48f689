"""Shared benchmark plumbing: one process per (backend, repeat), medians across processes.

Machines are noisy (on the project machine one process in four ran JAX at a
third of its speed for its whole life), so every backend is measured in
several separate processes; a table reports the median over processes of the
per-process median, and the minimum.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np


def time_call(fn: Callable[[], object], *, min_time: float = 0.3, max_reps: int = 200,
              warmup: int = 2) -> dict:
    """Median/min seconds per call of `fn` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (time.perf_counter() - start < min_time or len(times) < 5):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "reps": len(times)}


def run_worker_processes(script: str, worker_args: list[list[str]], processes: int,
                         pin_core: int | None = None, timeout: float = 900) -> list[dict]:
    """Run `python script --worker ARGS` `processes` times per argument list; collect JSON lines."""
    results = []
    for args in worker_args:
        for rep in range(processes):
            cmd = [sys.executable, script, "--worker", *args]
            if pin_core is not None:
                cmd = ["taskset", "-c", str(pin_core), *cmd]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
                print(f"  worker {' '.join(args)} failed: {tail[0]}", file=sys.stderr)
                continue
            for line in proc.stdout.splitlines():
                if line.startswith("{"):
                    record = json.loads(line)
                    record["process"] = rep
                    record["pinned"] = pin_core is not None
                    results.append(record)
    return results


def aggregate(records: list[dict], keys: tuple[str, ...]) -> dict:
    """Group per-process medians by `keys`: median over processes, min, spread flag."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = {}
    for key, rs in groups.items():
        medians = [r["median"] for r in rs]
        out[key] = {
            "median": statistics.median(medians),
            "min": min(r["min"] for r in rs),
            "processes": len(rs),
            "spread": max(medians) / min(medians) if min(medians) > 0 else float("inf"),
            "extra": {k: v for k, v in rs[0].items() if k not in (*keys, "median", "min", "reps", "process")},
        }
    return out


def machine_info() -> dict:
    info = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    for mod in ("jax", "jaxlib", "numpy", "scipy", "findiff", "pde"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # peer not installed
            info[mod] = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def stream_copy_bandwidth(nbytes: int, dtype=np.float32) -> dict:
    """numpy copy into a preallocated buffer of `nbytes` (read + write), as the bandwidth limit."""
    n = max(nbytes // np.dtype(dtype).itemsize, 1)
    a = np.random.default_rng(0).random(n).astype(dtype)
    b = np.empty_like(a)
    t = time_call(lambda: np.copyto(b, a))
    return {"median": t["median"], "min": t["min"], "gbps": 2 * a.nbytes / t["min"] / 1e9}
