r"""Zeroth-order optimizers: ZO-SGD and zeroth-order Frank-Wolfe, on the gradient estimators.

An estimator configuration (`CoordinateEstimator`, `RandomizedEstimator`,
`ForwardGradientEstimator`) says how a gradient is estimated; an optimizer
(`ZOSGD`, `ZOFrankWolfe`) says what is done with it; `minimize` runs the loop
in one compiled `lax.scan`. All are immutable equinox Modules (abstract/final).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from .._directional import check_positive, tree_axpy
from ._estimators import (
    active_indices,
    check_batch_size,
    check_count,
    check_mask_matches,
    check_scalar_function,
    check_scheme,
    coordinate_from_indices,
    flatten,
    forward_gradient,
    randomized,
)

__all__ = [
    "AbstractEstimator",
    "CoordinateEstimator",
    "RandomizedEstimator",
    "ForwardGradientEstimator",
    "AbstractZOOptimizer",
    "ZOSGD",
    "ZOFrankWolfe",
    "minimize",
    "box_lmo",
    "l1_ball_lmo",
]


# --- estimators as configuration ----------------------------------------------------------------


class AbstractEstimator(eqx.Module):
    """A gradient estimator: `estimator(f, x, key) -> estimate` and its cost per call."""

    @abc.abstractmethod
    def __call__(self, f: Callable, x: Any, key) -> Any:
        """The estimate of grad f(x), with the structure of `eqx.filter(x, eqx.is_inexact_array)`."""

    @abc.abstractmethod
    def evaluations(self, x: Any) -> int:
        """Evaluations of `f` (or jvps, for forward gradients) per estimate at a point shaped like `x`."""


class CoordinateEstimator(AbstractEstimator):
    r"""`fd.zo.coordinate` as a configuration: all coordinates, or DeepZero's sparse subset.

    Arguments:
        mu: the difference step, `> 0`.
        mask: optional concrete boolean pytree (one array per parameter array)
            of the active coordinates; it is stored as a static tuple of flat indices.
        scheme: `"forward"` (default), `"backward"` or `"central"`.
        batch_size: coordinates per `lax.map` chunk; `None` vmaps all.
    """

    mu: float
    active: tuple[int, ...] | None = eqx.field(static=True)
    mask_shapes: tuple[tuple[int, ...], ...] | None = eqx.field(static=True)
    scheme: str = eqx.field(static=True)
    batch_size: int | None = eqx.field(static=True)

    def __init__(self, mu, mask=None, *, scheme: str = "forward", batch_size: int | None = None):
        where = "fd.zo.CoordinateEstimator"
        check_positive(mu, "mu", where)
        check_scheme(scheme, where)
        check_batch_size(batch_size, where)
        self.mu = mu
        if mask is None:
            self.active, self.mask_shapes = None, None
        else:
            self.active, self.mask_shapes = active_indices(mask, where)
        self.scheme = scheme
        self.batch_size = batch_size

    def _active(self, x):
        if self.active is None:
            return tuple(range(flatten(x, "fd.zo.CoordinateEstimator")[0].size))
        check_mask_matches(self.mask_shapes, x, "fd.zo.CoordinateEstimator")
        return self.active

    def __call__(self, f, x, key):
        del key
        check_scalar_function(f, x, "fd.zo.CoordinateEstimator")
        return coordinate_from_indices(
            f, x, self.mu, self._active(x), scheme=self.scheme, f0=None, batch_size=self.batch_size,
            where="fd.zo.CoordinateEstimator",
        )

    def evaluations(self, x) -> int:
        n = len(self._active(x))
        return 2 * n if self.scheme == "central" else n + 1


class RandomizedEstimator(AbstractEstimator):
    r"""`fd.zo.randomized` as a configuration ($q$ random directions per estimate).

    Arguments:
        num_directions: $q \ge 1$.
        mu: the difference step, `> 0`.
        distribution: `"sphere"` (default, scaled by $d$) or `"gaussian"`.
        scheme: `"forward"` (default), `"backward"` or `"central"`.
        batch_size: directions per `lax.map` chunk; `None` vmaps all.
    """

    num_directions: int = eqx.field(static=True)
    mu: float
    distribution: str = eqx.field(static=True, default="sphere")
    scheme: str = eqx.field(static=True, default="forward")
    batch_size: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        where = "fd.zo.RandomizedEstimator"
        check_count(self.num_directions, "num_directions", where)
        check_positive(self.mu, "mu", where)
        check_scheme(self.scheme, where)
        check_batch_size(self.batch_size, where)
        if self.distribution not in ("sphere", "gaussian"):
            raise ValueError(f"{where}: distribution must be 'sphere' or 'gaussian', got {self.distribution!r}.")

    def __call__(self, f, x, key):
        return randomized(
            f, x, key, self.num_directions, self.mu, distribution=self.distribution, scheme=self.scheme,
            batch_size=self.batch_size,
        )

    def evaluations(self, x) -> int:
        return 2 * self.num_directions if self.scheme == "central" else self.num_directions + 1


class ForwardGradientEstimator(AbstractEstimator):
    r"""`fd.zo.forward_gradient` as a configuration ($K$ jvps per estimate).

    Arguments:
        num_tangents: $K \ge 1$.
        distribution: `"gaussian"` (default) or `"rademacher"`.
        batch_size: tangents per `lax.map` chunk; `None` vmaps all.
    """

    num_tangents: int = eqx.field(static=True, default=1)
    distribution: str = eqx.field(static=True, default="gaussian")
    batch_size: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        where = "fd.zo.ForwardGradientEstimator"
        check_count(self.num_tangents, "num_tangents", where)
        check_batch_size(self.batch_size, where)
        if self.distribution not in ("gaussian", "rademacher"):
            raise ValueError(f"{where}: distribution must be 'gaussian' or 'rademacher', got {self.distribution!r}.")

    def __call__(self, f, x, key):
        return forward_gradient(f, x, key, self.num_tangents, distribution=self.distribution,
                                batch_size=self.batch_size)

    def evaluations(self, x) -> int:
        return self.num_tangents


# --- optimizers ---------------------------------------------------------------------------------


def _schedule(value, t, dtype):
    out = value(t) if callable(value) else value
    return jnp.asarray(out).astype(dtype)


def _dtype(x):
    return flatten(x, "fd.zo")[0].dtype


class AbstractZOOptimizer(eqx.Module):
    """A zeroth-order optimizer: `init(x) -> state`, `step(f, x, state, key) -> (x, state)`."""

    estimator: eqx.AbstractVar[AbstractEstimator]

    @abc.abstractmethod
    def init(self, x: Any) -> Any:
        """The optimizer state for parameters shaped like `x`."""

    @abc.abstractmethod
    def step(self, f: Callable, x: Any, state: Any, key) -> tuple[Any, Any]:
        """One iteration: estimate the gradient of `f` at `x` and move."""


class ZOSGD(AbstractZOOptimizer):
    r"""Zeroth-order SGD: $m_{t} = \beta m_{t-1} + \hat g_t$, $x_{t+1} = x_t - \eta_t m_t$.

    Arguments:
        estimator: the gradient estimator (`CoordinateEstimator`, ...).
        learning_rate: $\eta > 0$, a number or a function of the step count `t`.
        momentum: $\beta \in [0, 1)$ (default 0: plain ZO-SGD).
    """

    estimator: AbstractEstimator
    learning_rate: float | Callable = eqx.field(static=True)
    momentum: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        where = "fd.zo.ZOSGD"
        if not isinstance(self.estimator, AbstractEstimator):
            raise TypeError(f"{where}: estimator must be an fd.zo estimator (e.g. fd.zo.RandomizedEstimator(...)); "
                            f"got {self.estimator!r}.")
        if not callable(self.learning_rate):
            check_positive(self.learning_rate, "learning_rate", where)
        if not 0.0 <= float(self.momentum) < 1.0:
            raise ValueError(f"{where}: expected 0 <= momentum < 1, got momentum={self.momentum!r}.")

    def init(self, x):
        arrays = eqx.filter(x, eqx.is_inexact_array)
        return (jnp.zeros((), dtype=jnp.int32), jax.tree_util.tree_map(jnp.zeros_like, arrays))

    def step(self, f, x, state, key):
        t, velocity = state
        g = self.estimator(f, x, key)
        velocity = jax.tree_util.tree_map(
            lambda m, gi: (jnp.asarray(self.momentum).astype(gi.dtype) * m + gi), velocity, g
        )
        lr = _schedule(self.learning_rate, t, _dtype(x))
        return tree_axpy(-lr, velocity, x), (t + 1, velocity)


def box_lmo(lower, upper) -> Callable:
    r"""Linear minimisation oracle of the box $\{x: \ell \le x \le u\}$: $s_i = \ell_i$ where $d_i > 0$, else $u_i$.

    Arguments:
        lower, upper: scalars, or pytrees with the structure of the parameters' arrays.

    Returns:
        `lmo(direction) -> argmin_{s in box} <s, direction>`.
    """

    def is_single(bound):
        return jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(bound))

    def lmo(direction):
        arrays = eqx.filter(direction, eqx.is_inexact_array)
        if is_single(lower) and is_single(upper):  # one bound (scalar or array) for every leaf
            return jax.tree_util.tree_map(
                lambda d: jnp.where(d > 0, jnp.asarray(lower).astype(d.dtype), jnp.asarray(upper).astype(d.dtype)),
                arrays,
            )
        return jax.tree_util.tree_map(
            lambda d, lo, hi: jnp.where(d > 0, jnp.asarray(lo).astype(d.dtype), jnp.asarray(hi).astype(d.dtype)),
            arrays, lower, upper,
        )

    return lmo


def l1_ball_lmo(radius) -> Callable:
    r"""Linear minimisation oracle of the $\ell_1$ ball of `radius`: $s = -r\,\operatorname{sign}(d_i) e_i$, $i = \arg\max\lvert d_i\rvert$.

    Arguments:
        radius: the radius, `> 0`.

    Returns:
        `lmo(direction) -> argmin_{||s||_1 <= radius} <s, direction>` (a vertex).
    """
    check_positive(radius, "radius", "fd.zo.l1_ball_lmo")

    def lmo(direction):
        flat, unravel = ravel_pytree(eqx.filter(direction, eqx.is_inexact_array))
        i = jnp.argmax(jnp.abs(flat))
        vertex = jnp.zeros_like(flat).at[i].set(-jnp.asarray(radius).astype(flat.dtype) * jnp.sign(flat[i]))
        return unravel(vertex)

    return lmo


class ZOFrankWolfe(AbstractZOOptimizer):
    r"""Zeroth-order Frank-Wolfe over a constraint set given by its linear minimisation oracle.

    $d_t = (1 - \rho_t) d_{t-1} + \rho_t \hat g_t$ (averaged estimates),
    $s_t = \mathrm{LMO}(d_t) = \arg\min_{s \in C}\langle s, d_t\rangle$,
    $x_{t+1} = x_t + \gamma_t (s_t - x_t)$; projection-free, so $x$ stays in
    $C$ (a convex set) when $x_0 \in C$. Defaults $\gamma_t = 2/(t+2)$ and
    $\rho_t = (t+1)^{-2/3}$ (Sahu et al. 2019 use an averaging of this order).

    Arguments:
        estimator: the gradient estimator.
        lmo: `lmo(direction) -> point of C` (`fd.zo.box_lmo`, `fd.zo.l1_ball_lmo`, or your own).
        step_size: $\gamma_t \in (0, 1]$, a number or a function of `t`; `None` for $2/(t+2)$.
        averaging: $\rho_t \in (0, 1]$, a number or a function of `t`; `None` for $(t+1)^{-2/3}$.
    """

    estimator: AbstractEstimator
    lmo: Callable = eqx.field(static=True)
    step_size: float | Callable | None = eqx.field(static=True, default=None)
    averaging: float | Callable | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        where = "fd.zo.ZOFrankWolfe"
        if not isinstance(self.estimator, AbstractEstimator):
            raise TypeError(f"{where}: estimator must be an fd.zo estimator; got {self.estimator!r}.")
        if not callable(self.lmo):
            raise TypeError(f"{where}: lmo must be a function direction -> point of the set; got {self.lmo!r}.")
        for name in ("step_size", "averaging"):
            value = getattr(self, name)
            if value is not None and not callable(value) and not 0.0 < float(value) <= 1.0:
                raise ValueError(f"{where}: expected 0 < {name} <= 1, got {name}={value!r}.")

    def init(self, x):
        arrays = eqx.filter(x, eqx.is_inexact_array)
        return (jnp.zeros((), dtype=jnp.int32), jax.tree_util.tree_map(jnp.zeros_like, arrays))

    def step(self, f, x, state, key):
        t, avg = state
        dtype = _dtype(x)
        tf = t.astype(dtype)
        g = self.estimator(f, x, key)
        rho = _schedule(self.averaging, t, dtype) if self.averaging is not None else (tf + 1) ** (-2.0 / 3.0)
        gamma = _schedule(self.step_size, t, dtype) if self.step_size is not None else 2.0 / (tf + 2)
        avg = jax.tree_util.tree_map(lambda a, gi: (1 - rho).astype(a.dtype) * a + rho.astype(a.dtype) * gi, avg, g)
        s = self.lmo(avg)
        arrays, static = eqx.partition(x, eqx.is_inexact_array)
        moved = jax.tree_util.tree_map(lambda xi, si: xi + gamma.astype(xi.dtype) * (si.astype(xi.dtype) - xi),
                                       arrays, s)
        return eqx.combine(moved, static), (t + 1, avg)


def minimize(f: Callable, x0: Any, optimizer: AbstractZOOptimizer, key, num_steps: int):
    r"""Run `num_steps` iterations of a zeroth-order optimizer in one compiled `lax.scan`.

    Arguments:
        f: `f(x) -> scalar`, the objective (a black box for the finite-difference estimators).
        x0: the starting point, any pytree (equinox models included).
        optimizer: `fd.zo.ZOSGD(...)` or `fd.zo.ZOFrankWolfe(...)`.
        key: a `jax.random` key (split once per step).
        num_steps: number of iterations, a Python integer >= 1.

    Returns:
        `(x, values)`: the final point and `f` at every iterate $x_0, \dots, x_T$
            (shape `(num_steps + 1,)`). The cost per step in evaluations of `f` is
            `optimizer.estimator.evaluations(x0)`.

    Raises:
        TypeError: an optimizer that is not an `fd.zo` optimizer, a non-integer `num_steps`.
        ValueError: `num_steps < 1`, a non-scalar `f`.
    """
    where = "fd.zo.minimize"
    if not isinstance(optimizer, AbstractZOOptimizer):
        raise TypeError(f"{where}: optimizer must be fd.zo.ZOSGD(...) or fd.zo.ZOFrankWolfe(...); got {optimizer!r}.")
    n = check_count(num_steps, "num_steps", where)
    check_scalar_function(f, x0, where)
    arrays0, static = eqx.partition(x0, eqx.is_array)
    arrays, values = _run(f, arrays0, static, optimizer, jax.random.split(key, n))
    return eqx.combine(arrays, static), values


@eqx.filter_jit
def _run(f, arrays0, static, optimizer, keys):
    # module level, so a second call with the same f, optimizer and shapes reuses the compiled loop
    state0 = optimizer.init(eqx.combine(arrays0, static))

    def body(carry, k):
        arrays, state = carry
        x = eqx.combine(arrays, static)
        value = f(x)
        x, state = optimizer.step(f, x, state, k)
        return (eqx.filter(x, eqx.is_array), state), value

    (arrays, _), values = jax.lax.scan(body, (arrays0, state0), keys)
    last = jnp.reshape(f(eqx.combine(arrays, static)), (1,)).astype(values.dtype)
    return arrays, jnp.concatenate([values, last])
