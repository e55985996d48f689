"""Worked inverse problems at small size: forward model checks, Taylor tests, recovery with and without noise.

(Stefan and chromatography have their own files.) Default-size figures and
their targets are in docs/inverse-problems.md; here the sizes are small, so
the bounds are those of a 16x16 grid, measured and then given head-room.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfd as fd
from jaxfd.inverse.problems import coefficient, initial_state

SIZE = 16


def _direction(params, seed):
    """A random direction scaled like the parameters (so a 0.1 coefficient is not pushed negative)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype) * (jnp.abs(p) + jnp.mean(jnp.abs(p))), params)


def test_coefficient_forward_model_solves_the_discrete_problem():
    problem = coefficient.make(size=SIZE, noise=0.0, dtype=jnp.float64)
    grid, f, clean = problem.data["grid"], problem.data["sources"], problem.data["clean"]
    k = problem.truth["k"]
    residual = [-fd.diffusion(jnp.asarray(u), grid, k, bc=fd.Dirichlet(0.0)) - fj for u, fj in zip(clean, f)]
    assert max(float(jnp.max(jnp.abs(r))) for r in residual) < 1e-7 * float(jnp.max(jnp.abs(f)))
    mask = problem.data["mask"]
    assert 0.5 < mask.mean() < 0.95  # the band around the jumps is excluded, most cells are kept
    assert problem.errors(problem.truth)["k_relative_l2_away_from_jumps"] == 0.0


@pytest.mark.parametrize("module", [coefficient, initial_state], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_objective_gradient_passes_the_taylor_test(module):
    problem = module.make(size=SIZE, noise=0.01, dtype=jnp.float64)
    # a point away from the optimum: the truth perturbed (positive for the coefficient)
    point = jax.tree_util.tree_map(lambda t, d: t * (1.0 + 0.2 * jnp.tanh(d)), problem.truth, _direction(problem.truth, 1))
    result = fd.taylor_test(problem.objective, point, _direction(point, 2))
    assert result.passed, result
    assert abs(result.rate - 2.0) < 0.1, result


# 16x16 cells: a cell is 1/16 of the domain, so the recovered fields are coarse. Measured
# (float64, L-BFGS): coefficient 0.21 (clean) / 0.26 (1% noise) after 60 steps, from 0.93 at k = 1;
# initial state 0.10 / 0.10 after 40 steps, from 1.0 at u0 = 0.
# The initial state's target is for noise-free data; its noisy figures are in the docs.
RECOVERY = {
    ("coefficient", 0.0): (coefficient, "k_relative_l2_away_from_jumps", 60, 0.3),
    ("coefficient", 0.01): (coefficient, "k_relative_l2_away_from_jumps", 60, 0.35),
    ("initial_state", 0.0): (initial_state, "u0_relative_l2", 40, 0.15),
}


@pytest.mark.parametrize("name, noise", list(RECOVERY), ids=lambda x: str(x))
def test_recovery_at_small_size(name, noise):
    module, key, steps, bound = RECOVERY[name, noise]
    problem = module.make(size=SIZE, noise=noise, dtype=jnp.float64)
    start = problem.errors(problem.initial_params)[key]
    result = fd.inverse.fit(problem.objective, problem.initial_params, constraints=problem.constraints,
                            max_steps=steps, **problem.fit_options)
    error = problem.errors(result.params)[key]
    assert error < bound, (error, result.reason, result.steps)
    assert error < 0.4 * start
    assert result.history.loss[-1] < 1e-2 * result.history.loss[0]


@pytest.mark.parametrize("module", [coefficient, initial_state])
def test_problem_builders_reject_bad_input(module):
    with pytest.raises(ValueError, match="size"):
        module.make(size=4, noise=0.0)
    with pytest.raises(ValueError, match="noise"):
        module.make(size=SIZE, noise=-0.1)
