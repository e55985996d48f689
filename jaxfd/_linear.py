r"""The linear view of an operator: matrix-free map, transpose, diagonal, sparse matrix.

Stencil operators couple each cell only to cells within a small distance
(the bandwidth), so a few probing vectors recover their exact diagonal and
every non-zero entry: cells are coloured so that no two cells of one colour
are both within the bandwidth of the same row, and one application of the
operator to the indicator of each colour yields one entry per row
(Curtis-Powell-Reid colouring, here on a structured grid).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

__all__ = ["LinearOperator"]

_PROBES_PER_SIDE = 4


class LinearOperator(eqx.Module):
    r"""A linear map on fields of one shape, viewed matrix-free.

    Arguments:
        matvec: a function `u -> A u`, linear in `u` (for an affine operator
            such as a Laplacian with non-zero boundary values, use
            `LinearOperator.from_affine`).
        like: an array (or `jax.ShapeDtypeStruct`) with the shape and dtype
            of the input.
        bandwidth: per-axis coupling distance (a row `i` depends on columns `j`
            with `|i_a - j_a| <= bandwidth[a]`, circularly on periodic axes).
            Detected by probing when not given.
        periodic: per-axis flags for wrap-around coupling; detected with the
            bandwidth when not given.

    The operator is an equinox Module: pass it through `jax.jit` freely.
    `diagonal()` works under `jit`; `to_sparse()` assembles on the host.
    """

    matvec: Callable = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    dtype: np.dtype = eqx.field(static=True)
    bandwidth: tuple[int, ...] | None = eqx.field(static=True, default=None)
    periodic: tuple[bool, ...] | None = eqx.field(static=True, default=None)

    def __init__(self, matvec: Callable, like, bandwidth: Sequence[int] | None = None,
                 periodic: Sequence[bool] | None = None):
        if not callable(matvec):
            raise TypeError(f"Expected matvec to be callable, got {type(matvec).__name__}.")
        self.matvec = matvec
        self.shape = tuple(like.shape)
        self.dtype = np.dtype(like.dtype)
        if bandwidth is not None and len(bandwidth) != len(self.shape):
            raise ValueError(
                f"Expected one bandwidth per axis ({len(self.shape)}), got {bandwidth!r}."
            )
        if periodic is not None and len(periodic) != len(self.shape):
            raise ValueError(
                f"Expected one periodic flag per axis ({len(self.shape)}), got {periodic!r}."
            )
        self.bandwidth = None if bandwidth is None else tuple(int(b) for b in bandwidth)
        self.periodic = None if periodic is None else tuple(bool(p) for p in periodic)

    @classmethod
    def from_affine(cls, fn: Callable, like, **kwargs) -> tuple["LinearOperator", jax.Array]:
        """Split an affine `fn(u) = A u + c` into `(LinearOperator(A), c)`."""
        zero = jnp.zeros(like.shape, like.dtype)
        offset = fn(zero)

        def linear_part(u):
            return fn(u) - fn(jnp.zeros_like(u))

        return cls(linear_part, like, **kwargs), offset

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __call__(self, u):
        return self.mv(u)

    def mv(self, u):
        """A u."""
        if tuple(u.shape) != self.shape:
            raise ValueError(
                f"Expected an input of shape {self.shape} for this operator, got {tuple(u.shape)}."
            )
        return self.matvec(u)

    def transpose(self) -> "LinearOperator":
        """The adjoint in the Euclidean inner product, by `jax.linear_transpose`."""
        struct = jax.ShapeDtypeStruct(self.shape, self.dtype)
        transposed = jax.linear_transpose(self.matvec, struct)

        def rmatvec(v):
            (out,) = transposed(v)
            return out

        bw = self.bandwidth
        return LinearOperator(rmatvec, struct, bandwidth=bw, periodic=self.periodic)

    @property
    def T(self) -> "LinearOperator":
        return self.transpose()

    # --- structure ---------------------------------------------------------

    def structure(self) -> tuple[tuple[int, ...], tuple[bool, ...]]:
        """(bandwidth, periodic) per axis: given, or detected by probing."""
        if self.bandwidth is not None and self.periodic is not None:
            return self.bandwidth, self.periodic
        bandwidth, periodic = _detect_structure(self.matvec, self.shape, self.dtype)
        if self.bandwidth is not None:
            bandwidth = self.bandwidth
        if self.periodic is not None:
            periodic = self.periodic
        return bandwidth, periodic

    def _coloring(self):
        bandwidth, periodic = self.structure()
        moduli = []
        for n, b, p in zip(self.shape, bandwidth, periodic):
            m = 2 * b + 1
            if m >= n:
                m = n
            elif p:
                # wrap-around must keep colours consistent: m has to divide n
                m = next(d for d in range(m, n + 1) if n % d == 0)
            moduli.append(m)
        return tuple(bandwidth), tuple(periodic), tuple(moduli)

    def num_colors(self) -> int:
        """Operator applications that `diagonal` and `to_sparse` cost."""
        return math.prod(self._coloring()[2])

    def _color_index(self, moduli):
        idx = jnp.zeros(self.shape, jnp.int32)
        stride = 1
        for a in reversed(range(len(self.shape))):
            coord = jax.lax.broadcasted_iota(jnp.int32, self.shape, a)
            idx = idx + (coord % moduli[a]) * stride
            stride *= moduli[a]
        return idx

    def diagonal(self):
        """The exact diagonal, by one application per colour (works under jit)."""
        _, _, moduli = self._coloring()
        colors = self._color_index(moduli)
        ncolors = math.prod(moduli)

        def body(c, diag):
            probe = (colors == c).astype(self.dtype)
            return diag + jnp.where(colors == c, self.matvec(probe), 0)

        return jax.lax.fori_loop(0, ncolors, body, jnp.zeros(self.shape, self.dtype))

    def to_sparse(self) -> jsparse.BCOO:
        """The assembled matrix as `jax.experimental.sparse.BCOO` (N x N, row-major cells).

        Runs on concrete values (not under jit). Entries that are exactly zero
        are dropped.
        """
        bandwidth, periodic, moduli = self._coloring()
        colors = np.asarray(self._color_index(moduli))
        apply = jax.jit(self.matvec)
        rows_all, cols_all, vals_all = [], [], []
        grids = np.indices(self.shape)
        for c in range(math.prod(moduli)):
            probe = jnp.asarray((colors == c).astype(self.dtype))
            y = np.asarray(apply(probe))
            # colour digits per axis
            digits, rem = [], c
            for m in reversed(moduli):
                digits.append(rem % m)
                rem //= m
            digits = digits[::-1]
            valid = y != 0
            col_coords = []
            for a, (n, b, p, m) in enumerate(zip(self.shape, bandwidth, periodic, moduli)):
                i = grids[a]
                if m == n:
                    j = np.broadcast_to(np.asarray(digits[a]), i.shape)
                else:
                    d = (digits[a] - i + b) % m - b
                    j = i + d
                    if p:
                        j = j % n
                valid &= (j >= 0) & (j < n)
                col_coords.append(j)
            rows = np.ravel_multi_index(tuple(grids[a][valid] for a in range(len(self.shape))), self.shape)
            cols = np.ravel_multi_index(tuple(j[valid] for j in col_coords), self.shape)
            rows_all.append(rows)
            cols_all.append(cols)
            vals_all.append(y[valid])
        rows = np.concatenate(rows_all)
        cols = np.concatenate(cols_all)
        vals = np.concatenate(vals_all).astype(self.dtype)
        indices = np.stack([rows, cols], axis=1).astype(np.int32)
        return jsparse.BCOO((jnp.asarray(vals), jnp.asarray(indices)), shape=(self.size, self.size))

    def to_dense(self):
        """The N x N matrix (small problems and tests only)."""
        eye = jnp.eye(self.size, dtype=self.dtype).reshape((self.size,) + self.shape)
        cols = jax.vmap(self.matvec)(eye)
        return cols.reshape(self.size, self.size).T


def _detect_structure(matvec, shape, dtype):
    """Per-axis bandwidth and wrap-around, from the responses to a few point probes.

    The probe at the centre gives the interior bandwidth. Probes near the
    corners see the walls: a response across the wrap counts as periodic only
    when its circular distance is within the interior bandwidth (what a
    translation-invariant periodic stencil does); anything else is taken as
    linear coupling, which colours more conservatively but always exactly.
    """
    cache = {}

    def support(pos):
        if pos in cache:
            return cache[pos]
        probe = np.zeros(shape, dtype)
        probe[pos] = 1
        # concrete even when called while tracing (e.g. diagonal() under jit)
        with jax.ensure_compile_time_eval():
            response = np.abs(np.asarray(matvec(jnp.asarray(probe))))
        # round-off from affine splits (fn(u) - fn(0)) is not coupling
        threshold = 64 * np.finfo(np.dtype(dtype)).eps * response.max()
        cache[pos] = np.nonzero(response > threshold)
        return cache[pos]

    center = tuple(n // 2 for n in shape)
    sc = support(center)
    interior = [int(np.abs(sc[a] - center[a]).max()) if sc[a].size else 0 for a in range(len(shape))]
    # Walk in from each corner until a probe only couples within the interior
    # bandwidth: past that point the wall closures no longer reach.
    positions = set()
    for side in (0, 1):
        for t in range(max(shape)):
            pos = tuple(min(t, n - 1) if side == 0 else max(n - 1 - t, 0) for n in shape)
            positions.add(pos)
            sp = support(pos)
            reach = [int(np.abs(sp[a] - pos[a]).max()) if sp[a].size else 0 for a in range(len(shape))]
            beyond = all(t > b for b in interior)
            if t >= _PROBES_PER_SIDE and beyond and all(r <= b for r, b in zip(reach, interior)):
                break
    linear_bw = list(interior)
    circular_bw = list(interior)
    wraps = [False] * len(shape)
    for pos in sorted(positions):
        sp = support(pos)
        for a, n in enumerate(shape):
            if sp[a].size == 0:
                continue
            linear = np.abs(sp[a] - pos[a])
            circular = np.minimum(linear, n - linear)
            wraps[a] |= bool(np.any(circular < linear))
            linear_bw[a] = max(linear_bw[a], int(linear.max()))
            circular_bw[a] = max(circular_bw[a], int(circular.max()))
    periodic = tuple(w and cb <= ib for w, cb, ib in zip(wraps, circular_bw, interior))
    bandwidth = tuple(cb if p else lb for p, cb, lb in zip(periodic, circular_bw, linear_bw))
    return bandwidth, periodic
