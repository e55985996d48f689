r"""Regularised gradients: double-backprop and finite-difference GR, SAM, flooding.

For a loss $L(\theta)$ and the gradient-norm penalty
$R(\theta) = \tfrac{\gamma}{2}\lVert\nabla L(\theta)\rVert^2$, the regularised
gradient is $\nabla(L + R) = g_0 + \gamma H g_0$ with $g_0 = \nabla L(\theta)$
and $H$ the Hessian. The finite-difference methods replace $H g_0$ by a
difference of gradients along $g_0$ (Karakida et al., ICML 2023), through the
one directional-difference primitive, `jaxfd.directional_difference`:

| method | regularised gradient | gradients per step |
| --- | --- | --- |
| `"double_backprop"` | $g_0 + \gamma H g_0$, reverse mode through the gradient | about 2-3 (one double backward) |
| `"forward"` | $(1 - \gamma/\varepsilon) g_0 + (\gamma/\varepsilon)\nabla L(\theta + \varepsilon g_0)$ | 2 |
| `"backward"` | $(1 + \gamma/\varepsilon) g_0 - (\gamma/\varepsilon)\nabla L(\theta - \varepsilon g_0)$ | 2 |
| `"central"` | $g_0 + \tfrac{\gamma}{2\varepsilon}(\nabla L(\theta + \varepsilon g_0) - \nabla L(\theta - \varepsilon g_0))$ | 3 |
| `"sam"` | $\nabla L(\theta + \rho\, g_0/\lVert g_0\rVert)$, $\rho$ = `eps` | 2 |
| `"unnormalized_sam"` | $\nabla L(\theta + \rho\, g_0)$, $\rho$ = `eps` (forward GR with $\gamma = \varepsilon$) | 2 |
| `"flooding"` | $\operatorname{sign}(L - b)\, g_0$, the gradient of $\lvert L - b\rvert + b$ | 1 |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._directional import (
    check_positive,
    directional_difference,
    relative_step,
    tree_axpy,
    tree_vdot,
)

__all__ = ["METHODS", "gradient", "value_and_gradient"]

#: Every method name `gradient`, `value_and_gradient` and `transform` accept.
METHODS = ("double_backprop", "forward", "backward", "central", "sam", "unnormalized_sam", "flooding")
_DIFFERENCE = ("forward", "backward", "central")
_USES = {
    "gamma": ("double_backprop", *_DIFFERENCE),
    "eps": (*_DIFFERENCE, "sam", "unnormalized_sam"),
    "flood_level": ("flooding",),
}
_EXAMPLES = {"gamma": "gamma=0.01", "eps": "eps=0.01", "flood_level": "flood_level=0.05"}


def check_options(method, gamma, eps, flood_level, where: str) -> None:
    """Validate a method name and the hyperparameters it uses (shared by the function and the transform)."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{where}: method must be one of {METHODS}, got {method!r}.")
    given = {"gamma": gamma, "eps": eps, "flood_level": flood_level}
    for name, value in given.items():
        used = method in _USES[name]
        if used and value is None:
            raise ValueError(
                f"{where}: method={method!r} needs {name}; got none. Pass it as a keyword, e.g. {_EXAMPLES[name]}."
            )
        if not used and value is not None:
            users = ", ".join(repr(m) for m in _USES[name])
            raise ValueError(
                f"{where}: {name} is not used by method={method!r} (only by {users}); got {name}={value!r}. "
                f"Drop it{' (the SAM radius rho is eps)' if name == 'gamma' and 'sam' in method else ''}."
            )
    if gamma is not None:
        check_positive(gamma, "gamma", where, allow_zero=True)
    if eps is not None:
        check_positive(eps, "eps", where)
    if flood_level is not None and jnp.ndim(flood_level) != 0:
        raise ValueError(f"{where}: flood_level must be a scalar, got an array of shape {jnp.shape(flood_level)}.")


def _cast(a, like):
    return jnp.asarray(a).astype(jnp.result_type(like))


def regularize(method: str, grad_fn: Callable, params, g0, value, *, gamma, eps, flood_level):
    """The regularised gradient from `g0 = grad L(params)` and `grad_fn` (params -> grad L, no aux)."""
    if method in _DIFFERENCE:
        term = directional_difference(grad_fn, params, g0, eps, scheme=method, f0=None if method == "central" else g0)
        return tree_axpy(gamma, term, g0)
    if method == "unnormalized_sam":
        # grad L(theta + eps g0) = g0 + eps * (grad L(theta + eps g0) - g0) / eps
        term = directional_difference(grad_fn, params, g0, eps, f0=g0)
        return tree_axpy(eps, term, g0)
    if method == "sam":
        # grad L(theta + h g0) with h = eps / ||g0||: the relative-step difference times h
        term = directional_difference(grad_fn, params, g0, eps, step="relative", f0=g0)
        return tree_axpy(relative_step(eps, g0), term, g0)
    if method == "flooding":
        sign = jnp.sign(value - _cast(flood_level, value))
        return jax.tree_util.tree_map(lambda g: _cast(sign, g) * g, g0)
    # double backprop: reverse mode through the gradient, grad of 1/2 ||grad L||^2 = H g0
    def half_norm2(p):
        g = grad_fn(p)
        return 0.5 * tree_vdot(g, g)

    return tree_axpy(gamma, eqx.filter_grad(half_norm2)(params), g0)


def value_and_gradient(
    loss: Callable,
    params: Any,
    *args,
    method: str = "forward",
    gamma=None,
    eps=None,
    flood_level=None,
    has_aux: bool = False,
):
    r"""The loss and the regularised gradient, like `jax.value_and_grad`.

    Regularised gradient of $L$ with penalty $\tfrac{\gamma}{2}\lVert\nabla L\rVert^2$:
    $g_0 + \gamma H g_0$ (`"double_backprop"`), or its finite-difference
    forms $g_0 + \gamma\,(\nabla L(\theta + \varepsilon g_0) - g_0)/\varepsilon$
    (`"forward"`), $g_0 + \gamma\,(g_0 - \nabla L(\theta - \varepsilon g_0))/\varepsilon$
    (`"backward"`), the `"central"` difference; SAM and unnormalised SAM with
    radius $\rho$ = `eps`; flooding with level $b$ = `flood_level`. The
    one-sided differences approximate double backprop to $O(\varepsilon)$, the
    central one to $O(\varepsilon^2)$; on a quadratic loss all three are exact
    for any `eps`. See the module table for the formulas and costs.

    Arguments:
        loss: `loss(params, *args) -> scalar` (or `(scalar, aux)` with `has_aux=True`).
        params: any pytree (an equinox model works: only its inexact arrays are
            differentiated and moved, as with `eqx.filter_grad`).
        *args: passed to `loss` unchanged (a batch, a key, ...).
        method: one of `"double_backprop"`, `"forward"`, `"backward"`,
            `"central"`, `"sam"`, `"unnormalized_sam"`, `"flooding"`.
        gamma: penalty strength $\gamma \ge 0$ (GR methods only).
        eps: difference step $\varepsilon > 0$ (`"forward"`, `"backward"`,
            `"central"`), or the SAM radius $\rho > 0$ (`"sam"`, `"unnormalized_sam"`).
        flood_level: the flood level $b$ (`"flooding"` only).
        has_aux: `loss` returns `(value, aux)`; aux (e.g. batch statistics)
            comes back from the evaluation at `params` itself, never from a
            perturbed point.

    Returns:
        `(value, grad)`, or `((value, aux), grad)` with `has_aux=True`. `value`
            is the unregularised loss $L(\theta)$; `grad` has the structure of
            `eqx.filter_grad(loss)(params, *args)` (None at non-array leaves).

    Raises:
        ValueError: unknown method; a hyperparameter the method needs is
            missing, or one it does not use is given; `eps <= 0` or `gamma < 0`.
    """
    where = "fd.gr.value_and_gradient"
    check_options(method, gamma, eps, flood_level, where)
    value_and_grad = eqx.filter_value_and_grad(loss, has_aux=has_aux)

    if method == "double_backprop":
        def penalised(p):
            out, g = value_and_grad(p, *args)
            value = out[0] if has_aux else out
            return value + _cast(gamma, value) * (0.5 * tree_vdot(g, g)), (out, g)

        total, (out, _) = eqx.filter_grad(penalised, has_aux=True)(params)
        return out, total

    out, g0 = value_and_grad(params, *args)
    value = out[0] if has_aux else out
    plain_grad = eqx.filter_grad(loss, has_aux=has_aux)

    def grad_fn(p):
        g = plain_grad(p, *args)
        return g[0] if has_aux else g

    return out, regularize(method, grad_fn, params, g0, value, gamma=gamma, eps=eps, flood_level=flood_level)


def gradient(
    loss: Callable,
    params: Any,
    *args,
    method: str = "forward",
    gamma=None,
    eps=None,
    flood_level=None,
    has_aux: bool = False,
):
    r"""The regularised gradient, like `jax.grad` (see `value_and_gradient` for the methods).

    $\nabla\bigl(L + \tfrac{\gamma}{2}\lVert\nabla L\rVert^2\bigr) = g_0 + \gamma H g_0$,
    exactly (`"double_backprop"`) or by a forward/backward ($O(\varepsilon)$)
    or central ($O(\varepsilon^2)$) difference of gradients along $g_0$; or
    the SAM, unnormalised SAM or flooding gradient.

    Arguments:
        loss: `loss(params, *args) -> scalar` (or `(scalar, aux)` with `has_aux=True`).
        params: any pytree of parameters (equinox models included).
        *args: passed to `loss` unchanged.
        method: `"double_backprop"`, `"forward"` (default), `"backward"`,
            `"central"`, `"sam"`, `"unnormalized_sam"` or `"flooding"`.
        gamma: penalty strength $\gamma \ge 0$ (GR methods).
        eps: difference step $\varepsilon > 0$, or the SAM radius $\rho$.
        flood_level: flood level $b$ (`"flooding"`).
        has_aux: `loss` returns `(value, aux)`; the aux at `params` is returned.

    Returns:
        The regularised gradient, a pytree like `eqx.filter_grad(loss)(params, *args)`;
            `(grad, aux)` with `has_aux=True`.

    Raises:
        ValueError: unknown method, a missing or unused hyperparameter,
            `eps <= 0`, `gamma < 0`.
    """
    check_options(method, gamma, eps, flood_level, "fd.gr.gradient")
    out, grad = value_and_gradient(
        loss, params, *args, method=method, gamma=gamma, eps=eps, flood_level=flood_level, has_aux=has_aux
    )
    return (grad, out[1]) if has_aux else grad
