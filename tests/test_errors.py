"""Structural mistakes raise ValueError/TypeError at trace time, naming expected and given.

Every call is made inside `jax.jit`, so the error must come from tracing (static
metadata), not from a value check at run time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfd as fd

G1 = fd.Grid(8, (0.0, 1.0))
G2 = fd.Grid((8, 6), ((0.0, 1.0), (0.0, 1.5)))
U1 = jnp.ones(8)
U2 = jnp.ones((8, 6))
P = fd.Periodic()


def traced(fn, *args):
    """Run `fn(*args)` under jit (errors must be raised while tracing)."""
    return jax.jit(fn)(*args)


CASES = [
    # (id, function of the field, field, exception, regex naming expected and given)
    ("field shape", lambda u: fd.diff(u, G1, 0, bc=P), jnp.ones(9), ValueError,
     r"Expected u with shape \(8,\) .*got \(9,\)"),
    ("field shape 2d", lambda u: fd.laplacian(u, G2, bc=P), jnp.ones((6, 8)), ValueError,
     r"Expected u with shape \(8, 6\) .*got \(6, 8\)"),
    ("vector field shape", lambda u: fd.divergence(u, G2, bc=P), U2, ValueError,
     r"Expected v with shape \(2, 8, 6\) .*got \(8, 6\)"),
    ("curl field shape", lambda u: fd.curl(jnp.stack([u, u, u]), G2, bc=P), U2, ValueError,
     r"Expected v with shape \(2, 8, 6\) .*got \(3, 8, 6\)"),
    ("velocity shape", lambda u: fd.advection(u, jnp.ones((2, 8, 5)), G2, bc=P), U2, ValueError,
     r"Expected velocity with shape \(2, 8, 6\) .*got \(2, 8, 5\)"),
    ("velocity count", lambda u: fd.advection(u, (1.0,), G2, bc=P), U2, ValueError,
     r"Expected 2 velocity components, got 1"),
    ("coefficient shape", lambda u: fd.diffusion(u, G2, jnp.ones((6, 8)), bc=P), U2, ValueError,
     r"Expected coefficient with shape \(8, 6\) .*got \(6, 8\)"),
    ("flux shape", lambda u: fd.flux_divergence(u, G2, lambda x: x, bc=P), U2, ValueError,
     r"Expected flux\(u\) to have shape \(2, 8, 6\) .*got \(8, 6\)"),
    ("integer field", lambda u: fd.laplacian(u.astype(jnp.int32), G2, bc=P), U2, TypeError,
     r"floating-point dtype, got int32"),
    ("not a grid", lambda u: fd.diff(u, (8,), 0, bc=P), U1, TypeError,
     r"Expected a jaxfd.Grid, got tuple"),
    ("odd accuracy", lambda u: fd.diff(u, G1, 0, 1, 3, bc=P), U1, ValueError,
     r"positive even integer \(2, 4, 6, 8, ...\), got 3"),
    ("odd accuracy laplacian", lambda u: fd.laplacian(u, G2, bc=P, accuracy=5), U2, ValueError,
     r"positive even integer .*got 5"),
    ("zero accuracy", lambda u: fd.gradient(u, G2, bc=P, accuracy=0), U2, ValueError,
     r"positive even integer .*got 0"),
    ("string accuracy", lambda u: fd.mixed_diff(u, G2, (0, 1), "4", bc=P), U2, ValueError,
     r"positive even integer .*got '4'"),
    ("float accuracy", lambda u: fd.curl(jnp.stack([u, u]), G2, bc=P, accuracy=4.0), U2, ValueError,
     r"positive even integer .*got 4.0"),
    ("derivative order", lambda u: fd.diff(u, G1, 0, 0, bc=P), U1, ValueError,
     r"derivative order >= 1, got order=0"),
    ("axis that does not exist", lambda u: fd.diff(u, G2, 2, bc=P), U2, ValueError,
     r"Axis 2 does not exist on a 2-D grid; expected an axis in \[-2, 1\]"),
    ("bc for an axis that does not exist", lambda u: fd.laplacian(u, G2, bc=(P, P, P)), U2, ValueError,
     r"one boundary condition entry per axis \(2 for this grid\), got 3"),
    ("bc for an axis that does not exist 1d", lambda u: fd.diff(u, G1, 0, bc=(fd.Dirichlet(0.0), fd.Dirichlet(1.0))),
     U1, ValueError, r"one boundary condition entry per axis \(1 for this grid\), got 2"),
    ("periodic one side", lambda u: fd.diff(u, G1, 0, bc=((P, fd.Neumann(0.0)),)), U1, ValueError,
     r"Axis 0 is periodic on one side only"),
    ("face array shape", lambda u: fd.laplacian(u, G2, bc=(fd.Dirichlet(jnp.ones(8)), P)), U2, ValueError,
     r"Dirichlet.value on axis 0 must be a scalar or an array over the face, shape \(6,\).*got shape \(8,\)"),
    ("grid too small", lambda u: fd.diff(u, fd.Grid(5, (0.0, 1.0)), 0, 1, 8, bc=P), jnp.ones(5), ValueError,
     r"needs at least 9 cells along axis 0; the grid has 5"),
    ("grid too small second axis", lambda u: fd.laplacian(u, fd.Grid((9, 4), ((0.0, 1.0),) * 2), bc=P, accuracy=4),
     jnp.ones((9, 4)), ValueError, r"needs at least 5 cells along axis 1; the grid has 4"),
    ("grid too small for the wall closure",
     lambda u: fd.diff(u, fd.Grid(9, (0.0, 1.0)), 0, 2, 8, bc=fd.Neumann(0.0), closure="full"), jnp.ones(9),
     ValueError, r"Boundary closure of order 11 on axis 0 needs 10 cells, the field has 9"),
    ("grid too small for weno5", lambda u: fd.advection(u, (1.0,), fd.Grid(4, (0.0, 1.0)), bc=P), jnp.ones(4),
     ValueError, r"Scheme 'weno5' needs at least 5 cells along axis 0; the grid has 4"),
    ("grid too small for diffusion", lambda u: fd.diffusion(u, fd.Grid(1, (0.0, 1.0)), 1.0, bc=fd.Dirichlet(0.0)),
     jnp.ones(1), ValueError, r"diffusion needs at least 2 cells along axis 0; the grid has 1"),
    ("bad closure", lambda u: fd.laplacian(u, G2, bc=fd.Dirichlet(0.0), closure="fancy"), U2, ValueError,
     r"Expected closure='standard' or closure='full', got 'fancy'"),
    ("bad closure periodic", lambda u: fd.diff(u, G1, 0, bc=P, closure="Full"), U1, ValueError,
     r"Expected closure='standard' or closure='full', got 'Full'"),
    ("bad closure advection", lambda u: fd.advection(u, (1.0,), G1, bc=P, closure="none"), U1, ValueError,
     r"Expected closure='standard' or closure='full', got 'none'"),
    ("bad scheme advection", lambda u: fd.advection(u, (1.0,), G1, bc=P, scheme="weno7"), U1, ValueError,
     r"Expected scheme to be one of \['upwind1', 'upwind3', 'weno5'\], got 'weno7'"),
    ("bad scheme flux", lambda u: fd.flux_divergence(u, G1, lambda x: 0.5 * x**2, bc=P, scheme="eno"), U1,
     ValueError, r"Expected scheme to be one of \['upwind1', 'upwind3', 'weno5'\], got 'eno'"),
    ("bad mean", lambda u: fd.diffusion(u, G1, u, bc=P, mean="geometric"), U1, ValueError,
     r"Expected mean='harmonic' or 'arithmetic', got 'geometric'"),
    ("curl on 1-D", lambda u: fd.curl(u[None], G1, bc=P), U1, ValueError,
     r"curl is defined on 2-D and 3-D grids; this grid is 1-D"),
    ("mixed_diff on one axis", lambda u: fd.mixed_diff(u, G2, (1, -1), bc=P), U2, ValueError,
     r"two different axes, got axes=\(1, -1\)"),
]


@pytest.mark.parametrize("fn,u,exc,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_structural_errors_at_trace_time(fn, u, exc, match):
    with pytest.raises(exc, match=match):
        traced(fn, u)


def test_robin_alpha_beta_zero():
    with pytest.raises(ValueError, match=r"alpha or beta non-zero at every point of the face; "
                                         r"got alpha=0.0, beta=0.0"):
        fd.Robin(0.0, 0.0, 1.0)
    # concrete data inside a traced function are checked while tracing too
    with pytest.raises(ValueError, match=r"alpha or beta non-zero"):
        traced(lambda u: fd.diff(u, G1, 0, bc=fd.Robin(np.zeros(3)[:1], 0, 1.0)), U1)


def test_bad_mean_with_scalar_coefficient():
    """Regression: `mean` was validated only when the coefficient is a field, so a
    misspelt mean with a scalar coefficient was silently accepted."""
    with pytest.raises(ValueError, match=r"Expected mean='harmonic' or 'arithmetic', got 'geometric'"):
        traced(lambda u: fd.diffusion(u, G1, 1.0, bc=P, mean="geometric"), U1)


def test_numpy_integer_derivative_order():
    """accuracy, grid sizes and axes accept numpy integers, and so must the derivative
    order. Regression: it rejected np.int64(2) with the self-contradictory message
    "Expected a derivative order >= 1, got order=np.int64(2)"."""
    out = traced(lambda u: fd.diff(u, G1, np.int64(0), np.int64(2), np.int64(2), bc=P), U1)
    assert out.shape == (8,)
