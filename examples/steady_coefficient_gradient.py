"""Gradient of a steady-state misfit with respect to a high-contrast coefficient field.

Run it from anywhere once jaxfd is installed:

    python examples/steady_coefficient_gradient.py            # 64^2, under a minute on 2 CPU cores
    python examples/steady_coefficient_gradient.py --size 128  # the unrolled gradient stores ~1000 CG iterations

The model is -div(k grad u) = f on the unit square, u = 0 on the walls, with
k piecewise constant on 8 x 8 random patches spanning four decades (contrast
1e4). The misfit J(log k) = 1/2 ||u(k) - u_obs||^2 h^2 compares the solution
with a target. The script

1. solves with conjugate gradients preconditioned by jaxfd's black-box
   multigrid (`fd.Multigrid`, built inside the compiled solve from k) and with
   Jacobi-preconditioned CG, and prints their iteration counts;
2. computes dJ/dlog k by implicit differentiation (`fd.solve`'s default: one
   transposed solve, memory independent of the iteration count) and by
   reverse mode through every CG iteration (`differentiate="unrolled"`),
   prints the compiled gradients' temporary memory and times, and checks
   that the two agree;
3. runs a Taylor test of the implicit gradient (second-order remainder,
   observed rate 2) and exits with status 1 if it is more than 0.2 away.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxfd as fd  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="cells per axis (a multiple of 8)")
    args = ap.parse_args(argv)
    n = args.size
    if n % 8:
        ap.error(f"--size must be a multiple of 8 (the coefficient has 8 x 8 patches), got {n}")

    grid = fd.Grid((n, n), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh()
    bc = fd.Dirichlet(0.0)
    rng = np.random.default_rng(0)
    log_k = jnp.asarray(np.kron(np.log(1e4) * rng.random((8, 8)), np.ones((n // 8, n // 8))))
    f = jnp.exp(-((x - 0.3) ** 2 + (y - 0.6) ** 2) / 0.02)
    target = 0.5 * jnp.sin(jnp.pi * x) * jnp.sin(jnp.pi * y) * 1e-3

    def operator(k):
        return fd.LinearOperator(lambda u: -fd.diffusion(u, grid, k, bc=bc), f, bandwidth=(1, 1),
                                 periodic=(False, False))

    @jax.jit
    def iterations(log_k):
        k = jnp.exp(log_k)
        _, mg = fd.solve(operator(k), f, fd.CG(rtol=1e-10), preconditioner=fd.Multigrid(grid, k, bc),
                         symmetric=True, return_info=True)
        _, jacobi = fd.solve(operator(k), f, fd.CG(rtol=1e-10, max_steps=100_000),
                             preconditioner="jacobi", symmetric=True, return_info=True)
        return mg.iterations, jacobi.iterations

    its_mg, its_jacobi = (int(i) for i in iterations(log_k))
    print(f"{n}^2, contrast 1e4, CG to 1e-10: multigrid preconditioner {its_mg} iterations, "
          f"Jacobi {its_jacobi}")

    def misfit(log_k, differentiate="implicit", max_steps=10_000):
        k = jnp.exp(log_k)
        if differentiate == "implicit":
            solver, pc = fd.CG(rtol=1e-10), fd.Multigrid(grid, k, bc)
        else:  # reverse mode through the iterations: keep the loop as short as the solve
            solver, pc = fd.CG(rtol=1e-10, max_steps=max_steps), "jacobi"
        u = fd.solve(operator(k), f, solver, preconditioner=pc, symmetric=True,
                     differentiate=differentiate)
        return 0.5 * jnp.sum((u - target) ** 2) * grid.cell_volume

    gradients = {}
    for mode in ("implicit", "unrolled"):
        grad = jax.jit(jax.grad(lambda lk: misfit(lk, mode, its_jacobi + 10)))
        start = time.perf_counter()
        compiled = grad.lower(log_k).compile()
        compile_s = time.perf_counter() - start
        gradients[mode] = jax.block_until_ready(compiled(log_k))
        start = time.perf_counter()
        jax.block_until_ready(compiled(log_k))
        run_s = time.perf_counter() - start
        memory = compiled.memory_analysis().temp_size_in_bytes / 2**20
        print(f"gradient, {mode:8s}: compile {compile_s:5.1f} s, run {1e3 * run_s:8.1f} ms, "
              f"temporary memory {memory:8.1f} MiB")
    scale = float(jnp.max(jnp.abs(gradients["implicit"])))
    difference = float(jnp.max(jnp.abs(gradients["unrolled"] - gradients["implicit"]))) / scale
    print(f"implicit and unrolled gradients differ by {difference:.1e} (relative to the largest entry)")

    direction = jax.random.normal(jax.random.key(1), grid.shape)
    result = fd.taylor_test(misfit, log_k, direction)
    print(result)
    ok = abs(result.rate - 2.0) <= 0.2 and difference < 1e-5
    print("OK" if ok else "FAILED: the gradient check did not pass")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
