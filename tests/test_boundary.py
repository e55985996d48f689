"""Boundary conditions: ghost values, polynomial exactness, validation, gradients."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxfd as fd

# Ghost values are a handful of flops on O(1) data: round-off is ~1e-16.
GHOST_TOL = 1e-13


def _u(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1.0, 1.0, shape))


# --- the classic accuracy-2 ghost cells ------------------------------------------------


def test_dirichlet_classic_ghost():
    h, u = 0.1, _u(6)
    padded = fd.pad(u, 0, 1, (fd.Dirichlet(0.7), fd.Dirichlet(-1.3)), h, order=2)
    assert padded.shape == (8,)
    np.testing.assert_allclose(padded[1:-1], u, rtol=0, atol=0)
    np.testing.assert_allclose(padded[0], 2 * 0.7 - u[0], atol=GHOST_TOL)  # u_-1 = 2g - u_0
    np.testing.assert_allclose(padded[-1], 2 * -1.3 - u[-1], atol=GHOST_TOL)


def test_neumann_classic_ghost_outward_normal():
    h, u = 0.1, _u(6)
    padded = fd.pad(u, 0, 1, (fd.Neumann(0.7), fd.Neumann(-1.3)), h, order=2)
    # outward normal: low side du/dn = -du/dx = (u_-1 - u_0)/h = g  =>  u_-1 = u_0 + h g
    np.testing.assert_allclose(padded[0], u[0] + h * 0.7, atol=GHOST_TOL)
    np.testing.assert_allclose(padded[-1], u[-1] + h * -1.3, atol=GHOST_TOL)


def test_robin_classic_ghost():
    h, u = 0.1, _u(6)
    a, b, g = 2.0, 0.5, 0.3
    padded = fd.pad(u, 0, 1, fd.Robin(a, b, g), h, order=2)
    # a (u_-1 + u_0)/2 + b (u_-1 - u_0)/h = g, solved for u_-1
    for ghost, inner in ((padded[0], u[0]), (padded[-1], u[-1])):
        expected = (g - inner * (a / 2 - b / h)) / (a / 2 + b / h)
        np.testing.assert_allclose(ghost, expected, atol=GHOST_TOL)
    # alpha=1, beta=0 is Dirichlet; alpha=0, beta=1 is Neumann
    np.testing.assert_allclose(fd.pad(u, 0, 1, fd.Robin(1.0, 0.0, 0.3), h),
                               fd.pad(u, 0, 1, fd.Dirichlet(0.3), h), atol=GHOST_TOL)
    np.testing.assert_allclose(fd.pad(u, 0, 1, fd.Robin(0.0, 1.0, 0.3), h),
                               fd.pad(u, 0, 1, fd.Neumann(0.3), h), atol=GHOST_TOL)


def test_second_ghost_layer_is_linear_extrapolation():
    h, u = 0.1, _u(6)
    padded = fd.pad(u, 0, 2, fd.Dirichlet(0.7), h, order=2)
    # the line through (face, g) and (h/2, u_0): at -3h/2 it is 4 g - 3 u_0
    np.testing.assert_allclose(padded[0], 4 * 0.7 - 3 * u[0], atol=GHOST_TOL)
    np.testing.assert_allclose(padded[1], 2 * 0.7 - u[0], atol=GHOST_TOL)


def test_periodic_ghosts_wrap():
    u = _u((5, 4))
    padded = fd.pad(u, 1, 2, fd.Periodic(), 0.25)
    np.testing.assert_array_equal(padded, jnp.concatenate([u[:, -2:], u, u[:, :2]], axis=1))


def test_face_arrays_along_each_axis_2d():
    h = (0.1, 0.2)
    u = _u((4, 5))
    g1 = jnp.arange(4.0)  # face of axis 1 has the shape of axis 0
    padded = fd.pad(u, 1, 1, (fd.Dirichlet(g1), fd.Neumann(-g1)), h[1], order=2)
    np.testing.assert_allclose(padded[:, 0], 2 * g1 - u[:, 0], atol=GHOST_TOL)
    np.testing.assert_allclose(padded[:, -1], u[:, -1] - h[1] * g1, atol=GHOST_TOL)
    g0 = jnp.arange(5.0) - 2.0
    alpha, beta = 1.0 + jnp.arange(5.0), 0.5 * jnp.ones(5)
    padded = fd.pad(u, 0, 1, fd.Robin(alpha, beta, g0), h[0], order=2)
    expected = (g0 - u[0] * (alpha / 2 - beta / h[0])) / (alpha / 2 + beta / h[0])
    np.testing.assert_allclose(padded[0], expected, atol=GHOST_TOL)


def test_face_arrays_3d_and_broadcastable():
    u = _u((3, 4, 5))
    full = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)))
    padded = fd.pad(u, 1, 1, fd.Dirichlet(full), 0.1)
    np.testing.assert_allclose(padded[:, 0, :], 2 * full - u[:, 0, :], atol=GHOST_TOL)
    # data that broadcasts against the face from the right, as numpy would
    row = jnp.arange(5.0)
    padded = fd.pad(u, 1, 1, fd.Dirichlet(row), 0.1)
    np.testing.assert_allclose(padded[:, 0, :], 2 * row[None, :] - u[:, 0, :], atol=GHOST_TOL)


# --- polynomial exactness of the ghosts --------------------------------------------------


def ghost_order(kind, order):
    """Degree bound of the ghosts of `pad(..., order)` (module notes of jaxfd._operators)."""
    if kind in ("neumann", "robin") and order > 2:
        return order + 1
    return order


def _poly_bc(kind, p, dp, lo, hi):
    """Exact data of the polynomial p on both walls of [lo, hi]."""
    out = []
    for x, sign in ((lo, -1.0), (hi, 1.0)):
        if kind == "dirichlet":
            out.append(fd.Dirichlet(p(x)))
        elif kind == "neumann":
            out.append(fd.Neumann(sign * dp(x)))
        elif kind == "robin":
            out.append(fd.Robin(1.5, 0.7, 1.5 * p(x) + 0.7 * sign * dp(x)))
        else:
            out.append(fd.Extrapolate())
    return tuple(out)


@pytest.mark.parametrize("kind", ["dirichlet", "neumann", "robin", "extrapolate"])
@pytest.mark.parametrize("order", list(range(2, 11)))
def test_pad_ghosts_exact_for_polynomials(kind, order):
    """Ghosts of `pad(order=q)` reproduce every polynomial of degree < q (q + 1 for
    Neumann/Robin above q = 2) exactly, and not one degree more."""
    n, h, width = 12, 0.25, 4
    lo, hi = 0.0, n * h
    x = lo + (np.arange(-width, n + width) + 0.5) * h
    q = ghost_order(kind, order)
    P = np.polynomial.Polynomial
    t = P([-0.5 * (lo + hi) / h, 1.0 / h])  # position in cells from the centre of the box
    for degree in range(q + 1):
        # a polynomial of exactly this degree; |t| <= 10 on the padded range
        p = t**degree + 0.5 * t ** max(degree - 1, 0) - 0.25
        dp = p.deriv()
        padded = fd.pad(jnp.asarray(p(x[width:-width])), 0, width, _poly_bc(kind, p, dp, lo, hi), h,
                        order=order)
        ghosts = np.concatenate([np.asarray(padded[:width]), np.asarray(padded[-width:])])
        exact = np.concatenate([p(x[:width]), p(x[-width:])])
        scale = np.abs(p(x)).max()
        err = np.abs(ghosts - exact).max() / scale
        if degree < q:
            # round-off only: extrapolation weights reach ~1e4 four cells out for q = 11, so
            # ~1e-12 relative to the largest value; 1e-9 leaves margin
            assert err < 1e-9, f"{kind}, order {order}: degree {degree} not reproduced ({err:.2e})"
        else:
            # the first degree not reproduced errs by prod(x - x_j) ~ 1e-3..1e-1 of the scale
            assert err > 1e-5, f"{kind}, order {order}: degree {degree} reproduced ({err:.2e}): " \
                "the ghosts are of higher order than documented"


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize("alpha,beta", [(0.0, 0.0), (0, 0), (np.zeros(3), np.zeros(3)),
                                        (np.array([1.0, 0.0, 2.0]), np.array([0.0, 0.0, 1.0]))])
def test_robin_alpha_beta_zero_raises(alpha, beta):
    with pytest.raises(ValueError, match=r"alpha or beta non-zero at every point"):
        fd.Robin(alpha, beta, 1.0)


def test_periodic_on_one_side_raises():
    g = fd.Grid(8, (0.0, 1.0))
    with pytest.raises(ValueError, match=r"Axis 0 is periodic on one side only"):
        fd.diff(jnp.ones(8), g, 0, bc=((fd.Periodic(), fd.Dirichlet(0.0)),))
    g2 = fd.Grid((8, 6), ((0.0, 1.0), (0.0, 1.0)))
    with pytest.raises(ValueError, match=r"Axis 1 is periodic on one side only"):
        fd.laplacian(jnp.ones((8, 6)), g2, bc=(fd.Periodic(), (fd.Neumann(0.0), fd.Periodic())))


@pytest.mark.parametrize("bc", [
    (fd.Dirichlet(0.0), fd.Dirichlet(0.0), fd.Dirichlet(0.0)),
    (fd.Dirichlet(0.0),),
])
def test_bc_tuple_of_wrong_length_raises(bc):
    g = fd.Grid((8, 6), ((0.0, 1.0), (0.0, 1.0)))
    with pytest.raises(ValueError, match=rf"one boundary condition entry per axis \(2 for this grid\), "
                                         rf"got {len(bc)}"):
        fd.laplacian(jnp.ones((8, 6)), g, bc=bc)


def test_bc_of_wrong_type_raises():
    g = fd.Grid((8, 6), ((0.0, 1.0), (0.0, 1.0)))
    u = jnp.ones((8, 6))
    with pytest.raises(TypeError, match=r"Expected bc to be a boundary condition"):
        fd.laplacian(u, g, bc=0.0)
    with pytest.raises(TypeError, match=r"Expected bc\[1\] to be a boundary condition or a \(lo, hi\) pair"):
        fd.laplacian(u, g, bc=(fd.Periodic(), (fd.Dirichlet(0.0), 1.0)))


@pytest.mark.parametrize(
    "make_bc,axis,shape",
    [
        (lambda: fd.Dirichlet(jnp.zeros(7)), 0, "(7,)"),           # face of axis 0 is (6,)
        (lambda: fd.Neumann(jnp.zeros((8, 6))), 0, r"(8, 6)"),     # a whole field
        (lambda: fd.Robin(jnp.ones(5), 1.0, 0.0), 1, r"(5,)"),     # face of axis 1 is (8,)
        (lambda: fd.Robin(1.0, jnp.ones((8, 1)), 0.0), 1, r"(8, 1)"),
    ],
)
def test_face_array_of_wrong_shape_raises(make_bc, axis, shape):
    g = fd.Grid((8, 6), ((0.0, 1.0), (0.0, 1.0)))
    bc = tuple(make_bc() if a == axis else fd.Periodic() for a in range(2))
    with pytest.raises(ValueError, match=rf"on axis {axis} must be a scalar or an array over the face, "
                                         rf"shape \({g.face_shape(axis)[0]},\).*got shape {re.escape(shape)}"):
        fd.laplacian(jnp.ones((8, 6)), g, bc=bc)


# --- gradients flow into boundary data and coefficients -----------------------------------

GRID2 = fd.Grid((6, 5), ((0.0, 1.2), (0.0, 1.0)))
U2 = jnp.asarray(np.random.default_rng(3).normal(size=(6, 5)))


def _functional(out):
    """A nonlinear scalar functional, so second-order checks are not trivially zero.

    Operator outputs here are O(100) (1/h^2 with h = 0.2); scaling them to O(1) keeps the
    central differences of check_grads in their accurate range.
    """
    w = jnp.asarray(np.random.default_rng(7).normal(size=out.shape))
    return jnp.sum(w * jnp.sin(0.01 * out))


def _bc_from(kind, x0lo, x0hi, x1lo, x1hi):
    make = {
        "dirichlet": lambda v: fd.Dirichlet(v),
        "neumann": lambda v: fd.Neumann(v),
        "robin": lambda v: fd.Robin(1.0 + 0.1 * v, 0.5 + 0.05 * v**2, v),
    }[kind]
    return ((make(x0lo), make(x0hi)), (make(x1lo), make(x1hi)))


def _check(f, args, order=1):
    """Nonzero gradients (a check of a function that ignores its argument cannot fail),
    then jax.test_util.check_grads in forward and reverse mode against central differences.

    float64, eps=1e-4: the difference quotient is accurate to ~1e-8 relative, well inside
    check_grads' float64 tolerance (1e-5). The function is jitted so each derivative
    program compiles once instead of dispatching every operation eagerly.
    """
    grads = jax.jit(jax.grad(f, argnums=tuple(range(len(args)))))(*args)
    for i, gr in enumerate(grads):
        assert float(jnp.linalg.norm(jnp.ravel(gr))) > 1e-8, f"no gradient reaches argument {i}"
    check_grads(jax.jit(f), args, order=order, modes=("fwd", "rev"), eps=1e-4)


def _faces(seed):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=s)) for s in ((5,), (5,), (6,), (6,))]


def test_grad_wrt_field_and_face_arrays():
    """Laplacian (accuracy 4), a full-closure first derivative and the gradient, w.r.t. the
    field and face arrays on all four walls: Dirichlet and Neumann on axis 0, Robin (with
    alpha and beta depending on the data too) on axis 1."""

    def f(u, a, b, c, d):
        bc = ((fd.Dirichlet(a), fd.Neumann(b)),
              (fd.Robin(1.0 + 0.1 * c, 0.5 + 0.05 * c**2, c), fd.Robin(1.0 + 0.1 * d, 0.5, d)))
        return (_functional(fd.laplacian(u, GRID2, bc=bc, accuracy=4))
                + _functional(fd.diff(u, GRID2, 1, 1, 2, bc=bc, closure="full"))
                + _functional(fd.gradient(u, GRID2, bc=bc)))

    _check(f, (U2, *_faces(11)))


def test_grad_ignores_conditions_of_other_axes():
    """diff along axis 1 never reads the conditions of axis 0: exactly zero gradient."""

    def f(a, b, c, d):
        return _functional(fd.diff(U2, GRID2, 1, 1, 4, bc=_bc_from("robin", a, b, c, d)))

    grads = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))(*_faces(12))
    assert [float(jnp.abs(g).max()) == 0.0 for g in grads] == [True, True, False, False]


def test_grad_wrt_scalar_bc_values():
    def f(u, g, n, r):
        bc = ((fd.Dirichlet(g), fd.Neumann(n)), (fd.Robin(1.0 + 0.1 * r, 0.5, r), fd.Dirichlet(g)))
        return _functional(fd.laplacian(u, GRID2, bc=bc, accuracy=4))

    _check(f, (U2, jnp.asarray(0.3), jnp.asarray(-0.7), jnp.asarray(1.1)))


def test_grad_second_order_1d():
    """order=2: Hessian-vector products through the ghosts (Robin data enter nonlinearly)."""
    grid = fd.Grid(9, (0.0, 1.0))
    u = jnp.asarray(np.random.default_rng(2).normal(size=9))

    def f(u, alpha, beta, g):
        bc = ((fd.Robin(alpha, beta, g), fd.Neumann(g)),)
        return _functional(fd.diff(u, grid, 0, 2, 2, bc=bc))

    _check(f, (u, jnp.asarray(1.3), jnp.asarray(0.6), jnp.asarray(0.2)), order=2)


def test_grad_wrt_robin_alpha_beta_face_arrays():
    rng = np.random.default_rng(5)
    alpha = jnp.asarray(1.0 + rng.uniform(size=5))
    beta = jnp.asarray(0.5 + rng.uniform(size=5))
    value = jnp.asarray(rng.normal(size=5))

    def f(alpha, beta, value):
        bc = (fd.Robin(alpha, beta, value), fd.Periodic())
        return _functional(fd.diff(U2, GRID2, 0, 2, 4, bc=bc))

    _check(f, (alpha, beta, value))


def test_grad_wrt_diffusion_coefficient_and_bc():
    rng = np.random.default_rng(9)
    k = jnp.asarray(1.0 + rng.uniform(size=(6, 5)))
    g = jnp.asarray(rng.normal(size=5))

    def f(u, k, g):
        bc = ((fd.Dirichlet(g), fd.Neumann(0.5 * g)), fd.Robin(1.0, 0.5, 0.2))
        return (_functional(fd.diffusion(u, GRID2, k, bc=bc))
                + _functional(fd.diffusion(u, GRID2, k, bc=fd.Periodic(), mean="arithmetic")))

    _check(f, (U2, k, g))


def test_grad_flows_through_bc_passed_as_pytree():
    """Conditions are equinox modules whose data are leaves: jax.grad w.r.t. the bc object."""
    bc = ((fd.Dirichlet(jnp.ones(5)), fd.Robin(jnp.asarray(1.0), jnp.asarray(0.5), jnp.asarray(0.2))),
          fd.Neumann(jnp.zeros(6)))
    grads = jax.jit(jax.grad(lambda bc: _functional(fd.laplacian(U2, GRID2, bc=bc, accuracy=4))))(bc)
    leaves = jax.tree_util.tree_leaves(grads)
    assert len(leaves) == 5 and all(float(jnp.abs(x).sum()) > 0 for x in leaves)


@pytest.mark.parametrize("mean", ["harmonic", "arithmetic"])
def test_precomputed_face_coefficients_equal_the_cell_coefficient(mean):
    rng = np.random.default_rng(11)
    k = jnp.asarray(1.0 + rng.uniform(size=(6, 5)))
    g = jnp.asarray(rng.normal(size=5))
    bcs = [((fd.Dirichlet(g), fd.Neumann(0.5 * g)), fd.Robin(1.0, 0.5, 0.2)),
           (fd.Periodic(), fd.Dirichlet(0.0))]
    for bc in bcs:
        faces = fd.face_coefficients(k, GRID2, bc=bc, mean=mean)
        np.testing.assert_allclose(fd.diffusion(U2, GRID2, faces, bc=bc),
                                   fd.diffusion(U2, GRID2, k, bc=bc, mean=mean), rtol=1e-13, atol=1e-12)

    # gradients reach k through the precomputed faces
    bc = bcs[0]
    _check(lambda u, k: _functional(fd.diffusion(u, GRID2, fd.face_coefficients(k, GRID2, bc=bc, mean=mean),
                                                 bc=bc)), (U2, k))

    # faces built for other periodicity or another grid are refused, with the fix named
    faces = fd.face_coefficients(k, GRID2, bc=fd.Periodic())
    with pytest.raises(ValueError, match=r"periodic axes \(True, True\).*fd.face_coefficients"):
        fd.diffusion(U2, GRID2, faces, bc=fd.Dirichlet(0.0))
