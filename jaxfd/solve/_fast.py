r"""Fast direct Poisson/Helmholtz solvers by discrete Fourier, sine and cosine transforms.

They solve the *discrete* system of the accuracy-2 `laplacian` on the
cell-centred grid exactly (to round-off), not the continuous equation: on a
periodic axis the Laplacian is diagonal in the discrete Fourier basis, with a
Dirichlet wall pair (ghost $u_{-1} = -u_0$) in the DST-II basis, with a
Neumann wall pair (ghost $u_{-1} = u_0$) in the DCT-II basis. Non-zero
boundary values move to the right-hand side through the operator's affine
offset. Everything is linear algebra on arrays, so `jax.grad` and
`jax.jvp` differentiate it directly (with respect to the right-hand side,
the boundary values and `alpha`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import jax.scipy.fft as jfft
import numpy as np

from .._boundary import Dirichlet, Neumann, Periodic, normalize_bc
from .._grid import Grid
from .._operators import laplacian

__all__ = ["poisson"]


def _dst2(x, axis):
    n = x.shape[axis]
    sign = jnp.asarray((-1.0) ** np.arange(n), x.dtype).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return jnp.flip(jfft.dct(x * sign, type=2, axis=axis, norm="ortho"), axis=axis)


def _idst2(x, axis):
    n = x.shape[axis]
    sign = jnp.asarray((-1.0) ** np.arange(n), x.dtype).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    return jfft.idct(jnp.flip(x, axis=axis), type=2, axis=axis, norm="ortho") * sign


def _axis_kind(pair, axis):
    lo, hi = pair
    for kind in (Periodic, Dirichlet, Neumann):
        if isinstance(lo, kind) and isinstance(hi, kind):
            return kind.__name__.lower()
    raise ValueError(
        f"fd.poisson solves with Periodic, Dirichlet or Neumann conditions of one kind on both "
        f"sides of an axis; axis {axis} has ({type(lo).__name__}, {type(hi).__name__}). Use "
        "fd.solve (Krylov or multigrid) for mixed or Robin walls."
    )


def _eigenvalues(kinds, grid, dtype):
    """Sum over axes of the 1-D eigenvalues, broadcast to the grid shape."""
    total = None
    for a, (kind, n, h) in enumerate(zip(kinds, grid.shape, grid.spacing)):
        k = np.arange(n)
        if kind == "periodic":
            lam = -(4.0 / h**2) * np.sin(np.pi * k / n) ** 2
        elif kind == "dirichlet":
            lam = -(4.0 / h**2) * np.sin(np.pi * (k + 1) / (2 * n)) ** 2
        else:
            lam = -(4.0 / h**2) * np.sin(np.pi * k / (2 * n)) ** 2
        lam = lam.reshape([-1 if b == a else 1 for b in range(grid.ndim)])
        total = lam if total is None else total + lam
    return jnp.asarray(np.broadcast_to(total, grid.shape), dtype)


def poisson(f, grid: Grid, *, bc, alpha=0.0, project: bool = False):
    r"""Solve $\nabla_h^2 u + \alpha u = f$ exactly for the accuracy-2 discrete Laplacian.

    Arguments:
        f: right-hand side, shape `grid.shape`.
        bc: per-axis Periodic, Dirichlet or Neumann conditions (the same kind
            on both sides of an axis; the values may differ and be arrays).
        alpha: Helmholtz shift (scalar). `alpha <= 0` is well posed
            (screened Poisson); `alpha > 0` is the indefinite Helmholtz
            problem and fails if `-alpha` is an eigenvalue.
        project: for the singular problem (`alpha = 0` with only periodic
            and Neumann axes) remove the mean of the right-hand side (the
            part with no solution). Without it, an incompatible right-hand
            side raises (when concrete). The solution has zero mean.

    Returns:
        `u`, satisfying `laplacian(u, grid, bc=bc) + alpha * u == f` to round-off.

    Cost: a few FFT-type transforms, O(N log N).
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"Expected a jaxfd.Grid, got {grid!r}.")
    grid.check_field(f, "f")
    pairs = normalize_bc(bc, grid.ndim)
    kinds = [_axis_kind(p, a) for a, p in enumerate(pairs)]
    dtype = f.dtype
    # move boundary data to the right-hand side: L(u) = L0 u + c
    offset = laplacian(jnp.zeros_like(f), grid, bc=pairs)
    rhs = f - offset
    alpha = jnp.asarray(alpha, dtype)
    singular = all(k != "dirichlet" for k in kinds)
    if singular:
        mean = jnp.mean(rhs)
        alpha_zero = _concrete_zero(alpha)
        if alpha_zero and not project:
            try:
                m = float(mean)
                scale = float(jnp.max(jnp.abs(rhs)))
            except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
                m, scale = 0.0, 1.0
            if abs(m) > 1e3 * float(jnp.finfo(dtype).eps) * max(scale, 1e-300) * math.sqrt(grid.size):
                raise ValueError(
                    "This Poisson problem is singular (periodic/Neumann on every axis, alpha = 0): "
                    "it has a solution only if the mean of f minus the boundary flux term vanishes; "
                    f"here that mean is {m:.3e}. Pass project=True to remove it (and get the "
                    "zero-mean solution), make the data compatible, or use alpha < 0."
                )
        if project:
            rhs = rhs - jnp.where(alpha == 0, mean, jnp.zeros_like(mean))
    transformed = rhs
    for a, kind in enumerate(kinds):
        if kind == "dirichlet":
            transformed = _dst2(transformed, a)
        elif kind == "neumann":
            transformed = jfft.dct(transformed, type=2, axis=a, norm="ortho")
    periodic_axes = [a for a, k in enumerate(kinds) if k == "periodic"]
    if periodic_axes:
        transformed = jnp.fft.fftn(transformed, axes=periodic_axes)
    eig = _eigenvalues(kinds, grid, dtype) + alpha
    if singular:
        # the zero mode: pick the zero-mean solution
        zero_index = (0,) * grid.ndim
        eig = eig.at[zero_index].set(jnp.where(eig[zero_index] == 0, 1, eig[zero_index]))
        transformed = transformed / eig.astype(transformed.dtype)
        transformed = transformed.at[zero_index].set(
            jnp.where(alpha == 0, 0, transformed[zero_index]))
    else:
        transformed = transformed / eig.astype(transformed.dtype)
    if periodic_axes:
        transformed = jnp.fft.ifftn(transformed, axes=periodic_axes).real.astype(dtype)
    for a, kind in enumerate(kinds):
        if kind == "dirichlet":
            transformed = _idst2(transformed, a)
        elif kind == "neumann":
            transformed = jfft.idct(transformed, type=2, axis=a, norm="ortho")
    return transformed


def _concrete_zero(x) -> bool:
    try:
        return float(x) == 0.0
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return False
