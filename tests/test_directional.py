"""The one directional-difference primitive (fd.directional_difference) and its tree helpers.

Observed orders of the three schemes against the exact jvp, the relative step,
f0 reuse (evaluation counts), aux, equinox pytrees, float32, jit, errors.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_order

import jaxfd as fd
from jaxfd._directional import relative_step, tree_axpy, tree_norm, tree_vdot

EPS = [0.08, 0.04, 0.02, 0.01, 0.005]


def f_vec(x):
    """A smooth map R^3 -> R^2 with non-zero second and third derivatives along any direction."""
    return jnp.stack([jnp.sin(x[0]) * jnp.exp(x[1]) + x[2] ** 3, jnp.cos(x[0] * x[2]) + x[1] ** 2 * x[0]])


X = jnp.array([0.3, -0.4, 0.7])
V = jnp.array([1.0, 0.5, -2.0])


@pytest.mark.parametrize("scheme, order", [("forward", 1), ("backward", 1), ("central", 2)])
def test_observed_order_against_jvp(scheme, order):
    exact = jax.jvp(f_vec, (X,), (V,))[1]
    errors = [float(jnp.linalg.norm(fd.directional_difference(f_vec, X, V, e, scheme=scheme) - exact)) for e in EPS]
    assert_order(EPS, errors, order, label=f"directional_difference {scheme}")


def test_one_sided_schemes_err_on_opposite_sides():
    # forward - backward = h * f''(x)[v, v] + O(h^3): the two one-sided errors have opposite leading terms
    h = 1e-3
    fwd = fd.directional_difference(f_vec, X, V, h)
    bwd = fd.directional_difference(f_vec, X, V, h, scheme="backward")
    second = jax.jvp(lambda y: jax.jvp(f_vec, (y,), (V,))[1], (X,), (V,))[1]
    # relative remainder (h^2/12) f''''/f'' is about 2e-5 for the second component (f'' is small there)
    np.testing.assert_allclose(fwd - bwd, h * second, rtol=1e-4)


def test_relative_step_moves_by_eps():
    # f(x) = x.x: the forward difference is 2 x.v + h ||v||^2, and the relative step is h = eps/||v||,
    # so the excess over 2 x.v is eps ||v|| (it would be eps ||v||^2 with an absolute step).
    def f(x):
        return jnp.sum(x * x)

    eps = 0.25
    rel = fd.directional_difference(f, X, V, eps, step="relative")
    absolute = fd.directional_difference(f, X, V, eps)
    norm_v = float(jnp.linalg.norm(V))
    base = 2 * float(jnp.dot(X, V))
    np.testing.assert_allclose(float(rel) - base, eps * norm_v, rtol=1e-12)
    np.testing.assert_allclose(float(absolute) - base, eps * norm_v**2, rtol=1e-12)
    np.testing.assert_allclose(float(relative_step(eps, V)), eps / norm_v, rtol=1e-15)


def test_relative_step_with_zero_direction_is_zero_and_finite():
    out = fd.directional_difference(f_vec, X, jnp.zeros(3), 0.1, step="relative", scheme="central")
    assert bool(jnp.all(out == 0))


def test_f0_is_reused_and_aux_comes_from_the_last_evaluation():
    calls = []

    def f(x):
        calls.append(None)
        return jnp.sum(x**2), x[0]

    f0 = f(X)[0]
    calls.clear()
    out, aux = fd.directional_difference(f, X, V, 0.1, f0=f0, has_aux=True)
    assert len(calls) == 1, "forward difference with f0 must evaluate f once"
    np.testing.assert_allclose(float(aux), float(X[0] + 0.1 * V[0]))
    calls.clear()
    out2, _ = fd.directional_difference(f, X, V, 0.1, has_aux=True)
    assert len(calls) == 2
    np.testing.assert_allclose(out, out2, rtol=1e-14)
    calls.clear()
    fd.directional_difference(f, X, V, 0.1, scheme="central", has_aux=True)
    assert len(calls) == 2


def test_equinox_model_and_difference_of_gradients():
    # a difference of gradients along a direction is the Hessian-vector product (exact on a quadratic layer loss)
    model = eqx.nn.Linear(3, 2, key=jax.random.key(0))
    x = jnp.array([0.5, -1.0, 2.0])

    def loss(m):
        return 0.5 * jnp.sum(m(x) ** 2)

    grad = eqx.filter_grad(loss)
    direction = jax.tree_util.tree_map(jnp.ones_like, eqx.filter(model, eqx.is_inexact_array))
    fdiff, exact = eqx.filter_jit(lambda m, v: (fd.directional_difference(grad, m, v, 0.3),
                                                eqx.filter_jvp(grad, (m,), (v,))[1]))(model, direction)
    for a, b in zip(jax.tree_util.tree_leaves(fdiff), jax.tree_util.tree_leaves(exact)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_tree_helpers_on_dicts():
    a = {"w": jnp.array([3.0, 0.0]), "b": jnp.array(4.0)}
    np.testing.assert_allclose(float(tree_norm(a)), 5.0)
    np.testing.assert_allclose(float(tree_vdot(a, a)), 25.0)
    out = tree_axpy(2.0, a, a)
    np.testing.assert_allclose(out["w"], [9.0, 0.0])


def test_float32_stays_float32_with_float64_steps():
    x = X.astype(jnp.float32)
    v = V.astype(jnp.float32)
    for step in ("absolute", "relative"):
        outs = jax.jit(lambda e: [fd.directional_difference(f_vec, x, v, eps, scheme="central", step=step)
                                  for eps in (1e-2, e)])(jnp.asarray(1e-2, dtype=jnp.float64))
        assert all(out.dtype == jnp.float32 for out in outs)


def test_jit_equals_eager_with_traced_step():
    eager = fd.directional_difference(f_vec, X, V, 0.05, scheme="central", step="relative")
    jitted = jax.jit(lambda x, v, e: fd.directional_difference(f_vec, x, v, e, scheme="central", step="relative"))
    np.testing.assert_allclose(jitted(X, V, 0.05), eager, rtol=1e-14)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": 0.0}, "eps > 0"),
        ({"eps": -1e-3}, "eps > 0"),
        ({"eps": 0.1, "scheme": "centered"}, "scheme must be one of"),
        ({"eps": 0.1, "step": "rel"}, "step must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fd.directional_difference(f_vec, X, V, **kwargs)


def test_mismatched_direction():
    params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match="same pytree structure"):
        fd.directional_difference(lambda p: p["a"], params, [jnp.ones(2), jnp.ones(3)], 0.1)
    with pytest.raises(ValueError, match=r"leaf \['b'\] has shape \(2,\)"):
        fd.directional_difference(lambda p: p["a"], params, {"a": jnp.ones(2), "b": jnp.ones(2)}, 0.1)
