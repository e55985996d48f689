r"""Boundary conditions and ghost-cell padding: the one place edges are handled.

Every operator in jaxfd is "pad an axis with ghost cells, then apply the
interior stencil by slicing". This module owns the padding.

Ghost values on a wall are built from the polynomial $P$ that matches the
first interior cells and the boundary condition at the face. With `order=q`
the polynomial has degree $q-1$ and the ghosts are exact for polynomials of
degree $< q$:

* the face value $P(0)$ comes from the condition: given directly
  (Dirichlet), or solved from $\alpha P(0) + \beta\,\partial_n P(0) = g$ with
  $\partial_n P(0)$ from a one-sided formula on the face and $q-1$ interior
  cells (Neumann, Robin), or extrapolated from $q$ interior cells
  (`Extrapolate`);
* ghost $k$ (half a cell plus $k-1$ cells outside the face) is $P$ evaluated
  there, from the face value and $q-1$ interior cells (Fornberg weights).

For $q = 2$ these are the classic second-order ghost cells
($u_{-1} = 2g - u_0$ for Dirichlet, $u_{-1} = u_0 + h g$ for Neumann), which
keep the second-order Laplacian symmetric.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._stencil import fornberg_weights

__all__ = [
    "AbstractBoundaryCondition",
    "Periodic",
    "Dirichlet",
    "Neumann",
    "Robin",
    "Extrapolate",
    "normalize_bc",
    "periodic_axes",
    "GhostPadded",
    "ghost_pad",
    "pad",
]


def _concrete_or_none(x):
    """x as a numpy array if it is concrete, else None (traced under jit/grad)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


class AbstractBoundaryCondition(eqx.Module):
    """Base class of boundary conditions. Concrete conditions are final."""


class Periodic(AbstractBoundaryCondition):
    """Periodic wrap-around. Must be given on both sides of an axis."""


class AbstractWallCondition(AbstractBoundaryCondition):
    """A condition imposed at a wall through ghost cells.

    Subclasses say how the face value $P(0)$ of the local polynomial follows
    from the interior cells and the data of the condition.
    """

    @abc.abstractmethod
    def face_value(self, interior: list, spacing: float, order: int, dtype) -> Any:
        """Face value from interior cell layers `interior[j]` (j = 0 at the wall)."""

    def ghost_order(self, order: int) -> int:
        """Polynomial order of the ghosts this condition builds for a requested `order`."""
        return order


def _as_dtype(value, dtype):
    return jnp.asarray(value, dtype=dtype)


def _derivative_weights(order: int) -> tuple[float, np.ndarray]:
    """Weights of dP/dxi at the face from (face, cells 0..order-2), xi in cell units."""
    w = fornberg_weights(1, [0.0] + [j + 0.5 for j in range(order - 1)], x0=0.0)
    return float(w[0]), w[1:]


def _weighted_sum(weights, layers, dtype):
    total = None
    for w, layer in zip(weights, layers):
        if w == 0.0:
            continue
        term = _as_dtype(w, dtype) * layer
        total = term if total is None else total + term
    return total if total is not None else jnp.zeros_like(layers[0])


class Dirichlet(AbstractWallCondition):
    r"""Prescribed value at the wall: $u = g$ on the face.

    `value` is a scalar or an array over the face (the grid shape without the
    normal axis); it is a pytree leaf, so gradients flow into it.
    """

    value: Any = 0.0

    def face_value(self, interior, spacing, order, dtype):
        return _as_dtype(self.value, dtype)


class Neumann(AbstractWallCondition):
    r"""Prescribed outward normal derivative: $\partial u / \partial n = g$ on the face.

    The normal points out of the domain, so on the low side
    $\partial_n u = -\partial_x u$. `value` is a scalar or an array over the face.
    """

    value: Any = 0.0

    def ghost_order(self, order: int) -> int:
        # A derivative condition loses one order in the boundary-value problem
        # (the classic second-order ghost is the exception: it superconverges
        # and stays symmetric), so above second order it uses one more point.
        return order if order <= 2 else order + 1

    def face_value(self, interior, spacing, order, dtype):
        e, c = _derivative_weights(order)
        # g = -(1/h) (e P0 + c.V)  =>  P0 = -(h g + c.V) / e
        cv = _weighted_sum(c, interior, dtype)
        return -(spacing * _as_dtype(self.value, dtype) + cv) / _as_dtype(e, dtype)


class Robin(AbstractWallCondition):
    r"""Mixed condition $\alpha u + \beta\, \partial u/\partial n = g$ on the face.

    `alpha`, `beta` and `value` are scalars or arrays over the face; all three
    are pytree leaves. `alpha = beta = 0` is rejected.
    """

    alpha: Any
    beta: Any
    value: Any = 0.0

    def __check_init__(self):
        a, b = _concrete_or_none(self.alpha), _concrete_or_none(self.beta)
        if a is None or b is None:
            return
        both_zero = np.logical_and(a == 0, b == 0)
        if np.any(both_zero):
            raise ValueError(
                "Robin(alpha, beta, value) needs alpha or beta non-zero at every point of the "
                f"face; got alpha={self.alpha!r}, beta={self.beta!r}. Use alpha=1, beta=0 for "
                "a Dirichlet condition or alpha=0, beta=1 for a Neumann condition."
            )

    def ghost_order(self, order: int) -> int:
        # A derivative condition loses one order in the boundary-value problem
        # (the classic second-order ghost is the exception: it superconverges
        # and stays symmetric), so above second order it uses one more point.
        return order if order <= 2 else order + 1

    def face_value(self, interior, spacing, order, dtype):
        e, c = _derivative_weights(order)
        alpha = _as_dtype(self.alpha, dtype)
        beta = _as_dtype(self.beta, dtype)
        cv = _weighted_sum(c, interior, dtype)
        # alpha P0 - (beta/h)(e P0 + c.V) = g
        numerator = spacing * _as_dtype(self.value, dtype) + beta * cv
        return numerator / (alpha * spacing - beta * _as_dtype(e, dtype))


class Extrapolate(AbstractWallCondition):
    """No boundary data: ghosts extrapolate the interior polynomially.

    For outflow boundaries of hyperbolic problems, and for derivatives of
    quantities that carry no boundary condition of their own (the outer
    derivative of a mixed derivative).
    """

    def face_value(self, interior, spacing, order, dtype):
        w = fornberg_weights(0, [j + 0.5 for j in range(order)], x0=0.0)
        return _weighted_sum(w, interior, dtype)


def _is_bc(x) -> bool:
    return isinstance(x, AbstractBoundaryCondition)


def periodic_axes(pairs) -> tuple[bool, ...]:
    """Per axis of normalized `pairs`, whether it is periodic."""
    return tuple(isinstance(p[0], Periodic) for p in pairs)


def normalize_bc(bc, ndim: int) -> tuple[tuple[AbstractBoundaryCondition, ...], ...]:
    """One `(lo, hi)` pair of conditions per axis, from any accepted `bc` spelling.

    Accepted: one condition for every side; or a sequence with one entry per
    axis, each a condition (both sides) or a `(lo, hi)` pair.
    """
    if _is_bc(bc):
        pairs = ((bc, bc),) * ndim
    elif isinstance(bc, (tuple, list)):
        if len(bc) != ndim:
            raise ValueError(
                f"Expected one boundary condition entry per axis ({ndim} for this grid), got "
                f"{len(bc)}: {bc!r}. Pass a single condition for all sides, or a tuple of "
                f"{ndim} entries, each a condition or a (lo, hi) pair."
            )
        pairs = []
        for axis, entry in enumerate(bc):
            if _is_bc(entry):
                pairs.append((entry, entry))
            elif (
                isinstance(entry, (tuple, list))
                and len(entry) == 2
                and all(_is_bc(e) for e in entry)
            ):
                pairs.append(tuple(entry))
            else:
                raise TypeError(
                    f"Expected bc[{axis}] to be a boundary condition or a (lo, hi) pair of "
                    f"them, got {entry!r}. Example: (fd.Dirichlet(0.0), fd.Neumann(1.0))."
                )
        pairs = tuple(pairs)
    else:
        raise TypeError(
            f"Expected bc to be a boundary condition (fd.Periodic(), fd.Dirichlet(value), "
            f"fd.Neumann(value), fd.Robin(alpha, beta, value)) or a tuple of them per axis, "
            f"got {bc!r}."
        )
    for axis, (lo, hi) in enumerate(pairs):
        if isinstance(lo, Periodic) != isinstance(hi, Periodic):
            raise ValueError(
                f"Axis {axis} is periodic on one side only ({lo!r}, {hi!r}). Periodicity "
                "joins the two sides: use fd.Periodic() on both or on neither."
            )
    return pairs


def _check_face_data(bc, face_shape, axis):
    for name in ("value", "alpha", "beta"):
        data = getattr(bc, name, None)
        shape = np.shape(data)
        if len(shape) == 0:
            continue
        try:
            np.broadcast_shapes(shape, face_shape)
            ok = len(shape) <= len(face_shape)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{type(bc).__name__}.{name} on axis {axis} must be a scalar or an array over "
                f"the face, shape {face_shape} (the field shape without axis {axis}); got shape "
                f"{shape}."
            )


def _layer(u, index, axis):
    return lax.slice_in_dim(u, index, index + 1, axis=axis)


def _face_data_layer(x, axis, ndim):
    """Face data (scalar, or broadcastable to the face shape) as a full-rank cell layer."""
    if jnp.ndim(x) == 0:
        return x
    x = jnp.reshape(x, (1,) * (ndim - 1 - jnp.ndim(x)) + jnp.shape(x))
    return jnp.expand_dims(x, axis)


def _wall_ghosts(u, axis, width, bc, spacing, order, side):
    """Ghost layers beyond one wall, ordered outward (ghost 1 touches the face)."""
    n = u.shape[axis]
    order = bc.ghost_order(order)
    needed = order if isinstance(bc, Extrapolate) else order - 1
    if n < needed:
        raise ValueError(
            f"Boundary closure of order {order} on axis {axis} needs {needed} cells, the "
            f"field has {n}. Use a finer grid, a lower accuracy, or closure='standard'."
        )
    _check_face_data(bc, u.shape[:axis] + u.shape[axis + 1 :], axis)
    index = (lambda j: j) if side == 0 else (lambda j: n - 1 - j)
    interior = [_layer(u, index(j), axis) for j in range(needed)]
    bc = jax.tree_util.tree_map(lambda x: _face_data_layer(x, axis, u.ndim), bc)
    face = bc.face_value(interior, spacing, order, u.dtype)
    points = [0.0] + [j + 0.5 for j in range(order - 1)]
    ghosts = []
    for k in range(1, width + 1):
        w = fornberg_weights(0, points, x0=-(k - 0.5))
        ghost = _as_dtype(w[0], u.dtype) * face + _weighted_sum(w[1:], interior[: order - 1], u.dtype)
        ghosts.append(jnp.broadcast_to(ghost, interior[0].shape))
    return ghosts


class GhostPadded(eqx.Module):
    """A field with ghost layers along one axis, kept virtual.

    `view(start, length)` is the window `[start, start + length)` of the
    padded array `concatenate([lo, u, hi])`, built from `u` and the thin ghost
    slabs with `lax.pad` (negative padding slices, positive padding zero-fills).
    XLA fuses such pads into the stencil that consumes them, so applying a
    stencil reads `u` once and writes its result once; a materialised
    concatenate would cost an extra pass through memory per axis.
    """

    u: jax.Array
    lo: jax.Array  # ghost layers below the first cell, outermost first
    hi: jax.Array  # ghost layers above the last cell, innermost first
    axis: int = eqx.field(static=True)
    width: int = eqx.field(static=True)

    @property
    def n(self) -> int:
        return self.u.shape[self.axis]

    def _place(self, part, offset, start, length):
        """`part` (occupying padded positions [offset, offset + size)) in the window."""
        size = part.shape[self.axis]
        if offset + size <= start or offset >= start + length:
            return None
        config = [(0, 0, 0)] * part.ndim
        config[self.axis] = (offset - start, start + length - offset - size, 0)
        return lax.pad(part, jnp.zeros((), part.dtype), config)

    def view_parts(self, start: int, length: int) -> list:
        """The window as separate zero-filled pieces (ghosts and cells) that sum to it."""
        if start < 0 or start + length > self.n + 2 * self.width:
            raise ValueError(
                f"Window [{start}, {start + length}) outside the padded range "
                f"[0, {self.n + 2 * self.width})."
            )
        parts = [
            self._place(self.u, self.width, start, length),
            self._place(self.lo, 0, start, length),
            self._place(self.hi, self.width + self.n, start, length),
        ]
        return [p for p in parts if p is not None]

    def view(self, start: int, length: int):
        """Window of the padded array along the axis; other axes unchanged."""
        parts = self.view_parts(start, length)
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out

    def window(self, start: int, length: int):
        """`view(start, length)` with each ghost layer broadcast and masked in.

        The same values as `view`. XLA's CPU backend compiles a stencil that
        reads its neighbours this way into one vectorised loop; with the
        ghost slabs zero-padded to the window instead (`view`) the
        cell-wise variable-coefficient diffusion ran four times slower. The
        layers are added, `cells + where(mask, layer, 0)`, rather than
        selected over the cells, `where(mask, layer, cells)`: the adjoint of
        `fd.diffusion` is compiled from JAX's transpose of the transpose of
        this code (see `_flux_form_jvp`), and transposing turns a select of
        two operands into a sum of two half-empty selects, which compiled
        slower (0.55 against 0.49 ms per adjoint step at 512^2, one core).
        """
        out = self._place(self.u, self.width, start, length)
        if out is None:
            return self.view(start, length)
        position = None
        layers = [(j, lax.slice_in_dim(self.lo, j, j + 1, axis=self.axis)) for j in range(self.width)]
        layers += [(self.width + self.n + j, lax.slice_in_dim(self.hi, j, j + 1, axis=self.axis))
                   for j in range(self.width)]
        for at, layer in layers:
            if start <= at < start + length:
                if position is None:
                    position = lax.broadcasted_iota(jnp.int32, out.shape, self.axis)
                out = out + jnp.where(position == at - start, layer, jnp.zeros((), layer.dtype))
        return out

    def materialize(self):
        """The padded array itself (one concatenate)."""
        return jnp.concatenate([self.lo, self.u, self.hi], axis=self.axis)


def ghost_pad(u, axis: int, width: int, bc, spacing: float, order: int = 2) -> GhostPadded:
    """Ghost layers for `u` along `axis` as a `GhostPadded` (see `pad`)."""
    lo, hi = (bc, bc) if _is_bc(bc) else bc
    n = u.shape[axis]
    if isinstance(lo, Periodic):
        if n < width:
            raise ValueError(
                f"A periodic stencil of half-width {width} needs at least {width} cells on "
                f"axis {axis}; the field has {n}. Use a finer grid or a lower accuracy."
            )
        low = lax.slice_in_dim(u, n - width, n, axis=axis)
        high = lax.slice_in_dim(u, 0, width, axis=axis)
    elif width == 0:
        low = high = lax.slice_in_dim(u, 0, 0, axis=axis)
    else:
        low = jnp.concatenate(_wall_ghosts(u, axis, width, lo, spacing, order, side=0)[::-1], axis=axis)
        high = jnp.concatenate(_wall_ghosts(u, axis, width, hi, spacing, order, side=1), axis=axis)
    return GhostPadded(u, low, high, axis, width)


def pad(u, axis: int, width: int, bc, spacing: float, order: int = 2):
    """Pad `u` along `axis` with `width` ghost layers on each side.

    Arguments:
        u: field array (batch with `jax.vmap`).
        axis: the axis to pad.
        width: ghost layers per side.
        bc: a condition for both sides or a `(lo, hi)` pair.
        spacing: the grid spacing along `axis`.
        order: wall ghosts are exact for polynomials of degree `< order`
            (the local order of the closure; 2 gives the classic ghost cells).

    Returns:
        The padded array, `2 * width` longer along `axis`. Operators use the
            virtual form (`ghost_pad(...).view`) so that XLA fuses the ghosts into
            the stencil instead of writing the padded array to memory.
    """
    return ghost_pad(u, axis, width, bc, spacing, order).materialize()
