"""The one place `fit` meets optimizer libraries (optax, and jaxopt for bounds).

jaxopt is no longer developed upstream; it is imported only here, only for
box-constrained L-BFGS-B, so it can be swapped without touching `fit`.
Every backend exposes the same two pure steps, called inside `fit`'s
compiled loop:

* `value_and_grad(objective, z, state) -> (value, grad)` at the current point
  (reusing what the previous line search computed where the optimizer keeps it);
* `update(objective, z, state, value, grad) -> (z, state)`: one optimizer step.

The libraries' own arithmetic mixes integer widths, so their steps are traced
under standard dtype promotion even when the caller runs with
`jax_numpy_dtype_promotion="strict"` (as jaxfd's test suite does).
"""

from __future__ import annotations

import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

__all__ = ["make_backend", "AbstractBackend", "OptaxBackend", "LBFGSBBackend"]


class AbstractBackend(eqx.Module):
    def init(self, objective, z):
        raise NotImplementedError

    def value_and_grad(self, objective, z, state):
        raise NotImplementedError

    def update(self, objective, z, state, value, grad):
        raise NotImplementedError

    def stationarity(self, z, grad):
        """The norm that must vanish at a (constrained) minimum."""
        return optax.tree.norm(grad)


class OptaxBackend(AbstractBackend):
    """Any optax transformation; L-BFGS with its line search reuses cached values."""

    transform: Any = eqx.field(static=True)
    caches_value: bool = eqx.field(static=True)
    bounds: Any = None

    def init(self, objective, z):
        with jax.numpy_dtype_promotion("standard"):
            return self.transform.init(z)

    def value_and_grad(self, objective, z, state):
        if self.caches_value:
            return optax.value_and_grad_from_state(objective)(z, state=state)
        return jax.value_and_grad(objective)(z)

    def update(self, objective, z, state, value, grad):
        with jax.numpy_dtype_promotion("standard"):
            updates, state = self.transform.update(grad, state, z, value=value, grad=grad, value_fn=objective)
            z = jax.tree_util.tree_map(lambda new, old: new.astype(old.dtype), optax.apply_updates(z, updates), z)
        if self.bounds is not None:
            z = optax.projections.projection_box(z, *self.bounds)
        return z, state

    def stationarity(self, z, grad):
        if self.bounds is None:
            return optax.tree.norm(grad)
        return _projected_gradient_norm(z, grad, self.bounds)


def _projected_gradient_norm(z, grad, bounds):
    stepped = optax.projections.projection_box(jax.tree_util.tree_map(jnp.subtract, z, grad), *bounds)
    return optax.tree.norm(jax.tree_util.tree_map(jnp.subtract, stepped, z))


class LBFGSBBackend(AbstractBackend):
    """Box-constrained L-BFGS-B (jaxopt)."""

    bounds: Any
    memory: int = eqx.field(static=True, default=10)

    def _solver(self, objective):
        with warnings.catch_warnings():  # its deprecation notice is known and documented
            warnings.simplefilter("ignore", DeprecationWarning)
            import jaxopt

        return jaxopt.LBFGSB(fun=objective, maxiter=1, tol=0.0, history_size=self.memory)

    def init(self, objective, z):
        with jax.numpy_dtype_promotion("standard"):
            return self._solver(objective).init_state(z, bounds=self.bounds)

    def value_and_grad(self, objective, z, state):
        return state.value, state.grad

    def update(self, objective, z, state, value, grad):
        with jax.numpy_dtype_promotion("standard"):
            z, state = self._solver(objective).update(z, state, bounds=self.bounds)
        return z, state

    def stationarity(self, z, grad):
        return _projected_gradient_norm(z, grad, self.bounds)


# One instance, so that fits with "lbfgs" share compiled programs (transformations compare by identity).
_LBFGS = optax.lbfgs()


def make_backend(optimizer, bounds) -> AbstractBackend:
    """Backend for `optimizer` ("lbfgs", "adam" or an optax transformation) and optional bounds."""
    if isinstance(optimizer, str):
        if optimizer == "lbfgs":
            if bounds is not None:
                return LBFGSBBackend(bounds=bounds)
            return OptaxBackend(_LBFGS, caches_value=True)
        raise ValueError(
            f"fit: unknown optimizer {optimizer!r}; pass 'lbfgs' or an optax GradientTransformation "
            "such as optax.adam(1e-2)."
        )
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"fit: expected optimizer to be 'lbfgs' or an optax.GradientTransformation, got {optimizer!r}."
        )
    caches_value = _keeps_value(optimizer)
    return OptaxBackend(optax.with_extra_args_support(optimizer), caches_value=caches_value, bounds=bounds)


def _keeps_value(transform) -> bool:
    """Whether the transformation's state caches value and gradient (optax's line searches do)."""
    state = jax.eval_shape(transform.init, jnp.zeros(1))
    try:
        return all(optax.tree_utils.tree_get(state, key) is not None for key in ("value", "grad"))
    except (KeyError, ValueError):  # found more than once: not the line-search cache layout
        return False
