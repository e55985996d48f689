"""The optimization layer: taylor_test, fit (optimizers, constraints, bounds, checkpoints), regularizers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import jaxfd as fd
from conftest import assert_order


def rosenbrock(p):
    x = p["x"]
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


START = {"x": jnp.asarray([-1.2, 1.0, -1.2, 1.0, -1.2, 1.0])}


# ---------------------------------------------------------------- taylor_test

def _smooth(p):
    return jnp.sum(jnp.sin(p["a"]) ** 2) + p["b"] ** 4 + jnp.sum(p["a"]) * p["b"]


M = {"a": jnp.linspace(0.0, 1.0, 5), "b": jnp.asarray(0.3)}
DM = {"a": jnp.asarray([0.5, -0.2, 0.1, 0.3, -0.4]), "b": jnp.asarray(1.0)}


def test_taylor_test_observes_rates_of_a_correct_gradient():
    result = fd.taylor_test(_smooth, M, DM)
    assert result.passed and bool(result)
    assert np.all(np.abs(result.rates[np.isfinite(result.rates)] - 2.0) < 0.1)
    assert np.allclose(result.all_rates[0], 1.0, atol=0.1)  # zeroth-order remainder: rate 1
    hessian = fd.taylor_test(_smooth, M, DM, hessian=True)
    assert hessian.expected == 3 and hessian.passed
    assert abs(hessian.rate - 3.0) < 0.1
    assert "r1 (rate 2)" in repr(result)


def test_taylor_test_fails_a_wrong_gradient():
    @jax.custom_vjp
    def wrong(p):
        return _smooth(p)

    def fwd(p):
        return _smooth(p), p

    def bwd(p, ct):  # the gradient 1% too large: what a subtle adjoint bug looks like
        return (jax.tree_util.tree_map(lambda g: 1.01 * ct * g, jax.grad(_smooth)(p)),)

    wrong.defvjp(fwd, bwd)
    result = fd.taylor_test(wrong, M, DM)
    assert not result.passed
    assert abs(result.rates[-1] - 1.0) < 0.1  # the remainder falls to first order


def test_taylor_test_of_a_linear_functional_is_exact():
    result = fd.taylor_test(lambda p: 3.0 * p["b"] + jnp.sum(p["a"]), M, DM)
    assert result.passed and result.rate == math.inf


@pytest.mark.parametrize("kwargs, match", [
    ({"dm": {"a": jnp.ones(4), "b": jnp.asarray(1.0)}}, "shape"),
    ({"dm": {"a": jnp.zeros(5), "b": jnp.asarray(0.0)}}, "zero"),
    ({"num_steps": 2}, "num_steps"),
])
def test_taylor_test_rejects_bad_input(kwargs, match):
    dm = kwargs.pop("dm", DM)
    with pytest.raises(ValueError, match=match):
        fd.taylor_test(_smooth, M, dm, **kwargs)
    with pytest.raises(ValueError, match="scalar"):
        fd.taylor_test(lambda p: p["a"], M, DM)


# ---------------------------------------------------------------- fit

def test_lbfgs_reaches_the_rosenbrock_minimum():
    result = fd.inverse.fit(rosenbrock, START, max_steps=300, gtol=1e-12)
    assert result.converged and result.reason in ("gtol", "stalled", "ftol")
    np.testing.assert_allclose(result.params["x"], 1.0, atol=1e-8)
    assert result.loss < 1e-16
    assert len(result.history.loss) == result.steps + 1
    assert np.all(np.diff(result.history.loss) <= 1e-12)  # the line search only descends


def test_adam_with_positive_constraint_and_history():
    target = jnp.asarray([0.5, 2.0, 1e-3])
    loss = lambda p: jnp.sum(jnp.log(p["k"] / target) ** 2)  # noqa: E731
    result = fd.inverse.fit(loss, {"k": jnp.ones(3)}, optimizer=optax.adam(0.1), max_steps=400,
                            constraints={"k": fd.inverse.Positive()}, gtol=1e-6)
    np.testing.assert_allclose(result.params["k"], target, rtol=1e-4)
    assert result.history.loss[0] > 1e3 * result.history.loss[-1]
    assert np.all(np.isfinite(result.history.grad_norm))


def test_interval_constraint_keeps_parameters_inside():
    loss = lambda p: jnp.sum((p["v"] - 3.0) ** 2)  # noqa: E731 - the minimum lies outside (0, 1)
    result = fd.inverse.fit(loss, {"v": jnp.asarray([0.5])}, optimizer=optax.sgd(0.5), max_steps=50,
                            constraints={"v": fd.inverse.Interval(0.0, 1.0)})
    assert 0.9 < float(result.params["v"][0]) < 1.0


def test_bounds_match_scipy_lbfgsb():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    lower, upper = -2.0, 0.9
    start = {"x": jnp.clip(START["x"], lower, 0.8)}
    result = fd.inverse.fit(rosenbrock, start, bounds=(lower, upper), max_steps=300, gtol=1e-10)
    reference = scipy_optimize.minimize(
        lambda x: float(rosenbrock({"x": jnp.asarray(x)})),
        jac=lambda x: np.asarray(jax.grad(rosenbrock)({"x": jnp.asarray(x)})["x"]),
        x0=np.asarray(start["x"]), method="L-BFGS-B", bounds=[(lower, upper)] * 6,
        options={"ftol": 1e-15, "gtol": 1e-12})
    np.testing.assert_allclose(result.params["x"], reference.x, atol=1e-5)
    assert float(jnp.max(result.params["x"])) <= upper
    projected = fd.inverse.fit(rosenbrock, start, optimizer=optax.adam(1e-2), bounds=(lower, upper),
                               max_steps=50)
    assert float(jnp.max(projected.params["x"])) <= upper and float(jnp.min(projected.params["x"])) >= lower


def test_resume_from_checkpoint_equals_an_uninterrupted_fit(tmp_path):
    path = tmp_path / "fit.npz"
    first = fd.inverse.fit(rosenbrock, START, max_steps=23, checkpoint=path, checkpoint_every=5)
    assert first.reason == "max_steps" and path.exists()
    resumed = fd.inverse.fit(rosenbrock, START, max_steps=60, checkpoint=path, checkpoint_every=5, resume=True)
    straight = fd.inverse.fit(rosenbrock, START, max_steps=60, checkpoint_every=5)
    assert resumed.resumed_from == 23
    np.testing.assert_array_equal(resumed.params["x"], straight.params["x"])
    np.testing.assert_array_equal(resumed.history.loss, straight.history.loss)
    assert resumed.steps == straight.steps


def test_checkpoint_of_another_problem_is_refused(tmp_path):
    path = tmp_path / "fit.npz"
    fd.inverse.fit(rosenbrock, START, max_steps=5, checkpoint=path, checkpoint_every=5)
    other = {"x": jnp.zeros(4)}
    with pytest.raises(ValueError, match="cannot resume"):
        fd.inverse.fit(rosenbrock, other, max_steps=5, checkpoint=path, resume=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot resume"):
        fd.inverse.fit(rosenbrock, START, max_steps=5, checkpoint=path, resume=True)


def _diverging(p):
    # finite until x passes 2, then NaN: plain gradient ascent walks into it
    x = p["x"]
    return jnp.where(x < 2.0, -x, jnp.nan).sum()


def test_a_diverging_fit_stops_with_the_step_and_keeps_its_last_good_checkpoint(tmp_path):
    path = tmp_path / "fit.npz"
    params = {"x": jnp.asarray([0.0])}
    with pytest.raises(fd.inverse.FitDivergedError, match=r"non-finite at step 7"):
        fd.inverse.fit(_diverging, params, optimizer=optax.sgd(0.3), max_steps=50, checkpoint=path,
                       checkpoint_every=2)
    kept = fd.inverse.fit(_diverging, params, optimizer=optax.sgd(0.3), max_steps=6, checkpoint=path,
                          checkpoint_every=2, resume=True)
    assert kept.resumed_from == 6 and np.all(np.isfinite(kept.params["x"]))
    soft = fd.inverse.fit(_diverging, params, optimizer=optax.sgd(0.3), max_steps=50, throw=False)
    assert soft.reason == "non-finite" and not soft.converged
    np.testing.assert_allclose(soft.params["x"], [1.8])  # the last finite iterate, step 6
    assert np.isnan(soft.history.loss[-1]) and soft.steps == 7


@pytest.mark.parametrize("kwargs, error, match", [
    ({"max_steps": -1}, ValueError, "max_steps"),
    ({"gtol": -1.0}, ValueError, "gtol"),
    ({"checkpoint_every": 0}, ValueError, "checkpoint_every"),
    ({"resume": True}, ValueError, "checkpoint"),
    ({"optimizer": "newton"}, ValueError, "unknown optimizer"),
    ({"optimizer": 3}, TypeError, "optax"),
    ({"bounds": (0.0, 1.0), "constraints": {"x": None}}, ValueError, "either"),
    ({"bounds": (0.0, 1.0)}, ValueError, "outside bounds"),
    ({"constraints": {"x": fd.inverse.Positive()}}, ValueError, "outside its constraint"),
])
def test_fit_rejects_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        fd.inverse.fit(rosenbrock, START, **kwargs)


def test_fit_rejects_bad_params_and_losses():
    with pytest.raises(TypeError, match="floating-point"):
        fd.inverse.fit(lambda p: jnp.sum(p["n"]), {"n": jnp.arange(3)})
    with pytest.raises(ValueError, match="scalar"):
        fd.inverse.fit(lambda p: p["x"] ** 2, START)
    with pytest.raises(ValueError, match="lo < hi"):
        fd.inverse.Interval(1.0, 0.0)


def test_fit_passes_args_and_stays_in_float32():
    data = jnp.asarray([1.0, 2.0, 3.0], jnp.float32)
    result = fd.inverse.fit(lambda p, d: jnp.sum((p["m"] - d) ** 2), {"m": jnp.zeros(3, jnp.float32)}, data,
                            max_steps=20, gtol=1e-5)
    assert result.params["m"].dtype == jnp.float32
    np.testing.assert_allclose(result.params["m"], data, rtol=1e-5)


# ---------------------------------------------------------------- regularizers

def _bump(grid):
    x, y = grid.mesh()
    return jnp.sin(jnp.pi * x) ** 2 * jnp.sin(jnp.pi * y) ** 2


def test_h1_seminorm_converges_at_second_order():
    # u = sin^2(pi x) sin^2(pi y): |grad u| vanishes on the walls, so the missing half faces
    # cost only O(h^3) and the face sum is a midpoint rule: O(h^2).
    exact = 2 * (math.pi**2 / 2) * (3 / 8)  # 2 axes * int_0^1 (d/dx sin^2)^2 dx * int_0^1 sin^4 dy
    ns = [8, 16, 32, 64]
    errors = []
    for n in ns:
        grid = fd.Grid((n, n), ((0.0, 1.0), (0.0, 1.0)))
        errors.append(abs(float(fd.inverse.h1_seminorm(_bump(grid), grid)) - exact))
    assert_order([1 / n for n in ns], errors, 2.0, label="h1_seminorm")


def test_total_variation_of_a_step_is_jump_times_length():
    grid = fd.Grid((40, 30), ((0.0, 2.0), (0.0, 1.0)))
    x, _ = grid.mesh()
    step = jnp.where(x > 0.7, 3.0, 0.0)
    tv = float(fd.inverse.total_variation(step, grid, delta=1e-9))
    assert tv == pytest.approx(3.0 * 1.0, rel=1e-6)  # jump 3 across a line of length 1
    tikhonov = float(fd.inverse.tikhonov(jnp.full(grid.shape, 2.0), grid))
    assert tikhonov == pytest.approx(4.0 * 2.0)  # 2^2 times the area


def test_regularizers_are_differentiable():
    grid = fd.Grid((6, 5), ((0.0, 1.0), (0.0, 1.0)))
    u = jnp.asarray(np.random.default_rng(0).standard_normal(grid.shape))
    for fn in (lambda v: fd.inverse.h1_seminorm(v, grid), lambda v: fd.inverse.total_variation(v, grid, 0.1),
               lambda v: fd.inverse.tikhonov(v, grid, reference=jnp.ones(grid.shape))):
        check_grads(fn, (u,), order=2, modes=["rev"])
    with pytest.raises(ValueError, match="delta"):
        fd.inverse.total_variation(u, grid, delta=0.0)
    with pytest.raises(ValueError, match="shape"):
        fd.inverse.h1_seminorm(u[:-1], grid)


def test_taylor_test_perturbs_python_float_parameters():
    # a Python float in m is a parameter: it must move with m + h dm (it once stayed put,
    # and a correct gradient then showed rate 1)
    def J(m):
        x, c = m
        return jnp.sum(jnp.sin(c * x))

    x = jnp.linspace(0.0, 1.0, 5)
    result = fd.taylor_test(J, (x, 3.0), (jnp.ones(5), 1.0))
    assert result.passed and abs(result.rate - 2.0) < 0.1, result
