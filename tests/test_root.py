"""fd.root: Newton-Krylov on -lap(u) + u^3 = f, its implicit derivative and its failures."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxfd as fd

GRID = fd.Grid((16, 12), ((0.0, 1.0), (0.0, 1.5)))
X, Y = GRID.mesh()
BC = fd.Dirichlet(0.0)


def residual(u, args):
    """-lap(u) + c u^3 - f, with args = (f, c)."""
    f, c = args
    return -fd.laplacian(u, GRID, bc=BC) + c * u**3 - f


F0 = 50.0 * jnp.sin(jnp.pi * X) * jnp.sin(2 * jnp.pi * Y / 1.5) + 20.0 * X


def test_newton_krylov_converges_quadratically_to_the_discrete_root():
    u, info = fd.root(residual, jnp.zeros(GRID.shape), (F0, 3.0), return_info=True)
    assert bool(info.converged) and int(info.iterations) <= 10, info
    # the discrete equation holds to the tolerance, and the solution is non-trivial
    scale = float(jnp.linalg.norm(F0))
    assert float(jnp.linalg.norm(residual(u, (F0, 3.0)))) <= 1e-9 * scale
    assert float(jnp.max(jnp.abs(u))) > 0.1


def test_implicit_gradient_check_grads_and_taylor_rate():
    def loss(f, c):
        u = fd.root(residual, jnp.zeros(GRID.shape), (f, c))
        return jnp.sum(u**2 * (1 + X))

    check_grads(loss, (F0, 3.0), order=1, modes=["fwd", "rev"], rtol=1e-5)
    direction = (jax.random.normal(jax.random.key(1), GRID.shape), 1.0)
    result = fd.taylor_test(lambda m: loss(*m), (F0, 3.0), direction)
    assert result.passed and abs(result.rate - 2.0) < 0.1, (result.rate, result.remainders)


def test_float32_default_tolerances_converge():
    u, info = fd.root(residual, jnp.zeros(GRID.shape, jnp.float32),
                      (F0.astype(jnp.float32), jnp.float32(3.0)), return_info=True)
    assert u.dtype == jnp.float32 and bool(info.converged), info


def test_non_convergence_is_an_error_or_a_flag():
    solver = fd.NewtonKrylov(max_steps=1)
    with pytest.raises(eqx.EquinoxRuntimeError, match="did not converge within max_steps=1"):
        jax.block_until_ready(fd.root(residual, jnp.zeros(GRID.shape), (F0, 3.0), solver))
    _, info = fd.root(residual, jnp.zeros(GRID.shape), (F0, 3.0), solver, throw=False, return_info=True)
    assert not bool(info.converged) and int(info.iterations) == 1


def test_bad_input():
    with pytest.raises(ValueError, match="structure and shapes of u0"):
        fd.root(lambda u, a: u[:-1], jnp.zeros(GRID.shape), None)
    with pytest.raises(TypeError, match="fd.NewtonKrylov"):
        fd.root(residual, jnp.zeros(GRID.shape), (F0, 3.0), fd.GMRES())
    with pytest.raises(ValueError, match="max_steps"):
        fd.NewtonKrylov(max_steps=0)
    with pytest.raises(ValueError, match="not both zero"):
        fd.NewtonKrylov(rtol=0.0, atol=0.0)


def test_vmapped_roots_match_one_at_a_time():
    forcing = jnp.stack([F0, 0.5 * F0])
    batched = jax.vmap(lambda f: fd.root(residual, jnp.zeros(GRID.shape), (f, 3.0)))(forcing)
    single = fd.root(residual, jnp.zeros(GRID.shape), (0.5 * F0, 3.0))
    np.testing.assert_allclose(batched[1], single, rtol=1e-8, atol=1e-10)
