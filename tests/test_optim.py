"""Hessian-free trust-region Newton-CG (fd.optim): convergence, pytrees, the radius rule, errors."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfd as fd


def rosenbrock(x):
    """The extended Rosenbrock function (Moré, Garbow & Hillstrom 1981, problem 21):
    independent pairs 100 (x_2i - x_2i-1^2)^2 + (1 - x_2i-1)^2; standard start (-1.2, 1, ...)."""
    return jnp.sum(100.0 * (x[1::2] - x[::2] ** 2) ** 2 + (1.0 - x[::2]) ** 2)


def chained_rosenbrock(x):
    """The chained (coupled) Rosenbrock function sum 100 (x_i+1 - x_i^2)^2 + (1 - x_i)^2."""
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


@pytest.mark.parametrize(
    "n,f,hvp",
    [(2, rosenbrock, "exact"), (2, rosenbrock, "finite_difference"), (10, rosenbrock, "exact"),
     (10, rosenbrock, "finite_difference"), (10, chained_rosenbrock, "finite_difference")],
    ids=["2d-exact", "2d-fd", "10d-exact", "10d-fd", "10d-chained-fd"],
)
def test_rosenbrock_minimum_to_1e_10(n, f, hvp):
    x0 = jnp.asarray(np.tile([-1.2, 1.0], n // 2))
    solver = fd.optim.TrustRegionNewtonCG(max_steps=200, gtol=1e-11, hvp=hvp)
    x, info = fd.optim.trust_region_minimize(f, x0, solver)
    assert bool(info.converged), info.message
    assert float(jnp.max(jnp.abs(x - 1.0))) <= 1e-10
    assert float(info.value) <= 1e-20
    # Newton-type convergence: far fewer iterations than first-order methods need (thousands)
    assert 5 < int(info.steps) < 100 and int(info.num_hvp) >= int(info.steps)
    steps = int(info.steps)
    hist = np.asarray(info.history["value"])
    assert np.all(np.diff(hist[: steps + 1]) <= 0)  # only accepted steps move: monotone
    assert np.all(np.isnan(hist[steps + 1:]))


def test_pytree_and_module_parameters():
    class Quadratic(eqx.Module):
        a: jax.Array
        b: dict
        name: str = "not a parameter"

    target_a = jnp.asarray([1.0, -2.0])
    target_b = jnp.asarray([[0.5, 3.0], [-1.0, 2.0]])
    scales = jnp.asarray([1.0, 100.0])

    def f(m, shift):
        return (jnp.sum(scales * (m.a - target_a) ** 2) + jnp.sum((m.b["w"] - target_b - shift) ** 2)
                + 0.1 * jnp.sum(m.a * m.b["w"][0]) ** 2)

    m0 = Quadratic(jnp.zeros(2), {"w": jnp.zeros((2, 2))})
    m, info = fd.optim.trust_region_minimize(f, m0, fd.optim.TrustRegionNewtonCG(gtol=1e-12), args=(jnp.asarray(0.0),))
    assert isinstance(m, Quadratic) and m.name == "not a parameter"
    assert bool(info.converged)
    g = eqx.filter_grad(f)(m, jnp.asarray(0.0))
    assert float(jnp.sqrt(jnp.sum(g.a**2) + jnp.sum(g.b["w"] ** 2))) <= 1e-12
    # new data reuse the compiled loop and move the answer
    m2, _ = fd.optim.trust_region_minimize(f, m0, fd.optim.TrustRegionNewtonCG(gtol=1e-12), args=(jnp.asarray(1.0),))
    assert float(jnp.max(jnp.abs(m2.b["w"] - m.b["w"]))) > 0.5


def test_negative_curvature_escapes_a_saddle():
    # f = x^4/4 - x^2/2 + y^2 + 0.01 x y: a saddle next to the origin, minima near (+-1, 0).
    # From (0, 1) the gradient points almost along y and the x curvature is -1: the Newton
    # step (H^-1 g) heads for the saddle; Steihaug CG must follow the negative curvature
    # it meets in its second direction to the trust-region boundary instead.
    def f(z):
        return 0.25 * z[0] ** 4 - 0.5 * z[0] ** 2 + z[1] ** 2 + 0.01 * z[0] * z[1]

    x, info = fd.optim.trust_region_minimize(f, jnp.asarray([0.0, 1.0]), fd.optim.TrustRegionNewtonCG(gtol=1e-10))
    assert bool(info.converged)
    assert abs(abs(float(x[0])) - 1.0) < 1e-2 and float(f(x)) < -0.2  # a minimum, not the saddle (f = 0)


def test_jacobi_preconditioner_on_a_badly_scaled_problem():
    # Curvatures from 1e-4 to 1e4 with a mild coupling: plain CG needs many iterations per
    # Newton step (condition number 1e8), the Jacobi-scaled problem is nearly the identity.
    scales = jnp.asarray(np.logspace(-4, 4, 12))

    def f(x):
        return 0.5 * jnp.sum(scales * (x - 1.0) ** 2) + 0.01 * jnp.sum(jnp.sqrt(scales) * x) ** 2 / 12 + \
            0.1 * jnp.sum((x - 1.0) ** 4 * scales)

    x0 = jnp.zeros(12)
    runs = {}
    for pre in (None, "jacobi"):
        solver = fd.optim.TrustRegionNewtonCG(gtol=1e-9, preconditioner=pre, max_steps=200)
        runs[pre] = fd.optim.trust_region_minimize(f, x0, solver)
    x, info = runs["jacobi"]
    assert bool(info.converged), info.message
    # f is strictly convex, so the gradient test pins the unique minimiser
    assert float(jnp.linalg.norm(jax.grad(f)(x))) <= 1e-9
    # unscaled CG struggles with the condition number: many more steps and HVPs (or a stall
    # at round-off before reaching gtol), the scaled method counts its n HVPs per step
    plain = runs[None][1]
    assert int(info.steps) * 3 < int(plain.steps) and int(info.num_hvp) < int(plain.num_hvp)
    assert float(plain.grad_norm) > float(info.grad_norm)


def test_stall_at_round_off_ends_the_run():
    # gtol far below what float64 can resolve for this f: the run must end by itself
    # (result 2, stalled) long before max_steps, at the minimum.
    def f(x):
        return jnp.sum((x - 3.0) ** 2) + 1.0

    x, info = fd.optim.trust_region_minimize(f, jnp.zeros(3), fd.optim.TrustRegionNewtonCG(gtol=1e-300, max_steps=500))
    assert int(info.result) in (0, 2) and int(info.steps) < 100
    assert float(jnp.max(jnp.abs(x - 3.0))) < 1e-7


def test_standard_radius_rule():
    # A large first radius on Rosenbrock: full Newton steps soon overshoot and are
    # rejected. Rule: rejected (rho <= eta < 1/4) -> radius / 4; accepted -> radius kept,
    # or doubled up to max_radius (rho > 3/4 at the boundary).
    solver = fd.optim.TrustRegionNewtonCG(initial_radius=10.0, max_radius=15.0, max_steps=12)
    _, info = fd.optim.trust_region_minimize(rosenbrock, jnp.asarray([-1.2, 1.0]), solver)
    r = np.asarray(info.history["radius"])
    v = np.asarray(info.history["value"])
    assert r[0] == 10.0
    rejected = 0
    for k in range(1, 13):
        if v[k] == v[k - 1]:
            rejected += 1
            assert r[k] == 0.25 * r[k - 1], (k, r[: k + 1])
        else:
            assert v[k] < v[k - 1]
            assert r[k] in (r[k - 1], min(2 * r[k - 1], 15.0)), (k, r[: k + 1])
    assert rejected >= 2 and np.any(r[1:13] > r[:12])  # both branches were exercised
    assert np.all(r <= 15.0)
    assert int(info.steps) == 12 and int(info.result) == 1 and info.message == "max_steps reached"


def test_float32_stays_float32():
    x, info = fd.optim.trust_region_minimize(rosenbrock, jnp.asarray([-1.2, 1.0], jnp.float32),
                                             fd.optim.TrustRegionNewtonCG(gtol=1e-4, hvp="finite_difference"))
    assert x.dtype == jnp.float32 and info.value.dtype == jnp.float32
    assert bool(info.converged) and float(jnp.max(jnp.abs(x - 1.0))) < 1e-3


def test_discovery_problem_with_finite_difference_hvps():
    # The trust-region method with finite-difference Hessian-vector products on a small
    # learnable-stencil problem: data of two decaying modes of u_t = nu u_xx (exact in time);
    # model u_{n+1} = u_n + dt c D2 u with a 5-point D2 whose 4th moment is learned. Two
    # parameters (c, m4) for two modes: an exact fit exists, and the optimizer must reach it.
    grid = fd.Grid(16, (0.0, 1.0))
    x = grid.coords_numpy[0]
    dt, nu = 1e-3, 0.05
    lam1, lam2 = nu * (2 * np.pi) ** 2, nu * (4 * np.pi) ** 2
    data = jnp.asarray(np.stack([np.exp(-lam1 * k * dt) * np.sin(2 * np.pi * x)
                                 + 0.3 * np.exp(-lam2 * k * dt) * np.cos(4 * np.pi * x) for k in range(6)]))
    term = fd.learn.LinearCombination(2, 1, include_constant=False, mask=(False, True))  # u_xx only
    model = fd.learn.PDEModel(grid, term, dt=dt, derivatives=[2], bc=fd.Periodic(), size=5)

    def loss(m, d):
        return fd.learn.rollout_loss(m, d, 1)

    solver = fd.optim.TrustRegionNewtonCG(gtol=1e-30, rtol=1e-12, max_steps=50, hvp="finite_difference")
    m, info = fd.optim.trust_region_minimize(loss, model, solver, args=(data,))
    assert int(info.result) in (0, 2), info.message
    assert float(info.value) < 1e-16 * float(loss(model, data))
    c = float(m.coefficients()["u_xx"][0])
    # exact up to the O(dt) and O(h^4) terms a 2-parameter fit of two modes leaves in c
    assert abs(c - nu) / nu < 1e-2 and int(info.steps) < 50


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"initial_radius": -1.0}, r"initial_radius > 0, got initial_radius=-1.0"),
        ({"initial_radius": 0.0}, r"initial_radius > 0"),
        ({"max_radius": -5.0}, r"max_radius > 0"),
        ({"initial_radius": 10.0, "max_radius": 1.0}, r"max_radius >= initial_radius"),
        ({"eta": 0.5}, r"0 <= eta < 0.25"),
        ({"eta": -0.1}, r"0 <= eta < 0.25"),
        ({"gtol": 0.0}, r"gtol > 0"),
        ({"rtol": -1.0}, r"rtol >= 0"),
        ({"ftol": -1.0}, r"ftol >= 0"),
        ({"preconditioner": "ilu"}, r"preconditioner in \(None, 'jacobi'\), got 'ilu'"),
        ({"fd_eps": -1e-3}, r"fd_eps > 0"),
        ({"max_steps": 0}, r"max_steps to be an integer >= 1"),
        ({"cg_max_steps": 0}, r"cg_max_steps"),
        ({"hvp": "bfgs"}, r"hvp in \('exact', 'finite_difference'\), got 'bfgs'"),
    ],
)
def test_bad_settings_raise_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fd.optim.TrustRegionNewtonCG(**kwargs)


def test_bad_call_raises_clearly():
    with pytest.raises(ValueError, match=r"no floating-point array leaves"):
        fd.optim.trust_region_minimize(lambda x: x**2, 1.0)
    with pytest.raises(TypeError, match=r"expected a TrustRegionNewtonCG"):
        fd.optim.trust_region_minimize(rosenbrock, jnp.zeros(2), "newton")
    with pytest.raises(TypeError, match=r"args to be a tuple"):
        fd.optim.trust_region_minimize(lambda x, a: jnp.sum(x**2), jnp.zeros(2), args=jnp.zeros(2))
    with pytest.raises(ValueError, match=r"one floating dtype"):
        fd.optim.trust_region_minimize(lambda p: jnp.sum(p[0]) + jnp.sum(p[1]).astype(jnp.float64),
                                       (jnp.zeros(2), jnp.zeros(2, jnp.float32)))
