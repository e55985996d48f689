"""Observed order of accuracy of `fd.laplacian` for every boundary condition.

Run it from anywhere once jaxfd is installed:

    python examples/operators_tour.py            # about 20 s on 2 CPU cores (mostly compiling)
    python examples/operators_tour.py --quick    # fewer resolutions

For each boundary condition (periodic, Dirichlet, Neumann, Robin), accuracy
(2, 4) and wall closure ("standard", "full") it applies the Laplacian to a
smooth function sampled on the cell centres of ever finer 1-D grids, with the
boundary data taken from the same function, and fits the slope of
log(max error) against log(h): the observed order. A second table solves the
Poisson problem u'' = f with the same operators (dense solve of the
assembled matrix, `fd.LinearOperator`) and reports the order of the solution
error, which is what a simulation sees.

Expected (see docs/operators.md): the operator error near a wall is
O(h^(accuracy - 2)) with the standard closure and O(h^accuracy) with the full
closure; periodic axes have no wall, so O(h^accuracy). The Poisson solution
converges at O(h^accuracy) with Dirichlet walls or the full closure.
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)  # verification runs in float64

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxfd as fd  # noqa: E402

LENGTH = 1.0
ROBIN_BETA = 0.5


def f(x):
    """A smooth test function with no special behaviour at the walls."""
    return jnp.exp(jnp.sin(2.0 * x)) * jnp.cos(1.3 * x)


def df(x):
    return jax.grad(f)(x)


def d2f(x):
    return jax.grad(jax.grad(f))(x)


def periodic_f(x):
    return jnp.sin(2 * np.pi * x / LENGTH) + 0.3 * jnp.cos(4 * np.pi * x / LENGTH)


def boundary_condition(name: str):
    """`bc` for 1-D axis [0, LENGTH] with data from `f` (outward normals: -x low, +x high)."""
    lo, hi = jnp.asarray(0.0), jnp.asarray(LENGTH)
    if name == "periodic":
        return fd.Periodic()
    if name == "dirichlet":
        return ((fd.Dirichlet(f(lo)), fd.Dirichlet(f(hi))),)
    if name == "neumann":
        return ((fd.Neumann(-df(lo)), fd.Neumann(df(hi))),)
    if name == "robin":  # u + beta du/dn = g
        return (
            (
                fd.Robin(1.0, ROBIN_BETA, f(lo) - ROBIN_BETA * df(lo)),
                fd.Robin(1.0, ROBIN_BETA, f(hi) + ROBIN_BETA * df(hi)),
            ),
        )
    raise ValueError(name)


def exact(name: str, x):
    """(u, u'') on the points x for the problem `name`."""
    fun = periodic_f if name == "periodic" else f
    return jax.vmap(fun)(x), jax.vmap(jax.grad(jax.grad(fun)))(x)


def observed_order(hs, errors) -> float:
    """Least-squares slope of log(error) against log(h)."""
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


CASES = [
    (name, accuracy, closure)
    for name in ("periodic", "dirichlet", "neumann", "robin")
    for accuracy in (2, 4)
    for closure in (("standard",) if name == "periodic" else ("standard", "full"))
]
POISSON_CASES = [
    (name, accuracy, closure)
    for name in ("dirichlet", "robin")
    for accuracy in (2, 4)
    for closure in ("standard", "full")
]


def laplacian_error(name, accuracy, closure, grid, x):
    """Max error of the Laplacian of the exact function sampled on the grid."""
    u, lap_exact = exact(name, x)
    lap = fd.laplacian(u, grid, bc=boundary_condition(name), accuracy=accuracy, closure=closure)
    return jnp.max(jnp.abs(lap - lap_exact))


def poisson_error(name, accuracy, closure, grid, x):
    """Max error of the solution of laplacian(u) = u'' with the same boundary data."""
    u, lap_exact = exact(name, x)
    bc = boundary_condition(name)
    operator, offset = fd.LinearOperator.from_affine(
        lambda v: fd.laplacian(v, grid, bc=bc, accuracy=accuracy, closure=closure), x
    )
    solution = jnp.linalg.solve(operator.to_dense(), lap_exact - offset)
    return jnp.max(jnp.abs(solution - u))


def convergence(error_fn, cases, sizes):
    """{case: (spacings, errors)}, with one compiled program per grid size."""
    table = {case: ([], []) for case in cases}
    for n in sizes:
        grid = fd.Grid(n, (0.0, LENGTH))

        @jax.jit  # every case at this size in one program: one compile per size
        def errors(x):
            return [error_fn(*case, grid, x) for case in cases]

        for case, error in zip(cases, errors(grid.coords[0])):
            table[case][0].append(grid.spacing[0])
            table[case][1].append(float(error))
    return table


def print_table(title, table):
    print(title)
    print(f"{'boundary':<10} {'accuracy':>8} {'closure':>9} {'error (finest)':>15} {'order':>6}")
    for (name, accuracy, closure), (hs, errors) in table.items():
        print(f"{name:<10} {accuracy:>8} {closure:>9} {errors[-1]:>15.3e} "
              f"{observed_order(hs, errors):>6.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, coarser resolutions")
    args = parser.parse_args(argv)
    sizes = [16, 32, 64] if args.quick else [16, 32, 64, 128, 256]

    print_table(f"Laplacian of a smooth function, max-norm error, N = {sizes}",
                convergence(laplacian_error, CASES, sizes))
    print()
    print_table("Poisson problem laplacian(u) = f, max-norm error of the solution",
                convergence(poisson_error, POISSON_CASES, sizes))

if __name__ == "__main__":
    main()
