r"""The one directional-difference primitive of parameter space.

Gradient regularization (forward/backward/central finite-difference GR, SAM),
zeroth-order gradient estimators, finite-difference Hessian-vector products
and directional derivatives are all a difference quotient of a function
(or of its gradient) along a direction $v$:

$$
D_h f(x; v) = \frac{f(x + h v) - f(x)}{h}, \quad
\frac{f(x) - f(x - h v)}{h}, \quad
\frac{f(x + h v) - f(x - h v)}{2 h},
$$

first order for the one-sided schemes, second order for the central one, in
the step $h$. The step is either absolute ($h = \varepsilon$) or relative to
the direction ($h = \varepsilon / \lVert v \rVert$, so the perturbation
$h v$ has length $\varepsilon$, as SAM uses). `x` and `v` are any pytrees
with the same structure and shapes (equinox models included: their
non-array leaves are left alone).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = [
    "directional_difference",
    "relative_step",
    "tree_axpy",
    "tree_norm",
    "tree_vdot",
    "check_same_structure",
    "check_positive",
]

Scheme = Literal["forward", "backward", "central"]
_SCHEMES = ("forward", "backward", "central")
_STEPS = ("absolute", "relative")


def _arrays(tree):
    return jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))


def tree_norm(tree) -> jax.Array:
    """Euclidean norm of all inexact array leaves of a pytree taken together."""
    leaves = _arrays(tree)
    if not leaves:
        return jnp.zeros(())
    return jnp.sqrt(sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in leaves))


def tree_vdot(a, b) -> jax.Array:
    """Real inner product `sum(a_i * b_i)` over the inexact array leaves of two pytrees of one structure."""
    a_leaves = _arrays(a)
    b_leaves = _arrays(b)
    if not a_leaves:
        return jnp.zeros(())
    return sum(jnp.sum(ai * bi) for ai, bi in zip(a_leaves, b_leaves))


def _scale(a, xi):
    # `a` is cast to the leaf's dtype first, so a float64 array step (a traced
    # schedule, say) never promotes a float32 leaf (nor trips strict promotion).
    a = jnp.asarray(a)
    if jnp.issubdtype(a.dtype, jnp.inexact) or jnp.issubdtype(a.dtype, jnp.integer):
        a = a.astype(jnp.result_type(xi))
    return a * xi


def tree_axpy(a, x, y):
    """`a * x + y` leaf by leaf over the inexact arrays of `y`; other leaves of `y` are kept.

    The scalar `a` is cast to each leaf's dtype (float32 leaves stay float32).
    """
    y_arrays, y_static = eqx.partition(y, eqx.is_inexact_array)
    x_arrays = eqx.filter(x, eqx.is_inexact_array)
    out = jax.tree_util.tree_map(lambda xi, yi: _scale(a, xi).astype(yi.dtype) + yi, x_arrays, y_arrays)
    return eqx.combine(out, y_static)


def relative_step(eps, direction) -> jax.Array:
    """The step `h = eps / ||direction||` of `step="relative"` (`h = eps` for a zero direction)."""
    norm = tree_norm(direction)
    eps = jnp.asarray(eps).astype(norm.dtype)
    positive = norm > 0
    return jnp.where(positive, eps / jnp.where(positive, norm, jnp.ones_like(norm)), eps)


def check_same_structure(direction, x, *, name: str = "direction", where: str = "directional_difference"):
    """Raise a clear error unless `direction` has the pytree structure and array shapes of `x`."""
    d_arrays = eqx.filter(direction, eqx.is_inexact_array)
    x_arrays = eqx.filter(x, eqx.is_inexact_array)
    d_struct = jax.tree_util.tree_structure(d_arrays)
    x_struct = jax.tree_util.tree_structure(x_arrays)
    if d_struct != x_struct:
        raise ValueError(
            f"{where}: {name} must have the same pytree structure as the parameters; expected "
            f"{x_struct}, got {d_struct}. Build it with jax.tree_util.tree_map over the parameters "
            "(e.g. a gradient of the same function) or eqx.filter(params, eqx.is_inexact_array)."
        )
    for path_leaf, d_leaf in zip(jax.tree_util.tree_leaves_with_path(x_arrays), jax.tree_util.tree_leaves(d_arrays)):
        path, x_leaf = path_leaf
        if jnp.shape(d_leaf) != jnp.shape(x_leaf):
            raise ValueError(
                f"{where}: {name} leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(d_leaf)}, "
                f"but the parameter there has shape {jnp.shape(x_leaf)}; give every leaf the shape of "
                "its parameter."
            )


def check_positive(value, name: str, where: str, *, allow_zero: bool = False) -> None:
    """Raise ValueError for a concrete `value` that is not > 0 (or >= 0); traced values pass."""
    try:
        concrete = float(value)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return
    ok = concrete >= 0 if allow_zero else concrete > 0
    if not ok or concrete != concrete:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{where}: expected {name} {bound}, got {name}={value!r}; pass a {'non-negative' if allow_zero else 'positive'} {name}.")


def directional_difference(
    f: Callable,
    x: Any,
    direction: Any,
    eps,
    *,
    scheme: Scheme = "forward",
    step: Literal["absolute", "relative"] = "absolute",
    f0: Any = None,
    has_aux: bool = False,
):
    r"""Difference quotient of `f` at `x` along `direction`.

    $D f(x; v) \approx \lim_{h\to 0} (f(x + h v) - f(x)) / h = J_f(x)\,v$, by a
    forward, backward (error $O(h)$) or central (error $O(h^2)$) difference.
    Pass `f = jax.grad(loss)` for a difference of gradients: that is the
    finite-difference Hessian-vector product $H v$ and the gradient-norm
    penalty term of finite-difference gradient regularization.

    Arguments:
        f: function of one argument returning any pytree of arrays (or, with
            `has_aux=True`, a pair `(output, aux)`).
        x: the point, any pytree (an equinox model works: only its inexact
            array leaves are moved).
        direction: a pytree with the structure and shapes of `x`'s arrays.
        eps: the step; `h = eps` (`step="absolute"`) or `h = eps / ||direction||`
            (`step="relative"`, so the perturbation has length `eps`; a zero
            direction gives a zero difference).
        scheme: `"forward"`, `"backward"` or `"central"`.
        f0: `f(x)` when the caller already has it (forward/backward then cost
            one evaluation of `f`); computed if not given.
        has_aux: `f` returns `(output, aux)`; the difference is taken of
            `output` and the aux of the last evaluation is returned too.

    Returns:
        The difference quotient, a pytree like `f(x)` (or `(quotient, aux)`).

    Raises:
        ValueError: unknown scheme or step kind, `eps <= 0`, or a direction
            whose structure or shapes differ from `x`.
    """
    if scheme not in _SCHEMES:
        raise ValueError(f"directional_difference: scheme must be one of {_SCHEMES}, got {scheme!r}.")
    if step not in _STEPS:
        raise ValueError(f"directional_difference: step must be one of {_STEPS}, got {step!r}.")
    check_positive(eps, "eps", "directional_difference")
    check_same_structure(direction, x)

    if step == "relative":
        h = relative_step(eps, direction)
    else:
        h = jnp.asarray(eps)

    def evaluate(point):
        out = f(point)
        return out if has_aux else (out, None)

    def quotient(upper, lower, width):
        return jax.tree_util.tree_map(lambda a, b: ((a - b) / width.astype(jnp.result_type(a))).astype(jnp.result_type(a)), upper, lower)

    if scheme == "central":
        plus, _ = evaluate(tree_axpy(h, direction, x))
        minus, aux = evaluate(tree_axpy(-h, direction, x))
        result = quotient(plus, minus, 2 * h)
    else:
        sign = 1.0 if scheme == "forward" else -1.0
        shifted, aux = evaluate(tree_axpy(sign * h, direction, x))
        if f0 is None:
            f0, _ = evaluate(x)
        result = quotient(shifted, f0, h) if scheme == "forward" else quotient(f0, shifted, h)
    return (result, aux) if has_aux else result
