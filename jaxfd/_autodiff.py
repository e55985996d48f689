"""Helpers for custom JVP and VJP rules that receive symbolic zeros (`symbolic_zeros=True`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero


def has_tangent(tangent) -> bool:
    """Whether any leaf of a tangent pytree is something other than a symbolic zero."""
    return not all(isinstance(x, SymbolicZero) for x in jax.tree_util.tree_leaves(tangent))


def instantiate_zeros(tangent):
    """The tangent pytree with its symbolic zeros made arrays (`jax.jvp` takes no symbolic zeros)."""
    def leaf(t):
        if not isinstance(t, SymbolicZero):
            return t
        if t.dtype == jax.dtypes.float0:
            return np.zeros(t.shape, jax.dtypes.float0)
        return jnp.zeros(t.shape, t.dtype)

    return jax.tree_util.tree_map(leaf, tangent, is_leaf=lambda x: isinstance(x, SymbolicZero))


def _is_primal(x) -> bool:
    return isinstance(x, CustomVJPPrimal)


def primal_value(tree):
    """A custom VJP's forward-rule argument (leaves wrapped in `CustomVJPPrimal`) as plain values."""
    return jax.tree_util.tree_map(lambda p: p.value, tree, is_leaf=_is_primal)


def is_perturbed(tree) -> bool:
    """Whether any leaf of a custom VJP's forward-rule argument will receive a cotangent."""
    return any(p.perturbed for p in jax.tree_util.tree_leaves(tree, is_leaf=_is_primal))
