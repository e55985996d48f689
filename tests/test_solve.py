"""fd.solve: Krylov solvers, convergence reporting, implicit differentiation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxfd as fd

SOLVERS = [fd.CG(rtol=1e-10), fd.BiCGStab(rtol=1e-10), fd.GMRES(rtol=1e-10, restart=20)]


def _problem(shape):
    grid = fd.Grid(shape, tuple((0.0, 1.0) for _ in shape))
    mesh = grid.mesh()
    rhs = sum(jnp.cos(3.0 * (a + 1) * m) * m**2 for a, m in enumerate(mesh)) + 1.0
    k = 1.0 + 0.5 * jnp.sin(2 * mesh[0])
    return grid, rhs, k


BCS = {
    "dirichlet": fd.Dirichlet(0.0),
    "robin": fd.Robin(1.0, 0.2, 0.0),
}


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("shape", [(40,), (16, 12), (8, 6, 7)], ids=lambda s: f"{len(s)}d")
@pytest.mark.parametrize("bc", list(BCS), ids=str)
def test_solvers_reach_tolerance(solver, shape, bc):
    grid, rhs, k = _problem(shape)

    def A(u):
        return -fd.diffusion(u, grid, k, bc=BCS[bc])

    x, info = fd.solve(A, rhs, solver, return_info=True)
    assert bool(info.converged)
    residual = jnp.linalg.norm(A(x) - rhs)
    assert float(residual) <= 1.01 * 1e-10 * float(jnp.linalg.norm(rhs))
    # against a dense solve of the same discrete system
    dense = fd.LinearOperator(A, rhs).to_dense()
    exact = jnp.linalg.solve(dense, rhs.ravel()).reshape(rhs.shape)
    np.testing.assert_allclose(x, exact, rtol=0, atol=1e-7 * float(jnp.abs(exact).max()))


def test_jacobi_preconditioner_reduces_iterations_on_high_contrast():
    grid = fd.Grid((48, 48), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh()
    k = jnp.where((x > 0.3) & (x < 0.7) & (y > 0.3), 1e4, 1.0)
    rhs = jnp.ones(grid.shape)

    def A(u):
        return -fd.diffusion(u, grid, k, bc=fd.Dirichlet(0.0))

    _, plain = fd.solve(A, rhs, fd.CG(rtol=1e-8, max_steps=20000), return_info=True)
    _, jacobi = fd.solve(A, rhs, fd.CG(rtol=1e-8, max_steps=20000), preconditioner="jacobi",
                         return_info=True)
    assert bool(plain.converged) and bool(jacobi.converged)
    assert int(jacobi.iterations) < 0.5 * int(plain.iterations), (plain.iterations, jacobi.iterations)


def test_non_convergence_is_an_error_or_a_flag():
    grid, rhs, k = _problem((30, 30))

    def A(u):
        return -fd.laplacian(u, grid, bc=fd.Dirichlet(0.0))

    with pytest.raises(Exception, match="did not reach its tolerance"):
        jax.block_until_ready(fd.solve(A, rhs, fd.CG(max_steps=3)))
    _, info = fd.solve(A, rhs, fd.CG(max_steps=3), throw=False, return_info=True)
    assert not bool(info.converged) and int(info.iterations) == 3
    # GMRES counts every inner iteration: max_steps cuts a restart cycle short
    for max_steps in (5, 45):
        _, info = fd.solve(A, rhs, fd.GMRES(restart=20, max_steps=max_steps), throw=False,
                           return_info=True)
        assert not bool(info.converged) and int(info.iterations) == max_steps


def test_bicgstab_exact_half_step_convergence_and_breakdown():
    # A multiple of the identity converges exactly at the half step (s = 0, t = 0): the
    # recurrence's 0/0 must not turn x into NaN.
    b = jnp.arange(1.0, 6.0, dtype=jnp.float64)
    x, info = fd.solve(lambda v: 2.0 * v, b, solver=fd.BiCGStab(), return_info=True)
    np.testing.assert_allclose(x, b / 2, rtol=1e-14)
    assert int(info.iterations) == 1 and bool(info.converged)
    # Skew-symmetric A with r_hat = r0: (r_hat, A r0) = 0, a genuine breakdown. BiCGStab
    # stops at once with a finite x instead of iterating to max_steps on NaN.
    skew = jnp.array([[0.0, 1.0], [-1.0, 0.0]], jnp.float64)
    rhs = jnp.array([1.0, 0.0], jnp.float64)
    x, info = fd.solve(lambda v: skew @ v, rhs, solver=fd.BiCGStab(), throw=False, return_info=True)
    assert int(info.iterations) == 1 and not bool(info.converged)
    assert bool(jnp.all(jnp.isfinite(x)))
    with pytest.raises(Exception, match="broke down"):
        fd.solve(lambda v: skew @ v, rhs, solver=fd.BiCGStab())
    # GMRES, which the message points to, solves it
    np.testing.assert_allclose(fd.solve(lambda v: skew @ v, rhs, solver=fd.GMRES()), [0.0, 1.0], atol=1e-12)


def test_cg_refuses_non_symmetric_and_default_picks_gmres():
    grid, rhs, _ = _problem((24, 20))

    def A(u):
        return -fd.laplacian(u, grid, bc=fd.Dirichlet(0.0), accuracy=4)

    with pytest.raises(ValueError, match="not symmetric"):
        fd.solve(A, rhs, fd.CG())
    x, info = fd.solve(A, rhs, return_info=True)
    assert bool(info.converged)
    assert float(jnp.linalg.norm(A(x) - rhs)) < 1e-7 * float(jnp.linalg.norm(rhs))


def test_bad_input():
    grid, rhs, _ = _problem((10, 10))
    with pytest.raises(ValueError, match="shape"):
        fd.solve(lambda u: u[:5], rhs)
    with pytest.raises(ValueError, match="x0"):
        fd.solve(lambda u: 2 * u, rhs, x0=jnp.zeros(3))
    with pytest.raises(ValueError, match="rtol"):
        fd.CG(rtol=0.0, atol=0.0)
    with pytest.raises(TypeError, match="linear solver"):
        fd.solve(lambda u: 2 * u, rhs, solver="cg")


def _loss(params, solver):
    grid = fd.Grid((10, 9), ((0.0, 1.0), (0.0, 1.0)))

    def A(u):
        return -fd.diffusion(u, grid, params["k"], bc=fd.Dirichlet(0.0))

    b = params["b"]
    x = fd.solve(A, b, solver, symmetric=not isinstance(solver, fd.GMRES) or None)
    return jnp.sum(x**2 * jnp.cos(grid.mesh()[1]))


@pytest.mark.parametrize("solver", [fd.CG(rtol=1e-13), fd.GMRES(rtol=1e-13, restart=90)],
                         ids=lambda s: type(s).__name__)
def test_implicit_gradients_wrt_rhs_and_high_contrast_coefficient(solver):
    grid = fd.Grid((10, 9), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh()
    params = {"k": jnp.where(x > 0.5, 1e3, 1.0) * (1 + 0.1 * y), "b": jnp.sin(3 * x) + y}
    check_grads(lambda p: _loss(p, solver), (params,), order=1, modes=["fwd", "rev"], rtol=1e-5)


def test_gradient_wrt_boundary_value_through_affine_split():
    grid = fd.Grid((20,), ((0.0, 1.0),))
    (x,) = grid.mesh()

    def loss(g):
        def A(u):
            return -fd.laplacian(u, grid, bc=fd.Dirichlet(g))

        linear, offset = fd.LinearOperator.from_affine(A, x)
        u = fd.solve(linear, jnp.ones_like(x) - offset, fd.CG(rtol=1e-13))
        return jnp.sum(u**2)

    check_grads(loss, (0.3,), order=2, modes=["rev"])


def _gradient_temp_bytes(differentiate, steps):
    grid = fd.Grid((64, 64), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh()

    def loss(b):
        u = fd.solve(lambda u: -fd.laplacian(u, grid, bc=fd.Dirichlet(0.0)), b,
                     fd.CG(rtol=1e-30, atol=1e-300, max_steps=steps), symmetric=True, throw=False,
                     differentiate=differentiate)
        return jnp.sum(u**2)

    compiled = jax.jit(jax.grad(loss)).lower(x + y).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_reverse_pass_memory_does_not_grow_with_iterations():
    # The backward pass through custom_linear_solve runs one transposed solve and
    # stores no iterates: the compiled gradient's temporary memory is the same for a
    # 50- and a 500-iteration CG. Unrolled reverse mode stores every iteration, so the
    # same measurement grows with the limit (which shows that it can tell them apart).
    implicit = [_gradient_temp_bytes("implicit", steps) for steps in (50, 500)]
    assert implicit[0] == implicit[1], implicit
    unrolled = [_gradient_temp_bytes("unrolled", steps) for steps in (50, 500)]
    assert unrolled[1] > 5 * unrolled[0] and unrolled[0] > implicit[0], (implicit, unrolled)


# Differentiating through BiCGStab's iterations, the derivative lags the iterate: when
# the solve stops (45 iterations here) the unrolled gradient is still 9e-7 off in norm,
# hence its looser tolerance. The case also runs the breakdown guard's safe divisions
# under reverse mode.
@pytest.mark.parametrize("solver, rtol", [(fd.CG(rtol=1e-12, max_steps=200), 1e-7),
                                          (fd.BiCGStab(rtol=1e-12, max_steps=200), 1e-4),
                                          (fd.GMRES(rtol=1e-12, restart=10, max_steps=200), 1e-7)],
                         ids=["CG", "BiCGStab", "GMRES"])
def test_unrolled_gradient_matches_implicit_for_a_converged_solve(solver, rtol):
    grid, rhs, _ = _problem((16, 12))

    def loss(k, differentiate):
        def A(u):
            return -fd.diffusion(u, grid, k, bc=fd.Dirichlet(0.0))

        op = fd.LinearOperator(A, rhs, bandwidth=(1, 1), periodic=(False, False))
        u = fd.solve(op, rhs, solver, preconditioner="jacobi", symmetric=True,
                     differentiate=differentiate)
        return jnp.sum(u**3)

    k = 1.0 + grid.mesh()[0] * grid.mesh()[1]
    implicit = jax.grad(loss)(k, "implicit")
    unrolled = jax.jit(jax.grad(loss), static_argnums=1)(k, "unrolled")
    np.testing.assert_allclose(unrolled, implicit, rtol=rtol, atol=1e-10 * float(jnp.max(jnp.abs(implicit))))
    with pytest.raises(ValueError, match="differentiate='implicit' or 'unrolled'"):
        loss(k, "adjoint")


FAST_CASES = [
    ((24,), fd.Dirichlet(0.3)),
    ((24,), fd.Neumann(0.2)),
    ((24,), fd.Periodic()),
    ((12, 10), (fd.Periodic(), (fd.Dirichlet(1.0), fd.Dirichlet(-0.5)))),
    ((8, 6, 10), (fd.Neumann(0.5), fd.Periodic(), fd.Dirichlet(0.0))),
]


@pytest.mark.parametrize("shape, bc", FAST_CASES, ids=lambda v: str(v)[:30])
@pytest.mark.parametrize("alpha", [0.0, -3.0])
def test_fast_poisson_solves_the_discrete_system(shape, bc, alpha):
    grid = fd.Grid(shape, tuple((0.0, 1.0 + 0.5 * a) for a in range(len(shape))))
    mesh = grid.mesh()
    f = sum(jnp.cos(3 * (a + 1) * m) * m for a, m in enumerate(mesh))
    u = fd.poisson(f, grid, bc=bc, alpha=alpha, project=True)
    residual = fd.laplacian(u, grid, bc=bc) + alpha * u - f
    if alpha == 0.0 and not any(isinstance(p, fd.Dirichlet) for p in jax.tree_util.tree_leaves(
            bc, is_leaf=lambda x: isinstance(x, fd.AbstractBoundaryCondition))):
        residual = residual - jnp.mean(residual)  # the projected (incompatible) part
    assert float(jnp.max(jnp.abs(residual))) < 1e-9 * float(jnp.max(jnp.abs(f)) + 1) * grid.size
    # agrees with a Krylov solve of the same discrete system
    if alpha != 0.0:
        linear, offset = fd.LinearOperator.from_affine(
            lambda v: fd.laplacian(v, grid, bc=bc) + alpha * v, f)
        krylov = fd.solve(linear, f - offset, fd.CG(rtol=1e-13, max_steps=5000), symmetric=True)
        np.testing.assert_allclose(u, krylov, atol=1e-9 * float(jnp.max(jnp.abs(krylov))))


def test_fast_poisson_gradients_and_errors():
    grid = fd.Grid((10, 8), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh()

    def loss(f, g, alpha):
        u = fd.poisson(f, grid, bc=(fd.Dirichlet(g), fd.Periodic()), alpha=alpha)
        return jnp.sum(u**2 * x)

    check_grads(loss, (jnp.sin(3 * x) + y, jnp.cos(2 * y[0]), -1.5), order=2, modes=["fwd", "rev"])
    with pytest.raises(ValueError, match="singular"):
        fd.poisson(jnp.ones(grid.shape), grid, bc=fd.Neumann(0.0))
    with pytest.raises(ValueError, match="Robin"):
        fd.poisson(jnp.ones(grid.shape), grid, bc=fd.Robin(1.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="shape"):
        fd.poisson(jnp.ones((3, 3)), grid, bc=fd.Dirichlet(0.0))


# Multigrid (fd.Multigrid, fd.MultigridSolver) is tested in tests/test_multigrid.py.


def _taylor_loss(method):
    """A scalar loss of the solution of -div(k grad u) = b, u = g on the walls, as a function of
    (b, log k, g); the fast solver has k = 1 and takes (b, g)."""
    grid = fd.Grid((16, 16), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh()
    weight = jnp.cos(2 * x) + y

    def loss(m):
        k = jnp.exp(m["log_k"]) if "log_k" in m else jnp.ones(grid.shape)
        bc = fd.Dirichlet(m["g"])
        if method == "poisson":
            u = fd.poisson(-m["b"], grid, bc=bc)
            return jnp.sum(weight * u**2)

        def A(u):
            return -fd.diffusion(u, grid, k, bc=bc)

        linear, offset = fd.LinearOperator.from_affine(A, m["b"])
        rhs = m["b"] - offset
        if method == "cg":
            u = fd.solve(linear, rhs, fd.CG(rtol=1e-13), symmetric=True)
        elif method == "gmres":
            u = fd.solve(linear, rhs, fd.GMRES(rtol=1e-13, restart=40), symmetric=False)
        else:
            mg = fd.Multigrid(grid, k, fd.Dirichlet(0.0))
            solver = fd.CG(rtol=1e-13) if method == "mg_pcg" else fd.MultigridSolver(mg, rtol=1e-12)
            u = fd.solve(linear, rhs, solver, preconditioner=mg if method == "mg_pcg" else None,
                         symmetric=True)
        return jnp.sum(weight * u**2)

    key = jax.random.split(jax.random.key(7), 6)
    m = {"b": 1.0 + x * y, "g": jnp.asarray(0.4)}
    dm = {"b": jax.random.normal(key[0], grid.shape), "g": jnp.asarray(0.7)}
    if method != "poisson":
        # a high-contrast field: two patches of k differing by 1e3
        m["log_k"] = jnp.where((x > 0.5) & (y < 0.6), jnp.log(1e3), 0.0) + 0.1 * y
        dm["log_k"] = jax.random.normal(key[1], grid.shape)
    return loss, m, dm


@pytest.mark.parametrize("method", ["cg", "gmres", "mg_pcg", "multigrid", "poisson"])
def test_taylor_remainder_rate_two_through_every_solver(method):
    """Second-order Taylor remainder of the implicit gradient, jointly in the right-hand
    side, the (high-contrast) coefficient field and the boundary value."""
    loss, m, dm = _taylor_loss(method)
    result = fd.taylor_test(loss, m, dm)
    assert result.passed and abs(result.rate - 2.0) < 0.1, (result.rate, result.remainders)
