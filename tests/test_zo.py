"""fd.zo: zeroth-order gradient estimators, forward gradients, Hessian-vector products, ZO optimizers.

Deterministic laws are asserted as observed orders (coordinate-wise error
O(mu) / O(mu^2), finite-difference HVP O(eps) / O(eps^2)); statistical laws
(randomized relative error sqrt((d - 1)/q), forward-gradient mean and second
moment) with fixed seeds against tolerances computed from the estimator's
exact variance, written out in each test.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_order

import jaxfd as fd

D = 6
X0 = jnp.linspace(-0.8, 0.9, D)


def smooth(x):
    """Non-polynomial, every coordinate coupled: derivatives of all orders are non-zero."""
    return jnp.sum(jnp.sin(1.3 * x) * jnp.exp(0.2 * x)) + 0.5 * jnp.sum(x[:-1] * x[1:]) + 0.1 * jnp.sum(x**4)


GRAD = jax.grad(smooth)(X0)
MU = [0.1, 0.05, 0.025, 0.0125, 0.00625]


# --- coordinate-wise estimates ------------------------------------------------------------------


@pytest.mark.parametrize("scheme, order", [("forward", 1), ("backward", 1), ("central", 2)])
def test_coordinate_error_order(scheme, order):
    est = jax.jit(lambda mu: fd.zo.coordinate(smooth, X0, mu, scheme=scheme))
    errors = [float(jnp.linalg.norm(est(mu) - GRAD)) for mu in MU]
    assert_order(MU, errors, order, label=f"coordinate {scheme}")


def test_coordinate_mask_and_batching():
    mask = np.array([True, False, True, True, False, False])
    full, sparse = jax.jit(lambda x: (
        fd.zo.coordinate(smooth, x, 1e-3, scheme="central"),
        fd.zo.coordinate(smooth, x, 1e-3, mask=mask, scheme="central", batch_size=2),
    ))(X0)
    np.testing.assert_array_equal(sparse[~mask], 0.0)
    # vmap and lax.map round differently: u |f| / mu = 1e-13 absolute
    np.testing.assert_allclose(sparse[mask], full[mask], rtol=0, atol=1e-12)
    assert fd.zo.CoordinateEstimator(1e-3, mask=mask).evaluations(X0) == 3 + 1
    assert fd.zo.CoordinateEstimator(1e-3, scheme="central").evaluations(X0) == 2 * D


def test_coordinate_on_an_equinox_model():
    model = eqx.nn.Linear(3, 2, key=jax.random.key(0))
    x = jnp.array([0.5, -1.0, 2.0])

    def loss(m):
        return jnp.sum(jnp.tanh(m(x)))

    est, exact = eqx.filter_jit(lambda m: (fd.zo.coordinate(loss, m, 1e-4, scheme="central"),
                                           eqx.filter_grad(loss)(m)))(model)
    for a, b in zip(jax.tree_util.tree_leaves(est), jax.tree_util.tree_leaves(exact)):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)  # O(mu^2) = 1e-8 truncation
    mask = jax.tree_util.tree_map(lambda p: np.zeros(p.shape, bool), eqx.filter(model, eqx.is_inexact_array))
    mask = eqx.tree_at(lambda m: m.bias, mask, np.array([True, False]))
    sparse = eqx.filter_jit(lambda m: fd.zo.coordinate(loss, m, 1e-4, mask=mask, scheme="central"))(model)
    assert float(jnp.abs(sparse.weight).max()) == 0.0 and float(sparse.bias[1]) == 0.0
    np.testing.assert_allclose(sparse.bias[0], exact.bias[0], rtol=1e-7)


# --- randomized estimates: relative error sqrt((d-1)/q) -----------------------------------------


def _sphere_mse_and_variance(d, q):
    """Exact mean and variance of ||g_hat - g||^2 / ||g||^2 for unit-sphere directions (mu -> 0).

    g_hat - g = (1/q) sum_j e_j with e_j = d (g.u_j) u_j - g, iid and zero-mean. With ||g|| = 1,
    ||e||^2 = d(d-2)(g.u)^2 + 1 and (g.u)^2 ~ Beta(1/2, (d-1)/2), so Var||e||^2 = 2(d-2)^2(d-1)/(d+2);
    Cov(e) = C = a I + b g g^T with a = d/(d+2), b = (d-2)/(d+2), and E[(e_1.e_2)^2] = tr C^2.
    Var ||sum e_j||^2 = q Var||e||^2 + 2 q (q-1) tr C^2 (cross terms are uncorrelated).
    """
    a, b = d / (d + 2), (d - 2) / (d + 2)
    var_e2 = 2 * (d - 2) ** 2 * (d - 1) / (d + 2)
    tr_c2 = d * a**2 + 2 * a * b + b**2
    return (d - 1) / q, (q * var_e2 + 2 * q * (q - 1) * tr_c2) / q**4


def _gaussian_mse_and_variance(d, q):
    """The same for Gaussian directions: E = (d+1)/q. With s = g.u ~ N(0,1), R ~ chi^2_{d-1},
    ||e||^2 = s^4 + s^2 (R - 2) + 1, so Var||e||^2 = 105 + 30(d-3) + 3(2(d-1) + (d-3)^2) - d^2;
    C = I + g g^T, tr C^2 = d + 3."""
    var_e2 = 105 + 30 * (d - 3) + 3 * (2 * (d - 1) + (d - 3) ** 2) - d**2
    return (d + 1) / q, (q * var_e2 + 2 * q * (q - 1) * (d + 3)) / q**4


@pytest.mark.parametrize("distribution", ["sphere", "gaussian"])
def test_randomized_mean_squared_error_law(distribution):
    # A linear f makes the forward difference exact for any mu, so the only error is the sampling one.
    d, q, trials = 20, 5, 2000
    g = jnp.asarray(np.random.default_rng(0).standard_normal(d))

    def f(x):
        return jnp.dot(g, x)

    x = jnp.zeros(d)
    keys = jax.random.split(jax.random.key(42), trials)
    est = jax.jit(jax.vmap(lambda k: fd.zo.randomized(f, x, k, q, 1e-3, distribution=distribution)))(keys)
    rel2 = jnp.sum((est - g[None, :]) ** 2, axis=1) / jnp.sum(g**2)
    law = _sphere_mse_and_variance if distribution == "sphere" else _gaussian_mse_and_variance
    mean, var = law(d, q)
    sem = np.sqrt(var / trials)  # sphere: 0.053 around 3.8; gaussian: about 0.08 around 4.2
    observed = float(jnp.mean(rel2))
    # 4 standard errors: a false failure has probability below 1e-4 (and the seed is fixed);
    # a wrong scaling (d instead of d - 1, or q off by one) moves the mean by 5-25 standard errors.
    assert abs(observed - mean) < 4 * sem, (observed, mean, sem)
    if distribution == "sphere":
        rel_rms = float(np.sqrt(observed))
        assert abs(rel_rms - np.sqrt((d - 1) / q)) < 0.02 * np.sqrt((d - 1) / q)


def test_randomized_estimate_is_unbiased_for_small_mu():
    # mean over 4000 single-direction estimates: covariance C (sphere) gives E||mean - g||^2 = (d-1)/N ||g||^2
    d, trials = 6, 4000
    keys = jax.random.split(jax.random.key(7), trials)
    est = jax.jit(jax.vmap(lambda k: fd.zo.randomized(smooth, X0, k, 1, 1e-6, scheme="central")))(keys)
    err2 = float(jnp.sum((jnp.mean(est, axis=0) - GRAD) ** 2) / jnp.sum(GRAD**2))
    assert err2 < 6 * (d - 1) / trials  # expected value (d-1)/N; 6x is beyond any plausible fluctuation here


# --- forward gradients -------------------------------------------------------------------------


def test_forward_gradient_unbiased_with_second_moment_d_plus_2():
    d, n = D, 20000
    g = GRAD
    keys = jax.random.split(jax.random.key(3), n)
    samples = jax.jit(jax.vmap(lambda k: fd.zo.forward_gradient(smooth, X0, k, 1)))(keys)
    gnorm2 = float(jnp.sum(g**2))

    # Second moment per tangent: E||(g.v) v||^2 = (d + 2)||g||^2; Var = ||g||^4 (105 + 30(d-1) + 3(d^2-1) - (d+2)^2)
    # (v ~ N(0, I): with s = g.v/||g||, ||(g.v)v||^2 = ||g||^2 s^2 (s^2 + chi^2_{d-1})).
    second = float(jnp.mean(jnp.sum(samples**2, axis=1)))
    var = gnorm2**2 * (105 + 30 * (d - 1) + 3 * (d**2 - 1) - (d + 2) ** 2)
    sem = np.sqrt(var / n)  # 1.6 % of the mean at d = 6, n = 20000
    assert abs(second - (d + 2) * gnorm2) < 4 * sem, (second, (d + 2) * gnorm2, sem)

    # Unbiased: the sample mean has covariance (||g||^2 I + g g^T)/n, so the Mahalanobis statistic
    # n (m - g)^T C^-1 (m - g) is chi^2_d (CLT); 30 is beyond its 0.9999 quantile (27.9) for d = 6.
    # A biased estimator (e.g. scaled by 1.05) gives a statistic near n 0.05^2 ||g||^2 / (2||g||^2) = 25 + d.
    mean = jnp.mean(samples, axis=0)
    cov = (gnorm2 * jnp.eye(d) + jnp.outer(g, g)) / n
    stat = float((mean - g) @ jnp.linalg.solve(cov, mean - g))
    assert stat < 30.0, stat
    # the averaged estimator with K tangents is the mean of K single-tangent ones: its error shrinks as 1/sqrt(K)
    avg = jax.jit(lambda x: fd.zo.forward_gradient(smooth, x, jax.random.key(5), 4000))(X0)
    assert float(jnp.sum((avg - g) ** 2)) < 6 * (d + 1) * gnorm2 / 4000


# --- directional derivatives and Hessian-vector products ---------------------------------------


def test_directional_exact_and_finite_difference():
    dirs = jax.random.normal(jax.random.key(0), (4, D))
    exact = dirs @ GRAD
    jvps, diffs, single = jax.jit(lambda x, u: (
        fd.zo.directional(smooth, x, u),
        fd.zo.directional(smooth, x, u, 1e-4, scheme="central"),
        fd.zo.directional(smooth, x, u[0]),
    ))(X0, dirs)
    np.testing.assert_allclose(jvps, exact, rtol=1e-13)
    np.testing.assert_allclose(diffs, exact, rtol=1e-6)  # O(mu^2) = 1e-8 truncation, u/mu = 1e-12 round-off
    assert jnp.shape(single) == ()
    np.testing.assert_allclose(single, exact[0], rtol=1e-13)


@pytest.mark.parametrize("scheme, order", [("forward", 1), ("central", 2)])
def test_finite_difference_hvp_converges_to_exact(scheme, order):
    v = jnp.linspace(1.0, -0.5, D)
    exact, dense, default = jax.jit(lambda x: (
        fd.zo.hvp(smooth, x, v), jax.hessian(smooth)(x) @ v, fd.zo.hvp(smooth, x, v, "finite_difference")))(X0)
    np.testing.assert_allclose(exact, dense, rtol=1e-13)
    est = jax.jit(lambda e: fd.zo.hvp(smooth, X0, v, "finite_difference", eps=e, scheme=scheme, step="absolute"))
    errors = [float(jnp.linalg.norm(est(e) - exact)) for e in MU]
    assert_order(MU, errors, order, label=f"hvp {scheme}")
    # the default step balances truncation and round-off: float64 central error about u^(2/3)
    assert float(jnp.linalg.norm(default - exact) / jnp.linalg.norm(exact)) < 1e-8


# --- zeroth-order optimizers -------------------------------------------------------------------


def test_zo_sgd_converges_on_a_quadratic():
    rng = np.random.default_rng(2)
    m = rng.standard_normal((D, D))
    a = jnp.asarray(m @ m.T / D + np.eye(D))
    target = jnp.asarray(rng.standard_normal(D))

    def f(x):
        r = x - target
        return 0.5 * r @ a @ r

    lr = 1.0 / float(jnp.linalg.eigvalsh(a)[-1])
    coord = fd.zo.ZOSGD(fd.zo.CoordinateEstimator(1e-6, scheme="central"), lr)
    x, values = fd.zo.minimize(f, jnp.zeros(D), coord, jax.random.key(0), 200)
    assert values.shape == (201,)
    assert float(jnp.linalg.norm(x - target)) < 1e-3 * float(jnp.linalg.norm(target))
    rand = fd.zo.ZOSGD(fd.zo.RandomizedEstimator(2, 1e-6), 0.5 * lr / D)
    _, values = fd.zo.minimize(f, jnp.zeros(D), rand, jax.random.key(0), 400)
    assert float(values[-1]) < 1e-2 * float(values[0])


def test_minimize_does_not_retrace_on_a_second_call():
    traces = []

    def f(x):
        traces.append(None)  # runs only while tracing
        return jnp.sum((x - 1.0) ** 2)

    opt = fd.zo.ZOSGD(fd.zo.RandomizedEstimator(2, 1e-6), 0.1)
    fd.zo.minimize(f, jnp.zeros(3), opt, jax.random.key(0), 5)
    first = len(traces)
    _, values = fd.zo.minimize(f, jnp.ones(3), opt, jax.random.key(1), 5)
    # the second call traces f once, for minimize's eager check that f is scalar; the compiled
    # loop (which traces f several times: value, estimator, final value) is reused
    assert first > 2 and len(traces) == first + 1
    assert float(values[0]) == 0.0


def test_zo_frank_wolfe_stays_feasible_and_reaches_the_constrained_minimum():
    # min 1/2 ||x - c||^2 over the box [-1, 1]^d with c outside: the solution is clip(c, -1, 1).
    c = jnp.asarray([2.0, -3.0, 0.5, 0.2, -0.4, 1.5])

    def f(x):
        return 0.5 * jnp.sum((x - c) ** 2)

    x_star = jnp.clip(c, -1.0, 1.0)
    fw = fd.zo.ZOFrankWolfe(fd.zo.CoordinateEstimator(1e-5), fd.zo.box_lmo(-1.0, 1.0))
    x, values = fd.zo.minimize(f, jnp.zeros(D), fw, jax.random.key(0), 300)
    assert float(jnp.max(jnp.abs(x))) <= 1.0 + 1e-12
    gap0 = float(values[0] - f(x_star))
    assert float(values[-1] - f(x_star)) < 1e-2 * gap0  # O(1/t) for Frank-Wolfe with step 2/(t+2)
    # randomized estimates, averaged: slower but still converging, and feasible
    fw_r = fd.zo.ZOFrankWolfe(fd.zo.RandomizedEstimator(3, 1e-5), fd.zo.box_lmo(-1.0, 1.0))
    x_r, values_r = fd.zo.minimize(f, jnp.zeros(D), fw_r, jax.random.key(1), 300)
    assert float(jnp.max(jnp.abs(x_r))) <= 1.0 + 1e-12
    assert float(values_r[-1] - f(x_star)) < 0.1 * gap0


def test_l1_ball_lmo_returns_the_best_vertex():
    lmo = fd.zo.l1_ball_lmo(2.0)
    s = lmo({"a": jnp.array([0.5, -3.0]), "b": jnp.array([1.0])})
    np.testing.assert_array_equal(s["a"], [0.0, 2.0])
    np.testing.assert_array_equal(s["b"], [0.0])


# --- dtypes and errors -------------------------------------------------------------------------


def test_float32_stays_float32():
    key = jax.random.key(0)
    outs = jax.jit(lambda x: [
        fd.zo.coordinate(smooth, x, 1e-2),
        fd.zo.randomized(smooth, x, key, 3, 1e-2, distribution="gaussian"),
        fd.zo.forward_gradient(smooth, x, key, 2),
        fd.zo.hvp(smooth, x, x, "finite_difference"),
        fd.zo.hvp(smooth, x, x),
        fd.zo.directional(smooth, x, x[None, :], 1e-2),
    ])(X0.astype(jnp.float32))
    assert all(o.dtype == jnp.float32 for o in outs)


def test_bad_input():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_directions >= 1"):
        fd.zo.randomized(smooth, X0, key, 0, 1e-3)
    with pytest.raises(TypeError, match="num_directions must be a Python integer"):
        fd.zo.randomized(smooth, X0, key, 2.5, 1e-3)
    with pytest.raises(ValueError, match="num_directions >= 1"):
        fd.zo.RandomizedEstimator(0, 1e-3)
    with pytest.raises(ValueError, match="num_tangents >= 1"):
        fd.zo.forward_gradient(smooth, X0, key, 0)
    with pytest.raises(ValueError, match="mu > 0"):
        fd.zo.coordinate(smooth, X0, 0.0)
    with pytest.raises(ValueError, match="mu > 0"):
        fd.zo.randomized(smooth, X0, key, 2, -1e-3)
    with pytest.raises(ValueError, match="eps > 0"):
        fd.zo.hvp(smooth, X0, X0, "finite_difference", eps=0.0)
    with pytest.raises(ValueError, match="v leaf .* has shape"):
        fd.zo.hvp(smooth, X0, jnp.ones(D + 1))
    with pytest.raises(ValueError, match="same pytree structure"):
        fd.zo.hvp(lambda p: smooth(p["x"]), {"x": X0}, [X0])
    with pytest.raises(ValueError, match="directions must have the shapes"):
        fd.zo.directional(smooth, X0, jnp.ones((3, D + 1)))
    with pytest.raises(ValueError, match="mask must have one boolean array per parameter"):
        fd.zo.coordinate(smooth, X0, 1e-3, mask=np.ones(D + 1, bool))
    with pytest.raises(TypeError, match="mask must be concrete"):
        jax.jit(lambda m: fd.zo.coordinate(smooth, X0, 1e-3, mask=m))(jnp.ones(D, bool))
    with pytest.raises(ValueError, match="f must return a scalar"):
        fd.zo.coordinate(jnp.sin, X0, 1e-3)
    with pytest.raises(ValueError, match="method must be"):
        fd.zo.hvp(smooth, X0, X0, "fd")
    with pytest.raises(TypeError, match="optimizer must be"):
        fd.zo.minimize(smooth, X0, "sgd", key, 3)
