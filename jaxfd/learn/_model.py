r"""Learnable PDE models (PDE-Net / FD-Net) and their multi-step rollout loss.

A `PDEModel` advances a field by the method of lines,

$$
\frac{du}{dt} = N\big(u, \partial^{\alpha_1} u, \dots, \partial^{\alpha_K} u;\ x\big),
$$

where every derivative is a learnable, moment-constrained stencil
(`MomentStencil`) applied with the model's boundary conditions, and $N$ is
either a linear combination of a library of monomials with learnable
coefficients (`LinearCombination`: interpretable, sparse-regression style)
or a small pointwise network (`NetworkTerm`). With the default forward Euler
stepper one data interval is $u_{n+1} = u_n + \Delta t\, N(\dots)$ (FD-Net);
`substeps` splits it into several steps. Rollouts run through
`jaxfd.simulate`, so they are one compiled loop and differentiable.
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._boundary import normalize_bc
from .._grid import Grid
from ..time import AbstractStepper, Euler, SaveAt, simulate
from ._layer import MomentStencil, apply_filters, derivative_name
from ._moments import check_multi_index

__all__ = ["AbstractTerm", "LinearCombination", "NetworkTerm", "PDEModel", "moment_penalty", "rollout_loss"]


def _default_dtype(dtype):
    return jnp.result_type(float) if dtype is None else jnp.dtype(dtype)


def _check_positive_int(value, name, where, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{where}: expected {name} to be an integer >= {minimum}, got {value!r}.")
    return int(value)


class AbstractTerm(eqx.Module):
    """The map $N$ from features to $du/dt$, applied at every grid point.

    `term(features, coords)`: `features` has shape `(num_features, *grid.shape)`
    (feature 0 is $u$, then the derivatives in the model's order); `coords`
    is `grid.mesh()` in the features' dtype. Returns a field of `grid.shape`.
    """

    num_features: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(self, features: jax.Array, coords: tuple) -> jax.Array:
        """du/dt from the stacked features."""


def _monomials(num_features: int, degree: int, include_constant: bool):
    terms = []
    for d in range(0 if include_constant else 1, degree + 1):
        terms.extend(itertools.combinations_with_replacement(range(num_features), d))
    return tuple(tuple(t) for t in terms)


def _monomial_name(term, names):
    if not term:
        return "1"
    parts = []
    for i in sorted(set(term)):
        power = term.count(i)
        parts.append(names[i] if power == 1 else f"{names[i]}^{power}")
    return "*".join(parts)


class LinearCombination(AbstractTerm):
    r"""$N = \sum_k c_k(x)\, \phi_k$: a library of monomials with learnable coefficients.

    The library $\{\phi_k\}$ holds every product of at most `degree`
    features (the constant 1 included unless `include_constant=False`): with
    features $(u, u_x, u_{xx})$ and `degree=2` it is
    $1, u, u_x, u_{xx}, u^2, u u_x, \dots$ (sparse-regression style, as in
    SINDy and PDE-Net). Each coefficient is constant, or, with a `basis`
    $(b_1, \dots, b_J)$ of functions of the coordinates, a variable
    coefficient $c_k(x) = \sum_j \theta_{kj} b_j(x)$: that is how forcing
    terms ($c_{1}(x)$ on the constant) and variable coefficients are learned
    with a few parameters.

    Arguments:
        num_features: number of features (1 for $u$ plus one per derivative).
        degree: largest total degree of the library's monomials (>= 1).
        basis: optional sequence of functions `b(*coords) -> field or scalar`
            (coords as from `grid.mesh()`); default a constant coefficient.
        include_constant: include the monomial 1 (a source term).
        coefficients: initial $\theta$, shape `(num_terms, num_basis)`; zeros
            by default.
        mask: which monomials are active (a sequence of bools, one per term);
            inactive ones contribute nothing and receive zero gradient. See `prune`.
        dtype: floating dtype of the coefficients.

    Attributes:
        coefficients: $\theta$, shape `(num_terms, num_basis)` (a pytree leaf).
        terms: the monomials as tuples of feature indices (`()` is the constant).

    Raises:
        ValueError: non-positive `num_features` or `degree`, coefficients or
            mask of the wrong shape, an empty basis.
        TypeError: a basis entry that is not callable.
    """

    coefficients: jax.Array
    num_features: int = eqx.field(static=True)
    degree: int = eqx.field(static=True)
    terms: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    basis: tuple[Callable, ...] | None = eqx.field(static=True)
    mask: tuple[bool, ...] = eqx.field(static=True)
    include_constant: bool = eqx.field(static=True)

    def __init__(self, num_features: int, degree: int = 1, *, basis: Sequence[Callable] | None = None,
                 include_constant: bool = True, coefficients=None, mask=None, dtype=None):
        where = "LinearCombination"
        self.num_features = _check_positive_int(num_features, "num_features", where)
        self.degree = _check_positive_int(degree, "degree", where)
        self.include_constant = bool(include_constant)
        self.terms = _monomials(self.num_features, self.degree, self.include_constant)
        if basis is not None:
            basis = tuple(basis)
            if not basis:
                raise ValueError(f"{where}: expected at least one basis function, got an empty basis.")
            for b in basis:
                if not callable(b):
                    raise TypeError(f"{where}: expected basis functions b(*coords), got {b!r}.")
        self.basis = basis
        shape = (len(self.terms), 1 if basis is None else len(basis))
        dtype = _default_dtype(dtype)
        if coefficients is None:
            self.coefficients = jnp.zeros(shape, dtype)
        else:
            c = jnp.asarray(coefficients, dtype)
            if c.shape != shape:
                raise ValueError(
                    f"{where}: expected coefficients of shape {shape} (terms x basis functions), got {c.shape}."
                )
            self.coefficients = c
        if mask is None:
            mask = (True,) * len(self.terms)
        mask = tuple(bool(m) for m in mask)
        if len(mask) != len(self.terms):
            raise ValueError(f"{where}: expected a mask with {len(self.terms)} entries, got {len(mask)}.")
        self.mask = mask

    @property
    def num_basis(self) -> int:
        """Number of basis functions of each coefficient (1 for constant coefficients)."""
        return self.coefficients.shape[1]

    def effective_coefficients(self) -> jax.Array:
        """The coefficients with inactive (masked) terms set to zero."""
        m = jnp.asarray(np.array(self.mask, dtype=np.float64), self.coefficients.dtype)
        return self.coefficients * m[:, None]

    def __call__(self, features, coords):
        dtype = features.dtype
        theta = self.effective_coefficients().astype(dtype)
        shape = features.shape[1:]
        if self.basis is None:
            fields = None
        else:
            fields = [jnp.broadcast_to(jnp.asarray(b(*coords), dtype), shape) for b in self.basis]
        out = None
        for k, term in enumerate(self.terms):
            if not self.mask[k]:
                continue
            if fields is None:
                coef = theta[k, 0]
            else:
                coef = theta[k, 0] * fields[0]
                for j in range(1, len(fields)):
                    coef = coef + theta[k, j] * fields[j]
            if term:
                phi = features[term[0]]
                for i in term[1:]:
                    phi = phi * features[i]
                value = coef * phi
            else:
                value = jnp.broadcast_to(coef, shape)
            out = value if out is None else out + value
        return jnp.zeros(shape, dtype) if out is None else out

    def term_names(self, feature_names: Sequence[str]) -> list[str]:
        """Readable names of the monomials, e.g. `["1", "u", "u_x", "u*u_x"]`."""
        if len(feature_names) != self.num_features:
            raise ValueError(
                f"LinearCombination.term_names: expected {self.num_features} feature names, got "
                f"{len(feature_names)}."
            )
        return [_monomial_name(t, list(feature_names)) for t in self.terms]

    def prune(self, threshold: float, scales=None) -> LinearCombination:
        """A copy with the small terms switched off: the thresholding step of sequential
        sparse regression.

        A term stays active when `max_j |theta[k, j]| * scales[k] >= threshold`
        (`scales` default to ones; `PDEModel.prune` passes the size of each
        monomial over the data, so the test compares contributions to du/dt).
        Switched-off terms are zeroed and masked: they contribute nothing and
        receive zero gradient.

        Raises:
            ValueError: a negative threshold, scales of the wrong length.
        """
        if not float(threshold) >= 0:
            raise ValueError(f"LinearCombination.prune: expected threshold >= 0, got {threshold!r}.")
        c = np.abs(np.asarray(self.coefficients, dtype=np.float64)).max(axis=1)
        scales = np.ones_like(c) if scales is None else np.asarray(scales, dtype=np.float64)
        if scales.shape != c.shape:
            raise ValueError(
                f"LinearCombination.prune: expected {c.size} scales (one per term), got shape {scales.shape}."
            )
        keep = [bool(m and ck * sk >= threshold) for m, ck, sk in zip(self.mask, c, scales)]
        zeroed = self.coefficients * jnp.asarray(np.array(keep, dtype=np.float64), self.coefficients.dtype)[:, None]
        return LinearCombination(self.num_features, self.degree, basis=self.basis,
                                 include_constant=self.include_constant, coefficients=zeroed,
                                 mask=keep, dtype=self.coefficients.dtype)


class NetworkTerm(AbstractTerm):
    r"""$N$ = a small multilayer perceptron applied at every grid point.

    Input: the features at the point (and, with `use_coordinates=True`, its
    coordinates, for variable coefficients); output: $du/dt$ there. Flexible
    but not interpretable; pair it with a `LinearCombination` model to read
    off the equation.

    Arguments:
        num_features: number of features (1 for $u$ plus one per derivative).
        key: a `jax.random` key for the initial weights.
        width: hidden width.
        depth: number of hidden layers.
        activation: hidden activation (default `jax.nn.tanh`: smooth, so
            second-order optimizers see a smooth loss).
        use_coordinates: feed the point's coordinates to the network too.
        ndim: number of grid axes (needed with `use_coordinates`).
        dtype: floating dtype of the weights.

    Raises:
        ValueError: non-positive sizes, `use_coordinates` without `ndim`.
    """

    mlp: eqx.nn.MLP
    num_features: int = eqx.field(static=True)
    use_coordinates: bool = eqx.field(static=True)

    def __init__(self, num_features: int, *, key, width: int = 16, depth: int = 2,
                 activation: Callable = jax.nn.tanh, use_coordinates: bool = False,
                 ndim: int | None = None, dtype=None):
        where = "NetworkTerm"
        self.num_features = _check_positive_int(num_features, "num_features", where)
        width = _check_positive_int(width, "width", where)
        depth = _check_positive_int(depth, "depth", where, minimum=0)
        self.use_coordinates = bool(use_coordinates)
        extra = 0
        if self.use_coordinates:
            if ndim is None:
                raise ValueError(f"{where}: pass ndim= (the number of grid axes) with use_coordinates=True.")
            extra = _check_positive_int(ndim, "ndim", where)
        self.mlp = eqx.nn.MLP(self.num_features + extra, "scalar", width, depth, activation=activation,
                              key=key, dtype=_default_dtype(dtype))

    def __call__(self, features, coords):
        dtype = features.dtype
        shape = features.shape[1:]
        inputs = [features]
        if self.use_coordinates:
            inputs.append(jnp.stack([jnp.broadcast_to(jnp.asarray(c, dtype), shape) for c in coords]))
        x = jnp.concatenate(inputs, axis=0).reshape(-1, int(np.prod(shape)))
        params, static = eqx.partition(self.mlp, eqx.is_inexact_array)
        params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
        mlp = eqx.combine(params, static)
        return jax.vmap(mlp, in_axes=1)(x).reshape(shape)


def _model_rhs(t, u, model):
    return model.rhs(u)


@eqx.filter_jit
def _rhs_rms(model, snaps):
    return jnp.sqrt(jnp.mean(jax.vmap(model.rhs)(snaps) ** 2))


@eqx.filter_jit
def _term_sizes(model, snaps):
    feats = jax.vmap(model.features)(snaps)
    dtype = feats.dtype
    term = model.term
    if term.basis is None:
        bsize = jnp.ones((), dtype)
    else:
        coords = model.grid.mesh(dtype)
        bsize = jnp.max(jnp.stack([
            jnp.sqrt(jnp.mean(jnp.broadcast_to(jnp.asarray(b(*coords), dtype), model.grid.shape) ** 2))
            for b in term.basis]))
    sizes = []
    for monomial in term.terms:
        phi = jnp.ones_like(feats[:, 0])
        for i in monomial:
            phi = phi * feats[:, i]
        sizes.append(jnp.sqrt(jnp.mean(phi**2)) * bsize)
    return jnp.stack(sizes)


class PDEModel(eqx.Module):
    r"""A learnable PDE: $du/dt = N(u, \partial^{\alpha_1} u, \dots)$, stepped like the data.

    Features are $u$ and one `MomentStencil` per requested derivative, all
    applied with the model's boundary conditions (ghost cells from
    `jaxfd.pad`); `term` maps them to $du/dt$. `step` advances one data
    interval `dt` with `substeps` steps of `stepper` (forward Euler by
    default: $u_{n+1} = u_n + \Delta t\, N$); `rollout` repeats it inside one
    `jaxfd.simulate` loop.

    Trainable leaves: the stencils' `free` moments and the term's parameters
    (and array-valued boundary data, if you pass any; give Python numbers
    to keep boundary values fixed). Train with `eqx.filter`/`eqx.partition`
    on `eqx.is_inexact_array`, or hand the model to
    `jaxfd.optim.trust_region_minimize`.

    Arguments:
        grid: the grid of the data.
        term: the map $N$ (`LinearCombination` or `NetworkTerm`), built with
            `num_features = 1 + len(derivatives)`.
        dt: the data interval (a positive number).
        derivatives: multi-indices $\alpha_k$ (ints in 1-D), each with
            $|\alpha_k| \ge 1$, or ready-made `MomentStencil`s.
        bc: boundary conditions of $u$ (as for every jaxfd operator).
        size: filter size of the stencils built here (default: the smallest
            that fits each derivative at `accuracy`).
        accuracy: guaranteed order of the stencils built here.
        symmetric: build the stencils with the symmetry of their derivative
            (see `MomentStencil`).
        substeps: time steps per data interval.
        stepper: a jaxfd time stepper (default `fd.Euler()`).
        checkpoint: memory policy of gradients through rollouts (see
            `jaxfd.simulate`); `"none"` suits the short rollouts of training.
        dtype: dtype of the learnable moments of the stencils built here.

    Raises:
        ValueError: a zero derivative (u is always feature 0), a derivative of
            the wrong length for the grid, a term with the wrong number of
            features, non-positive `dt` or `substeps`, bad boundary conditions.
        TypeError: a non-grid, a term that is not an `AbstractTerm`, a
            stepper that is not a jaxfd stepper.
    """

    stencils: tuple[MomentStencil, ...]
    term: AbstractTerm
    bc: Any
    grid: Grid = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    substeps: int = eqx.field(static=True)
    stepper: AbstractStepper
    checkpoint: str = eqx.field(static=True)

    def __init__(self, grid: Grid, term: AbstractTerm, *, dt: float, derivatives: Sequence, bc,
                 size: int | None = None, accuracy: int = 2, symmetric: bool = False, substeps: int = 1,
                 stepper: AbstractStepper | None = None, checkpoint: str = "none", dtype=None):
        where = "PDEModel"
        if not isinstance(grid, Grid):
            raise TypeError(f"{where}: expected a jaxfd.Grid, got {type(grid).__name__}: {grid!r}.")
        if not isinstance(term, AbstractTerm):
            raise TypeError(
                f"{where}: expected term to be a jaxfd.learn term (LinearCombination, NetworkTerm), got {term!r}."
            )
        try:
            dt = float(dt)
        except (TypeError, jax.errors.ConcretizationTypeError):
            raise TypeError(f"{where}: dt must be a concrete positive number, got {dt!r}.") from None
        if not dt > 0 or not np.isfinite(dt):
            raise ValueError(f"{where}: expected a positive, finite data interval dt, got dt={dt!r}.")
        stencils = []
        for entry in derivatives:
            if isinstance(entry, MomentStencil):
                stencil = entry
            else:
                alpha = check_multi_index(entry, grid.ndim, where, "derivative")
                if sum(alpha) == 0:
                    raise ValueError(
                        f"{where}: derivative {alpha} is u itself, which is always feature 0; list "
                        "only derivatives of order >= 1."
                    )
                stencil = MomentStencil(alpha, size, accuracy, symmetric=symmetric, dtype=dtype)
            if stencil.ndim != grid.ndim:
                raise ValueError(
                    f"{where}: stencil for derivative {stencil.derivative} is {stencil.ndim}-D, the grid is "
                    f"{grid.ndim}-D."
                )
            stencils.append(stencil)
        if term.num_features != 1 + len(stencils):
            raise ValueError(
                f"{where}: the term takes {term.num_features} features, the model provides "
                f"{1 + len(stencils)} (u and {len(stencils)} derivatives); build the term with "
                f"num_features={1 + len(stencils)}."
            )
        normalize_bc(bc, grid.ndim)  # validate early
        if stepper is None:
            stepper = Euler()
        if not isinstance(stepper, AbstractStepper):
            raise TypeError(f"{where}: expected a jaxfd stepper (e.g. fd.Euler()), got {stepper!r}.")
        if checkpoint not in ("none", "step", "nested", "recursive"):
            raise ValueError(
                f"{where}: expected checkpoint in ('none', 'step', 'nested', 'recursive'), got {checkpoint!r}."
            )
        self.stencils = tuple(stencils)
        self.term = term
        self.bc = bc
        self.grid = grid
        self.dt = dt
        self.substeps = _check_positive_int(substeps, "substeps", where)
        self.stepper = stepper
        self.checkpoint = checkpoint

    @property
    def feature_names(self) -> tuple[str, ...]:
        """`("u", "u_x", "u_xx", ...)`: the names of the features, in order."""
        return ("u",) + tuple(derivative_name(s.derivative) for s in self.stencils)

    def features(self, u) -> jax.Array:
        """The stacked features $(u, \\partial^{\\alpha_1} u, \\dots)$, shape `(num_features, *grid.shape)`."""
        self.grid.check_field(u)
        if not jnp.issubdtype(u.dtype, jnp.floating):
            raise TypeError(f"PDEModel: expected a floating-point field, got dtype {u.dtype}.")
        # Stencils of one size and ghost order share one padding and one convolution.
        groups: dict = {}
        for i, s in enumerate(self.stencils):
            groups.setdefault((s.size, s.ghost_order), []).append(i)
        out = [u] + [None] * len(self.stencils)
        for (_, ghost_order), members in groups.items():
            filters = jnp.stack([self.stencils[i].filter() for i in members])
            scales = [1.0 / math.prod(h**a for h, a in zip(self.grid.spacing, self.stencils[i].derivative))
                      for i in members]
            values = apply_filters(filters, u, self.grid, bc=self.bc, scales=scales, ghost_order=ghost_order)
            for j, i in enumerate(members):
                out[i + 1] = values[j]
        return jnp.stack(out)

    def rhs(self, u) -> jax.Array:
        """$du/dt$ of the learned equation at the state `u`."""
        feats = self.features(u)
        return self.term(feats, self.grid.mesh(feats.dtype))

    def rollout(self, u0, n_steps: int, *, throw: bool = False) -> jax.Array:
        """The states after `1..n_steps` data intervals, shape `(n_steps, *grid.shape)`.

        One `jaxfd.simulate` loop (`stability="ignore"`: a learned model may
        be stiffer than the data suggests; `throw=True` raises on a
        non-finite state).
        """
        n_steps = _check_positive_int(n_steps, "n_steps", "PDEModel.rollout")
        sol = simulate(_model_rhs, u0, 0.0, n_steps * self.dt, self.dt / self.substeps,
                       stepper=self.stepper, args=self, saveat=SaveAt(every=self.substeps),
                       checkpoint=self.checkpoint, throw=throw, stability="ignore")
        return sol.us

    def step(self, u) -> jax.Array:
        """The state one data interval later."""
        return self.rollout(u, 1)[0]

    def term_sizes(self, data) -> np.ndarray:
        """For a `LinearCombination` term: the root-mean-square size of each monomial over
        the snapshots `data` (shape `(..., *grid.shape)`), times the largest root-mean-square
        basis field, one value per term (float64 numpy). The scales `prune` compares
        coefficients with."""
        if not isinstance(self.term, LinearCombination):
            raise TypeError("PDEModel.term_sizes: only a LinearCombination term has a library.")
        snaps = jnp.asarray(data).reshape((-1,) + self.grid.shape)
        return np.asarray(_term_sizes(self, snaps), dtype=np.float64)

    def prune(self, data, threshold: float = 1e-2) -> PDEModel:
        """A copy whose `LinearCombination` keeps only the terms that matter on `data`.

        A term is switched off when its largest contribution to du/dt,
        `max|coefficient| * size` (`term_sizes`), is below `threshold` times the
        root-mean-square of the model's du/dt over the snapshots `data`.
        Refit the pruned model afterwards (sequential thresholding).

        Raises:
            TypeError: a term that is not a `LinearCombination`.
            ValueError: a negative threshold.
        """
        if not isinstance(self.term, LinearCombination):
            raise TypeError("PDEModel.prune: only a LinearCombination term can be pruned.")
        if not float(threshold) >= 0:
            raise ValueError(f"PDEModel.prune: expected threshold >= 0, got {threshold!r}.")
        snaps = jnp.asarray(data).reshape((-1,) + self.grid.shape)
        rms = float(_rhs_rms(self, snaps))
        term = self.term.prune(threshold * rms, scales=self.term_sizes(data))
        return eqx.tree_at(lambda m: m.term, self, term)

    def coefficients(self) -> dict[str, np.ndarray]:
        """For a `LinearCombination` term: `{monomial name: coefficients}` of the active terms
        (one value per basis function), as float64 numpy arrays."""
        if not isinstance(self.term, LinearCombination):
            raise TypeError("PDEModel.coefficients: only a LinearCombination term has named coefficients.")
        names = self.term.term_names(self.feature_names)
        c = np.asarray(self.term.effective_coefficients(), dtype=np.float64)
        return {n: c[k] for k, n in enumerate(names) if self.term.mask[k]}

    def equation(self, precision: int = 4, threshold: float = 0.0) -> str:
        """The learned equation as text, e.g. `u_t = 0.1000 u_xx` (terms below `threshold` omitted).
        Variable coefficients are printed as their basis coefficients in brackets."""
        parts = []
        for name, c in self.coefficients().items():
            if np.max(np.abs(c)) < threshold or np.max(np.abs(c)) == 0.0:
                continue
            if c.size == 1:
                coef = f"{c[0]:+.{precision}f}"
            else:
                coef = "+[" + ", ".join(f"{v:.{precision}f}" for v in c) + "]"
            parts.append(f"{coef} {name}" if name != "1" else coef)
        body = " ".join(parts) if parts else "0"
        return "u_t = " + body.lstrip("+")


def moment_penalty(model: PDEModel) -> jax.Array:
    r"""$\sum_k \lVert m^{(k)}_{\text{free}} \rVert^2$: the squared learnable moments of all stencils.

    Add `lam * moment_penalty(model)` to a loss to keep the stencils near
    their initial state (the full-support Fornberg stencils) along directions
    the data do not determine: smooth data say little about high-order
    moments, which set the filters' response to short waves, and so the
    stability of long rollouts.

    Raises:
        TypeError: a model that is not a `PDEModel`.
    """
    if not isinstance(model, PDEModel):
        raise TypeError(f"moment_penalty: expected a jaxfd.learn.PDEModel, got {type(model).__name__}.")
    total = None
    for s in model.stencils:
        term = jnp.sum(s.free**2)
        total = term if total is None else total + term
    return jnp.zeros(()) if total is None else total


def rollout_loss(model: PDEModel, data, n_ahead: int = 1) -> jax.Array:
    r"""Mean squared error of `n_ahead`-step rollouts started from every snapshot.

    $L = \frac{1}{|S|\, n\, N} \sum_{s \in S} \sum_{j=1}^{n} \lVert \Phi^j(u_s) - u_{s+j} \rVert^2$,
    where $\Phi$ is one model step, $u_s$ the snapshots (every start $s$
    that leaves `n_ahead` snapshots after it, of every trajectory) and $N$
    the number of grid points. `n_ahead = 1` is the one-step (teacher-forced)
    loss; larger values train for stability over several steps (PDE-Net's
    multi-step training).

    Arguments:
        model: the `PDEModel`.
        data: snapshots one `model.dt` apart, shape `(n_times, *grid.shape)`
            or `(n_trajectories, n_times, *grid.shape)`.
        n_ahead: steps of each rollout (static).

    Returns:
        The scalar loss, in the data's dtype.

    Raises:
        ValueError: data of the wrong shape, fewer than `n_ahead + 1` snapshots.
        TypeError: a model that is not a `PDEModel`.
    """
    where = "rollout_loss"
    if not isinstance(model, PDEModel):
        raise TypeError(f"{where}: expected a jaxfd.learn.PDEModel, got {type(model).__name__}.")
    n_ahead = _check_positive_int(n_ahead, "n_ahead", where)
    data = jnp.asarray(data)
    shape = model.grid.shape
    if data.ndim == len(shape) + 1:
        data = data[None]
    if data.ndim != len(shape) + 2 or tuple(data.shape[2:]) != shape:
        raise ValueError(
            f"{where}: expected data of shape (n_times, *{shape}) or (n_trajectories, n_times, *{shape}), "
            f"got {tuple(data.shape)}."
        )
    n_times = data.shape[1]
    if n_times < n_ahead + 1:
        raise ValueError(
            f"{where}: {n_ahead}-step rollouts need at least {n_ahead + 1} snapshots per trajectory, "
            f"got {n_times}; lower n_ahead or pass longer trajectories."
        )
    starts = np.arange(n_times - n_ahead)
    u0 = data[:, starts].reshape((-1,) + shape)
    targets = data[:, starts[:, None] + np.arange(1, n_ahead + 1)[None, :]]
    targets = targets.reshape((-1, n_ahead) + shape)
    pred = jax.vmap(lambda u: model.rollout(u, n_ahead))(u0)
    return jnp.mean((pred - targets) ** 2)
