r"""Learnable, moment-constrained stencils (the PDE-Net layer) and filter application.

A `MomentStencil` approximating $\partial^\alpha$ to order $p$ fixes every
moment of total order $|\beta| \le |\alpha| + p - 1$ (the derivative's own
moment to one, the others to zero) and learns the rest. By the moment
expansion (see `jaxfd.learn.moment_matrix`),

$$
h^{-\alpha}\sum_i q[i]\, u(x + i h) = \partial^\alpha u(x)
+ \sum_{|\beta| \ge |\alpha| + p} m[\beta]\, h^{\beta - \alpha}\, \partial^\beta u(x),
$$

so whatever values the learnable moments take, the error is $O(h^p)$.
Filters are applied like every jaxfd operator: ghost cells from the boundary
conditions (`jaxfd.pad`, the only edge handler), then the interior stencil,
here one XLA convolution of the padded field (whose size in the compiled
program, forward and transposed, does not grow with the filter).
"""

from __future__ import annotations

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._boundary import Extrapolate, Periodic, normalize_bc, pad
from .._grid import Grid
from ._moments import check_multi_index, filter_from_moments

__all__ = ["apply_filter", "apply_filters", "MomentStencil"]


def _check_grid(grid, where):
    if not isinstance(grid, Grid):
        raise TypeError(f"{where}: expected a jaxfd.Grid, got {type(grid).__name__}: {grid!r}.")


def _check_field(u, grid, where):
    grid.check_field(u)
    if not jnp.issubdtype(u.dtype, jnp.floating):
        raise TypeError(f"{where}: expected a floating-point field, got dtype {u.dtype}.")


def _extend_face_data(bc, pairs, padded_axes, ndim, width, spacings, order):
    """Extend array-valued face data of `bc` (a wall condition) over the ghost layers
    already added along `padded_axes` (periodic copies on periodic axes, polynomial
    extrapolation on walled ones), so the corner ghosts have face data too."""

    def extend(x):
        if not isinstance(x, (jax.Array, np.ndarray)) or jnp.ndim(x) == 0:
            return x
        x = jnp.asarray(x)
        lead = (ndim - 1) - x.ndim  # face data is right-aligned against the face shape
        for e in padded_axes:
            i = e - lead  # face axis e (< axis) sits at position e of the face shape
            if i >= 0 and x.shape[i] > 1:
                kind = Periodic() if isinstance(pairs[e][0], Periodic) else Extrapolate()
                x = pad(x, i, width, kind, spacings[e], order)
        return x

    return jax.tree_util.tree_map(extend, bc)


def _pad_all(u, grid: Grid, pairs, width: int, order: int):
    out = u
    for axis in range(grid.ndim):
        lo, hi = pairs[axis]
        if not isinstance(lo, Periodic):
            lo, hi = (
                _extend_face_data(b, pairs, range(axis), grid.ndim, width, grid.spacing, order)
                for b in (lo, hi)
            )
        out = pad(out, axis, width, (lo, hi), grid.spacing[axis], order)
    return out


def apply_filter(filter, u, grid: Grid, *, bc, derivative=None, ghost_order: int = 2):
    r"""Apply a centred filter to a field: $\sum_i q[i]\, u(x + i h) / h^\alpha$.

    The field is padded on every axis with `(k - 1)/2` ghost layers from `bc`
    (`jaxfd.pad`; corners come from padding the axes one after the other,
    with array-valued face data extended polynomially), then the filter is
    applied as a weighted sum of shifted windows.

    Arguments:
        filter: filter of shape `(k1, ..., kd)` with odd sizes, `d = grid.ndim`
            (a traced array is fine: this is how learnable filters are applied).
        u: field of shape `grid.shape`, floating point.
        grid: the grid.
        bc: boundary conditions of `u` (one for all sides, or one entry per axis).
        derivative: multi-index $\alpha$ the filter approximates; the result is
            divided by $\prod_a h_a^{\alpha_a}$. `None` applies no scaling.
        ghost_order: wall ghosts are exact for polynomials of degree
            `< ghost_order` (see `jaxfd.pad`); ignored on periodic axes.

    Returns:
        Array of `u`'s shape and dtype (the filter is cast to `u`'s dtype).

    Raises:
        ValueError: even filter sizes, a filter with the wrong number of axes,
            a field of the wrong shape, a grid too small for the ghosts.
        TypeError: a non-grid, a non-float field.
    """
    where = "apply_filter"
    _check_grid(grid, where)
    _check_field(u, grid, where)
    q = jnp.asarray(filter)
    if q.ndim != grid.ndim:
        raise ValueError(
            f"{where}: expected a filter with one axis per grid axis ({grid.ndim}), got shape {q.shape}."
        )
    scale = 1.0
    if derivative is not None:
        alpha = check_multi_index(derivative, grid.ndim, where, "derivative")
        scale = 1.0 / math.prod(h**a for h, a in zip(grid.spacing, alpha))
    return apply_filters(q[None], u, grid, bc=bc, scales=(scale,), ghost_order=ghost_order)[0]


def apply_filters(filters, u, grid: Grid, *, bc, scales, ghost_order: int = 2):
    """Several filters of one size on one field: pad once, one convolution with one output
    channel per filter. `filters` has shape `(n, k, ..., k)`; `scales` holds one factor per
    filter. Returns shape `(n, *grid.shape)`. (Validation as in `apply_filter`.)"""
    where = "apply_filter"
    q = jnp.asarray(filters)
    if any(k % 2 == 0 for k in q.shape[1:]):
        raise ValueError(
            f"{where}: expected odd filter sizes (a centred filter), got shape {q.shape[1:]}. Even "
            "sizes centre between grid points; use size k + 1."
        )
    if len(set(q.shape[1:])) != 1:
        raise ValueError(f"{where}: expected the same filter size on every axis, got shape {q.shape[1:]}.")
    if isinstance(ghost_order, bool) or not isinstance(ghost_order, (int, np.integer)) or ghost_order < 1:
        raise ValueError(f"{where}: expected ghost_order to be a positive integer, got {ghost_order!r}.")
    pairs = normalize_bc(bc, grid.ndim)
    k = q.shape[1]
    r = (k - 1) // 2
    scale = np.asarray(scales, dtype=np.float64).reshape((-1,) + (1,) * grid.ndim)
    q = q.astype(u.dtype) * jnp.asarray(scale, u.dtype)
    if r > 0:
        for a in range(grid.ndim):
            if grid.shape[a] < k and isinstance(pairs[a][0], Periodic):
                raise ValueError(
                    f"{where}: a filter of size {k} on a periodic axis needs at least {k} cells; "
                    f"axis {a} has {grid.shape[a]}. Use a finer grid or a smaller filter."
                )
        padded = _pad_all(u, grid, pairs, r, int(ghost_order))
    else:
        padded = u
    return _correlate(padded, q)


def _correlate(padded, q):
    """`out[c, x] = sum_j q[c, j] padded[x + j]` (valid part): one XLA convolution with an
    output channel per filter, whose HLO (and compile time, forward and transposed) does
    not grow with the filter size."""
    nd = padded.ndim
    if nd > 3:  # more than 3 axes: the explicit sum of shifted windows
        shape = tuple(p - k + 1 for p, k in zip(padded.shape, q.shape[1:]))
        outs = []
        for c in range(q.shape[0]):
            out = None
            for idx in itertools.product(*(range(k) for k in q.shape[1:])):
                term = q[(c,) + idx] * lax.slice(padded, idx, tuple(i + n for i, n in zip(idx, shape)))
                out = term if out is None else out + term
            outs.append(out)
        return jnp.stack(outs)
    spatial = "DHW"[3 - nd:]
    dn = lax.conv_dimension_numbers((1, 1) + padded.shape, q[:, None].shape,
                                    ("NC" + spatial, "OI" + spatial, "NC" + spatial))
    out = lax.conv_general_dilated(padded[None, None], q[:, None], (1,) * nd, "VALID",
                                   dimension_numbers=dn, precision=lax.Precision.HIGHEST)
    return out[0]


def _multi_indices(size: int, ndim: int):
    return list(itertools.product(range(size), repeat=ndim))


class MomentStencil(eqx.Module):
    r"""A learnable filter that approximates $\partial^\alpha$ to a guaranteed order.

    The filter's moments $m[\beta]$ ($\beta_a <$ `size`) with total order
    $|\beta| \le |\alpha| + p - 1$ are fixed ($m[\alpha] = 1$, the others 0),
    where $p$ is `accuracy`; the moments of higher total order are the
    learnable parameters (`free`). For **every** value of the learnable
    moments the filter approximates $\partial^\alpha$ with error $O(h^p)$
    away from walls (see the module notes); at walls the ghost cells are
    exact for polynomials of degree `< ghost_order` (default
    $p + |\alpha|$, so the local error there is $O(h^p)$ too, for Dirichlet
    ghosts; Neumann/Robin ghosts use one more point, see `jaxfd.pad`).

    With all learnable moments zero (the initial state) the filter is the
    tensor product of the Fornberg stencils of the full support, the most
    accurate filter of that size: e.g. `MomentStencil((2,), size=5,
    accuracy=2)` starts as the accuracy-4 five-point second derivative and
    may learn its fourth moment.

    Arguments:
        derivative: the multi-index $\alpha$, one entry per grid axis (an int
            in 1-D): `(2, 0)` is $\partial^2/\partial x^2$ on a 2-D grid.
        size: the filter size per axis, odd; default the smallest odd size
            that fits, `|alpha| + accuracy` rounded up to odd.
        accuracy: the guaranteed order $p \ge 1$.
        symmetric: give the filter the symmetry of $\partial^\alpha$: along each
            axis it is even when $\alpha_a$ is even and odd when $\alpha_a$ is
            odd, i.e. the moments with $\beta_a - \alpha_a$ odd are fixed to zero
            too, so the filter's Fourier symbol is real for even and imaginary
            for odd derivatives, as the derivative's own symbol is. About halves
            the learnable moments; the guaranteed order is unchanged.
        ghost_order: polynomial order of wall ghosts (default `accuracy + |alpha|`).
        dtype: floating dtype of the learnable moments (default: JAX's default float).

    Attributes:
        free: the learnable moments, shape `(num_free,)`, in the order of
            `free_indices` (a pytree leaf: train it).
        order: the guaranteed order of accuracy (`accuracy`).

    Raises:
        ValueError: a filter size too small for the derivative and accuracy
            (it must be at least `|alpha| + accuracy`), an even size, a
            non-positive accuracy, a malformed multi-index.
    """

    free: jax.Array
    derivative: tuple[int, ...] = eqx.field(static=True)
    size: int = eqx.field(static=True)
    accuracy: int = eqx.field(static=True)
    ghost_order: int = eqx.field(static=True)
    free_indices: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    symmetric: bool = eqx.field(static=True)

    def __init__(self, derivative, size: int | None = None, accuracy: int = 2, *,
                 symmetric: bool = False, ghost_order: int | None = None, dtype=None):
        where = "MomentStencil"
        alpha = check_multi_index(derivative, None, where, "derivative")
        if isinstance(accuracy, bool) or not isinstance(accuracy, (int, np.integer)) or accuracy < 1:
            raise ValueError(f"{where}: expected accuracy to be a positive integer, got {accuracy!r}.")
        accuracy = int(accuracy)
        needed = sum(alpha) + accuracy
        if size is None:
            size = needed + (1 - needed % 2)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
            raise ValueError(
                f"{where}: expected an odd positive filter size (a centred filter), got size={size!r}; "
                f"the smallest that fits derivative {alpha} at accuracy {accuracy} is "
                f"{needed + (1 - needed % 2)}."
            )
        size = int(size)
        if size < needed:
            smallest = needed + (1 - needed % 2)
            raise ValueError(
                f"{where}: a filter of size {size} is too small for derivative {alpha} at accuracy "
                f"{accuracy}: the moments of total order <= {needed - 1} must be fixed, which needs "
                f"size >= {needed}. Use size={smallest} or lower the accuracy."
            )
        if ghost_order is None:
            ghost_order = needed
        if isinstance(ghost_order, bool) or not isinstance(ghost_order, (int, np.integer)) or ghost_order < 1:
            raise ValueError(f"{where}: expected ghost_order to be a positive integer, got {ghost_order!r}.")
        fixed_degree = needed - 1
        free = tuple(
            b for b in _multi_indices(size, len(alpha))
            if sum(b) > fixed_degree and (not symmetric or all((bi - ai) % 2 == 0 for bi, ai in zip(b, alpha)))
        )
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.free = jnp.zeros((len(free),), dtype)
        self.derivative = alpha
        self.size = size
        self.accuracy = accuracy
        self.ghost_order = int(ghost_order)
        self.free_indices = free
        self.symmetric = bool(symmetric)

    @property
    def order(self) -> int:
        """The guaranteed order of accuracy."""
        return self.accuracy

    @property
    def ndim(self) -> int:
        """Number of grid axes the filter acts on."""
        return len(self.derivative)

    def moments(self) -> jax.Array:
        """All moments of the filter, shape `(size,) * ndim`: fixed ones and learned ones."""
        m = jnp.zeros((self.size,) * self.ndim, self.free.dtype)
        m = m.at[self.derivative].set(1.0)
        if self.free_indices:
            idx = tuple(np.array(i) for i in zip(*self.free_indices))
            m = m.at[idx].set(self.free)
        return m

    def filter(self) -> jax.Array:
        """The current filter, shape `(size,) * ndim` (differentiable in `free`)."""
        return filter_from_moments(self.moments())

    def __call__(self, u, grid: Grid, *, bc) -> jax.Array:
        r"""$\partial^\alpha u$ approximated by the learned filter (error $O(h^p)$).

        Arguments:
            u: field of shape `grid.shape`.
            grid: the grid (its number of axes must equal `len(derivative)`).
            bc: boundary conditions of `u`.

        Returns:
            Array of `u`'s shape and dtype.
        """
        _check_grid(grid, "MomentStencil")
        if grid.ndim != self.ndim:
            raise ValueError(
                f"MomentStencil: the stencil is for derivative {self.derivative} ({self.ndim}-D), "
                f"the grid is {grid.ndim}-D; build it with one derivative entry per grid axis."
            )
        return apply_filter(self.filter(), u, grid, bc=bc, derivative=self.derivative,
                            ghost_order=self.ghost_order)


def derivative_name(alpha: tuple[int, ...], field: str = "u") -> str:
    """`u`, `u_x`, `u_xx`, `u_xy`, ... for a multi-index (axes named x, y, z, then x3, x4...)."""
    if sum(alpha) == 0:
        return field
    names = ["x", "y", "z"] + [f"x{i}" for i in range(3, len(alpha))]
    return field + "_" + "".join(names[a] * n for a, n in enumerate(alpha))

