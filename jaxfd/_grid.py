"""Uniform, cell-centred Cartesian grids: static metadata only."""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np

__all__ = ["Grid"]


def _default_float():
    return jnp.result_type(float)


class Grid(eqx.Module):
    r"""A uniform, cell-centred grid on a box $\prod_a [lo_a, hi_a]$.

    Axis `a` has `shape[a]` cells of width $h_a = (hi_a - lo_a)/n_a$; the
    unknowns live at the cell centres $x_i = lo_a + (i + \tfrac12) h_a$, so
    boundaries lie half a cell outside the first and last unknowns. The same
    grid serves periodic axes (period $hi_a - lo_a$) and walls with
    Dirichlet, Neumann or Robin conditions, imposed by ghost cells (see
    `jaxfd.pad`). Cell centring is what makes the second-order Laplacian
    symmetric for every boundary kind and what the fast sine/cosine solvers
    diagonalise.

    A `Grid` is static metadata (hashable, never traced): close over it or
    pass it to jitted functions freely.

    Arguments:
        shape: number of cells per axis, positive integers.
        extent: one `(lo, hi)` pair per axis with `lo < hi`. A single pair is
            accepted for a 1-D grid.

    Raises:
        ValueError: non-positive sizes, `lo >= hi`, non-finite bounds, or a
            `shape`/`extent` length mismatch.
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    extent: tuple[tuple[float, float], ...] = eqx.field(static=True)

    def __init__(self, shape: int | Sequence[int], extent: Sequence):
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            shape = (shape,)
        try:
            shape = tuple(shape)
        except TypeError:
            raise TypeError(
                f"Expected shape to be a sequence of positive integers, got {shape!r}."
            ) from None
        for n in shape:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(
                    f"Expected every grid size to be a positive integer, got shape={shape!r}."
                )
        if len(shape) == 0:
            raise ValueError("Expected at least one axis; got an empty shape.")
        extent = tuple(extent)
        if len(extent) == 2 and all(np.ndim(e) == 0 for e in extent):
            extent = (extent,)
        if len(extent) != len(shape):
            raise ValueError(
                f"Expected one (lo, hi) pair per axis: shape has {len(shape)} axes but "
                f"extent has {len(extent)} entries ({extent!r}). Pass e.g. "
                f"extent={tuple((0.0, 1.0) for _ in shape)!r}."
            )
        pairs = []
        for axis, pair in enumerate(extent):
            try:
                lo, hi = (float(v) for v in pair)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Expected extent[{axis}] to be a (lo, hi) pair of numbers, got {pair!r}."
                ) from None
            if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
                raise ValueError(
                    f"Expected finite lo < hi on axis {axis}, got ({lo}, {hi}). Swap or "
                    "correct the bounds."
                )
            pairs.append((lo, hi))
        self.shape = tuple(int(n) for n in shape)
        self.extent = tuple(pairs)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Total number of cells."""
        return math.prod(self.shape)

    @property
    def lengths(self) -> tuple[float, ...]:
        """`hi - lo` per axis."""
        return tuple(hi - lo for lo, hi in self.extent)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Cell width `h = (hi - lo) / n` per axis (Python floats)."""
        return tuple((hi - lo) / n for (lo, hi), n in zip(self.extent, self.shape))

    @property
    def cell_volume(self) -> float:
        """Product of the spacings: the weight of the grid inner product."""
        return math.prod(self.spacing)

    @property
    def coords(self) -> tuple:
        """Cell-centre coordinates, one 1-D array per axis, in the default float dtype."""
        return tuple(jnp.asarray(c, dtype=_default_float()) for c in self.coords_numpy)

    @property
    def coords_numpy(self) -> tuple[np.ndarray, ...]:
        """Cell-centre coordinates as float64 numpy arrays (for setup and plotting)."""
        return tuple(
            lo + (np.arange(n) + 0.5) * h
            for (lo, _), n, h in zip(self.extent, self.shape, self.spacing)
        )

    def mesh(self, dtype=None) -> tuple:
        """N-D coordinate arrays of the cell centres (`indexing="ij"`)."""
        dtype = _default_float() if dtype is None else dtype
        return tuple(
            jnp.asarray(m, dtype=dtype) for m in np.meshgrid(*self.coords_numpy, indexing="ij")
        )

    def face_shape(self, axis: int) -> tuple[int, ...]:
        """Shape of a boundary face normal to `axis` (the grid shape without that axis)."""
        axis = self.check_axis(axis)
        return self.shape[:axis] + self.shape[axis + 1 :]

    def check_axis(self, axis) -> int:
        """Validate an axis index (negative allowed) and return it non-negative."""
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"Expected an integer axis, got {axis!r}.")
        if not -self.ndim <= axis < self.ndim:
            raise ValueError(
                f"Axis {axis} does not exist on a {self.ndim}-D grid; expected an axis in "
                f"[{-self.ndim}, {self.ndim - 1}]."
            )
        return int(axis) % self.ndim

    def check_field(self, u, name: str = "u", leading: tuple[int, ...] = ()) -> None:
        """Raise a ValueError unless `u.shape == leading + grid.shape`."""
        shape = getattr(u, "shape", None)
        if shape is None:
            raise TypeError(f"Expected {name} to be an array, got {type(u).__name__}.")
        expected = tuple(leading) + self.shape
        if tuple(shape) != expected:
            what = f"{leading} + grid shape {self.shape}" if leading else f"the grid shape"
            raise ValueError(
                f"Expected {name} with shape {expected} ({what}), got {tuple(shape)}. "
                "Fields are plain arrays over the grid; batch with jax.vmap instead of "
                "adding axes."
            )
        if not jnp.issubdtype(u.dtype, jnp.inexact):
            raise TypeError(
                f"Expected {name} to have a floating-point dtype, got {u.dtype}. Convert it "
                "with u.astype(jnp.float32) (or float64)."
            )
