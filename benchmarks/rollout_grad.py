"""Gradient cost and memory through long rollouts, per checkpointing policy.

Rerun:
    python benchmarks/rollout_grad.py            # 512^2, T = 1000 and 10000 (about 5 minutes on 2 cores)
    python benchmarks/rollout_grad.py --quick    # 128^2, T = 200 and 2000
    python benchmarks/rollout_grad.py --processes 3   # each row in 3 processes: median ratio and range

2-D heat equation u_t = div(k grad u) (conservative, variable coefficient
field k), zero Dirichlet walls, forward Euler at diffusion number 0.2,
float32. Loss: mean square of the final state against a target. The
coefficient enters as `fd.face_coefficients(k, grid, bc=...)`, computed once
before the rollout (the documented form for a coefficient applied at every
step); the row `k_cells` passes the cell field `k` to `fd.diffusion` inside
the right-hand side instead, so that the face averages and their derivative
are recomputed at every step (nested policy only, for comparison). For each
policy (`checkpoint=` of `jaxfd.simulate`) and each parameter kind
(the initial state u0, the coefficient field k) one separate process
measures the forward time, the gradient time (both medians of repeats after
compilation), their ratio, the process's peak resident memory and the
compiled program's temporary buffer size (XLA's memory analysis), next to a
forward-only process. Policies whose memory grows like T ("none", "step")
are skipped at T = 10000 (they would hold 10000 states of 1 MiB each and
their residuals). The policy `nested-reverse` is `checkpoint="nested"` with
`adjoint="reverse"` (simulate's own reverse pass; reverse mode only). Results: benchmarks/results/rollout_grad.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

POLICIES = ["none", "step", "nested", "recursive", "nested-reverse"]
PARAMS = ["u0", "k"]


def worker(n: int, steps: int, policy: str, param: str, repeats: int) -> None:
    import jax
    import jax.numpy as jnp

    import jaxfd as fd

    grid = fd.Grid((n, n), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh(jnp.float32)
    u0 = jnp.sin(jnp.pi * x) * jnp.sin(2 * jnp.pi * y)
    k = 1.0 + 0.5 * jnp.cos(3 * x) * jnp.sin(2 * y)
    target = 0.5 * u0
    h = grid.spacing[0]
    dt = 0.2 * h * h / 1.5

    bc = fd.Dirichlet(0.0)

    def rhs(t, u, coefficient):
        return fd.diffusion(u, grid, coefficient, bc=bc)

    def loss(u0, k, policy):
        coefficient = k if param == "k_cells" else fd.face_coefficients(k, grid, bc=bc)
        checkpoint, _, adjoint = policy.partition("-")
        sol = fd.simulate(rhs, u0, 0.0, steps * dt, dt, stepper=fd.Euler(), args=coefficient,
                          checkpoint=checkpoint, adjoint=adjoint or "autodiff", stability="ignore")
        return jnp.mean((sol.us[-1] - target) ** 2)

    forward = jax.jit(lambda u0, k: loss(u0, k, "none" if policy == "forward" else policy))
    if policy == "forward":
        fn = forward
    else:
        argnum = 0 if param == "u0" else 1
        fn = jax.jit(jax.grad(lambda u0, k: loss(u0, k, policy), argnums=argnum))
    t0 = time.perf_counter()
    compiled = fn.lower(u0, k).compile()
    compile_s = time.perf_counter() - t0
    temp = compiled.memory_analysis().temp_size_in_bytes
    jax.block_until_ready(fn(u0, k))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(u0, k))
        times.append(time.perf_counter() - t0)
    fwd_times = []
    if policy != "forward":
        jax.block_until_ready(forward(u0, k))
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(forward(u0, k))
            fwd_times.append(time.perf_counter() - t0)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": n, "steps": steps, "policy": policy, "param": param,
                      "median": float(np.median(times)), "min": float(np.min(times)),
                      "forward_median": float(np.median(fwd_times)) if fwd_times else float(np.median(times)),
                      "compile_s": compile_s, "temp_bytes": int(temp),
                      "peak_rss_mib": peak_kib / 1024.0}), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--steps", default=None, help="comma-separated step counts")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "rollout_grad.json"))
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        n, steps, policy, param, repeats = args.worker
        worker(int(n), int(steps), policy, param, int(repeats))
        return
    n = args.n or (128 if args.quick else 512)
    step_counts = [int(s) for s in args.steps.split(",")] if args.steps else ([200, 2000] if args.quick else [1000, 10000])
    work = []
    for steps in step_counts:
        repeats = 3 if steps <= 2000 else 1
        work.append([str(n), str(steps), "forward", "-", str(repeats)])
        for policy in POLICIES:
            if steps > 2000 and policy in ("none", "step"):
                continue
            for param in PARAMS:
                work.append([str(n), str(steps), policy, param, str(repeats)])
        work.append([str(n), str(steps), "nested", "k_cells", str(repeats)])
    records = H.run_worker_processes(os.path.abspath(__file__), work, args.processes, timeout=3600)
    summary = []
    for steps in step_counts:
        base = [r for r in records if r["steps"] == steps and r["policy"] == "forward"]
        base_rss = float(np.median([r["peak_rss_mib"] for r in base])) if base else float("nan")
        base_time = float(np.median([r["median"] for r in base])) if base else float("nan")
        print(f"\n## Gradient through {steps} steps, {n}x{n}, float32 "
              f"(forward alone: {H.format_time(base_time)}, peak RSS {base_rss:.0f} MiB)\n")
        groups: dict[tuple, list[dict]] = {}
        for r in records:
            if r["steps"] == steps and r["policy"] != "forward":
                groups.setdefault((r["policy"], r["param"]), []).append(r)
        rows = []
        for (policy, param), rs in groups.items():
            # each process's ratio uses the forward time measured in that process;
            # median over processes, with the range (machines run at two speeds)
            ratios = [r["median"] / r["forward_median"] for r in rs]
            ratio = float(np.median(ratios))
            grad = float(np.median([r["median"] for r in rs]))
            fwd = float(np.median([r["forward_median"] for r in rs]))
            peak = float(np.median([r["peak_rss_mib"] for r in rs]))
            temp = float(np.median([r["temp_bytes"] for r in rs]))
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(rs) > 1 else "-"
            rows.append([policy, param, H.format_time(fwd), H.format_time(grad), f"{ratio:.2f}", spread,
                         f"{peak:.0f}", f"{peak / base_rss:.2f}", f"{temp / 2**20:.0f}",
                         f"{np.median([r['compile_s'] for r in rs]):.1f} s"])
            summary.append({"steps": steps, "policy": policy, "param": param, "processes": len(rs),
                            "forward_median": fwd, "gradient_median": grad, "grad_over_forward": ratio,
                            "grad_over_forward_range": [min(ratios), max(ratios)], "peak_rss_mib": peak,
                            "peak_over_forward_peak": peak / base_rss, "forward_only_peak_rss_mib": base_rss,
                            "temp_bytes": temp})
        H.print_table(["policy", "gradient wrt", "forward", "gradient", "grad/fwd", "range",
                       "peak RSS MiB", "peak / fwd peak", "XLA temp MiB", "compile"], rows)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": H.machine_info(), "records": records, "summary": summary}, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
