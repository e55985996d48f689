r"""Gradient estimators from function values (and from jvps), and Hessian-vector products.

Every difference quotient is `jaxfd.directional_difference` of $f$ (or of
$\nabla f$) along a direction. With $D_u f(x) \approx \nabla f(x)\cdot u$ that
difference (step $\mu$), $d$ the number of parameters:

| estimator | estimate | evaluations of $f$ |
| --- | --- | --- |
| `coordinate` | $\sum_{i\in S} D_{e_i} f(x)\, e_i$ over the active coordinates $S$ | $\lvert S\rvert + 1$ (forward), $2\lvert S\rvert$ (central) |
| `randomized` | $\frac{\phi}{q}\sum_{j=1}^q D_{u_j} f(x)\, u_j$, $\phi = d$ (sphere), $1$ (Gaussian) | $q + 1$ (forward), $2q$ (central) |
| `forward_gradient` | $\frac1K\sum_{k=1}^K (\nabla f(x)\cdot v_k)\, v_k$ by `jax.jvp` | $K$ jvps |
| `directional` | $D_{u_j} f(x)$ for given $u_j$ (or exact jvps) | $k + 1$ / $2k$ / $k$ jvps |
| `hvp` | $H v$ exactly (jvp of grad) or as $D_v \nabla f(x)$ | 1 jvp of grad / 2 gradients |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._directional import check_positive, check_same_structure, directional_difference, tree_norm

__all__ = ["coordinate", "randomized", "forward_gradient", "directional", "hvp"]

_SCHEMES = ("forward", "backward", "central")


# --- helpers ------------------------------------------------------------------------------------


def check_count(value, name: str, where: str) -> int:
    """A Python integer >= 1 (number of directions, tangents, steps)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: {name} must be a Python integer >= 1 (it fixes array shapes); got {value!r}.")
    if value < 1:
        raise ValueError(f"{where}: expected {name} >= 1, got {name}={value}; ask for at least one.")
    return int(value)


def check_scheme(scheme, where: str) -> None:
    if scheme not in _SCHEMES:
        raise ValueError(f"{where}: scheme must be one of {_SCHEMES}, got {scheme!r}.")


def check_batch_size(batch_size, where: str) -> None:
    if batch_size is not None:
        check_count(batch_size, "batch_size", where)


def flatten(x, where: str):
    """Flat vector of the inexact arrays of `x` and the map back (None at the other leaves)."""
    arrays = eqx.filter(x, eqx.is_inexact_array)
    if not jax.tree_util.tree_leaves(arrays):
        raise ValueError(f"{where}: x has no floating-point array leaves to estimate a gradient for; got {x!r}.")
    flat, unravel = ravel_pytree(arrays)
    return flat, unravel


def check_scalar_function(f, x, where: str) -> None:
    out = eqx.filter_eval_shape(f, x)
    shape = getattr(out, "shape", None)
    if shape != ():
        raise ValueError(
            f"{where}: f must return a scalar (a loss); got {out!r}. Reduce it first, e.g. with jnp.sum or a norm."
        )


def batched_map(fn, xs, batch_size):
    """`vmap` over the leading axis, or `lax.map` in chunks of `batch_size` (bounded memory)."""
    if batch_size is None:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=batch_size)


def active_indices(mask, where: str) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """Flat indices of the True entries of a concrete boolean mask pytree, and its leaf shapes."""
    leaves = jax.tree_util.tree_leaves(mask)
    try:
        arrays = [np.asarray(leaf) for leaf in leaves]
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as err:
        raise TypeError(
            f"{where}: mask must be concrete (numpy or a concrete jax array): it fixes how many coordinates "
            "are evaluated. Build it outside jit."
        ) from err
    for a in arrays:
        if a.dtype != np.bool_:
            raise TypeError(f"{where}: mask leaves must be boolean arrays, got dtype {a.dtype}; use e.g. p != 0.")
    flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, dtype=bool)
    return tuple(int(i) for i in np.flatnonzero(flat)), tuple(a.shape for a in arrays)


def check_mask_matches(shapes, x, where: str) -> None:
    x_shapes = tuple(jnp.shape(leaf) for leaf in jax.tree_util.tree_leaves(eqx.filter(x, eqx.is_inexact_array)))
    if tuple(shapes) != x_shapes:
        raise ValueError(
            f"{where}: mask must have one boolean array per parameter array, of the same shape; expected shapes "
            f"{x_shapes}, got {tuple(shapes)}. Build it with jax.tree_util.tree_map over "
            "eqx.filter(params, eqx.is_inexact_array)."
        )


def sample_directions(key, num: int, d: int, dtype, distribution: str, where: str):
    if distribution == "gaussian":
        return jax.random.normal(key, (num, d), dtype=dtype)
    if distribution == "sphere":
        u = jax.random.normal(key, (num, d), dtype=dtype)
        return u / jnp.linalg.norm(u, axis=1, keepdims=True)
    if distribution == "rademacher":
        return jax.random.rademacher(key, (num, d), dtype=dtype)
    raise ValueError(f"{where}: unknown distribution {distribution!r}.")


# --- estimators ---------------------------------------------------------------------------------


def coordinate_from_indices(f, x, mu, active, *, scheme, f0, batch_size, where):
    flat, unravel = flatten(x, where)
    d = flat.size
    dtype = flat.dtype
    if len(active) == 0:
        return unravel(jnp.zeros(d, dtype=dtype))
    if scheme != "central" and f0 is None:
        f0 = f(x)

    def one(i):
        e = unravel(jnp.zeros(d, dtype=dtype).at[i].set(1))
        return directional_difference(f, x, e, mu, scheme=scheme, f0=f0)

    idx = jnp.asarray(np.asarray(active, dtype=np.int32))
    values = batched_map(one, idx, batch_size)
    return unravel(jnp.zeros(d, dtype=dtype).at[idx].set(values.astype(dtype)))


def coordinate(
    f: Callable,
    x: Any,
    mu,
    mask: Any = None,
    *,
    scheme: Literal["forward", "backward", "central"] = "forward",
    f0=None,
    batch_size: int | None = None,
):
    r"""Coordinate-wise finite-difference estimate of $\nabla f(x)$ (DeepZero's estimator).

    $\hat g_i = (f(x + \mu e_i) - f(x))/\mu$ for every active coordinate $i$
    (`scheme="forward"`; `"backward"` likewise, `"central"` uses
    $(f(x + \mu e_i) - f(x - \mu e_i))/(2\mu)$), and $\hat g_i = 0$ for the others.
    Error $O(\mu)$ per active coordinate for the one-sided schemes,
    $O(\mu^2)$ for the central one. Costs $\lvert S\rvert + 1$ evaluations of
    $f$ (one-sided) or $2\lvert S\rvert$ (central).

    Arguments:
        f: `f(x) -> scalar`, any function (a black box: only its values are used).
        x: the point, any pytree (equinox models: only inexact arrays are perturbed).
        mu: the difference step, `> 0`.
        mask: optional boolean pytree with one array per parameter array (the
            structure of `eqx.filter(x, eqx.is_inexact_array)`): only True
            coordinates are evaluated (DeepZero's sparsity). Must be concrete.
        scheme: `"forward"`, `"backward"` or `"central"`.
        f0: `f(x)` if already known (saves one evaluation).
        batch_size: evaluate this many coordinates at a time with `lax.map`
            (bounded memory); `None` vmaps all of them at once.

    Returns:
        The estimate, with the structure of `eqx.filter(x, eqx.is_inexact_array)`.

    Raises:
        ValueError: `mu <= 0`, unknown scheme, a non-scalar `f`, or a mask
            whose arrays do not match the parameters.
        TypeError: a traced or non-boolean mask.
    """
    where = "fd.zo.coordinate"
    check_positive(mu, "mu", where)
    check_scheme(scheme, where)
    check_batch_size(batch_size, where)
    check_scalar_function(f, x, where)
    if mask is None:
        flat, _ = flatten(x, where)
        active = tuple(range(flat.size))
    else:
        active, shapes = active_indices(mask, where)
        check_mask_matches(shapes, x, where)
    return coordinate_from_indices(f, x, mu, active, scheme=scheme, f0=f0, batch_size=batch_size, where=where)


def randomized(
    f: Callable,
    x: Any,
    key,
    num_directions: int,
    mu,
    *,
    distribution: Literal["sphere", "gaussian"] = "sphere",
    scheme: Literal["forward", "backward", "central"] = "forward",
    f0=None,
    batch_size: int | None = None,
):
    r"""Randomized finite-difference estimate of $\nabla f(x)$ from `num_directions` random directions.

    $\hat g = \frac{\phi}{q}\sum_{j=1}^{q} \frac{f(x + \mu u_j) - f(x)}{\mu}\, u_j$,
    with $u_j$ uniform on the unit sphere and $\phi = d$ (`"sphere"`), or
    $u_j \sim N(0, I)$ and $\phi = 1$ (`"gaussian"`); $d$ is the number of
    parameters. As $\mu \to 0$ the estimate is unbiased with mean squared error
    $\mathbb E\lVert\hat g - \nabla f\rVert^2 = \frac{d - 1}{q}\lVert\nabla f\rVert^2$
    (sphere) or $\frac{d + 1}{q}\lVert\nabla f\rVert^2$ (Gaussian): relative
    error about $\sqrt{(d-1)/q}$. For $\mu > 0$ it is unbiased for the
    gradient of a smoothed $f$ (bias $O(\mu)$; $O(\mu^2)$ with `"central"`).
    Costs $q + 1$ evaluations (one-sided) or $2q$ (central).

    Arguments:
        f: `f(x) -> scalar`.
        x: the point, any pytree.
        key: a `jax.random` key.
        num_directions: $q \ge 1$, a Python integer.
        mu: the difference step, `> 0` (absolute: the perturbation has length
            $\mu\lVert u_j\rVert$).
        distribution: `"sphere"` (default) or `"gaussian"`.
        scheme: `"forward"`, `"backward"` or `"central"`.
        f0: `f(x)` if already known.
        batch_size: directions per `lax.map` chunk; `None` vmaps all.

    Returns:
        The estimate, with the structure of `eqx.filter(x, eqx.is_inexact_array)`.

    Raises:
        ValueError: `mu <= 0`, `num_directions < 1`, unknown scheme or
            distribution, a non-scalar `f`.
        TypeError: a non-integer `num_directions`.
    """
    where = "fd.zo.randomized"
    q = check_count(num_directions, "num_directions", where)
    check_positive(mu, "mu", where)
    check_scheme(scheme, where)
    check_batch_size(batch_size, where)
    if distribution not in ("sphere", "gaussian"):
        raise ValueError(f"{where}: distribution must be 'sphere' or 'gaussian', got {distribution!r}.")
    check_scalar_function(f, x, where)
    flat, unravel = flatten(x, where)
    d = flat.size
    u = sample_directions(key, q, d, flat.dtype, distribution, where)
    if scheme != "central" and f0 is None:
        f0 = f(x)
    diffs = batched_map(lambda ui: directional_difference(f, x, unravel(ui), mu, scheme=scheme, f0=f0), u, batch_size)
    scale = float(d if distribution == "sphere" else 1) / q
    return unravel(scale * (diffs.astype(flat.dtype) @ u))


def forward_gradient(
    f: Callable,
    x: Any,
    key,
    num_tangents: int = 1,
    *,
    distribution: Literal["gaussian", "rademacher"] = "gaussian",
    batch_size: int | None = None,
):
    r"""Forward gradient: $\frac1K\sum_{k=1}^K (\nabla f(x)\cdot v_k)\, v_k$, one `jax.jvp` per tangent.

    With $v_k \sim N(0, I)$ (`"gaussian"`, Baydin et al. 2022) or Rademacher
    signs, the estimate is unbiased, $\mathbb E[(\nabla f\cdot v)v] = \nabla f$,
    with second moment $\mathbb E\lVert(\nabla f\cdot v)v\rVert^2 = (d + 2)\lVert\nabla f\rVert^2$
    (Gaussian) or $d\lVert\nabla f\rVert^2$ (Rademacher) per tangent; the
    average over $K$ tangents divides the variance by $K$. No reverse pass,
    no difference step: $f$ must be differentiable in forward mode.

    Arguments:
        f: `f(x) -> scalar`.
        x: the point, any pytree.
        key: a `jax.random` key.
        num_tangents: $K \ge 1$, a Python integer.
        distribution: `"gaussian"` (default) or `"rademacher"`.
        batch_size: tangents per `lax.map` chunk; `None` vmaps all.

    Returns:
        The estimate, with the structure of `eqx.filter(x, eqx.is_inexact_array)`.

    Raises:
        ValueError: `num_tangents < 1`, unknown distribution, a non-scalar `f`.
        TypeError: a non-integer `num_tangents`.
    """
    where = "fd.zo.forward_gradient"
    k = check_count(num_tangents, "num_tangents", where)
    check_batch_size(batch_size, where)
    if distribution not in ("gaussian", "rademacher"):
        raise ValueError(f"{where}: distribution must be 'gaussian' or 'rademacher', got {distribution!r}.")
    check_scalar_function(f, x, where)
    flat, unravel = flatten(x, where)
    v = sample_directions(key, k, flat.size, flat.dtype, distribution, where)

    def one(vi):
        _, tangent = eqx.filter_jvp(f, (x,), (unravel(vi),))
        return tangent

    slopes = batched_map(one, v, batch_size)
    return unravel((slopes.astype(flat.dtype) @ v) / float(k))


def _split_directions(directions, x, where):
    """Whether `directions` is one direction (shapes of x) or a stack (leading axis k); check it."""
    d_arrays = eqx.filter(directions, eqx.is_inexact_array)
    x_arrays = eqx.filter(x, eqx.is_inexact_array)
    if jax.tree_util.tree_structure(d_arrays) != jax.tree_util.tree_structure(x_arrays):
        check_same_structure(directions, x, name="directions", where=where)  # raises with the structures
    d_shapes = [jnp.shape(a) for a in jax.tree_util.tree_leaves(d_arrays)]
    x_shapes = [jnp.shape(a) for a in jax.tree_util.tree_leaves(x_arrays)]
    if d_shapes == x_shapes:
        return False
    leading = {s[0] for s, xs in zip(d_shapes, x_shapes) if len(s) == len(xs) + 1 and s[1:] == xs}
    if len(leading) == 1 and all(len(s) == len(xs) + 1 and s[1:] == xs for s, xs in zip(d_shapes, x_shapes)):
        return True
    raise ValueError(
        f"{where}: directions must have the shapes of the parameters {x_shapes} (one direction) or those shapes "
        f"with one common leading axis (a stack of directions); got {d_shapes}."
    )


def directional(
    f: Callable,
    x: Any,
    directions: Any,
    mu=None,
    *,
    scheme: Literal["forward", "backward", "central"] = "forward",
    f0=None,
    batch_size: int | None = None,
):
    r"""Directional derivatives $\nabla f(x)\cdot u_j$ along given directions.

    Exact by `jax.jvp` when `mu` is None; otherwise the difference
    $(f(x + \mu u_j) - f(x))/\mu$ (or backward / central, errors $O(\mu)$ /
    $O(\mu^2)$), through `jaxfd.directional_difference`.

    Arguments:
        f: `f(x) -> scalar`.
        x: the point, any pytree.
        directions: one direction (a pytree like `x`'s arrays) or a stack of
            them (every leaf with one extra leading axis of the same length).
        mu: the difference step `> 0`, or None for exact jvps.
        scheme: `"forward"`, `"backward"` or `"central"` (finite differences only).
        f0: `f(x)` if already known.
        batch_size: directions per `lax.map` chunk; `None` vmaps all.

    Returns:
        A scalar for one direction, an array of shape `(k,)` for a stack of `k`.

    Raises:
        ValueError: a direction whose structure or shapes do not match `x`,
            `mu <= 0`, unknown scheme, non-scalar `f`.
    """
    where = "fd.zo.directional"
    if mu is not None:
        check_positive(mu, "mu", where)
    check_scheme(scheme, where)
    check_batch_size(batch_size, where)
    check_scalar_function(f, x, where)
    stacked = _split_directions(directions, x, where)
    if mu is None:
        def one(u):
            return eqx.filter_jvp(f, (x,), (eqx.filter(u, eqx.is_inexact_array),))[1]
    else:
        if scheme != "central" and f0 is None:
            f0 = f(x)

        def one(u):
            return directional_difference(f, x, u, mu, scheme=scheme, f0=f0)

    if not stacked:
        return one(directions)
    return batched_map(one, eqx.filter(directions, eqx.is_inexact_array), batch_size)


def hvp(
    f: Callable,
    x: Any,
    v: Any,
    method: Literal["exact", "finite_difference"] = "exact",
    *,
    eps=None,
    scheme: Literal["forward", "backward", "central"] = "central",
    step: Literal["absolute", "relative"] = "relative",
):
    r"""Hessian-vector product $H v = \nabla^2 f(x)\, v$, exact or by a difference of gradients.

    `"exact"`: forward over reverse, `jax.jvp` of `jax.grad(f)` (one jvp of
    a gradient). `"finite_difference"`: $(\nabla f(x + h v) - \nabla f(x))/h$
    (`scheme="forward"`, error $O(h)$) or $(\nabla f(x + hv) - \nabla f(x - hv))/(2h)$
    (`"central"`, the default, error $O(h^2)$), through
    `jaxfd.directional_difference`; gradients only, so it works where
    forward mode does not (custom_vjp, callbacks).

    Arguments:
        f: `f(x) -> scalar`, differentiable in reverse mode.
        x: the point, any pytree.
        v: the vector, a pytree like `x`'s arrays.
        method: `"exact"` (default) or `"finite_difference"`.
        eps: the step of the difference (`"finite_difference"` only). With
            `step="relative"` (default) the perturbation $h v$ has length
            `eps`; `None` picks $u^{1/3}\max(1, \lVert x\rVert)$ for the central
            scheme and $u^{1/2}\max(1, \lVert x\rVert)$ for one-sided ones
            ($u$ the unit round-off of `x`'s dtype), the usual balance of
            truncation and round-off.
        scheme: `"forward"`, `"backward"` or `"central"`.
        step: `"relative"` (default) or `"absolute"` ($h$ = `eps`).

    Returns:
        $H v$, with the structure of `eqx.filter_grad(f)(x)`.

    Raises:
        ValueError: unknown method or scheme, `eps <= 0`, `eps` given with
            `"exact"`, or a `v` whose structure or shapes differ from `x`.
    """
    where = "fd.zo.hvp"
    if method not in ("exact", "finite_difference"):
        raise ValueError(f"{where}: method must be 'exact' or 'finite_difference', got {method!r}.")
    check_scheme(scheme, where)
    check_same_structure(v, x, name="v", where=where)
    grad_f = eqx.filter_grad(f)
    if method == "exact":
        if eps is not None:
            raise ValueError(f"{where}: eps is only used by method='finite_difference'; got eps={eps!r}. Drop it.")
        return eqx.filter_jvp(grad_f, (x,), (eqx.filter(v, eqx.is_inexact_array),))[1]
    if eps is None:
        flat, _ = flatten(x, where)
        unit = float(jnp.finfo(flat.dtype).eps)
        power = 1.0 / 3.0 if scheme == "central" else 0.5
        eps = unit**power * jnp.maximum(1.0, tree_norm(x)).astype(flat.dtype)
    else:
        check_positive(eps, "eps", where)
    return directional_difference(grad_f, x, v, eps, scheme=scheme, step=step)
