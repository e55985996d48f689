r"""Black-box multigrid for $-\nabla\cdot(k \nabla u) = f$ on cell-centred grids.

The cycle is built from the operator's stencil, not from the geometry, so it
stays robust when $k$ jumps by many orders of magnitude between cells:

* **Stencils by probing.** Every level stores its operator as a stencil of
  at most $3^d$ coefficient fields, $A_{i,i+o}$ for offsets
  $o \in \{-1, 0, 1\}^d$. The finest one is read from the flux-form operator
  (the same discretisation as `fd.diffusion`) with $3^d$ coloured probes.
* **Coarsening.** Every axis is halved: the coarse unknowns are the fine
  cells with even indices on all axes (vertex-style coarsening of the cell
  centres, as in Dendy's black-box multigrid). An odd size along a wall axis
  is padded with one decoupled virtual cell; periodic axes must stay even.
  Coarsening stops at `max_coarse` cells or less, where a dense inverse
  (precomputed as data) solves the coarsest problem.
* **Operator-dependent prolongation.** A fine cell that is odd along the
  axes $S$ takes its value from its neighbours in those axes, which lie on
  coarser "lines": $u_i = -\sum_{o \ne 0} \hat a_{i,o} u_{i+o} / \hat a_{i,0}$
  with the stencil collapsed (summed) over the other axes. Cells odd along
  one axis are interpolated first, then those odd along two, and so on. The
  weights follow flux continuity: across a jump the value is carried by the
  side with the large coefficient, which linear interpolation gets badly
  wrong. Rows of a pure-Neumann or periodic operator sum to zero, so the
  weights sum to one and constants are interpolated exactly.
* **Galerkin coarse operators** $A_c = P^T A P$, computed matrix-free by
  probing with $3^d$ coloured coarse fields (a $3^d$ stencil again, so the
  hierarchy closes). Restriction is $R = P^T$.
* **Smoother**: Gauss-Seidel, multicoloured so that it vectorises: red-black
  on the finest level (a star stencil couples only cells whose index sums
  differ in parity), $2^d$ colours (the parity of the index on each axis) on
  the $3^d$-stencil coarse levels. Colours run in forward order before the
  coarse correction and in reverse order after it, so the V-cycle is a
  symmetric positive definite preconditioner for CG.

All arrays the cycle needs (stencils, inverse diagonals, prolongation
weights, the coarsest inverse) are computed once by the constructor and are
pytree leaves, so a cycle built with a traced coefficient (inside `jit`) is
built inside the program, and one built outside is passed in as data.
Smoothing sweeps run in `lax.fori_loop`s, so the compiled program grows with
the number of levels only.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._boundary import Dirichlet, Neumann, Periodic, normalize_bc, periodic_axes
from .._grid import Grid
from .._operators import _face_tuple, flux_form_diffusion
from ._krylov import AbstractLinearSolver, _check_tols, _norm, iterate

__all__ = ["Multigrid", "MultigridSolver"]


# --- static index bookkeeping -----------------------------------------------

def _box(d):
    """All offsets in {-1, 0, 1}^d (row-major)."""
    return tuple(itertools.product((-1, 0, 1), repeat=d))


def _star(d):
    return tuple(o for o in _box(d) if sum(map(abs, o)) <= 1)


def _parities(d):
    """All parities in {0, 1}^d, ordered by the number of odd axes (C cells first)."""
    return tuple(sorted(itertools.product((0, 1), repeat=d), key=lambda p: (sum(p), p)))


def _flat(p):
    """Index of parity `p` in the block layout."""
    return sum(v << (len(p) - 1 - a) for a, v in enumerate(p))


def _neighbour(p, o):
    """Block parity and block shift of the cell at offset `o` from a cell of parity `p`."""
    q = tuple((pa + oa) % 2 for pa, oa in zip(p, o))
    s = tuple((pa + oa) // 2 for pa, oa in zip(p, o))
    return q, s


# --- array helpers ----------------------------------------------------------

def _halo(x, periodic):
    """Pad the trailing axes by one cell: wrapped copies on periodic axes, zeros beyond walls."""
    lead = x.ndim - len(periodic)
    if not any(periodic):
        return jnp.pad(x, [(0, 0)] * lead + [(1, 1)] * len(periodic))
    for a, per in enumerate(periodic):
        widths = [(0, 0)] * x.ndim
        widths[lead + a] = (1, 1)
        x = jnp.pad(x, widths, mode="wrap" if per else "constant")
    return x


def _window(padded, s):
    """`x[I + s]` over the trailing axes, from the haloed `padded = _halo(x)` (|s_a| <= 1)."""
    lead = padded.ndim - len(s)
    return padded[(slice(None),) * lead + tuple(slice(1 + sa, n - 1 + sa)
                                                  for sa, n in zip(s, padded.shape[lead:]))]


def _to_blocks(u):
    """(2 n_0, ..., 2 n_{d-1}) -> (2^d, n_0, ..., n_{d-1}); block `_flat(p)` holds u[2 I + p]."""
    d = u.ndim
    half = tuple(n // 2 for n in u.shape)
    split = u.reshape(tuple(itertools.chain.from_iterable((n, 2) for n in half)))
    perm = tuple(2 * a + 1 for a in range(d)) + tuple(2 * a for a in range(d))
    return split.transpose(perm).reshape((2**d,) + half)


def _from_blocks(blocks):
    """Inverse of `_to_blocks`."""
    d = blocks.ndim - 1
    half = blocks.shape[1:]
    split = blocks.reshape((2,) * d + half)
    perm = tuple(itertools.chain.from_iterable((d + a, a) for a in range(d)))
    return split.transpose(perm).reshape(tuple(2 * n for n in half))


def _pad_to(u, shape):
    """Zero-pad the trailing axes of `u` at their high ends up to `shape`."""
    extra = [(0, 0)] * (u.ndim - len(shape)) + [(0, t - n) for n, t in zip(u.shape[-len(shape):], shape)]
    if not any(hi for _, hi in extra):
        return u
    return jnp.pad(u, extra)


def _crop(u, shape):
    if tuple(u.shape[-len(shape):]) == tuple(shape):
        return u
    return u[(Ellipsis,) + tuple(slice(0, n) for n in shape)]


def _probe_stencil(apply, shape, periodic, dtype, offsets):
    """The stencil coefficients `A[i, i + o]` of a linear operator with bandwidth 1 per axis.

    One application per colour, cells coloured by their index modulo `m_a`
    per axis (`m_a >= 3`, dividing the size on periodic axes), so a row's
    neighbours all have different colours. Returns (len(offsets), *shape).
    """
    d = len(shape)
    moduli = []
    for n, per in zip(shape, periodic):
        if per:
            m = next((m for m in range(3, n + 1) if n % m == 0), n)
        else:
            m = min(3, n)
        moduli.append(m)
    padded = tuple(-(-n // m) * m for n, m in zip(shape, moduli))
    colors = list(itertools.product(*(range(m) for m in moduli)))
    # colour number of every cell, from iotas (cheap to build inside a compiled program)
    color_id = jnp.zeros(shape, jnp.int32)
    stride = 1
    for a in reversed(range(d)):
        color_id = color_id + (lax.broadcasted_iota(jnp.int32, shape, a) % moduli[a]) * stride
        stride *= moduli[a]
    numbers = lax.broadcasted_iota(jnp.int32, (len(colors),) + tuple(shape), 0)
    probes = (numbers == color_id[None]).astype(dtype)
    responses = lax.map(apply, probes)  # (C, *shape); a loop: one copy of `apply` compiled
    # split every axis into (block, residue) and bring the residues forward:
    # (C, m_0, ..., m_{d-1}, K_0, ..., K_{d-1}), K_a = ceil(n_a / m_a)
    responses = _pad_to(responses, padded)
    split = responses.reshape((len(colors),) + tuple(
        itertools.chain.from_iterable((n // m, m) for n, m in zip(padded, moduli))))
    perm = (0,) + tuple(2 + 2 * a for a in range(d)) + tuple(1 + 2 * a for a in range(d))
    table = split.transpose(perm).reshape((len(colors) * math.prod(moduli), -1))
    # the neighbour at offset o of a cell with residues r has colour (r + o) mod m:
    # one static gather picks A[i, i + o] for every offset
    residues = np.indices(moduli).reshape(d, -1)
    rows = []
    for o in offsets:
        color = np.zeros(residues.shape[1], np.int64)
        for a in range(d):
            color = color * moduli[a] + (residues[a] + o[a]) % moduli[a]
        rows.append(color * math.prod(moduli) + np.arange(residues.shape[1]))
    picked = table[np.concatenate(rows).astype(np.int32)]  # (len(offsets) * M, prod K)
    picked = picked.reshape((len(offsets),) + tuple(moduli) + tuple(n // m for n, m in zip(padded, moduli)))
    perm = (0,) + tuple(itertools.chain.from_iterable((1 + d + a, 1 + a) for a in range(d)))
    out = _crop(picked.transpose(perm).reshape((len(offsets),) + padded), shape)
    if any(m < 3 and not per for m, per in zip(moduli, periodic)):
        # fewer than 3 cells on a wall axis: the colour of an offset beyond the wall
        # is a real cell's, so mask those entries (tiny grids only)
        index = np.indices(shape)
        valid = np.stack([np.all([(index[a] + o[a] >= 0) & (index[a] + o[a] < shape[a])
                                  for a in range(d) if not periodic[a]] or [True], axis=0)
                          for o in offsets])
        out = jnp.where(jnp.asarray(valid), out, 0)
    return out


def _stencil_to_dense(stencil, offsets, shape, periodic):
    """The (N, N) matrix of a stencil (each matrix entry once, also where a short periodic
    axis makes two offsets reach the same cell)."""
    d = len(shape)
    size = math.prod(shape)
    index = np.indices(shape).reshape(d, -1)
    rows, cols, picks = [], [], []
    for j, o in enumerate(offsets):
        target = index + np.asarray(o)[:, None]
        valid = np.ones(size, bool)
        for a in range(d):
            if periodic[a]:
                target[a] %= shape[a]
            else:
                valid &= (target[a] >= 0) & (target[a] < shape[a])
        rows.append(np.arange(size)[valid])
        cols.append(np.ravel_multi_index(tuple(target[:, valid]), shape))
        picks.append(j * size + np.arange(size)[valid])
    rows, cols, picks = map(np.concatenate, (rows, cols, picks))
    _, first = np.unique(rows * size + cols, return_index=True)
    values = stencil.reshape(-1)[picks[first].astype(np.int32)]
    dense = jnp.zeros((size, size), stencil.dtype)
    return dense.at[rows[first].astype(np.int32), cols[first].astype(np.int32)].set(values)


# --- levels -----------------------------------------------------------------

class _Level(eqx.Module):
    """One level of the hierarchy that is smoothed and coarsened further.

    `shape` is the level's size; `even` the size with one virtual cell added
    on odd wall axes. `stencil` is in the standard layout over `even` (for
    residuals), `blocks` the same in block layout (for the smoother).
    """

    shape: tuple = eqx.field(static=True)
    even: tuple = eqx.field(static=True)
    periodic: tuple = eqx.field(static=True)
    offsets: tuple = eqx.field(static=True)
    stencil: jax.Array            # (len(offsets), *even)
    blocks: jax.Array             # (2^d, len(offsets), *half)
    inverse_diagonal: jax.Array   # (2^d, *half)
    weights: tuple                # per parity p != 0 (in `_parities` order): (3^|S| - 1, *half)

    @property
    def half(self):
        return tuple(n // 2 for n in self.even)

    def apply(self, u):
        """The level's operator on a field over `even` (standard layout)."""
        padded = _halo(u, self.periodic)
        out = None
        for j, o in enumerate(self.offsets):
            term = self.stencil[j] * _window(padded, o)
            out = term if out is None else out + term
        return out

    def prolong(self, coarse):
        """P: coarse field (shape `half`) -> fine blocks (2^d, *half)."""
        d = len(self.even)
        out = {(0,) * d: coarse}
        padded = {}
        for p, w in zip(_parities(d)[1:], self.weights):
            acc = None
            for j, o in enumerate(_collapsed_offsets(p)):
                q, s = _neighbour(p, o)
                if q not in padded:
                    padded[q] = _halo(out[q], self.periodic)
                term = w[j] * _window(padded[q], s)
                acc = term if acc is None else acc + term
            out[p] = acc
        return jnp.stack([out[p] for p in itertools.product((0, 1), repeat=d)])

    def restrict(self, blocks):
        """R = P^T: fine blocks -> coarse field (`prolong` run backwards, each window shifted
        the other way)."""
        d = len(self.even)
        acc = {p: blocks[_flat(p)] for p in itertools.product((0, 1), repeat=d)}
        for p, w in reversed(tuple(zip(_parities(d)[1:], self.weights))):
            for j, o in enumerate(_collapsed_offsets(p)):
                q, s = _neighbour(p, o)
                term = _window(_halo(w[j] * acc[p], self.periodic), tuple(-v for v in s))
                acc[q] = acc[q] + term
        return acc[(0,) * d]

    def smooth(self, blocks, rhs, sweeps, reverse):
        """`sweeps` Gauss-Seidel sweeps over the colours (in reverse order if `reverse`).

        The blocks carry a one-cell halo (zeros beyond walls, wrapped copies
        on periodic axes) that the neighbour windows read; each colour update
        rebuilds the halo of its blocks. A star stencil (the finest level)
        couples only cells whose index sums differ in parity: two colours
        (red-black), unrolled. A $3^d$ stencil couples any two parities:
        $2^d$ colours, one per loop step, the colour a traced index, so the
        program holds a single colour update (27-point stencils in 3-D would
        otherwise compile for seconds per level).
        """
        if sweeps == 0:
            return blocks
        star = all(sum(map(abs, o)) <= 1 for o in self.offsets)
        smooth = self._smooth_red_black if star else self._smooth_colored
        padded = smooth(_halo(blocks, self.periodic), rhs, sweeps, reverse)
        return padded[(slice(None),) + tuple(slice(1, n + 1) for n in self.half)]

    def _smooth_red_black(self, padded, rhs, sweeps, reverse):
        d = len(self.even)
        parities = list(itertools.product((0, 1), repeat=d))
        order = [[p for p in parities if sum(p) % 2 == c] for c in ((1, 0) if reverse else (0, 1))]
        center = self.offsets.index((0,) * d)

        def sweep(_, padded):
            padded = list(padded)
            for group in order:
                new = {}
                for p in group:
                    fp = _flat(p)
                    acc = rhs[fp]
                    for j, o in enumerate(self.offsets):
                        if j == center:
                            continue
                        q, s = _neighbour(p, o)
                        acc = acc - self.blocks[fp, j] * _window(padded[_flat(q)], s)
                    new[fp] = _halo(acc * self.inverse_diagonal[fp], self.periodic)
                for fp, value in new.items():
                    padded[fp] = value
            return tuple(padded)

        padded = tuple(padded)
        padded = sweep(0, padded) if sweeps == 1 else lax.fori_loop(0, sweeps, sweep, padded)
        return jnp.stack(padded)

    def _smooth_colored(self, padded, rhs, sweeps, reverse):
        d = len(self.even)
        ncolors = 2**d
        zero = jnp.zeros((), jnp.int32)

        def step(i, padded):
            c = (i % ncolors).astype(jnp.int32)
            p = ncolors - 1 - c if reverse else c
            bits = [(p >> (d - 1 - a)) & 1 for a in range(d)]
            acc = lax.dynamic_index_in_dim(rhs, p, axis=0, keepdims=False)
            for j, o in enumerate(self.offsets):
                if not any(o):
                    continue
                total = [bits[a] + o[a] for a in range(d)]          # in -1 .. 2
                q = [t & 1 for t in total]                           # neighbour parity
                block = sum(qa << (d - 1 - a) for a, qa in enumerate(q))
                start = [block] + [1 + ((t - qa) >> 1) for t, qa in zip(total, q)]
                window = lax.dynamic_slice(padded, start, (1,) + self.half)[0]
                coef = lax.dynamic_slice(self.blocks, [p, jnp.asarray(j, jnp.int32)] + [zero] * d,
                                         (1, 1) + self.half)[0, 0]
                acc = acc - coef * window
            new = acc * lax.dynamic_index_in_dim(self.inverse_diagonal, p, axis=0, keepdims=False)
            return lax.dynamic_update_slice(padded, _halo(new, self.periodic)[None], [p] + [zero] * d)

        return lax.fori_loop(0, sweeps * ncolors, step, padded)


def _collapsed_offsets(p):
    """Offsets of the collapsed stencil of a cell of parity `p`: non-zero only along its odd axes."""
    odd = [a for a, v in enumerate(p) if v]
    out = []
    for sub in itertools.product((-1, 0, 1), repeat=len(odd)):
        if not any(sub):
            continue
        o = [0] * len(p)
        for a, v in zip(odd, sub):
            o[a] = v
        out.append(tuple(o))
    return tuple(out)


def _expand(stencil, offsets, d):
    """Dict offset -> coefficient field over the full box (missing offsets are None)."""
    table = dict.fromkeys(_box(d))
    for j, o in enumerate(offsets):
        table[o] = stencil[j]
    return table


def _make_level(stencil, offsets, shape, periodic):
    """A smoothable, coarsenable level from a stencil over `shape` (standard layout)."""
    d = len(shape)
    even = tuple(n + (n % 2) for n in shape)
    dtype = stencil.dtype
    center = offsets.index((0,) * d)
    if even != tuple(shape):
        # virtual cells: no coupling, unit diagonal
        stencil = _pad_to(stencil, even)
        real = _pad_to(jnp.ones(shape, dtype), even)
        stencil = stencil.at[center].add(1 - real)
    blocks = jax.vmap(_to_blocks)(stencil)               # (len(offsets), 2^d, *half)
    blocks = jnp.swapaxes(blocks, 0, 1)                   # (2^d, len(offsets), *half)
    diag = blocks[:, center]
    inverse_diagonal = jnp.where(diag != 0, 1 / jnp.where(diag != 0, diag, 1), 0).astype(dtype)
    # prolongation weights from the collapsed stencil of each fine parity
    weights = []
    for p in _parities(d)[1:]:
        # collapse the stencil onto the odd axes of p: a static 0/1 summation matrix
        keys = ((0,) * d,) + _collapsed_offsets(p)
        odd = [a for a, v in enumerate(p) if v]
        summation = np.zeros((len(keys), len(offsets)), np.dtype(dtype))
        for j, o in enumerate(offsets):
            summation[keys.index(tuple(v if a in odd else 0 for a, v in enumerate(o))), j] = 1
        summation = jnp.asarray(summation).reshape(summation.shape + (1,) * d)
        collapsed = jnp.sum(summation * blocks[_flat(p)][None], axis=1)
        c0 = collapsed[:1]
        weights.append(jnp.where(c0 != 0, -collapsed[1:] / jnp.where(c0 != 0, c0, 1), 0))
    return _Level(tuple(shape), even, tuple(periodic), tuple(offsets), stencil, blocks,
                  inverse_diagonal, tuple(weights))


def _level_operator(level):
    """The level's operator on a field over `level.even` (standard layout)."""

    return level.apply


def _galerkin(level):
    """v -> P^T A P v on the coarse shape `level.half`."""

    def apply(v):
        return level.restrict(_to_blocks(level.apply(_from_blocks(level.prolong(v)))))

    return apply


def _dense_inverse(dense, singular):
    """Inverse of a symmetric matrix; for a `singular` one (null space: the constants) the
    pseudo-inverse, as the inverse of A + a e e^T minus (1/a) e e^T."""
    dense = 0.5 * (dense + dense.T)
    if not singular:
        return jnp.linalg.inv(dense)
    size = dense.shape[0]
    e = jnp.full((size,), 1 / math.sqrt(size), dense.dtype)
    a = jnp.mean(jnp.diagonal(dense))
    projector = jnp.outer(e, e)
    return jnp.linalg.inv(dense + a * projector) - projector / a


def _homogeneous(pairs):
    out = []
    for lo, hi in pairs:
        side = []
        for bc in (lo, hi):
            if isinstance(bc, Periodic):
                side.append(Periodic())
            elif isinstance(bc, Dirichlet):
                side.append(Dirichlet(0.0))
            elif isinstance(bc, Neumann):
                side.append(Neumann(0.0))
            else:
                raise ValueError(
                    f"Multigrid supports Periodic, Dirichlet and Neumann conditions; got "
                    f"{type(bc).__name__}. Use fd.solve with a Krylov method for Robin walls."
                )
        out.append(tuple(side))
    return tuple(out)


def _coarsenable(shape, periodic):
    """Every axis can be halved: periodic axes with an even size of at least 4, walls at 2 cells."""
    return all((n >= 4 and n % 2 == 0) if per else n >= 2 for n, per in zip(shape, periodic))


@functools.partial(jax.jit, static_argnames=("grid", "pairs", "mean", "max_coarse"))
def _build(k, *, grid, pairs, mean, max_coarse):
    """Face coefficients, smoothed levels and the coarsest inverse (one compiled program,
    cached per configuration; inlined when called under an outer `jit`)."""
    faces = _face_tuple(k, grid, pairs, mean)
    periodic = periodic_axes(pairs)
    singular = not any(isinstance(b, Dirichlet) for p in pairs for b in p)

    def fine(u):
        return -flux_form_diffusion(u, grid, faces, pairs)

    levels = []
    apply, shape, offsets = fine, grid.shape, _star(grid.ndim)
    while math.prod(shape) > max_coarse and _coarsenable(shape, periodic):
        stencil = _probe_stencil(apply, shape, periodic, k.dtype, offsets)
        level = _make_level(stencil, offsets, shape, periodic)
        levels.append(level)
        apply, shape, offsets = _galerkin(level), level.half, _box(grid.ndim)
    stencil = _probe_stencil(apply, shape, periodic, k.dtype, offsets)
    dense = _stencil_to_dense(stencil, offsets, shape, periodic)
    return faces, tuple(levels), _dense_inverse(dense, singular)


@jax.jit
def _v_cycle(multigrid, r):
    return multigrid._cycle(0, r)


class Multigrid(eqx.Module):
    r"""A symmetric V-cycle for $A u = -\nabla\cdot(k\nabla u)$ with homogeneous `bc`.

    `mg(r)` applies one V-cycle to a residual `r` from a zero initial guess
    (an approximation of $A^{-1} r$, a symmetric positive definite linear
    map): pass `mg` as `preconditioner=` to `fd.solve` with CG, or iterate
    it with `fd.MultigridSolver(mg)`.

    The hierarchy is black-box multigrid (see the module notes): stencils
    read from the operator by probing, operator-dependent prolongation,
    Galerkin coarse operators $P^T A P$, coloured Gauss-Seidel smoothing.
    Its convergence does not degrade with the grid size nor with the
    contrast of a discontinuous coefficient (tested to $10^6$).

    Arguments:
        grid: the fine grid. Any size on wall axes; periodic axes coarsen
            while their size stays even (sizes divisible by a power of two
            give the deepest hierarchy).
        coefficient: $k > 0$, a scalar or a field. It may be traced (inside
            `jit`), and the cycle is then built inside the program. The cycle
            never differentiates through it (`stop_gradient`): gradients of
            solves come from `fd.solve`'s implicit differentiation.
        bc: Periodic, Dirichlet or Neumann conditions (per axis/side); only
            their kind matters, the cycle acts on residuals.
        pre_smooth, post_smooth: Gauss-Seidel sweeps (all colours) before and
            after the coarse correction (equal numbers keep the cycle
            symmetric, which CG needs).
        max_coarse: coarsening stops once a level has at most this many
            cells; that level is solved with a dense inverse.
        mean: face average of `k`, as in `fd.diffusion` (`"harmonic"`:
            flux continuity across jumps).

    Raises:
        TypeError: `grid` is not an `fd.Grid`.
        ValueError: a non-positive coefficient (when concrete), a Robin
            condition, or a hierarchy whose coarsest level stays too large
            (odd sizes on periodic axes).
    """

    levels: tuple
    coarse_inverse: jax.Array
    coarse_shape: tuple = eqx.field(static=True)
    fine_faces: tuple
    grid: Grid = eqx.field(static=True)
    pairs: tuple = eqx.field(static=True)
    pre_smooth: int = eqx.field(static=True)
    post_smooth: int = eqx.field(static=True)

    def __init__(self, grid: Grid, coefficient, bc, *, pre_smooth: int = 1, post_smooth: int = 1,
                 max_coarse: int = 512, mean: str = "harmonic"):
        if not isinstance(grid, Grid):
            raise TypeError(f"Expected a jaxfd.Grid, got {grid!r}.")
        for name, value in (("pre_smooth", pre_smooth), ("post_smooth", post_smooth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Multigrid: expected an integer {name} >= 0, got {value!r}.")
        if isinstance(max_coarse, bool) or not isinstance(max_coarse, int) or max_coarse < 1:
            raise ValueError(f"Multigrid: expected an integer max_coarse >= 1, got {max_coarse!r}.")
        pairs = _homogeneous(normalize_bc(bc, grid.ndim))
        k = jnp.asarray(coefficient)
        if not jnp.issubdtype(k.dtype, jnp.inexact):
            k = k.astype(jnp.result_type(float))
        if k.ndim:
            grid.check_field(k, "coefficient")
        try:
            kmin = float(jnp.min(k))
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
            kmin = None
        if kmin is not None and not kmin > 0:
            raise ValueError(
                f"Multigrid needs a positive coefficient k everywhere (the operator "
                f"-div(k grad u) is then positive definite); the smallest value is {kmin}. "
                "Shift or reparameterise k (e.g. k = exp(m))."
            )
        periodic = periodic_axes(pairs)
        shape = grid.shape
        while math.prod(shape) > max_coarse and _coarsenable(shape, periodic):
            shape = tuple((n + n % 2) // 2 for n in shape)
        if math.prod(shape) > 4 * max_coarse:
            raise ValueError(
                f"Multigrid could only coarsen {grid.shape} to {shape} ({math.prod(shape)} cells, "
                f"more than 4 * max_coarse = {4 * max_coarse}): all axes are halved together, and "
                "an axis stops the coarsening when it reaches 1 cell (walls) or an odd size or 2 "
                "cells (periodic). Use sizes divisible by a power of two on periodic axes, e.g. "
                f"{tuple(2 ** int(np.ceil(np.log2(n))) for n in grid.shape)}, a less elongated "
                "grid, or raise max_coarse."
            )
        self.grid = grid
        self.pairs = pairs
        self.pre_smooth = pre_smooth
        self.post_smooth = post_smooth
        self.fine_faces, self.levels, self.coarse_inverse = _build(
            lax.stop_gradient(k), grid=grid, pairs=pairs, mean=mean, max_coarse=max_coarse)
        self.coarse_shape = tuple(shape)

    def operator(self, u):
        r"""The fine-level operator $-\nabla\cdot(k\nabla u)$ with homogeneous conditions."""
        return -flux_form_diffusion(u, self.grid, self.fine_faces, self.pairs)

    @property
    def num_levels(self) -> int:
        """Levels in the hierarchy, the coarsest (dense) one included."""
        return len(self.levels) + 1

    def _cycle(self, index, b):
        if index == len(self.levels):
            return (self.coarse_inverse @ b.reshape(-1)).reshape(b.shape)
        level = self.levels[index]
        b = _pad_to(b, level.even)
        rhs = _to_blocks(b)
        x = level.smooth(jnp.zeros_like(rhs), rhs, self.pre_smooth, reverse=False)
        residual = b - level.apply(_from_blocks(x))
        coarse = self._cycle(index + 1, level.restrict(_to_blocks(residual)))
        x = x + level.prolong(coarse)
        x = level.smooth(x, rhs, self.post_smooth, reverse=True)
        return _crop(_from_blocks(x), level.shape)

    def __call__(self, r):
        """One V-cycle from a zero initial guess: an approximation of $A^{-1} r$."""
        if tuple(jnp.shape(r)) != self.grid.shape:
            raise ValueError(
                f"Multigrid: expected a residual of shape {self.grid.shape} (the grid's), got "
                f"{tuple(jnp.shape(r))}."
            )
        dtype = self.coarse_inverse.dtype
        r = jnp.asarray(r)
        out = _v_cycle(self, r.astype(dtype))
        return out.astype(r.dtype)


class MultigridSolver(AbstractLinearSolver):
    """Multigrid as a solver: V-cycles on the residual until the tolerance is met.

    Use with `fd.solve(A, b, fd.MultigridSolver(mg))`, where `A` is the
    operator the cycle was built for (`mg.operator`, or the same
    $-\\nabla\\cdot(k\\nabla u)$ written with jaxfd operators). Each
    iteration costs one V-cycle and one application of `A`; preconditioning
    CG with the cycle (`fd.solve(A, b, fd.CG(), preconditioner=mg)`) usually
    needs fewer iterations for the same cost per iteration.

    Arguments:
        multigrid: the `fd.Multigrid` cycle.
        rtol, atol: stop when `||b - A x|| <= atol + rtol * ||b||`; `rtol=None`
            is 1e-8 in float64 and 1e-5 in float32 (as for the Krylov solvers).
        max_steps: most V-cycles.
    """

    multigrid: Multigrid
    rtol: float | None
    atol: float
    max_steps: int
    needs_symmetric: ClassVar[bool] = True

    def __init__(self, multigrid: Multigrid, rtol: float | None = None, atol: float = 0.0,
                 max_steps: int = 200):
        if not isinstance(multigrid, Multigrid):
            raise TypeError(f"MultigridSolver needs a fd.Multigrid, got {multigrid!r}.")
        _check_tols(rtol, atol, max_steps, "MultigridSolver")
        self.multigrid = multigrid
        self.rtol = rtol
        self.atol = atol
        self.max_steps = max_steps

    def run(self, matvec, b, x0, precondition, *, unrolled=False):
        tol = self.tolerance(b)

        def cond(state):
            _, r, k = state
            return (_norm(r) > tol) & (k < self.max_steps)

        def body(state):
            x, r, k = state
            x = x + self.multigrid(r)
            return x, b - matvec(x), k + 1

        x, r, k = iterate(cond, body, (x0, b - matvec(x0), jnp.asarray(0)), self.max_steps, unrolled)
        return x, k, _norm(r)
