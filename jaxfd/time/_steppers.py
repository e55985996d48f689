"""Time steppers: equinox Modules that declare their order."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax


__all__ = [
    "AbstractStepper",
    "AbstractExplicitRK",
    "Euler",
    "Heun",
    "SSPRK3",
    "RK4",
    "AbstractEmbeddedRK",
    "BogackiShampine3",
    "Dopri5",
]


def _axpy(u, terms):
    """u + sum_j c_j * k_j over pytrees, with c_j Python floats (weakly typed)."""
    def combine(x, *ks):
        out = x
        for c, k in zip((c for c, _ in terms), ks):
            out = out + c * k
        return out

    return jax.tree_util.tree_map(combine, u, *(k for _, k in terms))


def evaluate_stage(rhs, t, u, args):
    """rhs(t, u, args) computed in its own kernel, its result written to memory.

    XLA's CPU fusion happily inlines one stage's stencil into the next stage's
    stencil, recomputing it for every neighbour it reads: a two-stage Heun
    step ran 19x and RK4 200x slower than Euler (512^2 heat, measured).
    Evaluating each stage inside a `lax.cond` whose two branches are the same
    computation makes the stage a boundary XLA does not fuse across (an
    `optimization_barrier` does not stop this fusion). The predicate is
    data-dependent, so the conditional is not folded away; both branches are
    identical, so the result does not depend on it.
    """

    def stage(t, u):
        return rhs(t, u, args)

    return jax.lax.cond(t == t, stage, stage, t, u)


class AbstractStepper(eqx.Module):
    """A one-step method for du/dt = rhs(t, u, args).

    Subclasses declare `order` (global order of accuracy) and implement `step`.
    """

    order: eqx.AbstractClassVar[int]

    @abc.abstractmethod
    def step(self, rhs: Callable, t, u, dt, args):
        """Advance `u` from `t` to `t + dt`."""


class AbstractExplicitRK(AbstractStepper):
    """Explicit Runge-Kutta method from its Butcher tableau (a, b, c)."""

    a: eqx.AbstractClassVar[tuple[tuple[float, ...], ...]]
    b: eqx.AbstractClassVar[tuple[float, ...]]
    c: eqx.AbstractClassVar[tuple[float, ...]]
    explicit: ClassVar[bool] = True
    #: real-axis stability interval: |1 + z + ...| <= 1 for z in [-stability_real, 0]
    stability_real: eqx.AbstractClassVar[float]
    #: imaginary-axis stability interval (0 when the method is unstable there)
    stability_imag: eqx.AbstractClassVar[float]

    def stages(self, rhs, t, u, dt, args) -> list:
        """The stage derivatives k_i."""
        stages = []
        single = len(self.c) == 1
        for i, ci in enumerate(self.c):
            ui = _axpy(u, [(dt * aij, k) for aij, k in zip(self.a[i], stages) if aij != 0.0])
            ti = t + ci * dt
            stages.append(rhs(ti, ui, args) if single else evaluate_stage(rhs, ti, ui, args))
        return stages

    def step(self, rhs, t, u, dt, args):
        stages = self.stages(rhs, t, u, dt, args)
        return _axpy(u, [(dt * bj, k) for bj, k in zip(self.b, stages) if bj != 0.0])


class Euler(AbstractExplicitRK):
    """Forward Euler, order 1."""

    order: ClassVar[int] = 1
    a: ClassVar = ((),)
    b: ClassVar = (1.0,)
    c: ClassVar = (0.0,)
    stability_real: ClassVar[float] = 2.0
    stability_imag: ClassVar[float] = 0.0


class Heun(AbstractExplicitRK):
    """Heun's method (explicit trapezoidal), order 2."""

    order: ClassVar[int] = 2
    a: ClassVar = ((), (1.0,))
    b: ClassVar = (0.5, 0.5)
    c: ClassVar = (0.0, 1.0)
    stability_real: ClassVar[float] = 2.0
    stability_imag: ClassVar[float] = 0.0


class SSPRK3(AbstractExplicitRK):
    """Shu-Osher strong-stability-preserving RK, order 3 (SSP coefficient 1)."""

    order: ClassVar[int] = 3
    a: ClassVar = ((), (1.0,), (0.25, 0.25))
    b: ClassVar = (1.0 / 6.0, 1.0 / 6.0, 2.0 / 3.0)
    c: ClassVar = (0.0, 1.0, 0.5)
    stability_real: ClassVar[float] = 2.5127453266183286
    stability_imag: ClassVar[float] = 1.7320508075688772


class RK4(AbstractExplicitRK):
    """The classic fourth-order Runge-Kutta method."""

    order: ClassVar[int] = 4
    a: ClassVar = ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0))
    b: ClassVar = (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0)
    c: ClassVar = (0.0, 0.5, 0.5, 1.0)
    stability_real: ClassVar[float] = 2.785293563405282
    stability_imag: ClassVar[float] = 2.8284271247461903




class AbstractEmbeddedRK(AbstractExplicitRK):
    r"""An explicit Runge-Kutta pair: a solution of `order` and an embedded one of `error_order`.

    `step_with_error` returns the higher-order solution (local extrapolation)
    and the difference of the two, an estimate of the local error of the
    lower-order one, $O(\Delta t^{\text{error\_order} + 1})$, which an
    adaptive step-size controller keeps below its tolerance.
    """

    #: b - b_hat: weights of the error estimate
    b_error: eqx.AbstractClassVar[tuple[float, ...]]
    error_order: eqx.AbstractClassVar[int]

    def step_with_error(self, rhs, t, u, dt, args):
        stages = self.stages(rhs, t, u, dt, args)
        u_new = _axpy(u, [(dt * bj, k) for bj, k in zip(self.b, stages) if bj != 0.0])
        zero = jax.tree_util.tree_map(lambda x: 0.0 * x, u)
        error = _axpy(zero, [(dt * ej, k) for ej, k in zip(self.b_error, stages) if ej != 0.0])
        return u_new, error


class BogackiShampine3(AbstractEmbeddedRK):
    """Bogacki-Shampine 3(2) pair: order 3, embedded order 2, four stages."""

    order: ClassVar[int] = 3
    error_order: ClassVar[int] = 2
    a: ClassVar = ((), (0.5,), (0.0, 0.75), (2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0))
    b: ClassVar = (2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0, 0.0)
    b_error: ClassVar = (2.0 / 9.0 - 7.0 / 24.0, 1.0 / 3.0 - 0.25, 4.0 / 9.0 - 1.0 / 3.0, -0.125)
    c: ClassVar = (0.0, 0.5, 0.75, 1.0)
    # the stability polynomial of every three-stage third-order method
    stability_real: ClassVar[float] = 2.5127453266183286
    stability_imag: ClassVar[float] = 1.7320508075688772


class Dopri5(AbstractEmbeddedRK):
    """Dormand-Prince 5(4) pair: order 5, embedded order 4, seven stages."""

    order: ClassVar[int] = 5
    error_order: ClassVar[int] = 4
    a: ClassVar = (
        (),
        (1.0 / 5.0,),
        (3.0 / 40.0, 9.0 / 40.0),
        (44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0),
        (19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0),
        (9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0),
        (35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0),
    )
    b: ClassVar = (35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0, 0.0)
    b_error: ClassVar = (
        35.0 / 384.0 - 5179.0 / 57600.0,
        0.0,
        500.0 / 1113.0 - 7571.0 / 16695.0,
        125.0 / 192.0 - 393.0 / 640.0,
        -2187.0 / 6784.0 + 92097.0 / 339200.0,
        11.0 / 84.0 - 187.0 / 2100.0,
        -1.0 / 40.0,
    )
    c: ClassVar = (0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0)
    stability_real: ClassVar[float] = 3.3066
    # |R(iy)| exceeds 1 beyond y ~ 1: advection-dominated problems need the controller
    stability_imag: ClassVar[float] = 0.9972
