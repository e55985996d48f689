r"""Moments of finite-difference filters (PDE-Net): the linear map filter <-> moments.

A filter $q$ of size $k_1 \times \dots \times k_d$ is indexed by offsets
$i_a \in \{-(k_a-1)/2, \dots, (k_a-1)/2\}$ (integers for odd sizes,
half-integers for even ones). Its moment of multi-index
$\beta = (\beta_1, \dots, \beta_d)$, $0 \le \beta_a < k_a$, is

$$
m[\beta] = \sum_{i} \prod_a \frac{i_a^{\beta_a}}{\beta_a!}\, q[i].
$$

Taylor-expanding $u$ about a point shows what the filter computes on a grid
of spacings $h_a$:

$$
\sum_i q[i]\, u(x + i h) = \sum_{\beta} m[\beta]\, h^\beta\, \partial^\beta u(x),
$$

so $q / h^\alpha$ approximates $\partial^\alpha u$ exactly when
$m[\alpha] = 1$ and the other moments of low total order vanish; the first
non-vanishing moment of higher total order sets the order of accuracy
(`stencil_order`).

The map is a Kronecker product of one 1-D matrix per axis,
$V[\beta, i] = i^\beta / \beta!$, invertible for distinct offsets. Its
inverse is known in closed form: column $\beta$ of $V^{-1}$ is the Fornberg
stencil of the $\beta$-th derivative on the filter's offsets (that stencil
has moment $\beta$ equal to one and all other moments below $k$ zero). Both
matrices are built in float64 numpy at trace time and cast to the dtype of
the array they are applied to, so the maps are differentiable and jit like
any other linear map.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .._stencil import fornberg_weights

__all__ = [
    "filter_offsets",
    "moment_transform",
    "moment_matrix",
    "filter_from_moments",
    "stencil_order",
    "check_multi_index",
]


def _check_size(size, where: str) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{where}: expected a filter size that is a positive integer, got {size!r}.")
    return int(size)


def filter_offsets(size: int) -> np.ndarray:
    """Offsets `i - (size - 1)/2`, `i = 0..size-1`, of a 1-D filter (float64 numpy)."""
    size = _check_size(size, "filter_offsets")
    return np.arange(size, dtype=np.float64) - 0.5 * (size - 1)


@functools.lru_cache(maxsize=64)
def _transform_cached(size: int) -> tuple[np.ndarray, np.ndarray]:
    offsets = filter_offsets(size)
    powers = np.arange(size)
    factorials = np.array([math.factorial(int(b)) for b in powers], dtype=np.float64)
    forward = offsets[None, :] ** powers[:, None] / factorials[:, None]
    inverse = np.stack([fornberg_weights(int(b), offsets) for b in powers], axis=1)
    forward.setflags(write=False)
    inverse.setflags(write=False)
    return forward, inverse


def moment_transform(size: int) -> tuple[np.ndarray, np.ndarray]:
    r"""The 1-D moment matrix $V$ and its inverse for filters of `size` points.

    $V[\beta, i] = i^\beta / \beta!$ over the offsets of `filter_offsets(size)`;
    `moments = V @ filter` and `filter = V_inv @ moments`. Column $\beta$ of
    `V_inv` is `fornberg_weights(beta, offsets)`.

    Arguments:
        size: number of filter points, a positive integer.

    Returns:
        `(V, V_inv)`, read-only float64 numpy arrays of shape `(size, size)`.

    Raises:
        ValueError: a size that is not a positive integer.
    """
    size = _check_size(size, "moment_transform")
    return _transform_cached(size)


def _as_float_array(x, where: str):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{where}: expected a real floating-point array, got dtype {x.dtype}.")
    if x.ndim == 0:
        raise ValueError(
            f"{where}: expected an array with one axis per dimension (shape (k,) in 1-D, "
            "(k1, k2) in 2-D), got a scalar."
        )
    return x


def _apply_per_axis(x, matrices):
    """Apply `matrices[a]` (numpy, k_a x k_a) along axis `a` of `x`."""
    for axis, mat in enumerate(matrices):
        m = jnp.asarray(mat, dtype=x.dtype)
        x = jnp.moveaxis(jnp.tensordot(m, x, axes=([1], [axis])), 0, axis)
    return x


def moment_matrix(filter) -> jax.Array:
    r"""The moments $m[\beta]$ of a filter, $\beta_a < k_a$ (PDE-Net's moment matrix).

    $m[\beta] = \sum_i \prod_a i_a^{\beta_a}/\beta_a!\; q[i]$ over the
    centred offsets of the filter (see the module notes). Linear in the
    filter and differentiable.

    Arguments:
        filter: a filter of shape `(k,)` (1-D), `(k1, k2)` (2-D) or any
            `(k1, ..., kd)`, any sizes (even sizes have half-integer offsets).

    Returns:
        The moments, an array of the filter's shape and floating dtype
            (integer input is promoted to the default float dtype).

    Raises:
        ValueError: a scalar filter.
        TypeError: a complex filter.
    """
    q = _as_float_array(filter, "moment_matrix")
    return _apply_per_axis(q, [moment_transform(k)[0] for k in q.shape])


def check_multi_index(index, ndim: int | None, where: str, what: str = "multi-index") -> tuple[int, ...]:
    """A tuple of non-negative integers (an int is accepted in 1-D), of length `ndim` if given."""
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        index = (int(index),)
    try:
        index = tuple(index)
    except TypeError:
        raise TypeError(
            f"{where}: expected a {what} (a tuple of non-negative integers, one per axis, e.g. "
            f"(2, 0)), got {index!r}."
        ) from None
    if not index or not all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= 0 for i in index
    ):
        raise ValueError(
            f"{where}: expected a {what} of non-negative integers, one per axis (e.g. (2, 0) for "
            f"d^2/dx^2 in 2-D), got {index!r}."
        )
    if ndim is not None and len(index) != ndim:
        raise ValueError(
            f"{where}: expected a {what} with {ndim} entries (one per axis), got {index!r}."
        )
    return tuple(int(i) for i in index)


def _normalize_size(size, ndim: int, where: str) -> tuple[int, ...]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size),) * ndim
    try:
        size = tuple(size)
    except TypeError:
        raise TypeError(f"{where}: expected size to be an integer or a tuple of integers, got {size!r}.") from None
    if len(size) != ndim:
        raise ValueError(f"{where}: expected {ndim} filter sizes (one per axis), got size={size!r}.")
    return tuple(_check_size(s, where) for s in size)


def _beyond_message(where, order, axis, size):
    return (
        f"{where}: a moment of order {order} along axis {axis} was requested, but a filter of "
        f"size {size} along that axis carries moments of order 0..{size - 1} only. Use a "
        f"filter of size >= {order + 1} or drop that moment."
    )


def filter_from_moments(moments, size=None) -> jax.Array:
    r"""The filter whose moments (of order below the filter size) are `moments`.

    Inverse of `moment_matrix`: $q = (V_1^{-1} \otimes \dots \otimes V_d^{-1})\, m$.
    With $m[\alpha] = 1$ and every other moment zero the result is the
    tensor product of Fornberg stencils of the largest support, e.g. for
    `size=5`, `moments={(2, 0): 1.0}` the accuracy-4 stencil of
    $\partial^2/\partial x^2$ on the middle row of a 5 x 5 filter (divide by
    $h^2$ when applying it).

    Arguments:
        moments: either an array of moments (axis `a` holds orders
            `0..moments.shape[a]-1`), or a mapping from multi-indices (tuples,
            or ints in 1-D) to values; moments not given are zero.
        size: the filter size, an int (every axis) or one int per axis.
            Required for a mapping; for an array it defaults to the array's
            shape, and a larger size pads the array with zero moments.

    Returns:
        The filter, an array of shape `size` in the moments' floating dtype
            (the default float dtype for integer or Python-number moments).

    Raises:
        ValueError: a moment of order `>= size` along some axis (a filter of
            `k` points has moments of order `0..k-1` only), a missing `size`
            for a mapping, malformed multi-indices, a scalar array.
        TypeError: a size or key of the wrong type.
    """
    where = "filter_from_moments"
    if isinstance(moments, Mapping):
        if not moments:
            raise ValueError(f"{where}: expected at least one moment, got an empty mapping.")
        keys = [check_multi_index(k, None, where, "moment index") for k in moments]
        ndim = len(keys[0])
        if any(len(k) != ndim for k in keys):
            raise ValueError(f"{where}: moment indices of different lengths: {list(moments)}.")
        if size is None:
            raise ValueError(
                f"{where}: pass size= with a mapping of moments (the filter size is not implied); "
                f"e.g. filter_from_moments({{{keys[0]}: 1.0}}, size=5)."
            )
        shape = _normalize_size(size, ndim, where)
        for k in keys:
            for axis, (order, s) in enumerate(zip(k, shape)):
                if order >= s:
                    raise ValueError(_beyond_message(where, order, axis, s))
        values = [jnp.asarray(v) for v in moments.values()]
        dtypes = [v.dtype for v in values if jnp.issubdtype(v.dtype, jnp.floating)]
        dtype = jnp.result_type(*dtypes) if dtypes else jnp.result_type(float)
        m = jnp.zeros(shape, dtype)
        for k, v in zip(keys, values):
            m = m.at[k].set(v.astype(dtype))
    else:
        m = _as_float_array(moments, where)
        if size is not None:
            shape = _normalize_size(size, m.ndim, where)
            for axis, (given, s) in enumerate(zip(m.shape, shape)):
                if given > s:
                    raise ValueError(_beyond_message(where, given - 1, axis, s))
            m = jnp.pad(m, [(0, s - g) for g, s in zip(m.shape, shape)])
    return _apply_per_axis(m, [moment_transform(k)[1] for k in m.shape])


def stencil_order(filter, derivative, *, rtol: float = 1e-9) -> float:
    r"""Order of accuracy of `filter` as an approximation of $\partial^\alpha$.

    Applied as $h^{-|\alpha|} \sum_i q[i] u(x + i h)$, the filter has error
    $O(h^p)$ with $p = \min\{|\beta| : \beta \ne \alpha,\ m[\beta] \ne 0\} - |\alpha|$
    over all multi-indices $\beta$ (moments computed directly, also beyond
    the filter size), provided $m[\alpha] = 1$. Concrete values only (numpy,
    float64); a moment counts as zero below `rtol * max|q|`.

    Arguments:
        filter: a concrete filter of shape `(k1, ..., kd)`.
        derivative: the multi-index $\alpha$ (an int in 1-D).
        rtol: relative threshold under which a moment is taken as zero.

    Returns:
        The order $p$ (a float: `math.inf` for a filter exact on every
            polynomial, `0.0` for a filter that is not consistent with
            $\partial^\alpha$ at all).

    Raises:
        ValueError: a derivative multi-index of the wrong length.
    """
    q = np.asarray(filter, dtype=np.float64)
    alpha = check_multi_index(derivative, q.ndim, "stencil_order", "derivative")
    offsets = [filter_offsets(k) for k in q.shape]
    scale = float(np.max(np.abs(q))) if q.size else 0.0
    tol = rtol * max(scale, np.finfo(np.float64).tiny)
    target = sum(alpha)
    max_degree = target + 2 * sum(q.shape) + 2

    def moment(beta):
        out = q
        for axis in range(q.ndim - 1, -1, -1):
            w = offsets[axis] ** beta[axis] / math.factorial(beta[axis])
            out = np.tensordot(out, w, axes=([axis], [0]))
        return float(out)

    if abs(moment(alpha) - 1.0) > max(tol, rtol):
        return 0.0
    for degree in range(max_degree + 1):
        for beta in _multi_indices_of_degree(degree, q.ndim):
            if beta == alpha:
                continue
            if abs(moment(beta)) > tol:
                return float(max(degree - target, 0))
    return math.inf


def _multi_indices_of_degree(degree: int, ndim: int):
    for combo in itertools.product(range(degree + 1), repeat=ndim):
        if sum(combo) == degree:
            yield combo
