"""`simulate(..., adjoint="reverse")`: simulate's own reverse pass (a custom VJP over the
nested checkpoint schedule) gives the gradients JAX's autodiff of the loop gives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfd as fd

GRID = fd.Grid((16, 12), ((0.0, 1.0), (0.0, 0.75)))
BC = (fd.Dirichlet(0.2), fd.Neumann(0.0))


def _heat_loss(u0, k, source, adjoint, steps=61):
    # 61 steps: a prime, so the nested segments are odd (7 steps) with a remainder of 5
    faces = fd.face_coefficients(k, GRID, bc=BC)

    def rhs(t, u, args):
        faces, source = args
        return fd.diffusion(u, GRID, faces, bc=BC) + source * jnp.cos(3.0 * t)

    dt = 0.2 * GRID.spacing[0] ** 2 / 2.0
    sol = fd.simulate(rhs, u0, 0.0, steps * dt, dt, stepper=fd.Euler(), args=(faces, source),
                      checkpoint="nested", adjoint=adjoint)
    x, y = GRID.mesh(jnp.float64)
    return jnp.sum(sol.us[-1] ** 2 * jnp.sin(2.0 * x + y))


def _heat_inputs():
    x, y = GRID.mesh(jnp.float64)
    u0 = jnp.sin(np.pi * x) * jnp.cos(2.0 * y) + 0.3
    k = 1.0 + 0.4 * jnp.cos(3.0 * x) * jnp.sin(2.0 * y)
    source = jnp.exp(-((x - 0.4) ** 2 + (y - 0.3) ** 2) * 20.0)
    return u0, k, source


@pytest.mark.parametrize("argnums", [(0,), (1,), (2,), (0, 1, 2)])
def test_heat_gradients_match_autodiff(argnums):
    # the state, the coefficient field (through the face coefficients' own derivative
    # rule) and a source, alone and together: the perturbed inputs decide what the
    # reverse pass accumulates
    inputs = _heat_inputs()
    got = jax.grad(_heat_loss, argnums)(*inputs, "reverse")
    want = jax.grad(_heat_loss, argnums)(*inputs, "autodiff")
    for g, w in zip(got, want):
        assert float(jnp.max(jnp.abs(w))) > 1e-3
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-13 * float(jnp.max(jnp.abs(w))))


def test_values_are_those_of_the_autodiff_loop():
    inputs = _heat_inputs()
    assert float(_heat_loss(*inputs, "reverse")) == pytest.approx(float(_heat_loss(*inputs, "autodiff")), rel=1e-14)


def _reaction_loss(params, adjoint, saveat=fd.SaveAt(ts=[0.013])):
    # a pytree state, a nonlinear two-stage step, a save in between (the loop is cut
    # into pieces, each with its own reverse pass)
    grid = fd.Grid((20,), ((0.0, 1.0),))

    def rhs(t, u, p):
        lap = lambda v: fd.laplacian(v, grid, bc=fd.Neumann(0.0))  # noqa: E731
        reaction = u["a"] * u["b"] ** 2
        return {"a": p["da"] * lap(u["a"]) - reaction + p["feed"] * (1.0 - u["a"]),
                "b": 0.5 * p["da"] * lap(u["b"]) + reaction - (p["feed"] + 0.06) * u["b"]}

    (x,) = grid.mesh(jnp.float64)
    u0 = {"a": 1.0 - 0.5 * params["bump"], "b": 0.25 * params["bump"]}
    sol = fd.simulate(rhs, u0, 0.0, 0.03, 1e-3, stepper=fd.Heun(), args=params, saveat=saveat,
                      adjoint=adjoint)
    return jnp.sum(sol.us["b"] ** 2 * jnp.cos(x)[None]) + jnp.sum(sol.us["a"][-1] * x)


def _reaction_params():
    x = jnp.linspace(0.0, 1.0, 20)
    return {"bump": jnp.exp(-40.0 * (x - 0.5) ** 2), "da": jnp.asarray(2e-3), "feed": jnp.asarray(0.04)}


def test_pytree_state_two_stage_stepper_and_saves():
    params = _reaction_params()
    got = jax.jit(jax.grad(_reaction_loss), static_argnums=1)(params, "reverse")
    want = jax.jit(jax.grad(_reaction_loss), static_argnums=1)(params, "autodiff")
    for key in params:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-11, atol=1e-15)
        assert float(jnp.max(jnp.abs(want[key]))) > 1e-6
    # and the gradient is right: central differences along a direction
    direction = {"bump": jnp.cos(7.0 * params["bump"]), "da": jnp.asarray(1e-3), "feed": jnp.asarray(-0.02)}
    eps = 1e-6
    shifted = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * eps * d, params, direction)  # noqa: E731
    value = jax.jit(_reaction_loss, static_argnums=1)
    central = (value(shifted(1), "reverse") - value(shifted(-1), "reverse")) / (2 * eps)
    directional = sum(jnp.vdot(got[key], direction[key]) for key in params)
    np.testing.assert_allclose(directional, central, rtol=1e-7)


def test_vmap_and_second_derivatives():
    params = _reaction_params()

    def loss(feed):
        return _reaction_loss({**params, "feed": feed}, "reverse", saveat=fd.SaveAt())

    grad = jax.jit(jax.grad(loss))
    feeds = jnp.array([0.03, 0.04, 0.05])
    np.testing.assert_allclose(jax.vmap(grad)(feeds), jnp.stack([grad(f) for f in feeds]), rtol=1e-12)
    # reverse over reverse: the custom VJP's backward pass is itself differentiable
    second = jax.grad(grad)(0.04)
    eps = 1e-5
    central = (grad(0.04 + eps) - grad(0.04 - eps)) / (2 * eps)
    np.testing.assert_allclose(second, central, rtol=1e-6)
    assert abs(float(second)) > 1e-8


def test_memory_grows_like_the_square_root_of_the_steps():
    # XLA's temporary buffers for the gradient: sqrt(T) checkpoints and one segment
    # of states, so 16x the steps costs about 4x the memory, not 16x
    grid = fd.Grid((64, 64), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh(jnp.float32)
    u0 = jnp.sin(np.pi * x) * jnp.sin(np.pi * y)
    dt = 0.2 * grid.spacing[0] ** 2 / 2.0

    def temp_bytes(steps):
        def loss(u0, k):
            sol = fd.simulate(lambda t, u, k: fd.diffusion(u, grid, k, bc=fd.Dirichlet(0.0)), u0, 0.0,
                              steps * dt, dt, stepper=fd.Euler(), args=k, adjoint="reverse",
                              stability="ignore")
            return jnp.sum(sol.us[-1] ** 2)
        compiled = jax.jit(jax.grad(loss, (0, 1))).lower(u0, 1.0 + x * y).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    state = u0.size * 4
    small, large = temp_bytes(100), temp_bytes(1600)
    assert large / small < 6.0, (small, large)
    assert large < 120 * state, (large / state)  # 2 sqrt(1600) states and a few more


_LINE = fd.Grid((16,), ((0.0, 1.0),))


def _shared_rhs(t, u, args):
    k, source = args
    return k * fd.laplacian(u, _LINE, bc=fd.Dirichlet(0.0)) + source


def _shared_loss(k, source, adjoint):
    (x,) = _LINE.mesh(jnp.float64)
    sol = fd.simulate(_shared_rhs, jnp.sin(3.0 * x), 0.0, 29e-4, 1e-4, stepper=fd.Euler(), args=(k, source),
                      adjoint=adjoint)
    return jnp.sum(sol.us[-1] ** 2 * x)


@pytest.mark.parametrize("adjoint", ["autodiff", "reverse"])
def test_one_rhs_differentiated_with_different_inputs(adjoint):
    # One right-hand side, one trace of simulate, and the custom VJP called with
    # different inputs perturbed: each call must accumulate its own. (A first version
    # kept the pattern in the residuals' tree structure, which JAX takes from the
    # last pattern traced: d/dk came out 0.)
    k0, source0 = jnp.asarray(0.7), jnp.asarray(0.3)  # arrays: the same trace for both calls

    def total(k, source):
        return _shared_loss(k, source0, adjoint) + _shared_loss(k0, source, adjoint)

    d_k, d_source = jax.grad(total, (0, 1))(k0, source0)
    eps = 1e-6
    central_k = (_shared_loss(0.7 + eps, 0.3, "autodiff") - _shared_loss(0.7 - eps, 0.3, "autodiff")) / (2 * eps)
    central_s = (_shared_loss(0.7, 0.3 + eps, "autodiff") - _shared_loss(0.7, 0.3 - eps, "autodiff")) / (2 * eps)
    np.testing.assert_allclose(d_k, central_k, rtol=1e-7)
    np.testing.assert_allclose(d_source, central_s, rtol=1e-7)
    # and in succession, in the other order, with both
    np.testing.assert_allclose(jax.grad(_shared_loss, 1)(k0, source0, adjoint), central_s, rtol=1e-7)
    np.testing.assert_allclose(jax.grad(_shared_loss, 0)(k0, source0, adjoint), central_k, rtol=1e-7)


def test_forward_mode_is_refused_by_jax():
    # the reverse pass is a custom VJP: JAX refuses to push tangents forward through it
    inputs = _heat_inputs()
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda u0: _heat_loss(u0, *inputs[1:], "reverse"), (inputs[0],), (inputs[0],))


@pytest.mark.parametrize("kwargs, match", [
    ({"adjoint": "fast"}, "Expected adjoint='autodiff' or 'reverse', got 'fast'"),
    ({"adjoint": "reverse", "checkpoint": "none"}, "checkpoint='none'.*Pass checkpoint='nested'"),
    ({"adjoint": "reverse", "checkpoint": "recursive"}, "checkpoint='recursive'"),
    ({"adjoint": "reverse", "stepper": fd.Dopri5(), "stepsize": fd.Adaptive()}, "needs fixed steps.*stepsize=None"),
])
def test_bad_adjoint_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fd.simulate(lambda t, u, a: -u, jnp.ones(3), 0.0, 1.0, 0.1, **kwargs)


def test_backward_pass_does_not_report_progress(monkeypatch):
    # the progress bar follows the forward sweep; the reverse pass steps quietly
    from jaxfd.time import _simulate

    reported = []
    monkeypatch.setattr(_simulate._PROGRESS, "update", reported.append)
    grid = fd.Grid((16,), ((0.0, 1.0),))
    (x,) = grid.mesh(jnp.float64)

    def loss(k):
        rhs = lambda t, u, a: a * fd.laplacian(u, grid, bc=fd.Dirichlet(0.0)) - u**3  # noqa: E731
        sol = fd.simulate(rhs, jnp.sin(3.0 * x), 0.0, 200e-4, 1e-4, stepper=fd.Heun(), args=k,
                          adjoint="reverse", progress=True)
        return jnp.sum(sol.us[-1])

    jax.block_until_ready(jax.grad(loss)(0.7))
    assert sorted(reported) == list(range(2, 201, 2))  # every second step, once each
