"""Laplacian, one application: jaxfd against numpy, scipy.ndimage, findiff and py-pde.

Rerun:
    python benchmarks/stencils.py              # full run (about 10-15 minutes on 2 cores)
    python benchmarks/stencils.py --quick      # small sizes, one process each (smoke test)

Each backend runs in several separate processes (`--processes`); the table
shows the median over processes of the per-process median time, the effective
bandwidth 2*N*itemsize/time, the fraction of the machine's copy bandwidth
(numpy copy into a preallocated buffer of the same bytes, measured in the
same run) and the ratio to the fastest peer. Results go to
benchmarks/results/stencils.json. A pinned (taskset -c 1) column shows the
single-core figure, which is stable where two-thread runs are not.

Every backend computes the periodic second-order Laplacian of the same
field; the worker checks its result against a float64 numpy reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

SIZES_FULL = ["256x256", "1024x1024", "4096x4096", "64x64x64", "256x256x256"]
SIZES_QUICK = ["64x64", "256x256", "32x32x32"]
BACKENDS = ["jaxfd", "jaxfd_buffered", "jaxfd_tuned", "jaxfd_buffered_tuned", "numpy_slice", "scipy_ndimage",
            "findiff", "pypde"]
DTYPES = ["float32", "float64"]


def reference_laplacian(u: np.ndarray, h: float) -> np.ndarray:
    u = u.astype(np.float64)
    out = -2.0 * u.ndim * u
    for a in range(u.ndim):
        out += np.roll(u, 1, a) + np.roll(u, -1, a)
    return out / h**2


def make_backend(name: str, shape: tuple[int, ...], dtype: str, h: float):
    """Return (apply, result) callables; `apply()` blocks until done."""
    rng = np.random.default_rng(0)
    u_np = rng.random(shape).astype(dtype)
    if name.startswith("jaxfd"):
        import jax

        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        import jaxfd as fd

        grid = fd.Grid(shape, tuple((0.0, h * n) for n in shape))
        u = jnp.asarray(u_np)

        def lap(v):
            return fd.laplacian(v, grid, bc=fd.Periodic())

        if name in ("jaxfd", "jaxfd_tuned"):
            f = jax.jit(lap)
            state = {"y": None}

            def apply():
                state["y"] = f(u).block_until_ready()

            return apply, lambda: np.asarray(state["y"])
        f = fd.buffered(lap)
        state = {"y": jnp.empty_like(u)}

        def apply():
            state["y"] = f(u, out=state["y"]).block_until_ready()

        return apply, lambda: np.asarray(state["y"])
    if name == "numpy_slice":
        u = u_np
        c = np.asarray(1.0 / h**2, dtype)

        def lap_np(v):
            out = np.empty_like(v)
            p = np.pad(v, 1, mode="wrap")
            core = tuple(slice(1, -1) for _ in shape)
            acc = -2.0 * v.ndim * v
            for a in range(v.ndim):
                lo = list(core)
                hi = list(core)
                lo[a] = slice(0, -2)
                hi[a] = slice(2, None)
                acc += p[tuple(lo)] + p[tuple(hi)]
            np.multiply(acc, c, out=out)
            return out

        state = {}

        def apply():
            state["y"] = lap_np(u)

        return apply, lambda: state["y"]
    if name == "scipy_ndimage":
        from scipy import ndimage

        kernel = np.zeros((3,) * len(shape), dtype)
        center = (1,) * len(shape)
        kernel[center] = -2.0 * len(shape)
        for a in range(len(shape)):
            for s in (0, 2):
                idx = list(center)
                idx[a] = s
                kernel[tuple(idx)] = 1.0
        kernel /= h**2
        out = np.empty_like(u_np)

        def apply():
            ndimage.correlate(u_np, kernel, output=out, mode="wrap")

        return apply, lambda: out
    if name == "findiff":
        from findiff import Diff

        op = Diff(0, h, periodic=True) ** 2
        for a in range(1, len(shape)):
            op = op + Diff(a, h, periodic=True) ** 2
        state = {}

        def apply():
            state["y"] = op(u_np)

        return apply, lambda: state["y"]
    if name == "pypde":
        import pde

        grid = pde.CartesianGrid([[0, h * n] for n in shape], list(shape), periodic=True)
        op = grid.make_operator("laplace", bc="periodic")
        out = np.empty_like(u_np)

        def apply():
            op(u_np, out=out)

        return apply, lambda: out
    raise ValueError(f"unknown backend {name!r}")


def worker(backend: str, sizes: list[str], dtypes: list[str]) -> None:
    if backend.endswith("_tuned"):
        # the library's opt-in process settings (sync dispatch, glibc keeps
        # freed memory); applied before JAX runs anything, as documented
        import jaxfd

        jaxfd.tune_cpu_runtime()
    for dtype in dtypes:
        for size in sizes:
            shape = tuple(int(s) for s in size.split("x"))
            h = 1.0 / shape[0]
            try:
                apply, result = make_backend(backend, shape, dtype, h)
            except ImportError as e:
                print(json.dumps({"backend": backend, "size": size, "dtype": dtype,
                                  "skipped": f"not installed: {e}"}))
                continue
            t = H.time_call(apply)
            u = np.random.default_rng(0).random(shape).astype(dtype)
            ref = reference_laplacian(u, h)
            out = np.asarray(result())
            err = float(np.abs(out - ref).max() / np.abs(ref).max())
            nbytes = 2 * u.nbytes
            print(json.dumps({"backend": backend, "size": size, "dtype": dtype,
                              "median": t["median"], "min": t["min"], "reps": t["reps"],
                              "rel_err": err, "out_dtype": str(out.dtype), "nbytes": nbytes}),
                  flush=True)


def copy_worker(sizes: list[str], dtypes: list[str]) -> None:
    for dtype in dtypes:
        for size in sizes:
            shape = tuple(int(s) for s in size.split("x"))
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            c = H.stream_copy_bandwidth(nbytes, np.dtype(dtype))
            print(json.dumps({"backend": "numpy_copy", "size": size, "dtype": dtype,
                              "median": c["median"], "min": c["min"], "reps": 0,
                              "nbytes": 2 * nbytes}), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one process each")
    ap.add_argument("--processes", type=int, default=5)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--sizes", default=None)
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--no-pinned", action="store_true", help="skip the taskset -c 1 column")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "stencils.json"))
    ap.add_argument("--worker", nargs=3, metavar=("BACKEND", "SIZES", "DTYPES"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        backend, sizes, dtypes = args.worker
        if backend == "numpy_copy":
            copy_worker(sizes.split(","), dtypes.split(","))
        else:
            worker(backend, sizes.split(","), dtypes.split(","))
        return
    sizes = args.sizes.split(",") if args.sizes else (SIZES_QUICK if args.quick else SIZES_FULL)
    processes = 1 if args.quick else args.processes
    backends = args.backends.split(",")
    dtypes = args.dtypes.split(",")
    script = os.path.abspath(__file__)
    work = [["numpy_copy", ",".join(sizes), ",".join(dtypes)]]
    work += [[b, ",".join(sizes), ",".join(dtypes)] for b in backends]
    print(f"measuring {len(work)} backends x {processes} processes ...", file=sys.stderr)
    records = H.run_worker_processes(script, work, processes)
    pinned = []
    if not args.no_pinned and not args.quick and sys.platform.startswith("linux"):
        pin_backends = ["numpy_copy", "jaxfd", "jaxfd_buffered", "numpy_slice", "pypde"]
        pin_work = [[b, ",".join(sizes), ",".join(dtypes)] for b in pin_backends if b in backends or b == "numpy_copy"]
        pinned = H.run_worker_processes(script, pin_work, max(2, processes // 2), pin_core=1)
    report = summarize(records, pinned, sizes, dtypes, backends)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": H.machine_info(), "processes": processes, "records": records,
                   "pinned_records": pinned, "summary": report}, f, indent=1)
    print(f"\nwrote {args.out}")


def summarize(records, pinned, sizes, dtypes, backends):
    valid = [r for r in records if "median" in r]
    agg = H.aggregate(valid, ("backend", "size", "dtype"))
    agg_pin = H.aggregate([r for r in pinned if "median" in r], ("backend", "size", "dtype"))
    skipped = {(r["backend"]) for r in records if "skipped" in r}
    summary = []
    for dtype in dtypes:
        print(f"\n## Laplacian, one application, {dtype} (median over processes; GB/s = 2*N*itemsize/time)\n")
        headers = ["backend"] + sizes
        rows = []
        for b in backends:
            row = [b]
            for size in sizes:
                a = agg.get((b, size, dtype))
                copy = agg.get(("numpy_copy", size, dtype))
                if a is None:
                    row.append("skipped" if b in skipped else "-")
                    continue
                nbytes = a["extra"]["nbytes"]
                gbps = nbytes / a["median"] / 1e9
                copy_gbps = nbytes / copy["min"] / 1e9 if copy else float("nan")
                peers = [agg.get((p, size, dtype)) for p in backends if not p.startswith("jaxfd")]
                best_peer = min((p["median"] for p in peers if p), default=float("nan"))
                pin = agg_pin.get((b, size, dtype))
                cell = (f"{H.format_time(a['median'])} / {gbps:.1f} GB/s / "
                        f"{100 * gbps / copy_gbps:.0f}% copy / {best_peer / a['median']:.2f}x best peer")
                if a["spread"] > 1.25:
                    cell += " *"
                if pin:
                    cell += f" [1 core {H.format_time(pin['median'])}]"
                row.append(cell)
                summary.append({"backend": b, "size": size, "dtype": dtype,
                                "median_s": a["median"], "min_s": a["min"],
                                "processes": a["processes"], "spread": a["spread"],
                                "gbps": gbps, "copy_gbps": copy_gbps,
                                "fraction_of_copy": gbps / copy_gbps,
                                "speedup_vs_best_peer": best_peer / a["median"],
                                "pinned_median_s": pin["median"] if pin else None,
                                "rel_err": a["extra"].get("rel_err"),
                                "out_dtype": a["extra"].get("out_dtype")})
            rows.append(row)
        copy_row = ["numpy_copy (limit)"]
        for size in sizes:
            c = agg.get(("numpy_copy", size, dtype))
            copy_row.append(f"{H.format_time(c['min'])} / {c['extra']['nbytes'] / c['min'] / 1e9:.1f} GB/s" if c else "-")
        rows.append(copy_row)
        H.print_table(headers, rows)
    print("\n`*`: per-process medians differ by more than 25% (two-speed thread noise).")
    return summary


if __name__ == "__main__":
    main()
