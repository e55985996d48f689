r"""Reparameterisations that keep parameters in their physical range during `fit`.

`fit` optimises unconstrained variables $z$ and hands the loss
$p = \phi(z)$: `Positive` uses $p = e^{z}$ (a log-parameterisation:
scale-free, so a diffusivity of $10^{-4}$ and a velocity of $10$ are equally
easy to move by a relative amount), `Interval(lo, hi)` uses
$p = lo + (hi - lo)\,\sigma(z)$.
"""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["AbstractConstraint", "Positive", "Interval", "to_unconstrained", "to_constrained"]


class AbstractConstraint(eqx.Module):
    """A bijection between unconstrained variables and a parameter range."""

    @abc.abstractmethod
    def forward(self, z):
        """Parameter value from the unconstrained variable."""

    @abc.abstractmethod
    def inverse(self, p):
        """Unconstrained variable from a parameter value inside the range."""

    @abc.abstractmethod
    def contains(self, p) -> bool:
        """Whether every entry of a concrete `p` lies strictly inside the range."""


class Positive(AbstractConstraint):
    """Parameters > 0, optimised as their logarithm ($p = e^z$)."""

    def forward(self, z):
        return jnp.exp(z)

    def inverse(self, p):
        return jnp.log(p)

    def contains(self, p) -> bool:
        return bool(jnp.all(jnp.asarray(p) > 0))


class Interval(AbstractConstraint):
    """Parameters in the open interval (lo, hi), optimised through a logistic map."""

    lo: float = eqx.field(static=True)
    hi: float = eqx.field(static=True)

    def __check_init__(self):
        if not self.lo < self.hi:
            raise ValueError(f"Interval: expected lo < hi, got lo={self.lo!r}, hi={self.hi!r}.")

    def forward(self, z):
        return self.lo + (self.hi - self.lo) * jax.nn.sigmoid(z)

    def inverse(self, p):
        s = (p - self.lo) / (self.hi - self.lo)
        return jnp.log(s) - jnp.log1p(-s)

    def contains(self, p) -> bool:
        p = jnp.asarray(p)
        return bool(jnp.all((p > self.lo) & (p < self.hi)))


def _is_constraint(x) -> bool:
    return x is None or isinstance(x, AbstractConstraint)


def _map(constraints, params, apply):
    if constraints is None:
        return params
    # `constraints` is a prefix of `params`: each entry covers a whole subtree.
    return jax.tree_util.tree_map(
        lambda c, sub: sub if c is None else jax.tree_util.tree_map(lambda leaf: apply(c, leaf), sub),
        constraints,
        params,
        is_leaf=_is_constraint,
    )


def to_unconstrained(constraints: Any, params: Any):
    """The unconstrained variables of `params`; raises if a value lies outside its range."""
    if constraints is None:
        return params

    def inverse(c, leaf):
        if not c.contains(leaf):
            raise ValueError(
                f"fit: an initial parameter lies outside its constraint {c!r} "
                f"(values from {float(jnp.min(leaf)):.4g} to {float(jnp.max(leaf)):.4g}); "
                "start inside the range."
            )
        return c.inverse(leaf)

    try:
        return _map(constraints, params, inverse)
    except ValueError as e:
        if "constraint" in str(e):
            raise
        raise ValueError(
            "fit: constraints must be a pytree prefix of params with entries None, fd.inverse.Positive() "
            f"or fd.inverse.Interval(lo, hi); got constraints={constraints!r} for params of structure "
            f"{jax.tree_util.tree_structure(params)}. ({e})"
        ) from None


def to_constrained(constraints: Any, z: Any):
    """The parameters of the unconstrained variables `z`."""
    return _map(constraints, z, lambda c, leaf: c.forward(leaf))
