"""Model right-hand sides against exact or reference solutions."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_order

import jaxfd as fd


def test_heat_variable_coefficient_manufactured():
    # u = exp(-t) sin(pi x) with k = 1 + x/2 on (0, 1), Dirichlet 0:
    # u_t - (k u_x)_x = s  =>  s = exp(-t) [ -sin + (pi/2) cos ... ]; order 2 in h
    errors, hs = [], []
    for n in (16, 32, 64, 128):
        grid = fd.Grid((n,), ((0.0, 1.0),))
        (x,) = grid.mesh()
        k = 1.0 + 0.5 * x
        p = np.pi

        def source(t, x=x, k=k):
            ux = p * jnp.cos(p * x)
            uxx = -p * p * jnp.sin(p * x)
            return jnp.exp(-t) * (-jnp.sin(p * x) - (0.5 * ux + k * uxx))

        rhs = fd.models.heat(grid)
        args = {"diffusivity": k, "bc": fd.Dirichlet(0.0), "source": source}
        t1 = 0.1
        dt = 0.2 * grid.spacing[0] ** 2
        sol = fd.simulate(rhs, jnp.sin(p * x), 0.0, t1, dt, args=args, checkpoint="none")
        errors.append(float(jnp.max(jnp.abs(sol.us[-1] - np.exp(-t1) * np.sin(p * np.asarray(x))))))
        hs.append(grid.spacing[0])
    assert_order(hs, errors, 2, label="variable-coefficient heat")


def test_advection_diffusion_reaction_fourier_mode():
    # u = exp(-(D q^2 + r) t) sin(q (x - v t)), periodic, reaction -r u
    grid = fd.Grid((64,), ((0.0, 2 * np.pi),))
    (x,) = grid.mesh()
    D, r, v, q = 0.05, 0.3, 1.0, 2.0
    rhs = fd.models.advection_diffusion_reaction(grid, reaction=lambda u, a: -a["rate"] * u,
                                                 scheme="weno5", accuracy=4)
    args = {"velocity": [v], "diffusivity": D, "rate": r, "bc": fd.Periodic()}
    t1 = 1.0
    sol = fd.simulate(rhs, jnp.sin(q * x), 0.0, t1, 0.01, stepper=fd.SSPRK3(), args=args)
    exact = np.exp(-(D * q * q + r) * t1) * np.sin(q * (np.asarray(x) - v * t1))
    assert float(jnp.max(jnp.abs(sol.us[-1] - exact))) < 2e-4


def test_viscous_burgers_cole_hopf():
    # phi = a + b exp(-nu q^2 t) cos(q x); u = -2 nu phi_x / phi (exact, periodic)
    nu, a, b, q = 0.1, 2.0, 1.0, 1.0
    t1 = 0.5

    def exact(x, t):
        e = b * np.exp(-nu * q * q * t)
        return 2 * nu * q * e * np.sin(q * x) / (a + e * np.cos(q * x))

    errors, hs = [], []
    for n in (32, 64, 128, 256):
        grid = fd.Grid((n,), ((0.0, 2 * np.pi),))
        (x,) = grid.mesh()
        rhs = fd.models.burgers(grid, scheme="weno5", accuracy=4)
        dt = min(0.2 * grid.spacing[0],
                 0.5 * fd.max_stable_dt(fd.RK4(), grid, diffusivity=nu, accuracy=4))
        sol = fd.simulate(rhs, jnp.asarray(exact(np.asarray(x), 0.0)), 0.0, t1, dt,
                          stepper=fd.RK4(), args={"viscosity": nu, "bc": fd.Periodic()})
        errors.append(float(jnp.max(jnp.abs(sol.us[-1] - exact(np.asarray(x), t1)))))
        hs.append(grid.spacing[0])
    # WENO5 convection with 4th-order diffusion and RK4 at dt ~ h: at least 4th order
    assert_order(hs, errors, 4, at_least=True, label="Burgers")


def test_wave_standing_mode_with_leapfrog():
    grid = fd.Grid((64,), ((0.0, 1.0),))
    (x,) = grid.mesh()
    c, k = 2.0, np.pi
    rhs = fd.models.wave(grid, accuracy=4)
    t1 = 0.75
    sol = fd.simulate(rhs, (jnp.sin(k * x), jnp.zeros_like(x)), 0.0, t1, 0.002,
                      stepper=fd.StormerVerlet(), args={"speed": c, "bc": fd.Dirichlet(0.0)})
    exact = np.cos(c * k * t1) * np.sin(k * np.asarray(x))
    assert float(jnp.max(jnp.abs(sol.us[0][-1] - exact))) < 1e-4


def test_gray_scott_homogeneous_state_matches_ode_reference():
    # A spatially uniform state stays uniform; it then follows the kinetics ODE.
    from scipy.integrate import solve_ivp

    grid = fd.Grid((16, 16), ((0.0, 1.0), (0.0, 1.0)))
    args = {"Du": 2e-5, "Dv": 1e-5, "F": 0.04, "k": 0.06, "bc": fd.Periodic()}
    u0, v0 = 0.6, 0.3
    rhs = fd.models.gray_scott(grid)
    sol = fd.simulate(rhs, (jnp.full(grid.shape, u0), jnp.full(grid.shape, v0)), 0.0, 20.0, 0.05,
                      args=args)

    def kinetics(t, y):
        u, v = y
        return [-u * v * v + args["F"] * (1 - u), u * v * v - (args["F"] + args["k"]) * v]

    ref = solve_ivp(kinetics, (0, 20.0), [u0, v0], rtol=1e-12, atol=1e-12).y[:, -1]
    np.testing.assert_allclose(sol.us[0][-1], ref[0], rtol=1e-7)
    np.testing.assert_allclose(sol.us[1][-1], ref[1], rtol=1e-7)


@pytest.mark.parametrize("builder", ["heat", "gray_scott"])
def test_models_keep_float32(builder):
    grid = fd.Grid((8, 8), ((0.0, 1.0), (0.0, 1.0)))
    if builder == "heat":
        rhs = fd.models.heat(grid)
        u = jnp.ones(grid.shape, jnp.float32)
        out = rhs(0.0, u, {"diffusivity": jnp.ones(grid.shape, jnp.float32), "bc": fd.Neumann(0.0)})
        assert out.dtype == jnp.float32
    else:
        rhs = fd.models.gray_scott(grid)
        u = jnp.ones(grid.shape, jnp.float32)
        du, dv = rhs(0.0, (u, u), {"Du": 1e-5, "Dv": 1e-5, "F": 0.04, "k": 0.06, "bc": fd.Periodic()})
        assert du.dtype == dv.dtype == jnp.float32
