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

    def step(self, rhs, t, u, dt, args):
        stages = []
        single = len(self.c) == 1
        for i, ci in enumerate(self.c):
            ui = _axpy(u, [(dt * aij, k) for aij, k in zip(self.a[i], stages) if aij != 0.0])
            ti = t + ci * dt
            stages.append(rhs(ti, ui, args) if single else evaluate_stage(rhs, ti, ui, args))
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


