"""fd.gr: gradient regularization (double backprop, finite-difference GR, SAM, flooding).

Exact identities (quadratic loss, unnormalised SAM = forward GR with gamma = eps,
flooding = backward GR with eps = learning rate), observed convergence of the
finite-difference forms to double backprop, the optax transformation, aux
pass-through, equinox models, float32, errors.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_order

import jaxfd as fd

# --- a small non-quadratic problem: a tanh network on fixed data ---------------------------------

_k1, _k2, _k3, _k4 = jax.random.split(jax.random.key(0), 4)
DATA_X = jax.random.normal(_k1, (16, 3))
DATA_Y = jnp.sin(DATA_X @ jnp.array([1.0, -0.5, 0.25]))
PARAMS = {
    "w1": 0.8 * jax.random.normal(_k2, (3, 6)),
    "b1": 0.1 * jax.random.normal(_k3, (6,)),
    "w2": 0.8 * jax.random.normal(_k4, (6,)),
}


def mlp_loss(p, x, y):
    pred = jnp.tanh(x @ p["w1"] + p["b1"][None, :]) @ p["w2"]
    return 0.5 * jnp.mean((pred - y) ** 2)


def flat(tree):
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(tree)])


def rel_err(a, b):
    return float(jnp.linalg.norm(flat(a) - flat(b)) / jnp.linalg.norm(flat(b)))


def run_optax_sam(sam, grad_fn, calls):
    # optax.contrib.sam multiplies a bool by floats, which strict promotion (conftest) refuses
    with jax.numpy_dtype_promotion("standard"):
        @jax.jit
        def run(params):
            def body(_, carry):
                params, state = carry
                updates, state = sam.update(grad_fn(params, DATA_X, DATA_Y), state, params)
                return optax.apply_updates(params, updates), state

            return jax.lax.fori_loop(0, calls, body, (params, sam.init(params)))[0]

        return run(PARAMS)


# --- exact identities ---------------------------------------------------------------------------


def test_quadratic_gr_term_is_gamma_a2_theta_for_any_eps():
    # L = 1/2 theta^T A theta: grad L = A theta, H = A, so every GR term is gamma A^2 theta;
    # a difference of the linear gradient map along g0 is exact for any eps (up to round-off
    # of order u ||A theta|| / eps relative: 1e-13 at eps = 1e-3).
    rng = np.random.default_rng(1)
    m = rng.standard_normal((5, 5))
    a = jnp.asarray(m @ m.T + 5 * np.eye(5))
    theta = jnp.asarray(rng.standard_normal(5))
    gamma = 0.3
    expected = gamma * (a @ (a @ theta))

    def loss(t):
        return 0.5 * t @ a @ t

    g0 = a @ theta
    for method in ("forward", "backward", "central"):
        step = jax.jit(lambda e: fd.gr.gradient(loss, theta, gamma=gamma, eps=e, method=method))
        for eps in (1e-3, 0.1, 1.0, 10.0):
            term = step(eps) - g0
            np.testing.assert_allclose(term, expected, rtol=1e-10, err_msg=f"{method}, eps={eps}")
    term = jax.jit(lambda t: fd.gr.gradient(loss, t, gamma=gamma, method="double_backprop"))(theta) - g0
    np.testing.assert_allclose(term, expected, rtol=1e-12)
    # vmap over a batch of parameter vectors: gamma A^2 theta_i for each
    thetas = jnp.stack([theta, 2.0 * theta, -theta])
    batched = jax.vmap(lambda t: fd.gr.gradient(loss, t, gamma=gamma, eps=0.1, method="forward"))(thetas)
    np.testing.assert_allclose(batched, thetas @ (a + gamma * a @ a).T, rtol=1e-12)


def test_forward_gr_with_gamma_equal_eps_is_optax_unnormalized_sam():
    # (1 - gamma/eps) g0 + (gamma/eps) g1 with gamma = eps is g1 = grad L(theta + rho g0): optax's SAM
    # with an SGD adversary of rate rho (two optax calls per outer step) follows the same iterates.
    rho, lr, steps = 0.05, 0.1, 6
    grad_fn = jax.grad(mlp_loss)

    sam = optax.contrib.sam(optax.sgd(lr), optax.sgd(rho), sync_period=2)
    params = run_optax_sam(sam, grad_fn, 2 * steps)

    ours = optax.chain(fd.gr.transform("forward", gamma=rho, eps=rho), optax.sgd(lr))

    @jax.jit
    def step(params, state):
        g0 = grad_fn(params, DATA_X, DATA_Y)
        updates, state = ours.update(g0, state, params, grad_fn=lambda p: grad_fn(p, DATA_X, DATA_Y))
        return optax.apply_updates(params, updates), state

    mine, my_state = PARAMS, ours.init(PARAMS)
    for _ in range(steps):
        mine, my_state = step(mine, my_state)

    moved = rel_err(params, PARAMS)
    assert moved > 1e-2, "the test must move the parameters"
    assert rel_err(mine, params) < 1e-13
    # and the function form agrees with the unnormalised SAM method
    a = fd.gr.gradient(mlp_loss, PARAMS, DATA_X, DATA_Y, gamma=rho, eps=rho, method="forward")
    b = fd.gr.gradient(mlp_loss, PARAMS, DATA_X, DATA_Y, eps=rho, method="unnormalized_sam")
    c = grad_fn(jax.tree_util.tree_map(lambda p, g: p + rho * g, PARAMS, grad_fn(PARAMS, DATA_X, DATA_Y)),
                DATA_X, DATA_Y)
    assert rel_err(a, c) < 1e-13 and rel_err(b, c) < 1e-13


def test_sam_is_optax_sam_with_normalized_adversary():
    rho, lr, steps = 0.05, 0.1, 4
    grad_fn = jax.grad(mlp_loss)
    sam = optax.contrib.sam(optax.sgd(lr), optax.chain(optax.contrib.normalize(), optax.sgd(rho)), sync_period=2)
    params = run_optax_sam(sam, grad_fn, 2 * steps)
    step = jax.jit(lambda p: jax.tree_util.tree_map(
        lambda a, g: a - lr * g, p, fd.gr.gradient(mlp_loss, p, DATA_X, DATA_Y, eps=rho, method="sam")))
    mine = PARAMS
    for _ in range(steps):
        mine = step(mine)
    assert rel_err(mine, params) < 1e-12


def test_two_flooding_steps_are_one_backward_gr_step_with_eps_lr():
    # Flooding with L(theta) > b > L(theta1): theta1 = theta - lr g0 (descent), theta2 = theta1 + lr g(theta1)
    # (ascent), so theta2 = theta - lr^2 (g0 - g(theta - lr g0)) / lr: one step of size lr^2 on the
    # backward-difference gradient-norm penalty with eps = lr (Karakida et al. 2023). Exact to round-off.
    lr = 0.5
    grad_fn = jax.grad(mlp_loss)
    g0 = grad_fn(PARAMS, DATA_X, DATA_Y)
    theta1 = jax.tree_util.tree_map(lambda p, g: p - lr * g, PARAMS, g0)
    level = 0.5 * (float(mlp_loss(PARAMS, DATA_X, DATA_Y)) + float(mlp_loss(theta1, DATA_X, DATA_Y)))

    opt = optax.chain(fd.gr.transform("flooding", flood_level=level), optax.sgd(lr))
    params, state = PARAMS, opt.init(PARAMS)
    for _ in range(2):
        value, g = jax.value_and_grad(mlp_loss)(params, DATA_X, DATA_Y)
        updates, state = opt.update(g, state, params, value=value)
        params = optax.apply_updates(params, updates)

    # gamma = 1: the returned gradient minus g0 is the backward difference of gradients itself
    penalty = jax.tree_util.tree_map(
        lambda a, b: a - b,
        fd.gr.gradient(mlp_loss, PARAMS, DATA_X, DATA_Y, gamma=1.0, eps=lr, method="backward"), g0)
    expected = jax.tree_util.tree_map(lambda p, d: p - lr**2 * d, PARAMS, penalty)
    assert rel_err(params, PARAMS) > 1e-3
    assert rel_err(params, expected) < 1e-13
    # below the flood level the flooding gradient is the negated gradient (ascent)
    g_flood = fd.gr.gradient(mlp_loss, PARAMS, DATA_X, DATA_Y, method="flooding", flood_level=10.0)
    np.testing.assert_allclose(flat(g_flood), -flat(g0), rtol=1e-15)


# --- convergence to double backprop -------------------------------------------------------------


@pytest.mark.parametrize("method, order", [("forward", 1), ("backward", 1), ("central", 2)])
def test_finite_difference_gr_converges_to_double_backprop(method, order):
    gamma = 0.2
    exact = fd.gr.gradient(mlp_loss, PARAMS, DATA_X, DATA_Y, gamma=gamma, method="double_backprop")
    step = jax.jit(lambda e: fd.gr.gradient(mlp_loss, PARAMS, DATA_X, DATA_Y, gamma=gamma, eps=e, method=method))
    eps = [0.4, 0.2, 0.1, 0.05, 0.025]
    errors = [rel_err(step(e), exact) for e in eps]
    assert_order(eps, errors, order, label=f"{method} GR -> double backprop")


def test_double_backprop_is_the_gradient_of_the_penalised_loss():
    gamma = 0.2

    def penalised(p):
        g = jax.grad(mlp_loss)(p, DATA_X, DATA_Y)
        return mlp_loss(p, DATA_X, DATA_Y) + 0.5 * gamma * sum(jnp.sum(gi**2) for gi in jax.tree_util.tree_leaves(g))

    # check against an independent route: Hessian-vector product by forward-over-reverse
    g0 = jax.grad(mlp_loss)(PARAMS, DATA_X, DATA_Y)
    hvp = jax.jvp(lambda p: jax.grad(mlp_loss)(p, DATA_X, DATA_Y), (PARAMS,), (g0,))[1]
    expected = jax.tree_util.tree_map(lambda a, b: a + gamma * b, g0, hvp)
    got = fd.gr.gradient(mlp_loss, PARAMS, DATA_X, DATA_Y, gamma=gamma, method="double_backprop")
    assert rel_err(got, expected) < 1e-13
    assert rel_err(jax.grad(penalised)(PARAMS), expected) < 1e-13


# --- the transformation, aux, equinox ----------------------------------------------------------

METHOD_KWARGS = {
    "double_backprop": {"gamma": 0.1},
    "forward": {"gamma": 0.1, "eps": 0.05},
    "backward": {"gamma": 0.1, "eps": 0.05},
    "central": {"gamma": 0.1, "eps": 0.05},
    "sam": {"eps": 0.05},
    "unnormalized_sam": {"eps": 0.05},
    "flooding": {"flood_level": 0.5},
}


def test_transform_under_jit_equals_the_function_for_every_method():
    @jax.jit
    def all_methods(params, x, y):
        out = {}
        value, g0 = jax.value_and_grad(mlp_loss)(params, x, y)
        for method, kwargs in METHOD_KWARGS.items():
            tx = optax.chain(fd.gr.transform(method, **kwargs), optax.scale(-1.0))
            updates, _ = tx.update(g0, tx.init(params), params,
                                   grad_fn=lambda p: jax.grad(mlp_loss)(p, x, y), value=value)
            reference = fd.gr.gradient(mlp_loss, params, x, y, method=method, **kwargs)
            out[method] = (jax.tree_util.tree_map(lambda u: -u, updates), reference)
        return out

    for method, (via_transform, via_function) in all_methods(PARAMS, DATA_X, DATA_Y).items():
        assert rel_err(via_transform, via_function) < 1e-13, method


def test_equinox_model_with_aux_trains_under_jit():
    # batch statistics as aux: they come from the unperturbed parameters, whatever the method
    model = eqx.nn.MLP(3, 1, width_size=8, depth=2, activation=jnp.tanh, key=jax.random.key(3))

    def loss(m, x, y):
        hidden_mean = jnp.mean(jax.vmap(m.layers[0])(x))
        pred = jax.vmap(m)(x)[:, 0]
        return jnp.mean((pred - y) ** 2), {"hidden_mean": hidden_mean}

    opt = optax.chain(fd.gr.transform("forward", gamma=0.05, eps=0.05, has_aux=True), optax.adam(1e-2))

    @eqx.filter_jit
    def train_step(m, state, x, y):
        arrays, static = eqx.partition(m, eqx.is_inexact_array)
        (value, aux), g0 = eqx.filter_value_and_grad(loss, has_aux=True)(m, x, y)

        def grad_fn(a):
            return eqx.filter_grad(loss, has_aux=True)(eqx.combine(a, static), x, y)

        updates, state = opt.update(g0, state, arrays, grad_fn=grad_fn)
        return eqx.apply_updates(m, updates), state, value, aux

    # optax.adam raises a float to an int32 power, which strict promotion (conftest) refuses
    with jax.numpy_dtype_promotion("standard"):
        state = opt.init(eqx.filter(model, eqx.is_inexact_array))
        first = None
        m = model
        for _ in range(40):
            m, state, value, aux = train_step(m, state, DATA_X, DATA_Y)
            first = value if first is None else first
    assert float(value) < 0.5 * float(first)

    # function form: same gradient as the manual formula, aux at the unperturbed point
    @eqx.filter_jit
    def function_form(m, x, y):
        g, aux = fd.gr.gradient(loss, m, x, y, gamma=0.05, eps=0.05, method="forward", has_aux=True)
        g0 = eqx.filter_grad(loss, has_aux=True)(m, x, y)[0]
        g1 = eqx.filter_grad(loss, has_aux=True)(
            eqx.apply_updates(m, jax.tree_util.tree_map(lambda u: 0.05 * u, g0)), x, y)[0]
        return g, aux, g0, g1, loss(m, x, y)[1]

    g, aux, g0, g1, aux0 = function_form(model, DATA_X, DATA_Y)
    np.testing.assert_allclose(aux["hidden_mean"], aux0["hidden_mean"], rtol=1e-15)
    manual = jax.tree_util.tree_map(lambda a, b: a + (b - a), g0, g1)  # (1 - 1) g0 + 1 g1 with gamma = eps
    assert rel_err(g, manual) < 1e-12
    assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(g0)


def test_float32_stays_float32():
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), PARAMS)
    x32, y32 = DATA_X.astype(jnp.float32), DATA_Y.astype(jnp.float32)
    outs = jax.jit(lambda p, x, y: {
        method: fd.gr.value_and_gradient(mlp_loss, p, x, y, method=method, **kwargs)
        for method, kwargs in METHOD_KWARGS.items()})(p32, x32, y32)
    for method, (value, g) in outs.items():
        assert value.dtype == jnp.float32, method
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(g)), method


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "forward", "gamma": 0.1, "eps": 0.0}, "eps > 0"),
        ({"method": "forward", "gamma": 0.1, "eps": -0.1}, "eps > 0"),
        ({"method": "sam", "eps": 0.0}, "eps > 0"),
        ({"method": "backward", "gamma": -0.1, "eps": 0.1}, "gamma >= 0"),
        ({"method": "double_backprop", "gamma": -1.0}, "gamma >= 0"),
        ({"method": "forwards", "gamma": 0.1, "eps": 0.1}, "method must be one of"),
        ({"method": "forward", "eps": 0.1}, "needs gamma"),
        ({"method": "forward", "gamma": 0.1}, "needs eps"),
        ({"method": "sam", "gamma": 0.1, "eps": 0.1}, "gamma is not used by method='sam'"),
        ({"method": "double_backprop", "gamma": 0.1, "eps": 0.1}, "eps is not used"),
        ({"method": "flooding"}, "needs flood_level"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fd.gr.gradient(mlp_loss, PARAMS, DATA_X, DATA_Y, **kwargs)
    with pytest.raises(ValueError, match=match):
        fd.gr.transform(**kwargs)


def test_transform_update_errors():
    tx = fd.gr.transform("forward", gamma=0.1, eps=0.1)
    g0 = jax.grad(mlp_loss)(PARAMS, DATA_X, DATA_Y)
    with pytest.raises(ValueError, match="needs grad_fn"):
        tx.update(g0, tx.init(PARAMS), PARAMS)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(g0, tx.init(PARAMS), None, grad_fn=lambda p: p)
    with pytest.raises(ValueError, match="updates must have the same pytree structure"):
        tx.update([g0["w1"]], tx.init(PARAMS), PARAMS, grad_fn=lambda p: p)
    flood = fd.gr.transform("flooding", flood_level=0.1)
    with pytest.raises(ValueError, match="needs the loss value"):
        flood.update(g0, flood.init(PARAMS), PARAMS)
