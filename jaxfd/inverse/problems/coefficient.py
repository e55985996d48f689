r"""Coefficient recovery: a discontinuous diffusivity from several steady experiments.

Model, on the unit square with $u = 0$ on the walls, experiment $j = 1..J$:

$$ -\nabla\cdot(k \nabla u_j) = f_j , $$

discretised by `fd.diffusion` (conservative, harmonic face averages, second
order) on a cell-centred `size x size` grid and solved by `fd.solve` (CG
with the operator's exact Jacobi diagonal). The truth $k$ is piecewise
constant: 1 in the background, a square inclusion of 10 and a disc of 0.1
(contrast 100). The sources $f_j$ are Gaussian bumps placed in the four
quadrants, so that every region sees a non-zero $\nabla u$ in some
experiment. The observations are the full fields $u_j$ with Gaussian noise
of standard deviation `noise` times the field's RMS value.

Objective (data misfit normalised per experiment, plus smoothed total
variation of $\log k$, which keeps the edges of the inclusions sharp):

$$ J(k) = \sum_j \frac{\lVert u_j(k) - d_j \rVert^2}{2 \lVert d_j \rVert^2}
 + \alpha\, \mathrm{TV}_\delta(\log k) . $$

$k$ is optimised as $\log k$ (`fd.inverse.Positive()`) by L-BFGS; the
gradient costs one adjoint solve per experiment, by implicit
differentiation of `fd.solve` (no unrolled CG iterations). Data and model
share the grid (an "inverse crime", made milder by the noise); the
reported error excludes a band of one cell at the discontinuities, where a
cell-centred grid cannot place the jump.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

import jaxfd as fd

from ._base import InverseProblem, check_make_arguments, plot_truth_recovered_loss

DESCRIPTION = "recover a discontinuous diffusivity k(x, y) (contrast 100) from 4 noisy steady experiments"
DEFAULTS = {"size": 48, "iterations": 150, "noise": 0.01}

BACKGROUND, SQUARE, DISC = 1.0, 10.0, 0.1
SOURCES = ((0.27, 0.27), (0.73, 0.27), (0.27, 0.73), (0.73, 0.73))
SOURCE_WIDTH = 0.18
TV_WEIGHT = 2e-5
TV_DELTA = 0.5


def true_coefficient(grid: fd.Grid) -> np.ndarray:
    """The piecewise-constant truth on the cell centres (float64 numpy)."""
    x, y = np.meshgrid(*grid.coords_numpy, indexing="ij")
    k = np.full(grid.shape, BACKGROUND)
    k[(x > 0.18) & (x < 0.48) & (y > 0.55) & (y < 0.85)] = SQUARE
    k[(x - 0.68) ** 2 + (y - 0.35) ** 2 < 0.17**2] = DISC
    return k


def sources(grid: fd.Grid) -> np.ndarray:
    """The right-hand sides f_j, stacked: shape (J, *grid.shape)."""
    x, y = np.meshgrid(*grid.coords_numpy, indexing="ij")
    return np.stack([
        50.0 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * SOURCE_WIDTH**2)) for cx, cy in SOURCES
    ])


def away_from_jumps(k_true: np.ndarray) -> np.ndarray:
    """Cells whose 3x3 neighbourhood has one value of the truth (the band of one cell excluded)."""
    padded = np.pad(k_true, 1, mode="edge")
    same = np.ones(k_true.shape, bool)
    n0, n1 = k_true.shape
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            same &= padded[1 + di: 1 + di + n0, 1 + dj: 1 + dj + n1] == k_true
    return same


def forward(k, grid: fd.Grid, f, rtol: float):
    """The states u_j for all experiments (vmapped `fd.solve`, implicit derivatives)."""
    bc = fd.Dirichlet(0.0)
    # Declaring the 5-point coupling lets fd.solve build the exact Jacobi diagonal of a traced k.
    A = fd.LinearOperator(lambda u: -fd.diffusion(u, grid, k, bc=bc), f[0], bandwidth=(1, 1),
                          periodic=(False, False))

    def one(fj):
        return fd.solve(A, fj, solver=fd.CG(rtol=rtol, max_steps=4 * f[0].size), preconditioner="jacobi",
                        symmetric=True)

    return jax.vmap(one)(f)


def make(*, size: int = DEFAULTS["size"], noise: float = DEFAULTS["noise"], seed: int = 0,
         dtype=jnp.float32) -> InverseProblem:
    """Build the problem: grid, truth, synthetic noisy data, objective."""
    size, noise, seed, dtype = check_make_arguments("coefficient", size, noise, seed, dtype, min_size=16)
    grid = fd.Grid((size, size), ((0.0, 1.0), (0.0, 1.0)))
    rtol = 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-5
    k_true = true_coefficient(grid)
    f = jnp.asarray(sources(grid), dtype)
    clean = np.asarray(jax.jit(forward, static_argnums=(1, 3))(jnp.asarray(k_true, dtype), grid, f, rtol),
                       dtype=np.float64)
    rng = np.random.default_rng(seed)
    rms = np.sqrt(np.mean(clean**2, axis=(1, 2), keepdims=True))
    data = jnp.asarray(clean + noise * rms * rng.standard_normal(clean.shape), dtype)
    weights = 1.0 / jnp.sum(data**2, axis=(1, 2))

    def objective(params):
        k = params["k"]
        u = forward(k, grid, f, rtol)
        misfit = 0.5 * jnp.sum(weights * jnp.sum((u - data) ** 2, axis=(1, 2)))
        return misfit + TV_WEIGHT * fd.inverse.total_variation(jnp.log(k), grid, delta=TV_DELTA)

    mask = away_from_jumps(k_true)

    def errors(params):
        k = np.asarray(params["k"], np.float64)
        diff = (k - k_true)[mask]
        return {
            "k_relative_l2_away_from_jumps": float(np.linalg.norm(diff) / np.linalg.norm(k_true[mask])),
            "k_relative_l2": float(np.linalg.norm(k - k_true) / np.linalg.norm(k_true)),
            "log_k_max_error_away_from_jumps": float(np.max(np.abs(np.log(k) - np.log(k_true))[mask])),
        }

    def plot(params, history, path):
        plot_truth_recovered_loss(grid, k_true, np.asarray(params["k"], np.float64), history, path,
                                  name="k", log=True)

    return InverseProblem(
        name="coefficient",
        objective=objective,
        initial_params={"k": jnp.ones(grid.shape, dtype)},
        truth={"k": jnp.asarray(k_true, dtype)},
        errors=errors,
        targets={"k_relative_l2_away_from_jumps": 0.10},
        plot=plot,
        constraints={"k": fd.inverse.Positive()},
        fit_options={"optimizer": "lbfgs", "gtol": 1e-7 if jnp.dtype(dtype) == jnp.float64 else 1e-4},
        data={"grid": grid, "sources": f, "observations": data, "clean": clean, "mask": mask},
    )

