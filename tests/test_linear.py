"""The linear view of operators: affine split, transpose, diagonal, sparse matrix, structure."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfd as fd

# Every check compares two evaluations of the same sums of O(1/h^2) terms in float64:
# differences are round-off, ~1e-15 relative to the largest entry. 1e-12 leaves margin
# while any wrong entry shows as O(1) relative.
RTOL = 1e-12

SHAPES = {1: (10,), 2: (7, 6), 3: (6, 6, 7)}
KINDS = ("periodic", "dirichlet", "neumann", "robin")


def _grid(ndim):
    shape = SHAPES[ndim]
    return fd.Grid(shape, tuple((0.0, 0.5 + 0.25 * a) for a in range(ndim)))


def _bc(kind, grid, seed=0):
    """Non-homogeneous conditions with data over the faces (scalars in 1-D).

    "walls" mixes every wall kind in one operator: Dirichlet and Neumann on the two sides
    of axis 0, Robin (face arrays for alpha, beta and the value) on the other axes.
    """
    if kind == "periodic":
        return fd.Periodic()
    rng = np.random.default_rng(seed)

    def data(axis, lo=-1.0, hi=1.0):
        shape = grid.face_shape(axis)
        return jnp.asarray(rng.uniform(lo, hi, shape)) if shape else float(rng.uniform(lo, hi))

    def make(kind, axis):
        if kind == "dirichlet":
            return fd.Dirichlet(data(axis))
        if kind == "neumann":
            return fd.Neumann(data(axis))
        return fd.Robin(data(axis, 0.5, 1.5), data(axis, 0.5, 1.5), data(axis))

    if kind == "walls":
        return ((make("dirichlet", 0), make("neumann", 0)),) + tuple(
            (make("robin", a), make("robin", a)) for a in range(1, grid.ndim))
    return tuple((make(kind, a), make(kind, a)) for a in range(grid.ndim))


def _coefficient(grid):
    X = grid.mesh()
    return 1.0 + 0.5 * jnp.sin(sum((a + 2.0) * x for a, x in enumerate(X)))


def _velocity(grid):
    X = grid.mesh()
    # variable sign along every axis: upwinding switches side inside the domain
    return jnp.stack([jnp.cos(3.0 * X[a] + a) for a in range(grid.ndim)])


OPERATORS = {
    "laplacian2": lambda g, bc: (lambda u: fd.laplacian(u, g, bc=bc, accuracy=2)),
    "laplacian4": lambda g, bc: (lambda u: fd.laplacian(u, g, bc=bc, accuracy=4)),
    "diffusion": lambda g, bc: (lambda u: fd.diffusion(u, g, _coefficient(g), bc=bc)),
    "diff1": lambda g, bc: (lambda u: fd.diff(u, g, g.ndim - 1, 1, 2, bc=bc)),
    "upwind1": lambda g, bc: (lambda u: fd.advection(u, _velocity(g), g, bc=bc, scheme="upwind1")),
}
SYMMETRIC = ("laplacian2", "diffusion")

# 1-D: every kind on its own for the symmetric operators, periodic for the others; 2-D and
# 3-D: all wall kinds in one operator ("walls"), and periodic for the accuracy-2 Laplacian.
# Each case costs ~1.5 s of compilation, so the matrix is kept to what adds coverage.
CASE_KEYS = (
    [(op, kind, 1) for op in OPERATORS for kind in (KINDS if op in SYMMETRIC else ("periodic",))]
    + [(op, "walls", 2) for op in OPERATORS] + [("laplacian2", "periodic", 2)]
    + [("laplacian2", "periodic", 3), ("laplacian2", "walls", 3)]
)
CASES = [pytest.param(*key, id=f"{key[0]}-{key[1]}-{key[2]}d") for key in CASE_KEYS]


def _true_bandwidth(dense, shape, periodic):
    """Largest per-axis distance between a row and a column with a non-zero entry.

    Entries below 1e-12 of the largest are round-off: a linear part computed as
    fn(u) - fn(0) in one compiled program leaves ~1e-16 residues where fn(0) != 0.
    """
    dense = np.asarray(dense)
    rows, cols = np.nonzero(np.abs(dense) > 1e-12 * np.abs(dense).max())
    ri, ci = np.unravel_index(rows, shape), np.unravel_index(cols, shape)
    out = []
    for a, n in enumerate(shape):
        d = np.abs(ri[a] - ci[a])
        if periodic:
            d = np.minimum(d, n - d)
        out.append(int(d.max()))
    return tuple(out)


def _max_abs(x):
    return float(jnp.max(jnp.abs(x)))


@functools.lru_cache(maxsize=None)
def _case(op, kind, ndim):
    """Everything the tests of one case compare, computed once.

    The dense matrix, transposes and affine split come from one compiled program; the
    LinearOperator under test wraps from_affine's linear part compiled once, so probing
    (structure, diagonal, to_sparse) does not re-dispatch the operator eagerly.
    """
    grid = _grid(ndim)
    fn = OPERATORS[op](grid, _bc(kind, grid))
    rng = np.random.default_rng(1)
    u = jnp.asarray(rng.normal(size=grid.shape))
    v = jnp.asarray(rng.normal(size=grid.shape))

    @jax.jit
    def parts(u, v):
        A, offset = fd.LinearOperator.from_affine(fn, u)
        return dict(fu=fn(u), Au=A(u), offset=offset, ATv=A.T(v), dense=A.to_dense())

    out = parts(u, v)
    A = fd.LinearOperator(jax.jit(lambda x: fd.LinearOperator.from_affine(fn, x)[0](x)), u)
    return grid, u, v, out, A


@pytest.mark.parametrize("op,kind,ndim", CASES)
def test_affine_split_and_transpose(op, kind, ndim):
    grid, u, v, out, _ = _case(op, kind, ndim)
    scale = _max_abs(out["Au"]) + _max_abs(out["offset"])
    # fn(u) = A u + c, with c = fn(0) non-zero for non-homogeneous walls
    np.testing.assert_allclose(out["fu"], out["Au"] + out["offset"], rtol=0, atol=RTOL * scale)
    assert (_max_abs(out["offset"]) > 0.1) == (kind != "periodic")
    dense = np.asarray(out["dense"])
    np.testing.assert_allclose(dense @ np.ravel(u), np.ravel(out["Au"]), rtol=0, atol=RTOL * scale)
    # dot-product test of the transpose: <A u, v> = <u, A^T v>
    lhs, rhs = float(jnp.vdot(out["Au"], v)), float(jnp.vdot(u, out["ATv"]))
    assert abs(lhs - rhs) <= RTOL * float(jnp.linalg.norm(out["Au"]) * jnp.linalg.norm(v)), (lhs, rhs)
    np.testing.assert_allclose(np.ravel(out["ATv"]), dense.T @ np.ravel(v), rtol=0,
                               atol=RTOL * np.abs(dense).max() * _max_abs(v) * 10)


@pytest.mark.parametrize("op,kind,ndim", CASES)
def test_diagonal(op, kind, ndim):
    grid, _, _, out, A = _case(op, kind, ndim)
    dense = np.asarray(out["dense"])
    np.testing.assert_allclose(A.diagonal(), np.diag(dense).reshape(grid.shape), rtol=0,
                               atol=RTOL * np.abs(dense).max())


@pytest.mark.parametrize("op,kind,ndim", [c for c in CASES if c.values[0] in SYMMETRIC])
def test_symmetric(op, kind, ndim):
    """The accuracy-2 Laplacian and diffusion are symmetric for every boundary kind."""
    dense = np.asarray(_case(op, kind, ndim)[3]["dense"])
    np.testing.assert_allclose(dense, dense.T, rtol=0, atol=RTOL * np.abs(dense).max())


@pytest.mark.parametrize("op,kind,ndim", CASES)
def test_structure(op, kind, ndim):
    """The detected bandwidth never undercuts the true coupling (or diagonal() and
    to_sparse() go wrong). For translation-invariant stencils it is exact, with
    wrap-around on exactly the periodic axes. Upwinding with a variable velocity is not
    translation invariant: there detection may be conservative (documented)."""
    grid, _, _, out, A = _case(op, kind, ndim)
    bandwidth, periodic = A.structure()
    coupled = [b > 0 for b in _true_bandwidth(out["dense"], grid.shape, False)]
    for a in range(ndim):
        true = _true_bandwidth(out["dense"], grid.shape, periodic[a])[a]
        assert bandwidth[a] >= true, f"axis {a}: detected {bandwidth[a]} < true {true}"
    if op != "upwind1":
        assert periodic == tuple(kind == "periodic" and c for c in coupled)
        assert bandwidth == _true_bandwidth(out["dense"], grid.shape, kind == "periodic")


def test_from_affine_linear_part_is_linear():
    """from_affine's linear part, fn(u) - fn(0), evaluated in compiled code, leaves ~1e-16
    residues in every row where the offset is non-zero (XLA folds fn(0) with a different
    rounding). Regression: the structure probes read them as couplings, and a Dirichlet
    diffusion operator on 40 cells came out "periodic" with bandwidth 20 (diagonal() then
    cost 40 operator applications instead of 3)."""
    n = 40
    grid = fd.Grid(n, (0.0, 1.0))
    k = 1.0 + 0.5 * grid.mesh()[0]
    A, offset = fd.LinearOperator.from_affine(lambda u: fd.diffusion(u, grid, k, bc=fd.Dirichlet(1.3)),
                                              jnp.zeros(n))
    assert _max_abs(offset) > 0
    assert A.structure() == ((1,), (False,))
    assert A.num_colors() == 3


@pytest.mark.parametrize("op,kind,ndim", CASES)
def test_to_sparse(op, kind, ndim):
    """The assembled BCOO matrix equals the dense one. Regression: the column mapping
    unpacked the periodic flag and the colour modulus in the wrong order (every entry was
    dropped or misplaced)."""
    grid, u, _, out, A = _case(op, kind, ndim)
    dense = np.asarray(out["dense"])
    sparse = A.to_sparse()
    assert sparse.shape == (grid.size, grid.size)
    np.testing.assert_allclose(np.asarray(sparse.todense()), dense, rtol=0, atol=RTOL * np.abs(dense).max())
    np.testing.assert_allclose(sparse @ jnp.ravel(u), jnp.ravel(out["Au"]), rtol=0,
                               atol=RTOL * np.abs(dense).max() * _max_abs(u) * 10)


@pytest.mark.parametrize(
    "kind,accuracy,expected",
    [
        # (condition, accuracy, bandwidth of the 1-D Laplacian); walls: row 0 reaches the
        # interior cells its ghosts are built from (q - 1 of them, q from the closure notes)
        ("periodic", 2, (1,)), ("periodic", 4, (2,)), ("periodic", 8, (4,)),
        ("dirichlet", 2, (1,)), ("dirichlet", 4, (2,)), ("dirichlet", 8, (6,)),
        ("neumann", 2, (1,)), ("neumann", 4, (3,)), ("neumann", 8, (7,)),
    ],
)
def test_structure_expected_values(kind, accuracy, expected):
    grid = fd.Grid(24, (0.0, 1.0))
    bc = {"periodic": fd.Periodic(), "dirichlet": fd.Dirichlet(0.0), "neumann": fd.Neumann(0.0)}[kind]
    A = fd.LinearOperator(lambda u: fd.laplacian(u, grid, bc=bc, accuracy=accuracy), jnp.zeros(24))
    assert A.structure() == (expected, (kind == "periodic",))
    assert A.num_colors() <= 24


@pytest.mark.parametrize("accuracy,closure,kind", [(10, "full", "neumann"),
                                                   (12, "full", "dirichlet"), (12, "full", "neumann")])
def test_structure_covers_wide_wall_closures(accuracy, closure, kind):
    """The detected bandwidth may never be smaller than the true coupling distance, or
    to_sparse drops entries. High-order full closures couple the first row to cells far
    inside (12 cells for accuracy 12). Regression: detection used to probe only the first
    12 cells from each corner and reported 11."""
    n = 32
    grid = fd.Grid(n, (0.0, 1.0))
    bc = fd.Dirichlet(0.0) if kind == "dirichlet" else fd.Neumann(0.0)
    op = jax.jit(lambda u: fd.laplacian(u, grid, bc=bc, accuracy=accuracy, closure=closure))
    A = fd.LinearOperator(op, jnp.zeros(n))
    dense = np.asarray(jax.jit(jax.vmap(op))(jnp.eye(n)).T)
    bandwidth, periodic = A.structure()
    assert periodic == (False,)
    assert bandwidth[0] >= _true_bandwidth(dense, (n,), False)[0]


def test_transpose_of_transpose_and_explicit_structure():
    grid, u, _, out, A = _case("laplacian4", "walls", 2)
    np.testing.assert_allclose(A.T.T(u), out["Au"], rtol=0, atol=RTOL * _max_abs(out["Au"]))
    # an explicitly given (correct) structure gives the same diagonal without probing
    B = fd.LinearOperator(A.matvec, u, bandwidth=A.structure()[0], periodic=(False, False))
    np.testing.assert_allclose(B.diagonal(), A.diagonal(), rtol=0, atol=RTOL * _max_abs(A.diagonal()))
    with pytest.raises(ValueError, match=r"input of shape \(7, 6\).*got \(6, 7\)"):
        A(jnp.zeros((6, 7)))


@pytest.mark.parametrize("given_structure", [True, False], ids=["structure-given", "structure-detected"])
def test_diagonal_under_jit(given_structure):
    """Class docstring: "`diagonal()` works under `jit`", also when the structure is left
    to detection. Regression: the probes converted traced outputs to numpy
    (TracerArrayConversionError)."""
    grid = _grid(2)
    bc = _bc("dirichlet", grid)
    u = jnp.zeros(grid.shape)
    kwargs = dict(bandwidth=(1, 1), periodic=(False, False)) if given_structure else {}
    A, _ = fd.LinearOperator.from_affine(lambda x: fd.laplacian(x, grid, bc=bc), u, **kwargs)
    expected = np.diag(np.asarray(A.to_dense())).reshape(grid.shape)
    np.testing.assert_allclose(jax.jit(lambda: A.diagonal())(), expected, rtol=0,
                               atol=RTOL * np.abs(expected).max())


def test_operator_passes_through_jit():
    """Class docstring: "The operator is an equinox Module: pass it through `jax.jit`
    freely." Regression: matvec was a pytree leaf, which jax.jit rejects."""
    import equinox as eqx

    grid = _grid(1)
    A = fd.LinearOperator(lambda u: fd.laplacian(u, grid, bc=fd.Periodic()), jnp.zeros(grid.shape))
    expected = A.diagonal()
    np.testing.assert_allclose(eqx.filter_jit(lambda A: A.diagonal())(A), expected, rtol=RTOL)
    np.testing.assert_allclose(jax.jit(lambda A: A.diagonal())(A), expected, rtol=RTOL)
