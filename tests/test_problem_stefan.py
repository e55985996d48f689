"""The Stefan flux-control problem: the enthalpy scheme against the Neumann similarity
solution and exact energy balance, the objective's gradient (Taylor test) and recovery of
the melt front at small size, with and without noise.

Bounds are measured (float64) and then given head-room; the measured values are in the comments.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfd as fd
from jaxfd.inverse.problems import stefan

SIZE = 32


@pytest.fixture(scope="module")
def noisy_problem():
    """The float64 problem at 1 % noise, built once (building compiles the forward model)."""
    return stefan.make(size=SIZE, noise=0.01, dtype=jnp.float64)


def _similarity_lambda(stefan_number):
    """Root of lam exp(lam^2) erf(lam) = St / sqrt(pi) (bisection; the left side increases)."""
    lo, hi = 1e-9, 5.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid * math.exp(mid * mid) * math.erf(mid) < stefan_number / math.sqrt(math.pi):
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _front_history(size, smoothing):
    """Front s(t) of the one-phase problem: solid at T_m, surface held at T = 1 (St = 1)."""
    grid = fd.Grid((size,), ((0.0, 1.0),))
    rhs = stefan.make_rhs(grid, smoothing=smoothing)
    dt = stefan.time_step(size)
    sol = stefan.simulate_melt(rhs, jnp.zeros(size), {"surface_temperature": jnp.asarray(1.0)}, dt=dt,
                               saveat=fd.SaveAt(every=max(1, round(0.01 / dt))), checkpoint="none")
    return np.asarray(sol.ts), np.asarray(stefan.front_position(sol.us, grid.spacing[0], smoothing=smoothing))


def test_front_follows_the_neumann_similarity_solution():
    # s(t) = 2 lam sqrt(kappa t), lam e^{lam^2} erf(lam) = St / sqrt(pi); St = c T_b / Lambda = 1.
    lam = _similarity_lambda(1.0)
    errors = {}
    for size, smoothing in ((32, 1e-4), (128, 1e-4), (128, stefan.SMOOTHING)):
        ts, s = _front_history(size, smoothing)
        exact = 2 * lam * np.sqrt(ts)
        late = ts >= 0.05  # the first cells melt in steps; judge once several cells have
        errors[size, smoothing] = np.max(np.abs(s - exact)[late])
        final = abs(s[-1] / exact[-1] - 1)
        if smoothing == stefan.SMOOTHING:
            # the default smoothing melts the solid held exactly at T_m by eps log 2 / Lambda
            # per cell (the worst case; in the control problem the solid is 10 eps colder):
            # measured 0.57 % at the final time
            assert final < 0.01, final
    # sharp enthalpy: measured max |s - exact| 1.0e-3 (32 cells), 2.7e-4 (128 cells): first order
    assert errors[128, 1e-4] < 4e-4, errors
    assert errors[32, 1e-4] / errors[128, 1e-4] > 2.5, errors


def test_energy_balance_is_exact(noisy_problem):
    # Conservative flux form and forward Euler: h * sum(H) grows by exactly dt * q(t_n) per step.
    problem = noisy_problem
    data = problem.data
    h = data["grid"].spacing[0]
    gained = h * float(jnp.sum(data["final_enthalpy_true"] - data["initial_enthalpy"]))
    dt, n = data["dt"], data["num_steps"]
    t = np.arange(n) * dt
    steps = np.minimum(dt, stefan.FINAL_TIME - t)
    supplied = float(np.sum(steps * np.interp(t, data["node_times"], np.asarray(problem.truth["flux"]))))
    assert abs(gained - supplied) < 1e-12 * supplied, (gained, supplied)
    # and the melt takes most of it: latent heat of the melted layer is a large share
    assert 0.4 < stefan.LATENT_HEAT * data["front_target"] / supplied < 0.9


def test_objective_gradient_passes_the_taylor_test(noisy_problem):
    problem = noisy_problem
    rng = np.random.default_rng(1)
    q = problem.truth["flux"] * (1.0 + 0.3 * jnp.tanh(jnp.asarray(rng.standard_normal(21))))
    dm = {"flux": jnp.asarray(rng.standard_normal(21))}
    # jitted: one compiled gradient instead of an eager trace through the rollout
    result = fd.inverse.taylor_test(jax.jit(problem.objective), {"flux": q}, dm)
    assert result.passed, result
    assert abs(result.rate - 2.0) < 0.1, result


# 32 cells, 80 L-BFGS steps (float64), from q = 1 (front error 0.61): measured front error
# 2.6e-6 (clean) and 1.3e-5 (1 % noise), temperature misfit 0.0015 and 0.0025. The front
# bound is 10x below the problem's 1 % target; the misfit bounds are 4-5x the measured values
# (with noise the fit cannot follow the noise, so its misfit to the clean profile stays small).
@pytest.mark.parametrize("noise, misfit_bound", [(0.0, 0.008), (0.01, 0.01)])
def test_front_is_recovered_at_small_size(noise, misfit_bound, noisy_problem, tmp_path):
    problem = noisy_problem if noise == 0.01 else stefan.make(size=SIZE, noise=noise, dtype=jnp.float64)
    start = problem.errors(problem.initial_params)
    assert start["front_position_relative_error"] > 0.5
    result = fd.inverse.fit(problem.objective, problem.initial_params, constraints=problem.constraints,
                            max_steps=80, **problem.fit_options)
    errors = problem.errors(result.params)
    assert errors["front_position_relative_error"] < 1e-3, (errors, result.reason)
    assert errors["temperature_relative_misfit"] < misfit_bound, errors
    assert result.history.loss[-1] < 1e-4 * result.history.loss[0]
    assert bool(jnp.all((result.params["flux"] > 0) & (result.params["flux"] < stefan.FLUX_MAX)))
    if noise:
        problem.plot(result.params, result.history, tmp_path / "stefan.png")
        assert (tmp_path / "stefan.png").stat().st_size > 10_000


def test_float32_stays_float32():
    problem = stefan.make(size=16, noise=0.01, dtype=jnp.float32)
    assert jax.eval_shape(problem.objective, problem.initial_params).dtype == jnp.float32
    assert jax.eval_shape(jax.grad(problem.objective), problem.initial_params)["flux"].dtype == jnp.float32
    for key in ("temperature_observed", "final_enthalpy_true"):
        assert problem.data[key].dtype == jnp.float32, key
    errors = problem.errors(problem.initial_params)  # runs the float32 forward model built by make
    assert all(math.isfinite(v) for v in errors.values()), errors
    assert errors["front_position_relative_error"] > 0.5


def test_make_rejects_bad_input():
    with pytest.raises(ValueError, match="size"):
        stefan.make(size=4)
    with pytest.raises(ValueError, match="noise"):
        stefan.make(size=SIZE, noise=-0.1)
    with pytest.raises(ValueError, match="dtype"):
        stefan.make(size=SIZE, dtype=jnp.int32)
    with pytest.raises(ValueError, match="1-D"):
        stefan.make_rhs(fd.Grid((8, 8), ((0.0, 1.0), (0.0, 1.0))))
