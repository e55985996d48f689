"""Derivatives of the flux-form diffusion operator.

`fd.diffusion` evaluates cell by cell and carries its own JVP rule, whose
tangents are written as transposes (of the cell-wise linearisation for u, of
the face-gradient accumulation for the faces) so that reverse mode runs fast
loops. These tests pin the rule to the plain face-array form it replaces:
values, JVPs and VJPs to round-off for every boundary kind, second
derivatives against central differences, and the adjoint identity of each
linearisation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxfd as fd
from jaxfd import _operators as O
from jaxfd._boundary import normalize_bc

jax.config.update("jax_enable_x64", True)

GRID = fd.Grid((7, 6), ((0.0, 1.0), (0.0, 1.5)))  # unequal spacings: per-axis scales
SQUARE = fd.Grid((6, 6), ((0.0, 1.0), (0.0, 1.0)))  # equal spacings: one shared scale


def _bcs(rng):
    alpha = jnp.asarray(1.0 + rng.uniform(size=6))
    beta = jnp.asarray(0.5 + rng.uniform(size=6))
    return {
        "dirichlet": fd.Dirichlet(0.7),
        "neumann": fd.Neumann(-0.4),
        "robin": ((fd.Robin(alpha, beta, 0.3), fd.Dirichlet(0.0)), fd.Neumann(0.0)),
        "periodic": fd.Periodic(),
        "extrapolate": (fd.Extrapolate(), fd.Dirichlet(1.0)),
        "mixed": ((fd.Dirichlet(1.0), fd.Neumann(2.0)), fd.Periodic()),
    }


KINDS = ["dirichlet", "neumann", "robin", "periodic", "extrapolate", "mixed"]


def _case(kind, grid=GRID, seed=0):
    rng = np.random.default_rng(seed)
    bc = _bcs(rng)[kind]
    pairs = normalize_bc(bc, 2)
    u = jnp.asarray(rng.normal(size=grid.shape))
    k = jnp.asarray(1.0 + rng.uniform(size=grid.shape))
    faces = fd.face_coefficients(k, grid, bc=bc).faces
    return grid, pairs, u, faces


def _cells(grid, pairs):
    # jitted: each derivative below compiles once instead of dispatching op by op
    return jax.jit(lambda u, faces: O.flux_form_diffusion(u, grid, faces, pairs))


def _by_faces(grid, pairs):
    return jax.jit(lambda u, faces: O._flux_form_by_faces(u, grid, faces, pairs))


def _close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-11, atol=1e-11 * float(jnp.max(jnp.abs(y))))


@pytest.mark.parametrize("grid", [GRID, SQUARE], ids=["unequal-h", "equal-h"])
@pytest.mark.parametrize("kind", KINDS)
def test_rule_matches_the_face_array_form(kind, grid):
    grid, pairs, u, faces = _case(kind, grid)
    new, old = _cells(grid, pairs), _by_faces(grid, pairs)
    _close(new(u, faces), old(u, faces))
    rng = np.random.default_rng(1)
    du = jnp.asarray(rng.normal(size=u.shape))
    dfaces = tuple(jnp.asarray(rng.normal(size=f.shape)) for f in faces)
    _close(jax.jvp(new, (u, faces), (du, dfaces)), jax.jvp(old, (u, faces), (du, dfaces)))
    # each argument alone (the other's tangent is a symbolic zero in the rule)
    _close(jax.jvp(lambda v: new(v, faces), (u,), (du,)), jax.jvp(lambda v: old(v, faces), (u,), (du,)))
    _close(jax.jvp(lambda f: new(u, f), (faces,), (dfaces,)), jax.jvp(lambda f: old(u, f), (faces,), (dfaces,)))
    w = jnp.asarray(rng.normal(size=u.shape))
    _close(jax.vjp(new, u, faces)[1](w), jax.vjp(old, u, faces)[1](w))


@pytest.mark.parametrize("kind", KINDS)
def test_linearisations_satisfy_the_adjoint_identity(kind):
    """<w, J v> = <J^T w, v> for the u and face linearisations, J^T from reverse mode.

    Forward and reverse mode here run different code (a transpose and a transpose of a
    transpose), so this checks that they are one linear map. It cannot see a wrong
    symmetry assumption (that swaps both sides alike): the comparison with the
    face-array form above does (verified by making Extrapolate walls count as symmetric:
    that comparison and the second-derivative check fail)."""
    grid, pairs, u, faces = _case(kind)
    op = _cells(grid, pairs)
    rng = np.random.default_rng(2)
    v = jnp.asarray(rng.normal(size=u.shape))
    w = jnp.asarray(rng.normal(size=u.shape))
    jv = jax.jvp(lambda x: op(x, faces), (u,), (v,))[1]
    jtw = jax.vjp(lambda x: op(x, faces), u)[1](w)[0]
    lhs, rhs = float(jnp.vdot(w, jv)), float(jnp.vdot(jtw, v))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0) and abs(lhs) > 1e-6

    dfaces = tuple(jnp.asarray(rng.normal(size=f.shape)) for f in faces)
    jv = jax.jvp(lambda f: op(u, f), (faces,), (dfaces,))[1]
    jtw = jax.vjp(lambda f: op(u, f), faces)[1](w)[0]
    lhs = float(jnp.vdot(w, jv))
    rhs = sum(float(jnp.vdot(a, b)) for a, b in zip(jtw, dfaces))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0) and abs(lhs) > 1e-6


@pytest.mark.parametrize("kind", ["dirichlet", "robin", "periodic", "mixed", "extrapolate"])
def test_second_derivatives_against_central_differences(kind):
    """Order-2 check_grads in both modes: Hessian-vector products through the rule
    (gradient regularisation and Newton-type solvers differentiate gradients)."""
    grid, pairs, u, faces = _case(kind)
    op = _cells(grid, pairs)

    def f(u, fx, fy):
        # scaled by h^2 (the operator is O(1/h^2)) so that central differences resolve it
        return jnp.sum(jnp.sin(0.02 * op(u, (fx, fy))) * u)

    check_grads(jax.jit(f), (u, *faces), order=2, modes=("fwd", "rev"), eps=1e-4)


def test_boundary_data_and_scalar_faces_take_the_face_array_path():
    """Tangents of boundary values and of scalar coefficients go through the face-array
    form; they must still agree with it and with central differences."""
    rng = np.random.default_rng(3)
    u = jnp.asarray(rng.normal(size=GRID.shape))
    g = jnp.asarray(rng.normal(size=6))

    def f(u, k, g):
        pairs = normalize_bc(((fd.Dirichlet(g), fd.Neumann(0.5 * g)), fd.Robin(1.0, 0.5, 0.2)), 2)
        return jnp.sum(jnp.cos(0.02 * O.flux_form_diffusion(u, GRID, (k, 2.0 * k), pairs)))

    check_grads(jax.jit(f), (u, 1.3, g), order=2, modes=("fwd", "rev"), eps=1e-4)


def test_periodic_faces_built_by_hand():
    """On a periodic axis the operator is symmetric only while the first and last
    faces agree; faces built by hand (or moved by an optimiser) need not, so the u
    derivative there must not assume symmetry."""
    rng = np.random.default_rng(5)
    grid = fd.Grid((6, 5), ((0.0, 1.0), (0.0, 1.0)))
    u = jnp.asarray(rng.normal(size=grid.shape))
    faces = (jnp.asarray(1.0 + rng.uniform(size=(7, 5))), jnp.asarray(1.0 + rng.uniform(size=(6, 6))))
    coefficients = fd.FaceCoefficients(faces=faces, shape=grid.shape, periodic=(True, True), mean="harmonic")
    new = lambda v: fd.diffusion(v, grid, coefficients, bc=fd.Periodic())  # noqa: E731
    old = lambda v: O._flux_form_by_faces(v, grid, faces, normalize_bc(fd.Periodic(), 2))  # noqa: E731
    du = jnp.asarray(rng.normal(size=grid.shape))
    _close(jax.jvp(new, (u,), (du,)), jax.jvp(old, (u,), (du,)))
    _close(jax.vjp(new, u)[1](du), jax.vjp(old, u)[1](du))


def test_mixed_second_derivatives_along_the_faces():
    """d/dfaces of the u-gradient (jacfwd of grad): on a periodic axis a face direction
    makes the first and last faces differ even when the faces start equal."""
    for kind in ("periodic", "dirichlet"):
        grid, pairs, u, faces = _case(kind)

        def loss(u, faces, op):
            return jnp.sum(op(u, faces) ** 2)

        new = jax.jacfwd(jax.grad(lambda u, f: loss(u, f, _cells(grid, pairs))), argnums=1)(u, faces)
        old = jax.jacfwd(jax.grad(lambda u, f: loss(u, f, _by_faces(grid, pairs))), argnums=1)(u, faces)
        _close(new, old)


def test_faces_that_broadcast():
    """Face arrays of shape 1 across the other axes (a coefficient varying along one
    axis) work, and their gradient keeps their shape."""
    rng = np.random.default_rng(6)
    grid, pairs = GRID, normalize_bc(fd.Dirichlet(0.0), 2)
    u = jnp.asarray(rng.normal(size=grid.shape))
    faces = (jnp.asarray(1.0 + rng.uniform(size=(8, 1))), jnp.asarray(1.0 + rng.uniform(size=(1, 7))))
    full = tuple(jnp.broadcast_to(f, s) for f, s in zip(faces, [(8, 6), (7, 7)]))
    _close(_cells(grid, pairs)(u, faces), _by_faces(grid, pairs)(u, full))
    grads = jax.grad(lambda f: jnp.sum(_cells(grid, pairs)(u, f) ** 2))(faces)
    expected = jax.grad(lambda f: jnp.sum(_by_faces(grid, pairs)(u, f) ** 2))(faces)
    assert [g.shape for g in grads] == [(8, 1), (1, 7)]
    _close(grads, expected)


def test_vmap_and_linear_transpose_see_the_same_operator():
    grid, pairs, u, faces = _case("robin")
    op = _cells(grid, pairs)
    batch = jnp.stack([u, 2.0 * u, -u])
    np.testing.assert_allclose(jax.vmap(lambda x: op(x, faces))(batch)[1], op(2.0 * u, faces), rtol=1e-13)
    # derivatives under vmap: per-example gradients wrt u and the faces
    grads = jax.vmap(jax.grad(lambda x, f: jnp.sum(op(x, f) ** 2), argnums=(0, 1)), in_axes=(0, None))(batch, faces)
    one = jax.grad(lambda x, f: jnp.sum(op(x, f) ** 2), argnums=(0, 1))(2.0 * u, faces)
    _close(jax.tree_util.tree_map(lambda g: g[1], grads), one)
    # the affine part drops out of jax.linear_transpose's linear map only for zero boundary data
    grid, pairs, u, faces = _case("periodic")
    op = _cells(grid, pairs)
    w = jnp.cos(u)
    transpose = jax.linear_transpose(lambda x: op(x, faces), u)
    np.testing.assert_allclose(float(jnp.vdot(w, op(u, faces))), float(jnp.vdot(transpose(w)[0], u)),
                               rtol=1e-12)
