"""jit, vmap, dtypes and compilation caching of the operators."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfd as fd

# The grid of the 2-D order tests at their coarsest resolution: eager runs here reuse the
# primitives those tests compiled.
GRID = fd.Grid((16, 24), ((0.0, 1.0), (0.0, 1.5)))
RNG = np.random.default_rng(0)
U = jnp.asarray(RNG.normal(size=GRID.shape))
V = jnp.asarray(RNG.normal(size=(2,) + GRID.shape))
K = jnp.asarray(1.0 + RNG.uniform(size=GRID.shape))
VEL = jnp.asarray(RNG.normal(size=(2,) + GRID.shape))


def _walls(dtype=jnp.float64, seed=5):
    """Mixed conditions with data over the faces."""
    rng = np.random.default_rng(seed)
    g0 = jnp.asarray(rng.normal(size=24), dtype)
    g1 = jnp.asarray(rng.normal(size=16), dtype)
    return ((fd.Dirichlet(g0), fd.Neumann(0.5 * g0)), (fd.Robin(1.0 + 0.1 * g1**2, 0.5, g1), fd.Dirichlet(g1)))


BC = _walls()


def _axis0(bc):
    """The conditions of axis 0, in any accepted spelling."""
    return bc[0] if isinstance(bc, tuple) else bc

OPS = {
    "diff": lambda u, bc: fd.diff(u, GRID, 1, 2, 4, bc=bc, closure="full"),
    "gradient": lambda u, bc: fd.gradient(u, GRID, bc=bc, accuracy=2),
    "divergence": lambda u, bc: fd.divergence(jnp.stack([u, 2 * u]), GRID, bc=bc),
    "laplacian": lambda u, bc: fd.laplacian(u, GRID, bc=bc, accuracy=4),
    "mixed_diff": lambda u, bc: fd.mixed_diff(u, GRID, (0, 1), 2, bc=bc),
    "curl": lambda u, bc: fd.curl(jnp.stack([u, -u]), GRID, bc=bc),
    "diffusion": lambda u, bc: fd.diffusion(u, GRID, K.astype(u.dtype), bc=bc),
    "advection": lambda u, bc: fd.advection(u, VEL.astype(u.dtype), GRID, bc=bc, scheme="weno5"),
    "flux_divergence": lambda u, bc: fd.flux_divergence(u, GRID, lambda x: jnp.stack([0.5 * x**2, x]), bc=bc),
    "pad": lambda u, bc: fd.pad(u, 0, 3, _axis0(bc), GRID.spacing[0], order=4),
}


@pytest.mark.parametrize("name", list(OPS))
def test_jit_equals_eager(name):
    f = OPS[name]
    eager = f(U, BC)
    jitted = jax.jit(f)(U, BC)
    assert jitted.shape == eager.shape and jitted.dtype == eager.dtype
    # XLA may fuse and contract (FMA) differently from eager dispatch: a few ulps of the
    # largest term (~1e3 here, weights / h^2)
    np.testing.assert_allclose(jitted, eager, rtol=0, atol=1e-12 * float(jnp.abs(eager).max() + 1))


@pytest.mark.parametrize("name", ["diff", "laplacian", "advection"])
def test_vmap_over_fields(name):
    f = OPS[name]
    batch = jnp.stack([U, U**2, jnp.sin(U)])
    mapped = jax.jit(jax.vmap(lambda u: f(u, BC)))(batch)
    single = jax.jit(lambda u: f(u, BC))
    expected = jnp.stack([single(u) for u in batch])
    np.testing.assert_allclose(mapped, expected, rtol=0, atol=1e-12 * float(jnp.abs(expected).max()))


def test_vmap_over_boundary_data():
    """A batch of Dirichlet face arrays (e.g. an ensemble of boundary controls)."""
    values = jnp.asarray(RNG.normal(size=(3, 24)))

    def f(g):
        bc = ((fd.Dirichlet(g), fd.Dirichlet(0.0)), fd.Periodic())
        return fd.laplacian(U, GRID, bc=bc, accuracy=4)

    mapped = jax.jit(jax.vmap(f))(values)
    single = jax.jit(f)
    expected = jnp.stack([single(g) for g in values])
    np.testing.assert_allclose(mapped, expected, rtol=0, atol=1e-12 * float(jnp.abs(expected).max()))


# --- float32 stays float32 (strict dtype promotion is on for the whole suite) -----------

SCALAR_BCS = {
    "periodic": fd.Periodic(),
    "dirichlet": fd.Dirichlet(1.0),  # default python scalars
    "neumann": fd.Neumann(-0.5),
    "robin": fd.Robin(1, 0.5, 0.25),  # python ints too
    "mixed": ((fd.Dirichlet(0.0), fd.Neumann(1.0)), (fd.Robin(2.0, 1.0, 0.0), fd.Extrapolate())),
    "float64 face data": _walls(jnp.float64),
}
F32_OPS = dict(OPS)
F32_OPS.update({
    "diffusion scalar k": lambda u, bc: fd.diffusion(u, GRID, 0.7, bc=bc),
    "diffusion arithmetic": lambda u, bc: fd.diffusion(u, GRID, K.astype(u.dtype), bc=bc, mean="arithmetic"),
    "advection tuple velocity": lambda u, bc: fd.advection(u, (1.0, -0.5), GRID, bc=bc, scheme="upwind3"),
    "advection upwind1": lambda u, bc: fd.advection(u, VEL.astype(u.dtype), GRID, bc=bc, scheme="upwind1"),
    "flux max_speed": lambda u, bc: fd.flux_divergence(u, GRID, lambda x: jnp.stack([x, -x]), bc=bc,
                                                       max_speed=1.0, scheme="upwind3"),
    "laplacian full": lambda u, bc: fd.laplacian(u, GRID, bc=bc, accuracy=6, closure="full"),
})


@pytest.mark.parametrize("bc_name", list(SCALAR_BCS))
@pytest.mark.parametrize("name", list(F32_OPS))
def test_float32_in_float32_out(name, bc_name):
    bc = SCALAR_BCS[bc_name]
    # tracing alone fixes the dtype and raises any strict-promotion error
    out = jax.eval_shape(F32_OPS[name], U.astype(jnp.float32), bc)
    assert out.dtype == jnp.float32, f"{name} with {bc_name}: {out.dtype}"


@pytest.mark.parametrize("name", ["laplacian", "advection", "diffusion"])
def test_float32_values_match_float64(name):
    f = jax.jit(OPS[name])
    u32 = U.astype(jnp.float32)
    out32 = f(u32, _walls(jnp.float32))
    out64 = f(u32.astype(jnp.float64), _walls(jnp.float64))
    assert out32.dtype == jnp.float32
    # float32 rounding of O(1/h^2) sums with weights of size ~1e3: ~1e-4 relative
    np.testing.assert_allclose(out32, out64, rtol=0, atol=1e-4 * float(jnp.abs(out64).max()))


def test_float32_linear_operator():
    u32 = jnp.zeros(GRID.shape, jnp.float32)
    A = fd.LinearOperator(lambda u: fd.laplacian(u, GRID, bc=fd.Dirichlet(0.0)), u32,
                          bandwidth=(1, 1), periodic=(False, False))
    assert A.diagonal().dtype == jnp.float32
    assert jax.eval_shape(A.T, u32).dtype == jnp.float32


# --- compilation caching ---------------------------------------------------------------


def test_second_call_does_not_recompile():
    traces = []

    @jax.jit
    def step(grid, u, bc):
        traces.append(1)  # runs only while tracing
        return fd.laplacian(u, grid, bc=bc, accuracy=4) + fd.advection(u, VEL, grid, bc=bc)

    step(GRID, U, BC)
    assert len(traces) == 1
    # new values everywhere, an equal but distinct Grid, new condition objects of the same
    # structure (python-float data become traced leaves too)
    other_grid = fd.Grid((16, 24), ((0, 1), (0, 1.5)))
    step(other_grid, 2.0 * U, _walls(seed=1))
    step(GRID, U + 1.0, _walls(seed=2))
    assert len(traces) == 1, "recompiled for new values"
    assert step._cache_size() == 1

    bc_a = ((fd.Dirichlet(0.3), fd.Neumann(1.0)), fd.Periodic())
    bc_b = ((fd.Dirichlet(0.7), fd.Neumann(-2.0)), fd.Periodic())
    step(GRID, U, bc_a)
    step(GRID, U, bc_b)
    assert len(traces) == 2, "python-float boundary values should not force a retrace"

    # the counter does see genuine changes of structure
    step(fd.Grid((16, 24), ((0.0, 2.0), (0.0, 1.5))), U, BC)
    assert len(traces) == 3
