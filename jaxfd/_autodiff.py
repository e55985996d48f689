"""Helpers for custom JVP rules that receive symbolic zeros (`defjvp(..., symbolic_zeros=True)`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero


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
