"""Gradient regularization as an optax `GradientTransformationExtraArgs`."""

from __future__ import annotations

import optax

from .._directional import check_same_structure
from ._gradient import check_options, regularize

__all__ = ["transform"]


def transform(
    method: str = "forward",
    *,
    gamma=None,
    eps=None,
    flood_level=None,
    has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Gradient regularization as an optax transformation, to chain with any optimizer.

    Turns the plain gradient $g_0$ (the `updates` it receives) into the
    regularised gradient of `fd.gr.gradient` (same methods, same formulas),
    e.g. $g_0 + \gamma\,(\nabla L(\theta + \varepsilon g_0) - g_0)/\varepsilon$
    for `"forward"`; put it first in `optax.chain(fd.gr.transform(...), optax.adam(1e-3))`.

    `update(updates, state, params, *, grad_fn=None, value=None)` needs, as
    extra keyword arguments (which `optax.chain` forwards):

    - `grad_fn`: `params -> grad L(params)` on the same batch (or
      `(grad, aux)` with `has_aux=True`; that aux is dropped) for every
      method but flooding. Double backprop differentiates through it
      (reverse over reverse), so it must be differentiable; it re-evaluates
      the gradient inside, so the function form `fd.gr.value_and_gradient`,
      which shares it, is the cheaper way to run double backprop. With equinox,
      pass the arrays (`eqx.filter(model, eqx.is_inexact_array)`) as `params` and
      let `grad_fn` recombine them with the static part.
    - `value`: the loss $L(\theta)$, for `"flooding"`.

    Everything is traceable: `update` can run inside `jax.jit` (build
    `grad_fn` inside the jitted step, closing over the batch). The state is
    empty; auxiliary outputs (batch statistics) stay with the caller, who
    computed them with $g_0$.

    Arguments:
        method: `"double_backprop"`, `"forward"` (default), `"backward"`,
            `"central"`, `"sam"`, `"unnormalized_sam"` or `"flooding"`.
        gamma: penalty strength $\gamma \ge 0$ (GR methods).
        eps: difference step $\varepsilon > 0$ (GR), or the SAM radius $\rho > 0$.
        flood_level: flood level $b$ (`"flooding"`).
        has_aux: `grad_fn` returns `(grad, aux)`.

    Returns:
        An `optax.GradientTransformationExtraArgs` with an empty state.

    Raises:
        ValueError: at construction, as `fd.gr.gradient` (unknown method,
            missing/unused hyperparameter, `eps <= 0`, `gamma < 0`); at
            `update`, a missing `params`, `grad_fn` or `value`, or updates
            whose structure differs from `params`.
    """
    where = "fd.gr.transform"
    check_options(method, gamma, eps, flood_level, where)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, grad_fn=None, value=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{where}: update needs params (the point the gradient was taken at); got None.")
        check_same_structure(updates, params, name="updates", where=where)
        if method == "flooding":
            if value is None:
                raise ValueError(
                    f"{where}: method='flooding' needs the loss value: call update(grads, state, params, value=loss)."
                )
            grad_fn_ = None
        else:
            if grad_fn is None or not callable(grad_fn):
                raise ValueError(
                    f"{where}: method={method!r} needs grad_fn, a function params -> grad L(params) on the same "
                    f"batch; got {grad_fn!r}. Call update(grads, state, params, grad_fn=jax.grad(lambda p: loss(p, batch)))."
                )
            grad_fn_ = (lambda p: grad_fn(p)[0]) if has_aux else grad_fn
        out = regularize(method, grad_fn_, params, updates, value, gamma=gamma, eps=eps, flood_level=flood_level)
        return out, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)

