r"""Stability limits of explicit steppers: helpers and the check `simulate` runs.

An explicit Runge-Kutta method applied to $u' = \lambda u$ is stable while
$\lambda\,dt$ lies in its stability region. Each explicit stepper declares the
extent of that region on the negative real axis (`stability_real`, what
diffusion needs) and on the imaginary axis (`stability_imag`, what central or
WENO advection needs).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._grid import Grid
from .._stencil import central_weights, check_accuracy
from ._steppers import AbstractExplicitRK, AbstractStepper

__all__ = [
    "diffusion_number",
    "cfl_number",
    "max_stable_dt",
    "estimate_spectral_radius",
    "check_explicit_stability",
]


def _symbol_max(deriv: int, accuracy: int) -> float:
    """max over wavenumbers of |sum_s w_s exp(i s theta)| for the central stencil."""
    offsets, weights = central_weights(deriv, accuracy)
    theta = np.linspace(0.0, np.pi, 2049)
    symbol = np.exp(1j * np.outer(theta, offsets)) @ weights
    return float(np.abs(symbol).max())


def diffusion_number(diffusivity, dt: float, grid: Grid) -> float:
    r"""$dt\,\max(\nu) \sum_a 1/h_a^2$ (the 2nd-order Laplacian is stable up to about 0.5 with Euler)."""
    nu = float(np.max(np.abs(np.asarray(diffusivity))))
    return dt * nu * sum(1.0 / h**2 for h in grid.spacing)


def cfl_number(velocity, dt: float, grid: Grid) -> float:
    r"""$dt \sum_a \max|v_a| / h_a$ for velocity components given per axis (scalars or fields)."""
    comps = list(velocity) if isinstance(velocity, (list, tuple)) else list(np.asarray(velocity))
    if len(comps) != grid.ndim:
        raise ValueError(f"Expected {grid.ndim} velocity components, got {len(comps)}.")
    return dt * sum(float(np.max(np.abs(np.asarray(v)))) / h for v, h in zip(comps, grid.spacing))


def max_stable_dt(stepper: AbstractExplicitRK, grid: Grid, *, diffusivity=0.0, velocity=None,
                  accuracy: int = 2) -> float:
    r"""Largest stable `dt` for diffusion and/or central-type advection on `grid`.

    Uses the Fourier symbols of the central stencils: the Laplacian of
    accuracy $p$ has eigenvalues in $[-\nu \sum_a S_p/h_a^2, 0]$, advection
    eigenvalues lie on the imaginary axis up to $\sum_a |v_a| A_p/h_a$. With
    both, the bound is $1/(\rho_d/R + \rho_a/I)$, conservative inside the
    stability region. Upwind and WENO schemes add damping, so this bound is
    conservative for them too.
    """
    if not isinstance(stepper, AbstractExplicitRK):
        raise TypeError(f"max_stable_dt applies to explicit Runge-Kutta steppers, got {stepper!r}.")
    accuracy = check_accuracy(accuracy)
    nu = float(np.max(np.abs(np.asarray(diffusivity))))
    rho_d = nu * _symbol_max(2, accuracy) * sum(1.0 / h**2 for h in grid.spacing)
    rho_a = 0.0
    if velocity is not None:
        rho_a = cfl_number(velocity, 1.0, grid) * _symbol_max(1, accuracy)
    inv = 0.0
    if rho_d > 0:
        inv += rho_d / stepper.stability_real
    if rho_a > 0:
        if stepper.stability_imag == 0:
            return 0.0
        inv += rho_a / stepper.stability_imag
    return math.inf if inv == 0 else 1.0 / inv


def estimate_spectral_radius(rhs: Callable, t, u, args, iterations: int = 40, seed: int = 0):
    """Power iteration on the Jacobian of `rhs` at (t, u) with `jvp`s.

    Returns `(rho, real_fraction)`: the spectral-radius estimate and the
    Rayleigh quotient divided by `-rho` (close to 1 when the dominant modes
    are real and negative, as for diffusion; near 0 for oscillatory modes).
    """
    rho, ray = _power_iteration(rhs, t, u, args, iterations, seed)
    rho = float(rho)
    return rho, (float(-ray) / rho if rho > 0 else 0.0)


@eqx.filter_jit
def _power_iteration(rhs, t, u, args, iterations, seed):
    # a module-level jitted function (rhs static by identity): repeated
    # simulate calls with the same rhs do not recompile the check
    leaves, treedef = jax.tree_util.tree_flatten(u)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    v = treedef.unflatten([jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])

    def norm(w):
        return jnp.sqrt(sum(jnp.vdot(x, x).real for x in jax.tree_util.tree_leaves(w)))

    def body(_, carry):
        w, _rho, _ray = carry
        w = jax.tree_util.tree_map(lambda x: x / norm(w), w)
        _, jw = jax.jvp(lambda x: rhs(t, x, args), (u,), (w,))
        rho = norm(jw)
        ray = sum(jnp.vdot(a, b).real for a, b in zip(jax.tree_util.tree_leaves(w),
                                                      jax.tree_util.tree_leaves(jw)))
        return jw, rho, ray

    zero = jnp.zeros((), jnp.result_type(*leaves))
    return jax.lax.fori_loop(0, iterations, body, (v, zero, zero))[1:]


def check_explicit_stability(stepper: AbstractStepper, rhs, t0, u0, args, dt: float,
                             safety: float = 1.0) -> None:
    """Raise if an explicit `stepper` with step `dt` is beyond its stability limit at u0.

    Only runs on concrete values; the caller skips it under tracing.
    """
    if not isinstance(stepper, AbstractExplicitRK):
        return
    rho, real_fraction = estimate_spectral_radius(rhs, t0, u0, args)
    if rho == 0.0 or real_fraction < 0.0:
        # A growing dominant mode is the problem's own dynamics, not a step-size limit.
        return
    real_fraction = min(real_fraction, 1.0)
    # Interpolate the admissible |lambda dt| between the imaginary and real extents.
    limit = real_fraction * stepper.stability_real + (1 - real_fraction) * stepper.stability_imag
    limit = max(limit, 0.0) * safety
    if rho * dt > limit * 1.02:  # 2% slack for the power-iteration estimate
        dt_max = limit / rho if limit > 0 else 0.0
        raise ValueError(
            f"dt = {dt:.4g} is beyond the stability limit of {type(stepper).__name__} for this "
            f"problem: the right-hand side's Jacobian has spectral radius about {rho:.4g} "
            f"({'mostly real' if real_fraction > 0.5 else 'mostly oscillatory'}), so dt must be "
            f"below about {dt_max:.4g}. Reduce dt, use an implicit stepper, or pass "
            "stability='ignore' to run anyway."
        )
