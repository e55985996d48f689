"""Steady solves: jaxfd against scipy and pyamg, on the same discrete problems.

Rerun:
    python benchmarks/poisson.py                  # 2 processes per backend (about 75 minutes)
    python benchmarks/poisson.py --processes 1    # what docs/benchmarks.md shows (37 minutes on 2 cores)
    python benchmarks/poisson.py --quick          # small sizes, one process each (smoke test)
    python benchmarks/poisson.py --cases 1024^2,128^3 --problems contrast   # a subset

Two problems, both cell-centred, second order, float64, u = 0 on the walls of
the unit square / cube, at 256^2, 1024^2, 2048^2, 64^3 and 128^3:

* **poisson**: $-\\nabla^2 u = f$. jaxfd's `fd.poisson` (exact, by discrete
  sine transforms) and the same transform solve in `scipy.fft`, then the
  iterative and direct solvers that also handle variable coefficients.
* **contrast**: $-\\nabla\\cdot(k\\nabla u) = f$ with a piecewise-constant
  log-normal $k$ (16 patches per axis, contrast $10^6$).

Solvers: jaxfd's multigrid as a solver (`fd.MultigridSolver`), as a CG
preconditioner (`fd.Multigrid`) and Jacobi-preconditioned CG (for constant
k, plain CG), against scipy.sparse (`spsolve`, SuperLU; `cg` with Jacobi)
and pyamg (smoothed aggregation and Ruge-Stuben hierarchies as
preconditioners of scipy's CG). Every peer gets the very matrix jaxfd solves
(assembled from jaxfd's operator with `fd.LinearOperator.to_sparse`);
iterative solves stop at a relative residual of 1e-8, and each worker checks
the relative residual of its solution with that matrix. Times are per solve
**including set-up** (the transform plan, the factorisation, the multigrid
hierarchy: jaxfd builds its hierarchy inside the compiled solve), median over
repeats in each process, then median over processes; compile time is excluded
and reported apart. Solvers whose time explodes (sparse direct in 3-D, CG
without multigrid at high contrast) are skipped above the sizes in `LIMITS`,
with the reason in the JSON. Results go to benchmarks/results/poisson.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

CASES = ["256^2", "1024^2", "2048^2", "64^3", "128^3"]
CASES_QUICK = ["64^2", "128^2", "16^3", "32^3"]
ITERATIVE = ["jaxfd_mg", "jaxfd_mg_pcg", "jaxfd_jacobi_cg", "scipy_spsolve", "scipy_jacobi_cg",
             "pyamg_sa_cg", "pyamg_rs_cg"]
BACKENDS = {"poisson": ["jaxfd_fast", "scipy_fft", *ITERATIVE], "contrast": ITERATIVE}
MULTIGRID = ("jaxfd_mg", "jaxfd_mg_pcg")
# Largest number of unknowns per (backend, problem, dimension) for a run of minutes, not hours:
# Jacobi-CG needs O(n) iterations (thousands at high contrast), SuperLU's fill explodes in 3-D.
LIMITS = {
    ("jaxfd_jacobi_cg", "poisson", 2): 1024**2, ("scipy_jacobi_cg", "poisson", 2): 1024**2,
    ("jaxfd_jacobi_cg", "poisson", 3): 64**3, ("scipy_jacobi_cg", "poisson", 3): 64**3,
    ("jaxfd_jacobi_cg", "contrast", 2): 256**2, ("scipy_jacobi_cg", "contrast", 2): 256**2,
    ("jaxfd_jacobi_cg", "contrast", 3): 64**3, ("scipy_jacobi_cg", "contrast", 3): 64**3,
    ("scipy_spsolve", "poisson", 2): 1024**2, ("scipy_spsolve", "contrast", 2): 1024**2,
    # 3-D fill: 4.9 s at 32^3 and about 5 minutes per solve at 64^3 (8 GB) on the project machine
    ("scipy_spsolve", "poisson", 3): 32**3, ("scipy_spsolve", "contrast", 3): 32**3,
}
RTOL = 1e-8
PATCHES = 16


def parse_case(case: str) -> tuple[int, int]:
    n, d = case.split("^")
    return int(n), int(d)


def coefficient(problem: str, n: int, d: int) -> np.ndarray:
    if problem == "poisson":
        return np.ones((n,) * d)
    g = np.random.default_rng(0).standard_normal((PATCHES,) * d)
    g = (g - g.min()) / (g.max() - g.min())
    return np.kron(1e6**g, np.ones((n // PATCHES,) * d))


def rhs(n: int, d: int) -> np.ndarray:
    x = (np.arange(n) + 0.5) / n
    mesh = np.meshgrid(*([x] * d), indexing="ij")
    centre = (0.3, 0.6, 0.4)
    bump = np.exp(-sum((m - c) ** 2 for m, c in zip(mesh, centre)) / 0.01)
    return bump + np.prod(mesh, axis=0)


def _timed(fn, *, min_time=0.5, max_reps=50):
    t0 = time.perf_counter()
    fn()  # warm-up
    first = time.perf_counter() - t0
    # slow solves (seconds) are repeated less, to keep the whole run to a few minutes
    min_reps = 3 if first < 0.3 else 2 if first < 1.5 else 1
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "reps": len(times)}


_MATRICES: dict = {}


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def _grid(n: int, d: int):
    import jaxfd as fd

    return fd.Grid((n,) * d, ((0.0, 1.0),) * d)


def matrix(problem: str, n: int, d: int):
    """The discrete operator jaxfd solves, as a scipy CSR matrix (assembled by probing)."""
    key = (problem, n, d)
    if key not in _MATRICES:
        jax = _jax()
        import jax.numpy as jnp
        import scipy.sparse as sp

        import jaxfd as fd

        grid = _grid(n, d)
        k = jnp.asarray(coefficient(problem, n, d))
        op = fd.LinearOperator(lambda u: -fd.diffusion(u, grid, k, bc=fd.Dirichlet(0.0)),
                               jax.ShapeDtypeStruct(grid.shape, jnp.float64))
        bcoo = op.to_sparse()
        rows, cols = np.asarray(bcoo.indices).T
        _MATRICES[key] = sp.csr_matrix((np.asarray(bcoo.data), (rows, cols)), shape=bcoo.shape)
    return _MATRICES[key]


def _jaxfd_solver(backend: str, problem: str, n: int, d: int, f: np.ndarray):
    jax = _jax()
    import jax.numpy as jnp

    import jaxfd as fd

    grid = _grid(n, d)
    k = jnp.asarray(coefficient(problem, n, d))
    fj = jnp.asarray(f)
    bc = fd.Dirichlet(0.0)
    if backend == "jaxfd_fast":
        program = jax.jit(lambda f: fd.poisson(-f, grid, bc=bc))
        args = (fj,)
    else:
        def solve(k, f):
            def A(u):
                return -fd.diffusion(u, grid, k, bc=bc)

            if backend == "jaxfd_mg":
                # the hierarchy is built inside the program, from k
                solver, pc = fd.MultigridSolver(fd.Multigrid(grid, k, bc), rtol=RTOL), None
            elif backend == "jaxfd_mg_pcg":
                solver, pc = fd.CG(rtol=RTOL), fd.Multigrid(grid, k, bc)
            else:
                solver = fd.CG(rtol=RTOL, max_steps=100_000)
                pc = "jacobi"
                A = fd.LinearOperator(A, f, bandwidth=(1,) * d, periodic=(False,) * d)
            return fd.solve(A, f, solver, preconditioner=pc, symmetric=True, return_info=True)

        program = jax.jit(solve)
        args = (k, fj)
    t0 = time.perf_counter()
    compiled = program.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    state = {}

    def run():
        state["out"] = jax.block_until_ready(compiled(*args))

    def info():
        out = state["out"]
        if isinstance(out, tuple):
            return {"compile_s": compile_s, "iterations": int(out[1].iterations)}
        return {"compile_s": compile_s}

    def solution():
        out = state["out"]
        return np.asarray(out[0] if isinstance(out, tuple) else out).ravel()

    return run, info, solution


def make_solver(backend: str, problem: str, n: int, d: int):
    """(run, info, solution): `run()` solves once, `solution()` is the last solution, flat."""
    f = rhs(n, d)
    if backend.startswith("jaxfd"):
        return _jaxfd_solver(backend, problem, n, d, f)
    state = {}
    if backend == "scipy_fft":
        import scipy.fft as sfft

        h = 1.0 / n
        lam = (4.0 / h**2) * np.sin(np.pi * np.arange(1, n + 1) / (2 * n)) ** 2  # cell-centred Dirichlet
        eig = sum(lam.reshape((n,) + (1,) * (d - 1 - a)) for a in range(d))

        def run():
            state["x"] = sfft.idstn(sfft.dstn(f, type=2, norm="ortho") / eig, type=2, norm="ortho")

        return run, lambda: {}, lambda: state["x"].ravel()
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    A = matrix(problem, n, d)
    b = f.ravel()
    if backend == "scipy_spsolve":
        A_csc = A.tocsc()

        def run():
            state["x"] = spla.spsolve(A_csc, b)

        return run, lambda: {}, lambda: state["x"]

    def iterate(preconditioner, maxiter):
        count = [0]

        def callback(_):
            count[0] += 1

        x, code = spla.cg(A, b, rtol=RTOL, atol=0.0, maxiter=maxiter, M=preconditioner, callback=callback)
        state.update(x=x, code=code, iterations=count[0])

    if backend == "scipy_jacobi_cg":
        def run():
            iterate(sp.diags(1.0 / A.diagonal()), 100_000)

    elif backend.startswith("pyamg"):
        import pyamg

        def run():
            t0 = time.perf_counter()
            if backend == "pyamg_sa_cg":
                ml = pyamg.smoothed_aggregation_solver(A, symmetry="symmetric")
            else:
                ml = pyamg.ruge_stuben_solver(A)
            state.update(setup_s=time.perf_counter() - t0, levels=len(ml.levels))
            iterate(ml.aspreconditioner(cycle="V"), 1000)
    else:
        raise ValueError(f"unknown backend {backend!r}")

    def info():
        extra = {key: state[key] for key in ("setup_s", "levels") if key in state}
        return {"iterations": state["iterations"], "converged": state["code"] == 0, **extra}

    return run, info, lambda: state["x"]


def worker(backend: str, problem: str, cases: list[str]) -> None:
    for case in cases:
        n, d = parse_case(case)
        record = {"backend": backend, "problem": problem, "case": case, "unknowns": n**d}
        limit = LIMITS.get((backend, problem, d))
        if limit is not None and n**d > limit:
            record["skipped"] = f"above {limit} unknowns in {d}-D (too slow for this run)"
            print(json.dumps(record), flush=True)
            continue
        try:
            run, info, solution = make_solver(backend, problem, n, d)
        except ImportError as e:
            record["skipped"] = f"not installed: {e}"
            print(json.dumps(record), flush=True)
            continue
        record.update(_timed(run))
        record.update(info())
        x, b = solution(), rhs(n, d).ravel()
        record["rel_residual"] = float(np.linalg.norm(matrix(problem, n, d) @ x - b) / np.linalg.norm(b))
        print(json.dumps(record), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one process each")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--problems", default="poisson,contrast")
    ap.add_argument("--cases", default=None, help="comma-separated, e.g. 1024^2,64^3")
    ap.add_argument("--backends", default=None, help="comma-separated subset of the backends")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "poisson.json"))
    ap.add_argument("--worker", nargs=3, metavar=("BACKEND", "PROBLEM", "CASES"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        backend, problem, cases = args.worker
        worker(backend, problem, cases.split(","))
        return
    problems = args.problems.split(",")
    cases = args.cases.split(",") if args.cases else CASES_QUICK if args.quick else CASES
    processes = 1 if args.quick else args.processes
    chosen = set(args.backends.split(",")) if args.backends else None
    script = os.path.abspath(__file__)
    work = [[b, p, ",".join(cases)] for p in problems for b in BACKENDS[p] if chosen is None or b in chosen]
    print(f"measuring {len(work)} backend/problem pairs x {processes} processes ...", file=sys.stderr)
    start = time.perf_counter()
    records = H.run_worker_processes(script, work, processes, timeout=3600)
    summary = summarize(records, problems, cases)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    machine = H.machine_info()
    try:
        import pyamg

        machine["pyamg"] = pyamg.__version__
    except ImportError:
        machine["pyamg"] = None
    with open(args.out, "w") as f:
        json.dump({"machine": machine, "processes": processes, "rtol": RTOL,
                   "wall_s": time.perf_counter() - start, "records": records, "summary": summary}, f, indent=1)
    print(f"\nwrote {args.out} ({time.perf_counter() - start:.0f} s)")


TITLES = {
    "poisson": "-lap u = f, Dirichlet, float64: time per solve including set-up (iterations)",
    "contrast": "-div(k grad u) = f, log-normal k, contrast 1e6, Dirichlet, float64: "
                "time per solve including set-up (iterations)",
}


def scaling_exponent(times: dict[int, float]) -> float | None:
    """Least-squares slope of log(time) against log(unknowns): 1.0 is linear in N."""
    if len(times) < 2:
        return None
    unknowns = np.log(list(times))
    return float(np.polyfit(unknowns, np.log(list(times.values())), 1)[0])


def summarize(records, problems, cases):
    valid = [r for r in records if "median" in r]
    agg = H.aggregate(valid, ("backend", "problem", "case"))
    skipped = {(r["backend"], r["problem"], r["case"]): r["skipped"] for r in records if "skipped" in r}
    summary = {"rows": [], "scaling": [], "fastest_peer": []}
    for problem in problems:
        print(f"\n## {TITLES[problem]}\n")
        headers = ["backend"] + cases
        rows = []
        for b in BACKENDS[problem]:
            row = [b]
            for case in cases:
                a = agg.get((b, problem, case))
                if a is None:
                    row.append("skipped" if (b, problem, case) in skipped else "-")
                    continue
                ref = agg.get(("jaxfd_mg_pcg", problem, case))
                extra = a["extra"]
                cell = H.format_time(a["median"])
                if "iterations" in extra:
                    cell += f" ({extra['iterations']})"
                if ref and b != "jaxfd_mg_pcg":
                    cell += f", {a['median'] / ref['median']:.2f}x"
                if a["spread"] > 1.25:
                    cell += " *"
                row.append(cell)
                summary["rows"].append({
                    "backend": b, "problem": problem, "case": case, "median_s": a["median"], "min_s": a["min"],
                    "processes": a["processes"], "spread": a["spread"],
                    "ratio_to_jaxfd_mg_pcg": a["median"] / ref["median"] if ref else None, **extra})
            rows.append(row)
        H.print_table(headers, rows)
        print("\nratios: time / jaxfd_mg_pcg's time for the same case; `*`: per-process medians differ by "
              "more than 25%.")
        for b in MULTIGRID:
            compile_times = [H.format_time(agg[(b, problem, c)]["extra"]["compile_s"]) if (b, problem, c) in agg
                             else "-" for c in cases]
            print(f"{b} compile time (not in the table): {', '.join(compile_times)}")
            for d in (2, 3):
                times = {parse_case(c)[0] ** d: agg[(b, problem, c)]["median"] for c in cases
                         if parse_case(c)[1] == d and (b, problem, c) in agg}
                exponent = scaling_exponent(times)
                if exponent is not None:
                    print(f"{b} {d}-D: time grows like N^{exponent:.2f} over N = "
                          f"{min(times)}..{max(times)}")
                    summary["scaling"].append({"backend": b, "problem": problem, "dimension": d,
                                               "exponent": exponent, "unknowns": sorted(times)})
        # the fastest jaxfd iterative solver against the fastest peer at every case
        for case in cases:
            ours = [(agg[(b, problem, case)]["median"], b) for b in MULTIGRID if (b, problem, case) in agg]
            peers = [(agg[(b, problem, case)]["median"], b) for b in BACKENDS[problem]
                     if not b.startswith("jaxfd") and b != "scipy_fft" and (b, problem, case) in agg]
            if ours and peers:
                (t_ours, b_ours), (t_peer, b_peer) = min(ours), min(peers)
                print(f"{case}: fastest jaxfd multigrid {b_ours} {H.format_time(t_ours)}, fastest peer "
                      f"{b_peer} {H.format_time(t_peer)}: {t_peer / t_ours:.2f}x")
                summary["fastest_peer"].append({"problem": problem, "case": case, "jaxfd": b_ours,
                                                "jaxfd_s": t_ours, "peer": b_peer, "peer_s": t_peer,
                                                "speedup": t_peer / t_ours})
    return summary


if __name__ == "__main__":
    main()
