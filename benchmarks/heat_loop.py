"""2-D heat equation, explicit steps: jaxfd.simulate against numpy, py-pde and Devito.

Rerun:
    python benchmarks/heat_loop.py             # 1024^2 and 4096^2, 200 steps, float32
    python benchmarks/heat_loop.py --quick     # 256^2, 50 steps, one process each

u_t = nu * laplacian(u), zero Dirichlet walls, forward Euler at diffusion
number 0.2. Three jaxfd rows: `jaxfd` closes over nu (a constant compiled
into the program, as Devito compiles it into its kernel); `jaxfd_arg` passes
nu through `args` as a traced scalar (what differentiating with respect to
it needs), which XLA's CPU backend compiles to a loop several times slower
unless fast math is allowed; `jaxfd_tuned` is `jaxfd_arg` after
`fd.tune_cpu_runtime(fast_math=True)`, which allows it (docs/benchmarks.md). Each
backend runs in `--processes` separate processes (two-speed thread noise);
the table shows the median over processes of the per-process median time
per step, cell updates per second, effective bandwidth (2 * N * itemsize per
step) and the ratio to the fastest backend. Results go to
benchmarks/results/heat_loop.json. Every backend's final state is checked
against a float64 numpy run of the same scheme.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

BACKENDS = ["jaxfd", "jaxfd_arg", "jaxfd_tuned", "numpy", "pypde", "devito", "devito_omp"]


def initial_state(n: int) -> np.ndarray:
    x = (np.arange(n) + 0.5) / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    return (np.sin(np.pi * X) * np.sin(2 * np.pi * Y) + 0.1 * np.sin(7 * np.pi * X)).astype(np.float32)


def numpy_steps(u: np.ndarray, steps: int, lam: float) -> np.ndarray:
    """Cell-centred ghost-cell scheme (ghost = -u at zero Dirichlet walls)."""
    u = u.copy()
    p = np.zeros((u.shape[0] + 2, u.shape[1] + 2), u.dtype)
    for _ in range(steps):
        p[1:-1, 1:-1] = u
        p[0, 1:-1] = -u[0]
        p[-1, 1:-1] = -u[-1]
        p[1:-1, 0] = -u[:, 0]
        p[1:-1, -1] = -u[:, -1]
        u += lam * (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * u)
    return u


def make_runner(backend: str, n: int, steps: int):
    h = 1.0 / n
    nu = 1.0
    dt = 0.2 * h * h / nu
    lam = nu * dt / (h * h)
    u0 = initial_state(n)
    if backend in ("jaxfd", "jaxfd_arg", "jaxfd_tuned"):
        import jaxfd as fd

        if backend == "jaxfd_tuned":
            # before JAX computes anything: XLA reads its flags at start-up
            fd.tune_cpu_runtime(fast_math=True)

        import jax
        import jax.numpy as jnp

        grid = fd.Grid((n, n), ((0.0, 1.0), (0.0, 1.0)))
        u0j = jnp.asarray(u0)
        if backend == "jaxfd":
            # nu compiled into the program, as Devito compiles it into its kernel
            def rhs(t, u, args):
                return nu * fd.laplacian(u, grid, bc=fd.Dirichlet(0.0))

            args = None
        else:
            # nu a traced argument (what a gradient with respect to it needs)
            def rhs(t, u, nu_arg):
                return nu_arg * fd.laplacian(u, grid, bc=fd.Dirichlet(0.0))

            args = jnp.float32(nu)

        def run():
            sol = fd.simulate(rhs, u0j, 0.0, steps * dt, dt, stepper=fd.Euler(), args=args,
                              checkpoint="none", stability="ignore")
            return np.asarray(jax.block_until_ready(sol.us[-1]))

        return run
    if backend == "numpy":
        return lambda: numpy_steps(u0, steps, lam)
    if backend == "pypde":
        import pde

        grid = pde.CartesianGrid([[0, 1], [0, 1]], [n, n])
        eq = pde.DiffusionPDE(diffusivity=nu, bc={"value": 0})
        state = pde.ScalarField(grid, u0.copy())
        solver = pde.ExplicitSolver(eq, scheme="euler", backend="numba", adaptive=False)
        stepper = solver.make_stepper(state, dt=dt)

        def run():
            s = state.copy()
            stepper(s, 0.0, steps * dt - 0.5 * dt)
            return np.asarray(s.data)

        return run
    if backend in ("devito", "devito_omp"):
        os.environ["DEVITO_LOGGING"] = "ERROR"
        os.environ["DEVITO_LANGUAGE"] = "openmp" if backend == "devito_omp" else "C"
        from devito import Eq, Grid, Operator, TimeFunction, solve

        # Devito's grid is vertex-centred: n+2 points of spacing h with fixed zero
        # end points give n unknowns and the same work per step; its walls sit a
        # full cell (not half a cell) from the first unknown, hence rel err ~ 1e-2
        # against the cell-centred reference.
        grid = Grid(shape=(n + 2, n + 2), extent=((n + 1) * h, (n + 1) * h), dtype=np.float32)
        u = TimeFunction(name="u", grid=grid, space_order=2)
        stencil = Eq(u.forward, solve(u.dt - nu * u.laplace, u.forward), subdomain=grid.interior)
        op = Operator([stencil])

        def run():
            u.data[:] = 0.0
            u.data[0, 1:-1, 1:-1] = u0
            op.apply(time_M=steps - 1, dt=dt)
            return np.array(u.data[steps % 2, 1:-1, 1:-1])

        return run
    raise ValueError(backend)


def worker(backend: str, n: int, steps: int, repeats: int) -> None:
    try:
        run = make_runner(backend, n, steps)
    except ImportError as e:
        print(json.dumps({"backend": backend, "n": n, "skipped": f"not installed: {e}"}))
        return
    t0 = time.perf_counter()
    out = run()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    ref = numpy_steps(initial_state(n).astype(np.float64), steps, 0.2)
    err = float(np.abs(out - ref).max() / np.abs(ref).max())
    print(json.dumps({"backend": backend, "n": n, "steps": steps,
                      "median": float(np.median(times)) / steps, "min": float(np.min(times)) / steps,
                      "reps": repeats, "first_call": first, "rel_err": err}), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--sizes", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "heat_loop.json"))
    ap.add_argument("--worker", nargs=4, metavar=("BACKEND", "N", "STEPS", "REPEATS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        b, n, steps, repeats = args.worker
        worker(b, int(n), int(steps), int(repeats))
        return
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([256] if args.quick else [1024, 4096])
    steps = args.steps or (50 if args.quick else 200)
    processes = 1 if args.quick else args.processes
    backends = args.backends.split(",")
    work = []
    for n in sizes:
        for b in backends:
            repeats = 3 if n >= 4096 else 5
            if b == "numpy" and n >= 4096:
                repeats = 1
            work.append([b, str(n), str(steps), str(repeats)])
    records = H.run_worker_processes(os.path.abspath(__file__), work, processes)
    agg = H.aggregate([r for r in records if "median" in r], ("backend", "n"))
    summary = []
    for n in sizes:
        print(f"\n## 2-D heat, {n}x{n}, float32, {steps} explicit steps\n")
        rows = []
        best = min((a["median"] for (b, m), a in agg.items() if m == n), default=float("nan"))
        for b in backends:
            a = agg.get((b, n))
            if a is None:
                skipped = [r for r in records if r.get("backend") == b and r.get("n") == n and "skipped" in r]
                rows.append([b, "skipped" if skipped else "failed", "", "", "", "", ""])
                continue
            cells = n * n
            mups = cells / a["median"] / 1e6
            gbps = 2 * cells * 4 / a["median"] / 1e9
            rows.append([b, H.format_time(a["median"]) + (" *" if a["spread"] > 1.25 else ""),
                         f"{mups:.0f}", f"{gbps:.1f}", f"{a['median'] / best:.2f}x",
                         H.format_time(a["extra"]["first_call"]), f"{a['extra']['rel_err']:.1e}"])
            summary.append({"backend": b, "n": n, "steps": steps, "per_step_s": a["median"],
                            "min_per_step_s": a["min"], "processes": a["processes"],
                            "mcell_updates_per_s": mups, "gbps": gbps, "ratio_to_best": a["median"] / best,
                            "first_call_s": a["extra"]["first_call"], "rel_err": a["extra"]["rel_err"]})
        H.print_table(["backend", "per step", "Mcell/s", "GB/s", "vs best", "first call", "rel err"], rows)
    print("\n`*`: per-process medians differ by more than 25%.")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": H.machine_info(), "records": records, "summary": summary}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
