r"""Right-hand-side builders for common PDEs (method of lines).

Each builder takes the static setup (grid, discretisation choices) and
returns `rhs(t, u, args)` for `jaxfd.simulate`. Everything a user may
differentiate (coefficients, boundary conditions, sources) travels in
`args`, so `jax.grad` reaches it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from ._grid import Grid
from ._operators import advection, diffusion, flux_divergence, laplacian

__all__ = ["heat", "advection_diffusion_reaction", "burgers", "wave", "gray_scott"]


def _source(args, t, like):
    s = args.get("source") if isinstance(args, dict) else None
    if s is None:
        return None
    return s(t) if callable(s) else s


def heat(grid: Grid, *, mean: str = "harmonic") -> Callable:
    r"""$u_t = \nabla\cdot(k \nabla u) + s$ with a scalar or field diffusivity $k$.

    `args`: a dict with `"diffusivity"` ($k$, scalar or field), `"bc"`
    (boundary conditions of $u$) and optionally `"source"` ($s$: a field, or
    a function of `t` returning one). Conservative flux form, second order in
    space; symmetric, so implicit steppers may use CG.
    """

    def rhs(t, u, args):
        out = diffusion(u, grid, args["diffusivity"], bc=args["bc"], mean=mean)
        s = _source(args, t, u)
        return out if s is None else out + s

    return rhs


def advection_diffusion_reaction(grid: Grid, *, reaction: Callable | None = None,
                                 scheme: str = "weno5", accuracy: int = 2) -> Callable:
    r"""$u_t + v\cdot\nabla u = D \nabla^2 u + R(u) + s$.

    `reaction(u, args)` is fixed at build time (e.g. `lambda u, a: -a["rate"] * u`).
    `args`: `"velocity"` (a per-axis sequence of scalars/fields, or an array of
    shape `(ndim, *grid.shape)`), `"diffusivity"` (scalar), `"bc"`, optionally
    `"source"` and whatever `reaction` reads. Advection is upwinded
    (`scheme`), diffusion central of the given `accuracy`.
    """

    def rhs(t, u, args):
        out = args["diffusivity"] * laplacian(u, grid, bc=args["bc"], accuracy=accuracy)
        out = out - advection(u, args["velocity"], grid, bc=args["bc"], scheme=scheme)
        if reaction is not None:
            out = out + reaction(u, args)
        s = _source(args, t, u)
        return out if s is None else out + s

    return rhs


def burgers(grid: Grid, *, scheme: str = "weno5", accuracy: int = 2) -> Callable:
    r"""Viscous Burgers $u_t + \nabla\cdot(\tfrac12 u^2 \mathbf{1}) = \nu \nabla^2 u$.

    Conservative, Lax-Friedrichs-split upwind flux (`scheme`); in several
    dimensions the flux $\tfrac12 u^2$ acts along every axis. `args`:
    `"viscosity"`, `"bc"`.
    """

    def flux(u):
        return jnp.stack([0.5 * u * u] * grid.ndim)

    def rhs(t, u, args):
        out = -flux_divergence(u, grid, flux, bc=args["bc"], scheme=scheme)
        return out + args["viscosity"] * laplacian(u, grid, bc=args["bc"], accuracy=accuracy)

    return rhs


def wave(grid: Grid, *, accuracy: int = 2) -> Callable:
    r"""Wave equation $u_{tt} = c^2 \nabla^2 u$ in first-order form, state `(u, v = u_t)`.

    Returns `(v, c^2 \nabla^2 u)`, the form `fd.StormerVerlet()` (leapfrog) expects.
    `args`: `"speed"` ($c$, scalar or field), `"bc"`.
    """

    def rhs(t, y, args):
        u, v = y
        c = args["speed"]
        return (v, c * c * laplacian(u, grid, bc=args["bc"], accuracy=accuracy))

    return rhs


def gray_scott(grid: Grid, *, accuracy: int = 2) -> Callable:
    r"""Gray-Scott reaction-diffusion, state `(u, v)`.

    $u_t = D_u \nabla^2 u - u v^2 + F(1 - u)$,
    $v_t = D_v \nabla^2 v + u v^2 - (F + k) v$. `args`: `"Du"`, `"Dv"`,
    `"F"`, `"k"`, and `"bc"` (typically `fd.Periodic()`).
    """

    def rhs(t, y, args: dict[str, Any]):
        u, v = y
        uvv = u * v * v
        du = args["Du"] * laplacian(u, grid, bc=args["bc"], accuracy=accuracy) - uvv + args["F"] * (1 - u)
        dv = args["Dv"] * laplacian(v, grid, bc=args["bc"], accuracy=accuracy) + uvv - (args["F"] + args["k"]) * v
        return (du, dv)

    return rhs
