"""Learnable stencils and PDE models (fd.learn): moments, orders, discovery, gradients, errors."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_order
from jax.flatten_util import ravel_pytree
from jax.test_util import check_grads

import jaxfd as fd
from jaxfd._stencil import central_weights, fornberg_weights

P = fd.Periodic()


# --------------------------------------------------------------------------- moments


@pytest.mark.parametrize("shape", [(1,), (2,), (3,), (5,), (6,), (9,), (3, 3), (5, 5), (4, 7), (3, 3, 3)])
def test_moment_round_trip(shape):
    rng = np.random.default_rng(sum(shape))
    q = jnp.asarray(rng.normal(size=shape))
    m = fd.learn.moment_matrix(q)
    back = fd.learn.filter_from_moments(m)
    # The condition number of the size-9 map is about 3e3: allow that much round-off.
    np.testing.assert_allclose(np.asarray(back), np.asarray(q), rtol=0, atol=1e-11)
    m2 = jnp.asarray(rng.normal(size=shape))
    np.testing.assert_allclose(np.asarray(fd.learn.moment_matrix(fd.learn.filter_from_moments(m2))),
                               np.asarray(m2), rtol=0, atol=1e-11)


def test_moment_matrix_by_hand():
    # offsets -1, 0, 1: m[b] = sum_i i^b q_i / b!
    q = jnp.asarray([2.0, 3.0, 5.0])
    np.testing.assert_allclose(np.asarray(fd.learn.moment_matrix(q)), [10.0, 3.0, 3.5])
    # 2-D: a Kronecker product of the 1-D maps, m = V q V^T
    rng = np.random.default_rng(0)
    q2 = rng.normal(size=(3, 5))
    v3, _ = fd.learn.moment_transform(3)
    v5, _ = fd.learn.moment_transform(5)
    np.testing.assert_allclose(np.asarray(fd.learn.moment_matrix(jnp.asarray(q2))), v3 @ q2 @ v5.T, atol=1e-13)
    # even sizes use half-integer offsets
    np.testing.assert_array_equal(fd.learn.filter_offsets(4), [-1.5, -0.5, 0.5, 1.5])
    # the inverse's columns are Fornberg stencils on the filter's offsets
    _, inv = fd.learn.moment_transform(4)
    np.testing.assert_allclose(inv[:, 3], fornberg_weights(3, [-1.5, -0.5, 0.5, 1.5]), atol=1e-14)


def test_filter_from_moments_is_the_fourth_order_second_derivative():
    q = np.asarray(fd.learn.filter_from_moments({(2, 0): 1.0}, size=5))
    offsets, weights = central_weights(2, 4)
    expected = np.zeros((5, 5))
    expected[:, 2] = weights  # varies along axis 0 (the x of m[2, 0]), centre column
    np.testing.assert_allclose(q, expected, atol=1e-13)
    np.testing.assert_allclose(q[:, 2], fornberg_weights(2, offsets), atol=1e-13)
    # all 25 moments are the requested ones
    m = np.zeros((5, 5))
    m[2, 0] = 1.0
    np.testing.assert_allclose(np.asarray(fd.learn.moment_matrix(jnp.asarray(q))), m, atol=1e-13)
    # the same from a full moment array, and in 1-D
    np.testing.assert_allclose(np.asarray(fd.learn.filter_from_moments(jnp.asarray(m))), q, atol=1e-13)
    np.testing.assert_allclose(np.asarray(fd.learn.filter_from_moments({2: 1.0}, size=5)), weights, atol=1e-13)
    assert fd.learn.stencil_order(q, (2, 0)) == 4


def test_filter_from_moments_converges_at_its_stated_order():
    q = fd.learn.filter_from_moments({(2, 0): 1.0}, size=5)
    stated = fd.learn.stencil_order(q, (2, 0))
    hs, errors = [], []
    for n in (12, 16, 24, 32):
        grid = fd.Grid((n, n), ((0.0, 1.0), (0.0, 1.0)))
        x, y = grid.mesh()
        u = jnp.sin(2 * jnp.pi * x + 0.3) * jnp.cos(2 * jnp.pi * y)
        exact = -((2 * jnp.pi) ** 2) * u
        out = jax.jit(lambda v: fd.learn.apply_filter(q, v, grid, bc=P, derivative=(2, 0)))(u)
        hs.append(grid.spacing[0])
        errors.append(float(jnp.max(jnp.abs(out - exact))))
    assert_order(hs, errors, stated, label="filter from moments m[2,0]=1, size 5")


def test_stencil_order_of_known_stencils():
    for deriv, acc in [(1, 2), (1, 4), (2, 2), (2, 6), (3, 2)]:
        _, w = central_weights(deriv, acc)
        assert fd.learn.stencil_order(w, deriv) == acc
    assert fd.learn.stencil_order(np.array([0.0, -1.0, 1.0]), 1) == 1  # forward difference about the centre
    assert fd.learn.stencil_order(np.array([1.0, -2.0, 1.0]), 1) == 0  # not a first derivative
    assert fd.learn.stencil_order(np.array([0.0, 1.0, 0.0]), 0) == math.inf  # the identity


def test_moments_keep_float32():
    q = jnp.ones((3, 3), jnp.float32)
    assert fd.learn.moment_matrix(q).dtype == jnp.float32
    assert fd.learn.filter_from_moments(q).dtype == jnp.float32
    assert fd.learn.filter_from_moments({(1, 0): jnp.float32(1.0)}, size=3).dtype == jnp.float32


# --------------------------------------------------------------------------- the layer


def _exact_1d(deriv, x):
    # u = sin(2 pi x + 0.3) + 0.5 cos(4 pi x) and its derivatives
    k1, k2 = 2 * np.pi, 4 * np.pi
    trig = [np.sin, np.cos, lambda t: -np.sin(t), lambda t: -np.cos(t)]
    return k1**deriv * trig[deriv % 4](k1 * x + 0.3) + 0.5 * k2**deriv * trig[(deriv + 1) % 4](k2 * x)


def _random_free(stencil, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    return eqx.tree_at(lambda s: s.free, stencil, jnp.asarray(scale * rng.normal(size=stencil.free.shape)))


@pytest.mark.parametrize(
    "deriv,size,accuracy,bc_kind",
    [(1, 5, 2, "periodic"), (1, 5, 2, "dirichlet"), (2, 7, 3, "periodic"), (2, 7, 3, "neumann"),
     (1, 7, 4, "dirichlet")],
)
def test_moment_stencil_has_its_guaranteed_order_for_any_learned_moments(deriv, size, accuracy, bc_kind):
    stencil = _random_free(fd.learn.MomentStencil(deriv, size, accuracy), seed=deriv + size)
    assert stencil.order == accuracy and stencil.free.size > 0
    hs, errors = [], []
    for n in (32, 64, 128, 256):
        grid = fd.Grid(n, (0.0, 1.0))
        x = grid.coords_numpy[0]
        u = jnp.asarray(_exact_1d(0, x))
        if bc_kind == "periodic":
            bc = P
        elif bc_kind == "dirichlet":
            bc = ((fd.Dirichlet(float(_exact_1d(0, 0.0))), fd.Dirichlet(float(_exact_1d(0, 1.0)))),)
        else:  # outward normal derivative: -u'(0) on the left, u'(1) on the right
            bc = ((fd.Neumann(float(-_exact_1d(1, 0.0))), fd.Neumann(float(_exact_1d(1, 1.0)))),)
        out = eqx.filter_jit(lambda st, v: st(v, grid, bc=bc))(stencil, u)
        hs.append(grid.spacing[0])
        errors.append(float(jnp.max(jnp.abs(out - _exact_1d(deriv, x)))))  # walls included
    assert_order(hs, errors, accuracy, label=f"MomentStencil d{deriv} size {size} acc {accuracy} {bc_kind}")


@pytest.mark.parametrize("deriv,accuracy", [((1, 0), 2), ((1, 1), 2), ((0, 2), 3)])
def test_moment_stencil_2d_order(deriv, accuracy):
    stencil = _random_free(fd.learn.MomentStencil(deriv, 5, accuracy), seed=sum(deriv), scale=0.1)
    trig = [np.sin, np.cos, lambda t: -np.sin(t), lambda t: -np.cos(t)]
    hs, errors = [], []
    for n in (24, 32, 48, 64):
        grid = fd.Grid((n, n), ((0.0, 1.0), (0.0, 1.0)))
        x, y = (np.asarray(c) for c in grid.mesh())
        u = jnp.asarray(np.sin(2 * np.pi * x + 0.3) * np.cos(2 * np.pi * y - 0.2))
        exact = (2 * np.pi) ** sum(deriv) * trig[deriv[0] % 4](2 * np.pi * x + 0.3) * trig[(deriv[1] + 1) % 4](
            2 * np.pi * y - 0.2)
        out = eqx.filter_jit(lambda st, v: st(v, grid, bc=P))(stencil, u)
        hs.append(grid.spacing[0])
        errors.append(float(np.max(np.abs(np.asarray(out) - exact))))
    assert_order(hs, errors, accuracy, label=f"2-D MomentStencil {deriv} acc {accuracy}")


def test_moment_stencil_structure():
    s = fd.learn.MomentStencil((2, 0), size=5, accuracy=2)
    # moments of total order <= 3 fixed (10 of them), the other 15 learnable
    assert s.free.shape == (15,)
    assert all(sum(b) >= 4 for b in s.free_indices)
    m = np.asarray(s.moments())
    assert m[2, 0] == 1.0 and np.count_nonzero(m) == 1
    # zero learnable moments: the full-support Fornberg stencil
    np.testing.assert_allclose(np.asarray(s.filter())[:, 2], central_weights(2, 4)[1], atol=1e-13)
    assert fd.learn.MomentStencil(2, accuracy=2).size == 5  # smallest odd size >= 2 + 2
    assert fd.learn.MomentStencil((1, 1), accuracy=2).size == 5
    assert fd.learn.MomentStencil(1, accuracy=2).free.shape == (0,)  # size 3: nothing left to learn


def test_dirichlet_face_arrays_reach_the_corners_in_2d():
    # Array-valued Dirichlet data on both axes of a 2-D grid: the second axis's face data
    # is extended over the first axis's ghosts; the result must match scalar data with the
    # same (constant) values, and gradients must reach the face arrays.
    grid = fd.Grid((8, 6), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh()
    u = jnp.sin(x + 2 * y)
    stencil = fd.learn.MomentStencil((1, 1), size=5, accuracy=2)
    bc_arrays = (fd.Dirichlet(jnp.full((6,), 0.5)), fd.Dirichlet(jnp.full((8,), 0.5)))
    out_arrays = jax.jit(lambda v: stencil(v, grid, bc=bc_arrays))(u)
    out_scalar = jax.jit(lambda v: stencil(v, grid, bc=fd.Dirichlet(0.5)))(u)
    np.testing.assert_allclose(np.asarray(out_arrays), np.asarray(out_scalar), atol=1e-12)
    g = jax.jit(jax.grad(lambda v: jnp.sum(stencil(u, grid, bc=(fd.Dirichlet(v), fd.Dirichlet(0.5))) ** 2)))(
        jnp.full((6,), 0.5))
    assert g.shape == (6,) and float(jnp.max(jnp.abs(g))) > 0


def test_corner_ghosts_stay_periodic_on_a_periodic_axis():
    # Axis 0 periodic, axis 1 walls with face data varying along axis 0: after padding both
    # axes, the padded array (corners included) must still be periodic along axis 0.
    from jaxfd._boundary import normalize_bc
    from jaxfd.learn._layer import _pad_all

    grid = fd.Grid((8, 6), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh()
    u = jnp.sin(2 * jnp.pi * x) * (1.0 + y)
    xs = jnp.asarray(grid.coords_numpy[0])
    bc = (P, (fd.Dirichlet(jnp.sin(2 * jnp.pi * xs)), fd.Neumann(jnp.cos(2 * jnp.pi * xs))))
    padded = jax.jit(lambda v: _pad_all(v, grid, normalize_bc(bc, 2), 2, 3))(u)
    assert padded.shape == (12, 10)
    np.testing.assert_allclose(np.asarray(padded[:2]), np.asarray(padded[8:10]), atol=1e-14)
    np.testing.assert_allclose(np.asarray(padded[-2:]), np.asarray(padded[2:4]), atol=1e-14)


# --------------------------------------------------------------------------- the model


def _heat_model(grid, dt, size=5, degree=1, dtype=None):
    return fd.learn.PDEModel(grid, fd.learn.LinearCombination(3, degree, dtype=dtype), dt=dt,
                             derivatives=[1, 2], bc=P, size=size, accuracy=2, dtype=dtype)


def _random_params(model, seed, scale=0.1):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    flat = jnp.asarray(scale * np.random.default_rng(seed).normal(size=flat.shape))
    return flat, unravel, static


def test_model_structure_and_equation():
    grid = fd.Grid(16, (0.0, 1.0))
    model = _heat_model(grid, 1e-3, degree=2)
    assert model.feature_names == ("u", "u_x", "u_xx")
    names = model.term.term_names(model.feature_names)
    assert names == ["1", "u", "u_x", "u_xx", "u^2", "u*u_x", "u*u_xx", "u_x^2", "u_x*u_xx", "u_xx^2"]
    c = jnp.zeros((10, 1)).at[names.index("u_xx"), 0].set(0.25).at[names.index("u*u_x"), 0].set(-1.0)
    model = eqx.tree_at(lambda m: m.term.coefficients, model, c)
    assert model.equation(2) == "u_t = +0.25 u_xx -1.00 u*u_x".replace("= +", "= ")
    # rhs is exactly N(features): compare with the features combined by hand
    x = grid.coords_numpy[0]
    u = jnp.asarray(np.sin(2 * np.pi * x))
    f = model.features(u)
    np.testing.assert_allclose(np.asarray(model.rhs(u)), np.asarray(0.25 * f[2] - f[0] * f[1]), atol=1e-12)
    # one Euler step of the data interval
    np.testing.assert_allclose(np.asarray(model.step(u)), np.asarray(u + 1e-3 * model.rhs(u)), atol=1e-14)


def test_variable_coefficients_and_pruning():
    grid = fd.Grid(32, (0.0, 1.0))
    basis = (lambda x: 1.0, lambda x: jnp.sin(2 * jnp.pi * x))
    term = fd.learn.LinearCombination(3, 1, basis=basis)
    model = fd.learn.PDEModel(grid, term, dt=1e-3, derivatives=[1, 2], bc=P)
    names = model.term.term_names(model.feature_names)
    c = np.zeros((4, 2))
    c[names.index("u_x")] = [0.0, -0.5]  # -0.5 sin(2 pi x) u_x
    c[names.index("u_xx")] = [0.1, 0.0]
    c[names.index("u")] = [1e-6, 0.0]  # negligible
    model = eqx.tree_at(lambda m: m.term.coefficients, model, jnp.asarray(c))
    x = jnp.asarray(grid.coords_numpy[0])
    u = jnp.cos(2 * jnp.pi * x) + 0.3 * jnp.sin(4 * jnp.pi * x)
    f = model.features(u)
    expected = -0.5 * jnp.sin(2 * jnp.pi * x) * f[1] + 0.1 * f[2] + 1e-6 * u
    np.testing.assert_allclose(np.asarray(model.rhs(u)), np.asarray(expected), atol=1e-12)
    pruned = model.prune(u[None], threshold=1e-3)
    assert set(pruned.coefficients()) == {"u_x", "u_xx"}
    assert pruned.term.mask == (False, False, True, True)


def test_heat_discovery_noise_free():
    # Data: the heat equation u_t = K u_xx, solved by fd.simulate on a 3x finer grid (RK4),
    # sampled on the model's grid every DT. Model: forward Euler, library {1, u, u_x, u_xx},
    # learnable 7-point stencils of guaranteed order 2, one-step loss, trust-region Newton-CG.
    K, N, DT = 0.1, 32, 1e-3
    fine, coarse = fd.Grid(3 * N, (0.0, 1.0)), fd.Grid(N, (0.0, 1.0))
    rhs = fd.models.heat(fine)
    args = {"diffusivity": jnp.asarray(K), "bc": P}
    rng = np.random.default_rng(0)

    x = fine.coords_numpy[0]
    a, b = rng.normal(size=(2, 4, 4)) / np.arange(1, 5)  # 4 trajectories, Fourier modes 1..4
    u0 = jnp.asarray(np.stack([sum(a[j, m] * np.sin(2 * np.pi * (m + 1) * x) + b[j, m] * np.cos(2 * np.pi * (m + 1) * x)
                                   for m in range(4)) for j in range(4)]))

    def trajectory(u):
        sol = fd.simulate(rhs, u, 0.0, 100 * DT, DT / 4, stepper=fd.RK4(), args=args,
                          saveat=fd.SaveAt(t0=True, every=4), stability="ignore")
        return sol.us[:, 1::3]  # coarse cell centres coincide with every third fine one

    data = jax.vmap(trajectory)(u0)  # (4, 101, N): train on 21 snapshots of three, test on the fourth
    train, test = data[:3, :21], data[3]
    model = _heat_model(coarse, DT, size=7)
    solver = fd.optim.TrustRegionNewtonCG(max_steps=60, gtol=1e-20, rtol=1e-9)
    learned, info = fd.optim.trust_region_minimize(lambda m, d: fd.learn.rollout_loss(m, d, 1), model, solver,
                                                   args=(train,))
    assert int(info.result) in (0, 2), info.message
    coefs = learned.coefficients()
    k = float(coefs["u_xx"][0])
    assert abs(k - K) / K < 1e-3, f"learned diffusivity {k}, truth {K}"
    # the other library terms are negligible against the diffusion term (sizes of the
    # terms over the data from plain numpy central differences)
    d = np.asarray(train)
    h = coarse.spacing[0]
    ux = (np.roll(d, -1, -1) - np.roll(d, 1, -1)) / (2 * h)
    uxx = (np.roll(d, -1, -1) - 2 * d + np.roll(d, 1, -1)) / h**2
    sizes = {"1": 1.0, "u": np.sqrt(np.mean(d**2)), "u_x": np.sqrt(np.mean(ux**2)), "u_xx": np.sqrt(np.mean(uxx**2))}
    for name in ("1", "u", "u_x"):
        assert abs(float(coefs[name][0])) * sizes[name] < 1e-3 * K * sizes["u_xx"], (name, coefs[name])
    # 100-step prediction against the truth, versus the true discretisation on the same grid
    # and time step: forward Euler at DT with the true K and the standard Laplacian.
    pred = learned.rollout(test[0], 100)
    err = float(jnp.sqrt(jnp.mean((pred - test[1:]) ** 2)))

    def true_rhs(t, u, a):
        return K * fd.laplacian(u, coarse, bc=P)

    sol = fd.simulate(true_rhs, test[0], 0.0, 100 * DT, DT, stepper=fd.Euler(), saveat=fd.SaveAt(every=1),
                      stability="ignore")
    ref = float(jnp.sqrt(jnp.mean((sol.us - test[1:]) ** 2)))
    print(f"heat: K={k:.7f} (rel. error {abs(k - K) / K:.1e}); 100-step rms error {err:.2e}, "
          f"true discretisation {ref:.2e}")
    assert 0 < err <= 2 * ref, f"prediction error {err:.3e}, true discretisation {ref:.3e}"


def test_float32_stays_float32():
    grid = fd.Grid(16, (0.0, 1.0))
    model = _heat_model(grid, 1e-3, dtype=jnp.float32)
    x = jnp.asarray(grid.coords_numpy[0], jnp.float32)
    data = jnp.stack([jnp.sin(2 * jnp.pi * x) * (1 - 0.01 * i) for i in range(4)]).astype(jnp.float32)
    loss, grads = eqx.filter_jit(eqx.filter_value_and_grad(lambda m: fd.learn.rollout_loss(m, data, 2)))(model)
    assert loss.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grads))


def _smooth_data(grid, n_times, seed):
    x = grid.coords_numpy[0]
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.stack([
        np.sin(2 * np.pi * x + 0.1 * t) * np.exp(-0.05 * t) + 0.2 * rng.normal() * np.cos(4 * np.pi * x)
        for t in range(n_times)
    ]))


def test_gradient_check_linear_model_multistep_loss():
    grid = fd.Grid(12, (0.0, 1.0))
    model = _heat_model(grid, 1e-2, size=5, degree=2)
    data = _smooth_data(grid, 5, 0)
    flat, unravel, static = _random_params(model, 1, scale=0.05)

    @jax.jit
    def loss(z):
        return fd.learn.rollout_loss(eqx.combine(unravel(z), static), data, 3)

    check_grads(loss, (flat,), order=1, modes=("rev", "fwd"), eps=1e-6, atol=1e-6, rtol=1e-6)


def test_taylor_rates_of_the_multistep_loss_and_its_hessian_action():
    # The trust-region optimizer differentiates the loss twice (jvp of grad): the Taylor
    # remainders must fall at rate 2 (gradient) and 3 (Hessian action).
    grid = fd.Grid(12, (0.0, 1.0))
    model = _heat_model(grid, 1e-2, size=5, degree=1)
    data = _smooth_data(grid, 5, 8)
    flat, unravel, static = _random_params(model, 9, scale=0.05)
    dm = jnp.asarray(np.random.default_rng(10).normal(size=flat.shape))

    @jax.jit
    def loss(z):
        return fd.learn.rollout_loss(eqx.combine(unravel(z), static), data, 2)

    result = fd.taylor_test(loss, flat, dm, hessian=True)
    assert result.passed, result


def test_gradient_check_network_model_with_walls():
    grid = fd.Grid(10, (0.0, 1.0))
    term = fd.learn.NetworkTerm(3, key=jax.random.PRNGKey(0), width=6, depth=1, dtype=jnp.float64)
    bc = ((fd.Dirichlet(0.2), fd.Neumann(-0.1)),)
    model = fd.learn.PDEModel(grid, term, dt=1e-2, derivatives=[1, 2], bc=bc, substeps=2)
    data = _smooth_data(grid, 4, 2)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    flat = flat + 0.05 * jnp.asarray(np.random.default_rng(3).normal(size=flat.shape))

    @jax.jit
    def loss(z):
        return fd.learn.rollout_loss(eqx.combine(unravel(z), static), data, 2)

    check_grads(loss, (flat,), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_gradient_check_2d_rollout_in_the_state():
    grid = fd.Grid((6, 5), ((0.0, 1.0), (0.0, 1.0)))
    term = fd.learn.LinearCombination(3, 2)
    model = fd.learn.PDEModel(grid, term, dt=1e-2, derivatives=[(1, 0), (1, 1)], bc=P, size=5)
    flat, unravel, static = _random_params(model, 4, scale=0.05)
    model = eqx.combine(unravel(flat), static)
    u0 = jnp.asarray(np.random.default_rng(5).normal(size=grid.shape))
    check_grads(jax.jit(lambda u: jnp.sum(model.rollout(u, 2) ** 2)), (u0,), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_jit_matches_eager():
    grid = fd.Grid(16, (0.0, 1.0))
    model = _heat_model(grid, 1e-3, degree=2)
    flat, unravel, static = _random_params(model, 6, scale=0.05)
    model = eqx.combine(unravel(flat), static)
    data = _smooth_data(grid, 4, 7)
    eager = fd.learn.rollout_loss(model, data, 2)
    jitted = eqx.filter_jit(fd.learn.rollout_loss)(model, data, 2)
    np.testing.assert_allclose(float(jitted), float(eager), rtol=1e-12)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "build,exc,match",
    [
        (lambda: fd.learn.MomentStencil((2, 0), size=3, accuracy=2), ValueError,
         r"size 3 is too small for derivative \(2, 0\) at accuracy 2.*size >= 4"),
        (lambda: fd.learn.MomentStencil(1, size=3, accuracy=4), ValueError, r"too small.*size >= 5.*size=5"),
        (lambda: fd.learn.MomentStencil(1, size=4, accuracy=2), ValueError, r"odd positive filter size"),
        (lambda: fd.learn.MomentStencil(1, accuracy=0), ValueError, r"accuracy to be a positive integer"),
        (lambda: fd.learn.MomentStencil((1, -1)), ValueError, r"non-negative integers"),
        (lambda: fd.learn.filter_from_moments({(5, 0): 1.0}, size=5), ValueError,
         r"moment of order 5 along axis 0 .*size 5 .*order 0..4 only.*size >= 6"),
        (lambda: fd.learn.filter_from_moments({(0, 3): 1.0}, size=(5, 3)), ValueError,
         r"order 3 along axis 1 .*size 3"),
        (lambda: fd.learn.filter_from_moments(jnp.ones(6), size=5), ValueError, r"order 5 along axis 0"),
        (lambda: fd.learn.filter_from_moments({2: 1.0}), ValueError, r"pass size="),
        (lambda: fd.learn.moment_matrix(1.0), ValueError, r"got a scalar"),
        (lambda: fd.learn.apply_filter(jnp.ones(4), jnp.ones(8), fd.Grid(8, (0.0, 1.0)), bc=P), ValueError,
         r"odd filter sizes"),
        (lambda: fd.learn.MomentStencil(1)(jnp.ones((8, 8)), fd.Grid((8, 8), ((0, 1), (0, 1))), bc=P), ValueError,
         r"derivative \(1,\) \(1-D\), the grid is 2-D"),
    ],
)
def test_bad_input_raises_clearly(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


def test_bad_model_input_raises_clearly():
    grid = fd.Grid(16, (0.0, 1.0))
    with pytest.raises(ValueError, match=r"term takes 2 features, the model provides 3"):
        fd.learn.PDEModel(grid, fd.learn.LinearCombination(2), dt=1e-3, derivatives=[1, 2], bc=P)
    with pytest.raises(ValueError, match=r"u itself"):
        fd.learn.PDEModel(grid, fd.learn.LinearCombination(2), dt=1e-3, derivatives=[0], bc=P)
    with pytest.raises(ValueError, match=r"positive, finite data interval"):
        fd.learn.PDEModel(grid, fd.learn.LinearCombination(2), dt=-1.0, derivatives=[1], bc=P)
    model = fd.learn.PDEModel(grid, fd.learn.LinearCombination(2), dt=1e-3, derivatives=[1], bc=P)
    with pytest.raises(ValueError, match=r"need at least 4 snapshots"):
        fd.learn.rollout_loss(model, jnp.ones((3, 16)), 3)
    with pytest.raises(ValueError, match=r"expected data of shape \(n_times, \*\(16,\)\)"):
        fd.learn.rollout_loss(model, jnp.ones((3, 15)), 1)
