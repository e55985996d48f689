r"""Implicit, IMEX, exponential and symplectic steppers.

Implicit stages solve $(I - \gamma\,dt\,J)\,\delta = r$ matrix-free: $J v$ is a
`jax.jvp` of the right-hand side, the solve is `jaxfd.solve` (so gradients
through a rollout use the transposed solve, never the Krylov iterations).
For a right-hand side affine in $u$ (diffusion with any boundary data) one
Newton step is exact; `newton_steps` adds more for nonlinear problems.
The default inner solver is GMRES(restart=40) with `rtol` 1e-10 in float64
and 1e-5 in float32 (what that precision can reach); pass `solver=` to change it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..solve import GMRES, AbstractLinearSolver, solve
from ..solve._krylov import tight_rtol
from ._steppers import AbstractStepper, _axpy, evaluate_stage

__all__ = [
    "Split",
    "AbstractTheta",
    "BackwardEuler",
    "CrankNicolson",
    "IMEXEuler",
    "IMEX222",
    "ETDRK4",
    "StormerVerlet",
]


class Split(eqx.Module):
    r"""A right-hand side split as $f = f_E + f_I$: `explicit(t, u, args)` + `implicit(t, u, args)`.

    IMEX steppers treat `implicit` implicitly (stiff, e.g. diffusion) and
    `explicit` explicitly (advection, reaction); `ETDRK4` needs `implicit`
    linear and translation invariant on a periodic grid. Any other stepper
    simply sees the sum.
    """

    explicit: Callable
    implicit: Callable

    def __call__(self, t, u, args):
        return jax.tree_util.tree_map(jnp.add, self.explicit(t, u, args), self.implicit(t, u, args))


def _implicit_update(f, t, u_guess, rhs_vector, gamma_dt, solver, symmetric, newton_steps):
    r"""Solve $u - \gamma dt\, f(t, u) = r$ for $u$ by Newton-Krylov from `u_guess`."""
    flat_guess, unravel = ravel_pytree(u_guess)
    flat_r, _ = ravel_pytree(rhs_vector)

    def residual(flat_u):
        fu, _ = ravel_pytree(f(t, unravel(flat_u)))
        return flat_u - gamma_dt * fu - flat_r

    if solver is None:
        # what the precision can reach: float32 Krylov residuals stall near 1e-6
        solver = GMRES(rtol=tight_rtol(flat_guess.dtype), restart=40)
    flat_u = flat_guess
    for _ in range(newton_steps):
        res = residual(flat_u)

        def jacobian(v, flat_u=flat_u):
            return jax.jvp(residual, (flat_u,), (v,))[1]

        delta = solve(jacobian, -res, solver, symmetric=symmetric)
        flat_u = flat_u + delta
    return unravel(flat_u)


class AbstractTheta(AbstractStepper):
    r"""$\theta$-method: $u_{n+1} = u_n + dt[(1-\theta) f(t_n, u_n) + \theta f(t_{n+1}, u_{n+1})]$."""

    theta: eqx.AbstractClassVar[float]
    explicit: ClassVar[bool] = False
    solver: AbstractLinearSolver | None = None
    symmetric: bool | None = None
    newton_steps: int = 1

    def step(self, rhs, t, u, dt, args):
        f = lambda s, v: rhs(s, v, args)  # noqa: E731
        known = u
        if self.theta != 1.0:
            known = _axpy(u, [((1.0 - self.theta) * dt, f(t, u))])
        return _implicit_update(f, t + dt, u, known, self.theta * dt, self.solver, self.symmetric,
                                self.newton_steps)


class BackwardEuler(AbstractTheta):
    """Backward (implicit) Euler, order 1, L-stable."""

    theta: ClassVar[float] = 1.0
    order: ClassVar[int] = 1


class CrankNicolson(AbstractTheta):
    """Crank-Nicolson (trapezoidal rule), order 2, A-stable."""

    theta: ClassVar[float] = 0.5
    order: ClassVar[int] = 2


def _require_split(rhs, name):
    if not isinstance(rhs, Split):
        raise TypeError(
            f"{name} needs the right-hand side split into explicit and implicit parts: pass "
            "rhs=fd.Split(explicit=f_E, implicit=f_I)."
        )


class IMEXEuler(AbstractStepper):
    """IMEX Euler: forward Euler on `explicit`, backward Euler on `implicit`; order 1."""

    order: ClassVar[int] = 1
    explicit: ClassVar[bool] = False
    solver: AbstractLinearSolver | None = None
    symmetric: bool | None = None
    newton_steps: int = 1

    def step(self, rhs, t, u, dt, args):
        _require_split(rhs, "IMEXEuler")
        known = _axpy(u, [(dt, rhs.explicit(t, u, args))])
        fi = lambda s, v: rhs.implicit(s, v, args)  # noqa: E731
        return _implicit_update(fi, t + dt, u, known, dt, self.solver, self.symmetric,
                                self.newton_steps)


_GAMMA = 1.0 - 1.0 / math.sqrt(2.0)
_DELTA = 1.0 - 1.0 / (2.0 * _GAMMA)


class IMEX222(AbstractStepper):
    """Ascher-Ruuth-Spiteri ARS(2,2,2): L-stable, stiffly accurate IMEX Runge-Kutta, order 2."""

    order: ClassVar[int] = 2
    explicit: ClassVar[bool] = False
    solver: AbstractLinearSolver | None = None
    symmetric: bool | None = None
    newton_steps: int = 1

    def step(self, rhs, t, u, dt, args):
        _require_split(rhs, "IMEX222")
        g, d = _GAMMA, _DELTA
        fe = lambda s, v: rhs.explicit(s, v, args)  # noqa: E731
        fi = lambda s, v: rhs.implicit(s, v, args)  # noqa: E731

        def implicit_stage(time, known, guess):
            return _implicit_update(fi, time, guess, known, g * dt, self.solver, self.symmetric,
                                    self.newton_steps)

        ke1 = fe(t, u)
        u2 = implicit_stage(t + g * dt, _axpy(u, [(g * dt, ke1)]), u)
        ke2 = fe(t + g * dt, u2)
        ki2 = fi(t + g * dt, u2)
        known3 = _axpy(u, [(d * dt, ke1), ((1 - d) * dt, ke2), ((1 - g) * dt, ki2)])
        return implicit_stage(t + dt, known3, u2)


class ETDRK4(AbstractStepper):
    r"""Exponential time differencing RK4 (Cox-Matthews) for $u' = L u + N(t, u)$.

    `rhs` must be `fd.Split(explicit=N, implicit=L)` with `L(t, u, args)`
    linear, translation invariant and periodic in every axis (e.g.
    $\nu \nabla^2$ on a periodic grid): then $L$ is diagonal in Fourier space
    and its symbol is read off the impulse response. The $\varphi$-functions
    are evaluated by the contour integrals of Kassam and Trefethen (2005),
    stable for small and zero eigenvalues. Order 4; stiff linear parts cost
    nothing in step size. Real-valued states.
    """

    order: ClassVar[int] = 4
    explicit: ClassVar[bool] = False
    contour_points: int = eqx.field(static=True, default=32)

    def step(self, rhs, t, u, dt, args):
        _require_split(rhs, "ETDRK4")
        if not isinstance(u, jax.Array) and not hasattr(u, "shape"):
            raise TypeError("ETDRK4 works on a single array state.")
        delta = jnp.zeros(u.shape, u.dtype).at[(0,) * u.ndim].set(1)
        symbol = jnp.fft.fftn(rhs.implicit(t, delta, args))
        cdt = symbol.dtype
        z = jnp.asarray(dt, cdt) * symbol
        # contour points on a circle of radius 1 around each z
        m = self.contour_points
        roots = jnp.asarray(np.exp(1j * np.pi * (np.arange(1, m + 1) - 0.5) / m), cdt)
        r = z[..., None] + roots.reshape((1,) * z.ndim + (m,))
        e = jnp.exp(z)
        e2 = jnp.exp(z / 2)
        dtc = jnp.asarray(dt, cdt)

        def contour_mean(values):
            # the phi-functions of a real symbol are real: drop round-off imaginary parts
            return dtc * jnp.mean(values, axis=-1).real.astype(cdt)

        q = contour_mean((jnp.exp(r / 2) - 1) / r)
        f1 = contour_mean((-4 - r + jnp.exp(r) * (4 - 3 * r + r**2)) / r**3)
        f2 = contour_mean((2 + r + jnp.exp(r) * (-2 + r)) / r**3)
        f3 = contour_mean((-4 - 3 * r - r**2 + jnp.exp(r) * (4 - r)) / r**3)

        def nl(s, v):
            return jnp.fft.fftn(rhs.explicit(s, v, args))

        def back(vh):
            return jnp.fft.ifftn(vh).real.astype(u.dtype)

        vh = jnp.fft.fftn(u)
        nv = nl(t, u)
        a = e2 * vh + q * nv
        na = nl(t + dt / 2, back(a))
        b = e2 * vh + q * na
        nb = nl(t + dt / 2, back(b))
        c = e2 * a + q * (2 * nb - nv)
        nc = nl(t + dt, back(c))
        out = e * vh + nv * f1 + 2 * (na + nb) * f2 + nc * f3
        return back(out)


class StormerVerlet(AbstractStepper):
    r"""Stormer-Verlet (velocity Verlet) for $u'' = a(t, u)$, order 2, symplectic.

    The state is a pair `(u, v)` and `rhs(t, (u, v), args)` returns
    `(v, a(t, u))` (the first-order form); the acceleration must not depend on
    `v` (no damping term).
    """

    order: ClassVar[int] = 2
    explicit: ClassVar[bool] = True

    def step(self, rhs, t, y, dt, args):
        u, v = y

        def acceleration(s, w):
            return evaluate_stage(lambda s_, y, a: rhs(s_, y, a)[1], s, (w, v), args)

        v_half = _axpy(v, [(0.5 * dt, acceleration(t, u))])
        u_new = _axpy(u, [(dt, v_half)])
        v_new = _axpy(v_half, [(0.5 * dt, acceleration(t + dt, u_new))])
        return (u_new, v_new)
