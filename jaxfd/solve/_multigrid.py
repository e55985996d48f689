r"""Geometric multigrid for $-\nabla\cdot(k \nabla u) = f$ on cell-centred grids.

* **Hierarchy**: every axis is halved while all sizes stay even (down to a
  coarse problem of at most `max_coarse` cells, solved exactly with a
  precomputed pseudo-inverse, so pure Neumann and periodic problems work).
* **Coarse operators**: re-discretised on the coarse grid from face
  coefficients. A coarse face coincides with fine faces; its coefficient is
  the average of those fine face coefficients across the face (in 1-D it is
  the fine face coefficient itself, which is exact for the series
  conductance of the two fine cells between coarse centres). Fine faces
  carry the harmonic mean of their cells, so discontinuous, high-contrast
  coefficients are represented by flux continuity at every level.
* **Transfers**: cell-centred linear prolongation $P$ (weights 3/4, 1/4 per
  axis, ghost cells from the homogeneous boundary conditions) and
  restriction $R = P^T / 2^d$, so the V-cycle is symmetric and can
  precondition CG.
* **Smoother**: damped Jacobi with the exact diagonal (pre- and
  post-smoothing with the same number of sweeps).

Supported conditions: Periodic, Dirichlet and Neumann (per axis and side);
the values do not matter for the cycle, which acts on residuals.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import equinox as eqx

from .._boundary import Dirichlet, Neumann, Periodic, ghost_pad, normalize_bc
from .._grid import Grid
from .._linear import LinearOperator
from .._operators import face_coefficients, flux_form_diffusion
from ._krylov import AbstractLinearSolver, _norm

__all__ = ["Multigrid", "MultigridSolver"]


def _homogeneous(pairs):
    out = []
    for lo, hi in pairs:
        side = []
        for bc in (lo, hi):
            if isinstance(bc, Periodic):
                side.append(Periodic())
            elif isinstance(bc, Dirichlet):
                side.append(Dirichlet(0.0))
            elif isinstance(bc, Neumann):
                side.append(Neumann(0.0))
            else:
                raise ValueError(
                    f"Multigrid supports Periodic, Dirichlet and Neumann conditions; got "
                    f"{type(bc).__name__}. Use fd.solve with a Krylov method for Robin walls."
                )
        out.append(tuple(side))
    return tuple(out)


def _coarse_faces(faces, shape):
    """Coarse face coefficients from fine ones (see module notes)."""
    out = []
    for a, kf in enumerate(faces):
        if jnp.ndim(kf) == 0:
            out.append(kf)
            continue
        kf = lax.slice_in_dim(kf, 0, kf.shape[a], stride=2, axis=a)  # coincident faces
        for b in range(len(shape)):
            if b == a:
                continue
            n = kf.shape[b]
            kf = kf.reshape(kf.shape[:b] + (n // 2, 2) + kf.shape[b + 1:]).mean(axis=b + 1)
        out.append(kf)
    return tuple(out)


def _prolong(coarse, fine_grid: Grid, pairs):
    """Cell-centred linear interpolation, axis by axis."""
    out = coarse
    for a in range(out.ndim):
        n = out.shape[a]
        padded = ghost_pad(out, a, 1, pairs[a], 2 * fine_grid.spacing[a], 2)
        center = padded.view(1, n)
        left = padded.view(0, n)
        right = padded.view(2, n)
        even = 0.75 * center + 0.25 * left
        odd = 0.75 * center + 0.25 * right
        stacked = jnp.stack([even, odd], axis=a + 1)
        out = stacked.reshape(out.shape[:a] + (2 * n,) + out.shape[a + 1:])
    return out


class _Level(eqx.Module):
    grid: Grid = eqx.field(static=True)
    pairs: tuple = eqx.field(static=True)
    faces: tuple
    inverse_diagonal: jax.Array


class Multigrid(eqx.Module):
    r"""A V-cycle for $A u = -\nabla\cdot(k\nabla u)$ with homogeneous `bc`.

    `mg(r)` applies one V-cycle to a residual `r` (an approximation of
    $A^{-1} r$): pass `mg` as `preconditioner=` to `fd.solve` with CG, or
    use `fd.MultigridSolver(mg)` to iterate V-cycles as a solver.

    Arguments:
        grid: the fine grid; sizes divisible by a power of two give the
            deepest hierarchy.
        coefficient: $k > 0$, a scalar or a field (it may be traced; the
            cycle does not differentiate through it: gradients of solves come
            from `fd.solve`'s implicit differentiation).
        bc: Periodic, Dirichlet or Neumann conditions (per axis/side).
        pre_smooth, post_smooth: Jacobi sweeps before and after the coarse
            correction.
        omega: Jacobi damping (default 2/3 in 1-D, 4/5 in 2-D, 6/7 in 3-D).
        max_coarse: largest coarsest problem (cells) solved exactly.
        mean: face average of `k` ("harmonic" for discontinuous coefficients).
    """

    levels: tuple
    coarse_inverse: jax.Array
    pre_smooth: int = eqx.field(static=True)
    post_smooth: int = eqx.field(static=True)
    omega: float = eqx.field(static=True)

    def __init__(self, grid: Grid, coefficient, bc, *, pre_smooth: int = 2, post_smooth: int = 2,
                 omega: float | None = None, max_coarse: int = 512, mean: str = "harmonic"):
        if not isinstance(grid, Grid):
            raise TypeError(f"Expected a jaxfd.Grid, got {grid!r}.")
        pairs = _homogeneous(normalize_bc(bc, grid.ndim))
        k = jnp.asarray(coefficient)
        if k.ndim:
            grid.check_field(k, "coefficient")
        try:
            kmin = float(jnp.min(k))
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
            kmin = None
        if kmin is not None and not kmin > 0:
            raise ValueError(
                f"Multigrid needs a positive coefficient k everywhere (the operator "
                f"-div(k grad u) is then positive definite); the smallest value is {kmin}. "
                "Shift or reparameterise k (e.g. k = exp(m))."
            )
        self.pre_smooth = int(pre_smooth)
        self.post_smooth = int(post_smooth)
        self.omega = float(omega) if omega is not None else {1: 2 / 3, 2: 0.8, 3: 6 / 7}.get(grid.ndim, 0.8)
        faces = face_coefficients(lax.stop_gradient(k), grid, pairs, mean)
        levels = []
        g = grid
        while True:
            levels.append(self._make_level(g, pairs, faces))
            if g.size <= max_coarse or any(n % 2 or n < 4 for n in g.shape):
                break
            coarse = Grid(tuple(n // 2 for n in g.shape), g.extent)
            faces = _coarse_faces(faces, g.shape)
            g = coarse
        if g.size > 4 * max_coarse:
            raise ValueError(
                f"Multigrid could only coarsen {grid.shape} to {g.shape} ({g.size} cells; sizes must "
                f"stay even). Use grid sizes divisible by a power of two, e.g. {tuple(2 ** int(np.ceil(np.log2(n))) for n in grid.shape)}."
            )
        self.levels = tuple(levels)
        last = levels[-1]
        dense = LinearOperator(lambda v: self._apply(last, v), jnp.zeros(g.shape, k.dtype if jnp.issubdtype(k.dtype, jnp.inexact) else jnp.result_type(float))).to_dense()
        self.coarse_inverse = jnp.linalg.pinv(dense)

    @staticmethod
    def _apply(level, u):
        return -flux_form_diffusion(u, level.grid, level.faces, level.pairs)

    def _make_level(self, g, pairs, faces):
        dtype = jnp.result_type(*[f for f in faces], float)
        like = jax.ShapeDtypeStruct(g.shape, dtype)
        periodic = tuple(isinstance(p[0], Periodic) for p in pairs)
        level = _Level(g, pairs, faces, jnp.zeros(g.shape, dtype))
        diag = LinearOperator(lambda v: self._apply(level, v), like, bandwidth=(1,) * g.ndim,
                              periodic=periodic).diagonal()
        return _Level(g, pairs, faces, jnp.where(diag != 0, 1.0 / jnp.where(diag != 0, diag, 1), 0.0))

    def operator(self, u):
        """The fine-level operator $-\\nabla\\cdot(k\\nabla u)$ with homogeneous conditions."""
        return self._apply(self.levels[0], u)

    def _smooth(self, level, x, b, sweeps):
        for _ in range(sweeps):
            x = x + self.omega * level.inverse_diagonal * (b - self._apply(level, x))
        return x

    def _cycle(self, index, b):
        level = self.levels[index]
        if index == len(self.levels) - 1:
            return (self.coarse_inverse @ b.ravel()).reshape(b.shape)
        x = self._smooth(level, jnp.zeros_like(b), b, self.pre_smooth)
        r = b - self._apply(level, x)
        coarse_level = self.levels[index + 1]

        def prolong(c):
            return _prolong(c, level.grid, level.pairs)

        coarse_shape = jax.ShapeDtypeStruct(coarse_level.grid.shape, b.dtype)
        (restricted,) = jax.linear_transpose(prolong, coarse_shape)(r)
        restricted = restricted / (2 ** level.grid.ndim)
        x = x + prolong(self._cycle(index + 1, restricted))
        return self._smooth(level, x, b, self.post_smooth)

    def __call__(self, r):
        """One V-cycle from a zero initial guess: an approximation of $A^{-1} r$."""
        return self._cycle(0, r)


class MultigridSolver(AbstractLinearSolver):
    """Multigrid as a solver: V-cycles on the residual until the tolerance is met.

    Use with `fd.solve(A, b, fd.MultigridSolver(mg))`, where `A` is the
    operator the cycle was built for (`mg.operator`, or the same
    $-\\nabla\\cdot(k\\nabla u)$ written with jaxfd operators).
    """

    multigrid: Multigrid
    rtol: float
    atol: float
    max_steps: int
    needs_symmetric: ClassVar[bool] = True

    def __init__(self, multigrid: Multigrid, rtol: float = 1e-8, atol: float = 0.0,
                 max_steps: int = 200):
        if not isinstance(multigrid, Multigrid):
            raise TypeError(f"MultigridSolver needs a fd.Multigrid, got {multigrid!r}.")
        self.multigrid = multigrid
        self.rtol = rtol
        self.atol = atol
        self.max_steps = max_steps

    def run(self, matvec, b, x0, precondition):
        tol = self.tolerance(b)

        def cond(state):
            _, r, k = state
            return (_norm(r) > tol) & (k < self.max_steps)

        def body(state):
            x, r, k = state
            x = x + self.multigrid(r)
            return x, b - matvec(x), k + 1

        x, r, k = lax.while_loop(cond, body, (x0, b - matvec(x0), jnp.asarray(0)))
        return x, k, _norm(r)
