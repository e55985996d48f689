"""simulate and the explicit steppers: observed order in time, saving, gradients, errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_order

import jaxfd as fd

STEPPERS = [fd.Euler(), fd.Heun(), fd.SSPRK3(), fd.RK4(), fd.BogackiShampine3(), fd.Dopri5()]


def _rhs(t, u, args):
    # u' = cos(t) u + args * (1 - u): nonlinear in time, linear in u; the exact
    # solution below is for args = 0: u = exp(sin t) u0.
    return {"a": jnp.cos(t) * u["a"] + args * (1.0 - u["a"])}


@pytest.mark.parametrize("stepper", STEPPERS, ids=lambda s: type(s).__name__)
def test_observed_order_in_time(stepper):
    t1 = 3.0
    ns = np.array([24, 48, 96, 192])
    errors = []
    for n in ns:
        sol = fd.simulate(_rhs, {"a": jnp.ones(2)}, 0.0, t1, t1 / n, stepper=stepper, args=0.0)
        errors.append(float(jnp.abs(sol.us["a"][-1, 0] - np.exp(np.sin(t1)))))
    assert_order(t1 / ns, errors, stepper.order, label=type(stepper).__name__)


def test_heat_space_time_convergence_against_exact_solution():
    # u_t = u_xx on (0, 1), Dirichlet 0: u = exp(-pi^2 t) sin(pi x); dt ~ h^2 / 4
    # with RK4 so the spatial error O(h^2) dominates and the full discretisation
    # converges at order 2 in h.
    errors, hs = [], []
    for n in (16, 32, 64, 128):
        grid = fd.Grid((n,), ((0.0, 1.0),))
        (x,) = grid.mesh()
        h = grid.spacing[0]
        t1 = 0.05
        steps = int(np.ceil(t1 / (0.25 * h * h)))

        def rhs(t, u, args):
            return fd.laplacian(u, grid, bc=fd.Dirichlet(0.0))

        sol = fd.simulate(rhs, jnp.sin(np.pi * x), 0.0, t1, t1 / steps, stepper=fd.RK4(),
                          checkpoint="none")
        exact = np.exp(-np.pi**2 * t1) * np.sin(np.pi * np.asarray(x))
        errors.append(float(jnp.max(jnp.abs(sol.us[-1] - exact))))
        hs.append(h)
    assert_order(hs, errors, 2, label="heat space-time")


def test_saveat_every_and_ts_and_partial_last_step():
    sol = fd.simulate(_rhs, {"a": jnp.ones(1)}, 0.0, 1.0, 0.1, args=0.0,
                      saveat=fd.SaveAt(t0=True, every=2))
    np.testing.assert_allclose(sol.ts, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-12)
    np.testing.assert_allclose(sol.us["a"][:, 0], np.exp(np.sin(np.asarray(sol.ts))), rtol=1e-5)
    sol = fd.simulate(_rhs, {"a": jnp.ones(1)}, 0.0, 1.0, 0.01, args=0.0,
                      saveat=fd.SaveAt(ts=[0.1, 0.3, 0.35]))
    np.testing.assert_allclose(sol.ts, [0.1, 0.3, 0.35, 1.0], atol=1e-12)
    np.testing.assert_allclose(sol.us["a"][:, 0], np.exp(np.sin(np.asarray(sol.ts))), rtol=1e-8)
    # dt does not divide the interval: the last step is shortened to land on t1
    sol = fd.simulate(_rhs, {"a": jnp.ones(1)}, 0.0, 1.0, 0.3, args=0.0)
    assert sol.stats["num_steps"] == 4
    np.testing.assert_allclose(sol.us["a"][-1, 0], np.exp(np.sin(1.0)), rtol=1e-3)


def _rollout_loss(params, checkpoint):
    grid = fd.Grid((12,), ((0.0, 1.0),))

    def rhs(t, u, args):
        nu, g = args
        return nu * fd.laplacian(u, grid, bc=((fd.Dirichlet(g), fd.Neumann(0.0)),))

    (x,) = grid.mesh()
    u0 = params["u0"]
    checkpoint, _, adjoint = checkpoint.partition("+")  # "nested+reverse": adjoint="reverse"
    sol = fd.simulate(rhs, u0, 0.0, 0.02, 0.0002, stepper=fd.RK4(),
                      args=(params["nu"], params["g"]), checkpoint=checkpoint, adjoint=adjoint or "autodiff")
    return jnp.sum(sol.us[-1] ** 2 * jnp.sin(x))


@pytest.mark.parametrize("checkpoint", ["none", "step", "nested", "recursive", "nested+reverse"])
def test_gradients_agree_across_checkpoint_policies(checkpoint):
    # 100 steps; gradient w.r.t. initial field, coefficient and boundary value
    grid = fd.Grid((12,), ((0.0, 1.0),))
    (x,) = grid.mesh()
    params = {"u0": jnp.cos(3 * x), "nu": jnp.asarray(0.7), "g": jnp.asarray(0.3)}
    reference = jax.grad(_rollout_loss)(params, "none")
    got = jax.grad(_rollout_loss)(params, checkpoint)
    for k in params:
        np.testing.assert_allclose(got[k], reference[k], rtol=1e-12, atol=1e-14)
    # and the reference gradient is right: central finite differences along a direction
    direction = {"u0": jnp.sin(5 * x), "nu": jnp.asarray(0.2), "g": jnp.asarray(-0.4)}
    eps = 1e-6
    plus = jax.tree_util.tree_map(lambda p, d: p + eps * d, params, direction)
    minus = jax.tree_util.tree_map(lambda p, d: p - eps * d, params, direction)
    fd_derivative = (_rollout_loss(plus, "none") - _rollout_loss(minus, "none")) / (2 * eps)
    ad_derivative = sum(jnp.vdot(reference[k], direction[k]) for k in params)
    np.testing.assert_allclose(ad_derivative, fd_derivative, rtol=1e-7)


@pytest.mark.parametrize("checkpoint", ["recursive", "nested+reverse"])
def test_paired_policies_with_odd_segments(checkpoint):
    """The recursive schedule and the reverse adjoint run two steps per iteration;
    segments of odd length (101 steps, saves every 3 and at the end) end with one lone
    step. Values and gradients match the plain policy."""
    grid = fd.Grid((12,), ((0.0, 1.0),))
    (x,) = grid.mesh()

    def loss(u0, nu, checkpoint):
        def rhs(t, u, nu):
            return nu * fd.laplacian(u, grid, bc=fd.Dirichlet(0.3)) - u**3

        checkpoint, _, adjoint = checkpoint.partition("+")
        sol = fd.simulate(rhs, u0, 0.0, 101 * 2e-4, 2e-4, stepper=fd.Heun(), args=nu,
                          saveat=fd.SaveAt(every=3), checkpoint=checkpoint, adjoint=adjoint or "autodiff")
        return jnp.sum(sol.us ** 2 * jnp.sin(x)[None]), sol.us

    u0, nu = jnp.cos(3 * x), jnp.asarray(0.7)
    (value, us), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(u0, nu, checkpoint)
    (value_ref, us_ref), grads_ref = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(u0, nu, "none")
    assert us.shape == us_ref.shape == (34, 12)  # steps 3, 6, ..., 99 and 101
    np.testing.assert_allclose(us, us_ref, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(value, value_ref, rtol=1e-13)
    for g, ref in zip(grads, grads_ref):
        np.testing.assert_allclose(g, ref, rtol=1e-11, atol=1e-13)
        assert float(jnp.max(jnp.abs(ref))) > 1e-3


def test_check_grads_through_rollout():
    from jax.test_util import check_grads

    grid = fd.Grid((8,), ((0.0, 1.0),))
    (x,) = grid.mesh()
    params = {"u0": jnp.cos(3 * x), "nu": jnp.asarray(0.7), "g": jnp.asarray(0.3)}
    check_grads(lambda p: _rollout_loss_small(p), (params,), order=1, modes=["rev"])


def _rollout_loss_small(params):
    grid = fd.Grid((8,), ((0.0, 1.0),))

    def rhs(t, u, args):
        nu, g = args
        return nu * fd.laplacian(u, grid, bc=fd.Dirichlet(g))

    sol = fd.simulate(rhs, params["u0"], 0.0, 0.01, 0.001, stepper=fd.SSPRK3(),
                      args=(params["nu"], params["g"]), checkpoint="nested")
    return jnp.sum(sol.us[-1] ** 3)


def test_non_finite_state_is_reported_with_step():
    def blow_up(t, u, args):
        return u * 1e8

    with pytest.raises(Exception, match=r"non-finite .* between step 50 .* and step 60"):
        sol = fd.simulate(blow_up, jnp.ones(3), 0.0, 1.0, 0.01, stepper=fd.Euler(),
                          saveat=fd.SaveAt(every=10))
        jax.block_until_ready(sol.us)
    sol = fd.simulate(blow_up, jnp.ones(3), 0.0, 1.0, 0.01, stepper=fd.Euler(),
                      saveat=fd.SaveAt(every=10), throw=False)
    assert int(sol.stats["failed_step"]) == 60
    assert int(sol.stats["result"]) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dt": 0.0}, "dt > 0"),
        ({"dt": -0.1}, "dt > 0"),
        ({"t1": -1.0}, "t1 >= t0"),
        ({"saveat": fd.SaveAt(ts=[2.0])}, "outside"),
        ({"saveat": fd.SaveAt(ts=[0.123])}, "step grid"),
        ({"checkpoint": "sometimes"}, "checkpoint"),
    ],
)
def test_bad_input(kwargs, match):
    call = {"rhs": lambda t, u, a: -u, "u0": jnp.ones(3), "t0": 0.0, "t1": 1.0, "dt": 0.1}
    call.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        fd.simulate(**call)


def test_rhs_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match=r"shape \(2,\) for a state of shape \(3,\)"):
        fd.simulate(lambda t, u, a: u[:2], jnp.ones(3), 0.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="pytree structure"):
        fd.simulate(lambda t, u, a: (u, u), jnp.ones(3), 0.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="SaveAt"):
        fd.SaveAt(every=0)


def test_compile_once_for_any_step_count():
    traces = []

    def rhs(t, u, args):
        traces.append(1)
        return -u

    per_run = []
    for t1 in (1.0, 10.0, 10.01):
        before = len(traces)
        fd.simulate(rhs, jnp.ones(3), 0.0, t1, 0.01, stepper=fd.Euler(), checkpoint="none",
                    stability="ignore")
        per_run.append(len(traces) - before)
    # rhs is traced a fixed number of times per compilation (shape check, the
    # two steps of the paired loop body, a lone last step when the count is
    # odd), independent of the 100 vs 1000 vs 1001 steps
    assert per_run[0] == per_run[1] <= 3, per_run
    assert per_run[2] <= 4, per_run


@pytest.mark.parametrize("stepper", STEPPERS, ids=lambda s: type(s).__name__)
def test_unstable_explicit_dt_is_refused_and_stable_dt_runs(stepper):
    grid = fd.Grid((48,), ((0.0, 1.0),))
    (x,) = grid.mesh()

    def rhs(t, u, nu):
        return nu * fd.laplacian(u, grid, bc=fd.Dirichlet(0.0))

    dt_max = fd.max_stable_dt(stepper, grid, diffusivity=0.5)
    # the symbol bound matches the known limits: Euler 2/(4 nu / h^2) = h^2 / (2 nu)
    if isinstance(stepper, fd.Euler):
        np.testing.assert_allclose(dt_max, grid.spacing[0] ** 2 / (2 * 0.5), rtol=1e-12)
    u0 = jnp.sin(np.pi * x)
    sol = fd.simulate(rhs, u0, 0.0, 40 * dt_max, 0.97 * dt_max, stepper=stepper, args=0.5)
    assert bool(jnp.all(jnp.isfinite(sol.us)))
    with pytest.raises(ValueError, match="stability limit"):
        fd.simulate(rhs, u0, 0.0, 40 * dt_max, 1.15 * dt_max, stepper=stepper, args=0.5)
    # overridable: runs (and, being unstable, grows) when asked
    sol = fd.simulate(rhs, u0 + 1e-3 * jnp.cos(40 * x), 0.0, 400 * dt_max, 1.15 * dt_max,
                      stepper=stepper, args=0.5, stability="ignore", throw=False)
    assert float(jnp.max(jnp.abs(sol.us[-1]))) > 10.0 or int(sol.stats["result"]) == 1


def test_cfl_and_diffusion_numbers():
    grid = fd.Grid((10, 20), ((0.0, 1.0), (0.0, 2.0)))
    assert fd.diffusion_number(2.0, 0.001, grid) == pytest.approx(0.001 * 2.0 * (100 + 100))
    assert fd.cfl_number([1.0, -3.0], 0.01, grid) == pytest.approx(0.01 * (10 + 30))
    assert fd.max_stable_dt(fd.Euler(), grid, velocity=[1.0, 1.0]) == 0.0


def _semilinear_problem():
    grid = fd.Grid((32,), ((0.0, 2 * np.pi),))
    (x,) = grid.mesh()

    def linear(t, u, args):
        return 0.5 * fd.laplacian(u, grid, bc=fd.Periodic(), accuracy=4)

    def nonlinear(t, u, args):
        return jnp.sin(u) * jnp.cos(t)

    return fd.Split(explicit=nonlinear, implicit=linear), jnp.cos(x) + 0.5


@pytest.mark.parametrize(
    "stepper",
    [fd.BackwardEuler(newton_steps=3), fd.CrankNicolson(newton_steps=3), fd.IMEXEuler(),
     fd.IMEX222(), fd.ETDRK4()],
    ids=lambda s: type(s).__name__,
)
def test_implicit_imex_exponential_orders(stepper):
    # u_t = 0.5 u_xx + cos(t) sin(u), periodic: reference by RK4 with a tiny step
    rhs, u0 = _semilinear_problem()
    reference = fd.simulate(rhs, u0, 0.0, 1.0, 1e-3, stepper=fd.RK4()).us[-1]
    ns = np.array([10, 20, 40, 80])
    errors = [float(jnp.max(jnp.abs(fd.simulate(rhs, u0, 0.0, 1.0, 1.0 / n, stepper=stepper).us[-1]
                                    - reference))) for n in ns]
    assert_order(1.0 / ns, errors, stepper.order, label=type(stepper).__name__)


def test_stormer_verlet_order_and_energy():
    def oscillator(t, y, args):
        return (y[1], -4.0 * y[0])

    ns = np.array([20, 40, 80, 160])
    errors = []
    for n in ns:
        sol = fd.simulate(oscillator, (jnp.ones(1), jnp.zeros(1)), 0.0, 2.0, 2.0 / n,
                          stepper=fd.StormerVerlet())
        errors.append(float(jnp.abs(sol.us[0][-1, 0] - np.cos(4.0))))
    assert_order(2.0 / ns, errors, fd.StormerVerlet.order, label="StormerVerlet")
    # symplectic: the energy error stays bounded over many periods
    sol = fd.simulate(oscillator, (jnp.ones(1), jnp.zeros(1)), 0.0, 200.0, 0.05,
                      stepper=fd.StormerVerlet(), saveat=fd.SaveAt(every=100))
    energy = 0.5 * sol.us[1][:, 0] ** 2 + 2.0 * sol.us[0][:, 0] ** 2
    assert float(jnp.max(jnp.abs(energy - 2.0))) < 0.01


def test_crank_nicolson_gradient_through_implicit_rollout():
    grid = fd.Grid((10,), ((0.0, 1.0),))
    (x,) = grid.mesh()

    def loss(nu):
        def rhs(t, u, nu):
            return nu * fd.laplacian(u, grid, bc=fd.Dirichlet(0.5))

        sol = fd.simulate(rhs, jnp.sin(3 * x), 0.0, 0.1, 0.01,
                          stepper=fd.CrankNicolson(solver=fd.CG(rtol=1e-13), symmetric=True),
                          args=nu)
        return jnp.sum(sol.us[-1] ** 2)

    from jax.test_util import check_grads

    check_grads(loss, (0.8,), order=1, modes=["rev", "fwd"])


def test_imex_requires_split():
    with pytest.raises(TypeError, match="fd.Split"):
        fd.simulate(lambda t, u, a: -u, jnp.ones(3), 0.0, 1.0, 0.1, stepper=fd.IMEX222())


def test_progress_bar_reports_and_changes_nothing(capsys):
    import jaxfd.time._simulate as sim

    seen = []
    original = sim._PROGRESS.update
    sim._PROGRESS.update = lambda step: seen.append(step)
    try:
        with_bar = fd.simulate(_rhs, {"a": jnp.ones(2)}, 0.0, 1.0, 0.001, args=0.0, progress=True)
    finally:
        sim._PROGRESS.update = original
    plain = fd.simulate(_rhs, {"a": jnp.ones(2)}, 0.0, 1.0, 0.001, args=0.0)
    np.testing.assert_array_equal(with_bar.us["a"], plain.us["a"])
    # about 100 coarse updates, ending at the last step
    assert 90 <= len(seen) <= 110 and max(seen) == 1000
    # progress=False adds nothing to the compiled program
    jaxpr = jax.make_jaxpr(
        lambda u: fd.simulate(_rhs, {"a": u}, 0.0, 1.0, 0.01, args=0.0, stability="ignore").us
    )(jnp.ones(2))
    assert "debug_callback" not in str(jaxpr)


# ---------------------------------------------------------------- adaptive steps

def _forced_decay(t, u, a):
    return {"y": -a * u["y"] + jnp.sin(t)}


def _forced_decay_exact(t, a):
    # y' = -a y + sin t, y(0) = 1
    return (1 + 1 / (1 + a * a)) * np.exp(-a * t) + (a * np.sin(t) - np.cos(t)) / (1 + a * a)


@pytest.mark.parametrize("stepper", [fd.Dopri5(), fd.BogackiShampine3()], ids=lambda s: type(s).__name__)
def test_adaptive_error_follows_the_tolerance_and_lands_on_save_times(stepper):
    ts = [0.7, 2.5, 5.0]
    errors, steps = [], []
    for rtol in (1e-4, 1e-6, 1e-8):
        sol = fd.simulate(_forced_decay, {"y": jnp.ones(2)}, 0.0, 5.0, 0.1, stepper=stepper, args=2.0,
                          saveat=fd.SaveAt(ts=ts), stepsize=fd.Adaptive(rtol=rtol, atol=1e-2 * rtol))
        np.testing.assert_array_equal(sol.ts, ts)
        errors.append(float(jnp.max(jnp.abs(sol.us["y"][:, 0] - _forced_decay_exact(np.asarray(ts), 2.0)))))
        steps.append(int(sol.stats["num_steps"]))
        # global error within a modest multiple of the local tolerance (error control per step)
        assert errors[-1] < 200 * rtol, (rtol, errors[-1])
        assert int(sol.stats["result"]) == 0
    assert errors[0] > errors[1] > errors[2]
    # steps grow like tol^(-1/(q+1)) with q the embedded order: x100 tolerance, x100^(1/(q+1)) steps
    ratio = steps[2] / steps[1]
    expected = 100 ** (1 / (stepper.error_order + 1))
    assert 0.6 * expected < ratio < 1.6 * expected, (steps, expected)


@pytest.mark.parametrize("checkpoint", ["recursive", "none"])
def test_adaptive_gradient_matches_the_exact_derivative(checkpoint):
    def final(a):
        sol = fd.simulate(_forced_decay, {"y": jnp.ones(1)}, 0.0, 3.0, 0.1, stepper=fd.Dopri5(), args=a,
                          stepsize=fd.Adaptive(rtol=1e-10, atol=1e-12, max_steps=512), checkpoint=checkpoint)
        return sol.us["y"][-1, 0]

    h = 1e-6
    exact = (_forced_decay_exact(3.0, 2.0 + h) - _forced_decay_exact(3.0, 2.0 - h)) / (2 * h)
    assert float(jax.grad(final)(2.0)) == pytest.approx(exact, rel=1e-6)


def test_adaptive_heat_equation_chooses_stable_steps():
    # explicit Dopri5 on the stiff semi-discrete heat equation: the controller finds the
    # stability limit itself (no CFL input), and the answer matches the exact decay
    grid = fd.Grid((32,), ((0.0, 1.0),))
    (x,) = grid.mesh()
    rhs = fd.models.heat(grid)
    args = {"diffusivity": 1.0, "bc": fd.Dirichlet(0.0)}
    sol = fd.simulate(rhs, jnp.sin(jnp.pi * x), 0.0, 0.1, 1e-2, stepper=fd.Dopri5(), args=args,
                      stepsize=fd.Adaptive(rtol=1e-6, atol=1e-9))
    # the discrete decay rate of sin(pi x) on 32 cells
    rate = 4 * 32**2 * np.sin(np.pi / (2 * 32)) ** 2
    np.testing.assert_allclose(sol.us[-1], np.exp(-rate * 0.1) * np.sin(np.pi * np.asarray(x)), atol=1e-6)
    limit = fd.max_stable_dt(fd.Dopri5(), grid, diffusivity=1.0)
    assert int(sol.stats["num_steps"]) >= 0.1 / limit * 0.5  # it could not have taken much larger steps


def test_adaptive_failures_are_reported():
    blow_up = lambda t, u, a: u * u  # noqa: E731 - u = 1 / (1 - t): singular at t = 1
    with pytest.raises(Exception, match="fell below dt_min"):
        fd.simulate(blow_up, jnp.ones(1), 0.0, 2.0, 0.1, stepper=fd.Dopri5(), stepsize=fd.Adaptive())
    with pytest.raises(Exception, match="max_steps=5"):
        fd.simulate(_forced_decay, {"y": jnp.ones(1)}, 0.0, 5.0, 0.01, stepper=fd.Dopri5(), args=2.0,
                    stepsize=fd.Adaptive(rtol=1e-10, max_steps=5))
    sol = fd.simulate(blow_up, jnp.ones(1), 0.0, 2.0, 0.1, stepper=fd.Dopri5(), stepsize=fd.Adaptive(),
                      throw=False)
    assert int(sol.stats["result"]) == 2 and float(sol.stats["t_reached"]) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("kwargs, match", [
    ({"stepper": fd.RK4()}, "embedded"),
    ({"saveat": fd.SaveAt(every=2)}, "every"),
    ({"progress": True}, "progress"),
    ({"stepsize": "adaptive"}, "fd.Adaptive"),
])
def test_adaptive_bad_input(kwargs, match):
    options = {"stepper": fd.Dopri5(), "stepsize": fd.Adaptive(), **kwargs}
    with pytest.raises((TypeError, ValueError), match=match):
        fd.simulate(_forced_decay, {"y": jnp.ones(1)}, 0.0, 1.0, 0.1, args=2.0, **options)
    with pytest.raises(ValueError, match="rtol"):
        fd.Adaptive(rtol=0.0, atol=0.0)


def _while_bodies(hlo: str) -> list[str]:
    computations = {c.split(" ", 1)[0].lstrip("%"): c for c in re.split(r"\n(?=%)", hlo)}
    return [computations[name] for name in re.findall(r"while\(.*?body=%([\w.\-]+)", hlo)]


@pytest.mark.parametrize("n_steps", [10, 11])
def test_step_loop_does_not_copy_its_state(n_steps):
    # Two steps per loop iteration let each write into the other's buffer; a
    # loop of single stencil steps copies the whole state every step.
    grid = fd.Grid((64, 64), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh(jnp.float32)
    dt = 1e-5

    def rhs(t, u, nu):
        return nu * fd.laplacian(u, grid, bc=fd.Dirichlet(0.0))

    def run(u0, nu):
        return fd.simulate(rhs, u0, 0.0, n_steps * dt, dt, stepper=fd.Euler(), args=nu,
                           checkpoint="none", stability="ignore").us[-1]

    u0 = jnp.sin(np.pi * x) * jnp.sin(np.pi * y)
    hlo = jax.jit(run).lower(u0, jnp.float32(1.0)).compile().as_text()
    bodies = _while_bodies(hlo)
    assert bodies, "expected the steps to run in a while loop"
    for body in bodies:
        assert "f32[64,64]{1,0} copy(" not in body, body
    expected = u0
    for _ in range(n_steps):
        expected = expected + dt * rhs(0.0, expected, 1.0)
    np.testing.assert_allclose(run(u0, 1.0), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("checkpoint", ["none", "nested"])
def test_forward_mode_through_the_paired_loop(checkpoint):
    # jax.jvp goes through the paired loop's custom JVP (one step per iteration):
    # compare with central differences and with reverse mode (<grad, v> = jvp . v).
    grid = fd.Grid((24,), ((0.0, 1.0),))
    (x,) = grid.mesh(jnp.float64)
    dt = 2e-4

    def final(nu, u0):
        def rhs(t, u, a):
            return a * fd.laplacian(u, grid, bc=fd.Dirichlet(0.0)) - u**3
        return fd.simulate(rhs, u0, 0.0, 37 * dt, dt, stepper=fd.Heun(), args=nu,
                           checkpoint=checkpoint).us[-1]

    nu, u0 = jnp.float64(0.7), jnp.sin(np.pi * x) + 0.3 * x
    du0 = jnp.cos(3 * x)
    _, tangent = jax.jvp(final, (nu, u0), (jnp.float64(0.5), du0))
    eps = 1e-6
    central = (final(nu + 0.5 * eps, u0 + eps * du0) - final(nu - 0.5 * eps, u0 - eps * du0)) / (2 * eps)
    np.testing.assert_allclose(tangent, central, rtol=1e-7, atol=1e-10)
    weights = jnp.linspace(-1.0, 1.0, x.size)
    g_nu, g_u0 = jax.grad(lambda a, v: jnp.vdot(weights, final(a, v)), argnums=(0, 1))(nu, u0)
    np.testing.assert_allclose(jnp.vdot(weights, tangent), 0.5 * g_nu + jnp.vdot(g_u0, du0), rtol=1e-12)


_POLICIES = ["none", "step", "nested", "recursive", "nested+reverse"]


def _simulate_policy(rhs, u0, t1, dt, policy, **kw):
    checkpoint, _, adjoint = policy.partition("+")
    return fd.simulate(rhs, u0, 0.0, t1, dt, checkpoint=checkpoint, adjoint=adjoint or "autodiff", **kw)


@pytest.mark.parametrize("policy", _POLICIES)
def test_integer_arrays_in_args(policy):
    # an integer array next to the differentiated coefficient: it must stay a
    # non-differentiable input of the loop, not a leaked tracer
    grid = fd.Grid((16,), ((0.0, 1.0),))
    (x,) = grid.mesh(jnp.float64)
    dt = 0.2 * grid.spacing[0] ** 2

    def rhs(t, u, a):
        return a["k"] * fd.laplacian(u, grid, bc=fd.Dirichlet(0.1)) - 0.5 * u ** a["power"]

    def loss(k):
        sol = _simulate_policy(rhs, jnp.sin(np.pi * x) + 0.2, 37 * dt, dt, policy, stepper=fd.Euler(),
                               args={"k": k, "power": jnp.asarray(3)})
        return jnp.sum(sol.us[-1] ** 2 * jnp.cos(x))

    eps = 1e-6
    central = (loss(1.0 + eps) - loss(1.0 - eps)) / (2 * eps)
    np.testing.assert_allclose(jax.grad(loss)(1.0), central, rtol=1e-7)


@pytest.mark.parametrize("policy", _POLICIES)
def test_rhs_closing_over_traced_values(policy):
    # a right-hand side built inside the differentiated (and vmapped) function closes
    # over its tracers: eager vmap of gradients, and the stability check skipped
    grid = fd.Grid((16,), ((0.0, 1.0),))
    (x,) = grid.mesh(jnp.float64)
    dt = 0.2 * grid.spacing[0] ** 2
    u0 = jnp.sin(np.pi * x) + 0.2

    def loss(u, k):
        rhs = lambda t, v, a: k * fd.laplacian(v, grid, bc=fd.Dirichlet(0.1)) - v**3  # noqa: E731
        sol = _simulate_policy(rhs, u, 31 * dt, dt, policy, stepper=fd.Heun())
        return jnp.sum(sol.us[-1] ** 2 * jnp.cos(x))

    ks = jnp.array([0.8, 1.2])
    batched = jax.vmap(jax.grad(loss, 1), (None, 0))(u0, ks)
    eps = 1e-6
    for k, g in zip(ks, batched):
        central = (loss(u0, k + eps) - loss(u0, k - eps)) / (2 * eps)
        np.testing.assert_allclose(g, central, rtol=1e-7)
    np.testing.assert_allclose(jax.jit(jax.grad(loss, 1))(u0, ks[0]), batched[0], rtol=1e-12)
