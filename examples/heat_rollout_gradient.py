"""Gradient of a sensor misfit with respect to a diffusivity field, through a 500-step rollout.

Run it from anywhere once jaxfd is installed:

    python examples/heat_rollout_gradient.py             # about 15 s on 2 CPU cores (mostly compiling)
    python examples/heat_rollout_gradient.py --size 96 --steps 2000
    python examples/heat_rollout_gradient.py --adjoint reverse   # simulate's own reverse pass

The model is the 2-D heat equation in flux form with a variable diffusivity
k(x, y) (`fd.models.heat`, harmonic face means), u = 0 on the walls of the
unit square, and a warm blob as the initial state. Sixteen sensors record u
every 25 steps. The misfit

    J(k) = 1/2 sum over sensors and records (u(t, sensor; k) - d(t, sensor))^2

compares the records with data `d` made by the same model with a different,
"true" diffusivity. Nothing is recovered here: the script computes dJ/dk, a
field with one value per cell, by reverse mode through the whole rollout
(`fd.simulate` with RK4 and `checkpoint="nested"`, which stores about
sqrt(steps) states instead of every stage of every step), and checks it with
a Taylor test: along a direction dk,

    r(eps) = |J(k + eps dk) - J(k) - eps <dJ/dk, dk>| = O(eps^2),

so halving eps must divide the remainder by 4 (observed rate 2). A wrong
gradient leaves an O(eps) term and rate 1. It prints the timings (compile
and run of the rollout and of the gradient) and the remainder table, and
exits with status 1 if an observed rate is more than 0.2 away from 2.
With `--adjoint reverse` the gradient runs `fd.simulate(..., adjoint="reverse")`:
the same schedule, a reverse pass written by simulate (reverse mode only).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)  # the Taylor test needs float64 to see rate 2 cleanly

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxfd as fd  # noqa: E402

RECORD_EVERY = 25
SENSORS_PER_AXIS = 4


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=48, help="cells per axis (default 48)")
    parser.add_argument("--steps", type=int, default=500, help="RK4 steps (default 500)")
    parser.add_argument("--adjoint", choices=("autodiff", "reverse"), default="autodiff",
                        help="how reverse mode runs through the loop (see fd.simulate)")
    args = parser.parse_args(argv)

    grid = fd.Grid((args.size, args.size), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh()
    stepper = fd.RK4()
    rhs = fd.models.heat(grid)
    bc = fd.Dirichlet(0.0)

    # diffusivities: the one we differentiate at, and the one that made the data
    k = 0.05 * (1.0 + 0.3 * jnp.sin(2 * jnp.pi * x) * jnp.sin(np.pi * y))
    k_true = 0.05 * (1.0 + 0.5 * jnp.exp(-((x - 0.3) ** 2 + (y - 0.7) ** 2) / 0.02))
    u0 = jnp.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.02)

    # a step stable for every diffusivity the Taylor test visits (up to 1.5 max k)
    k_max = 1.5 * float(jnp.maximum(k.max(), k_true.max()))
    dt = 0.9 * fd.max_stable_dt(stepper, grid, diffusivity=k_max)
    t1 = args.steps * dt

    idx = np.linspace(0, args.size - 1, SENSORS_PER_AXIS + 2).round().astype(int)[1:-1]
    sensors = tuple(np.meshgrid(idx, idx, indexing="ij"))  # 16 cells

    def records(kappa):
        """u at the sensors every RECORD_EVERY steps: shape (records, 16)."""
        sol = fd.simulate(
            rhs, u0, 0.0, t1, dt, stepper=stepper,
            args={"diffusivity": kappa, "bc": bc},
            saveat=fd.SaveAt(every=RECORD_EVERY),
            checkpoint="nested",
            adjoint=args.adjoint,
            stability="ignore",  # dt comes from fd.max_stable_dt above
        )
        return sol.us[:, sensors[0], sensors[1]].reshape(sol.us.shape[0], -1)

    data = jax.jit(records)(k_true)

    def misfit(kappa):
        return 0.5 * jnp.sum((records(kappa) - data) ** 2)

    print(f"heat, variable diffusivity: {args.size}x{args.size} cells, {args.steps} RK4 steps "
          f"of dt = {dt:.3g} to t = {t1:.3g}, {data.shape[0]} records x {data.shape[1]} sensors, "
          f"checkpoint='nested', adjoint={args.adjoint!r}  ({jax.default_backend()}, float64)")

    def timed(fn, *xs):
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(*xs).compile()
        compile_s = time.perf_counter() - start
        jax.block_until_ready(compiled(*xs))  # warm-up
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*xs))
        return out, compiled, compile_s, time.perf_counter() - start

    J, misfit_c, c_fwd, r_fwd = timed(misfit, k)
    dJ, _, c_grad, r_grad = timed(jax.grad(misfit), k)
    print(f"misfit J(k)  = {float(J):.6e}")
    print(f"rollout:  compile {c_fwd:6.2f} s   run {1e3 * r_fwd:8.1f} ms")
    print(f"gradient: compile {c_grad:6.2f} s   run {1e3 * r_grad:8.1f} ms   "
          f"({r_grad / r_fwd:.1f}x the rollout)")
    print(f"|dJ/dk| max {float(jnp.abs(dJ).max()):.3e}, shape {dJ.shape}")

    # Taylor test along a smooth direction of the size of k's variations
    rng = np.random.default_rng(0)
    modes = rng.standard_normal((3, 3))
    dk = sum(modes[m, n] * jnp.sin((m + 1) * np.pi * x) * jnp.sin((n + 1) * np.pi * y)
             for m in range(3) for n in range(3))
    dk = 0.02 * dk / jnp.abs(dk).max()
    slope = float(jnp.vdot(dJ, dk))
    epsilons = [1.0 / 2**j for j in range(1, 7)]
    remainders = [abs(float(misfit_c(k + eps * dk)) - float(J) - eps * slope) for eps in epsilons]
    rates = [np.log2(r0 / r1) for r0, r1 in zip(remainders, remainders[1:])]
    print("Taylor test: r(eps) = |J(k + eps dk) - J(k) - eps <dJ/dk, dk>|")
    print(f"{'eps':>10}  {'r(eps)':>12}  rate")
    for j, (eps, r) in enumerate(zip(epsilons, remainders)):
        rate = f"{rates[j - 1]:.3f}" if j else ""
        print(f"{eps:>10.5f}  {r:>12.4e}  {rate}")
    ok = all(abs(rate - 2.0) < 0.2 for rate in rates)  # the tests' tolerance on observed orders
    print("first-order remainder converges at rate 2:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
