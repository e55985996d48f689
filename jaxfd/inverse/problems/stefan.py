r"""Optimal control of a free boundary: the boundary heat flux that melts a slab to a target depth.

A 1-D Stefan (melting) problem in enthalpy form, as in laser heating of
tissue: a slab $0 \le x \le L$, initially solid below its melting
temperature, is heated through its surface $x = 0$ by a heat flux $q(t)$
(the control) and is insulated at $x = L$. With temperatures measured from
the melting temperature ($T_m = 0$), the enthalpy per unit volume is

$$H = c\,T + \Lambda\,\phi,$$

with heat capacity $c$, latent heat $\Lambda$ and liquid fraction
$\phi \in [0, 1]$: solid for $H < 0$ ($\phi = 0$, $T = H/c$), mushy for
$0 \le H \le \Lambda$ ($\phi = H/\Lambda$, $T = 0$), liquid for $H > \Lambda$
($\phi = 1$, $T = (H - \Lambda)/c$). Energy conservation is

$$H_t = \partial_x\big(k\, \partial_x T(H)\big), \qquad
-k\, T_x(0, t) = q(t), \qquad T_x(L, t) = 0,$$

one equation on the whole slab; the melt front is where $\phi$ drops from 1
to 0, and its position is measured as the melted depth

$$s(t) = \int_0^L \phi\big(H(x, t)\big)\, dx \approx h \sum_i \phi(H_i).$$

**Smoothing.** $T(H)$ and $\phi(H)$ have kinks at $H = 0$ and $H = \Lambda$,
where derivatives jump. Both are smoothed with softplus over an enthalpy
width $\varepsilon$ (`SMOOTHING` $= 0.01\,\Lambda$ by default),

$$\phi_\varepsilon(H) = \frac{\varepsilon}{\Lambda}\Big[\operatorname{sp}\big(\tfrac{H}{\varepsilon}\big)
- \operatorname{sp}\big(\tfrac{H - \Lambda}{\varepsilon}\big)\Big], \qquad
T_\varepsilon(H) = \frac{H - \Lambda\,\phi_\varepsilon(H)}{c},$$

with $\operatorname{sp}(z) = \log(1 + e^z)$, so that $H = c\,T + \Lambda\,\phi$
holds exactly, $0 < dT/dH \le 1/c$, $0 \le \phi \le 1$, and the front
$s$ and every misfit are smooth functions of the state and the control.
Away from the kinks the smoothing changes $T$ and $\phi$ by terms of order
$e^{-|H|/\varepsilon}$; within them it moves the melting point by at most
$\varepsilon \log 2 / c$ in temperature.

**Discretisation.** Cell-centred grid of `size` cells, conservative flux
form `fd.diffusion` (second order), the flux control as a time-dependent
`fd.Neumann` value $\partial_n T = q/k$ at $x = 0$, `fd.Neumann(0)` at
$x = L$, forward Euler in time (`fd.Euler`, the classic explicit enthalpy
scheme) at diffusion number $k\,\Delta t / (c\, h^2) = 0.4$ (stable up to
0.5 since $dT/dH \le 1/c$), inside one `fd.simulate` loop with
`checkpoint="nested"` for the gradient ($O(\sqrt T)$ stored states; at the
default size it is as fast as storing every state, and 2.5 times faster
than `"step"`). The discrete scheme conserves energy
exactly: $h\sum_i H_i$ grows by $\Delta t\, q(t_n)$ per step.

**Control.** $q(t)$ is piecewise linear on `CONTROL_INTERVALS = 20`
intervals of $[0, t_f]$ (21 nodal values), constrained to
$0 < q < $ `FLUX_MAX` (`fd.inverse.Interval`): heating only, and bounded
power.

**The inverse problem.** A "true" flux history $q^\dagger$ generates the
target: the front position $s^\ast = s(t_f; q^\dagger)$ and the final
temperature profile, observed at the cell centres with relative Gaussian
noise, $T^{obs}_i = T_i(t_f; q^\dagger)(1 + \sigma \xi_i)$. The objective is

$$J(q) = \frac{W_s}{2}\Big(\frac{s(t_f; q) - s^\ast}{s^\ast}\Big)^2
+ \frac12 \frac{\|T(t_f; q) - T^{obs}\|^2}{\|T^{obs}\|^2}
+ \frac{\alpha}{2} \sum_j \Big(\frac{q_{j+1} - q_j}{Q}\Big)^2,$$

with `FRONT_WEIGHT` $W_s = 100$, a smoothness penalty $\alpha$ =
`REGULARIZATION` on the nodal differences (the final state forgets most of
the early history, so the control is not unique without it) and the scale
$Q$ = `FLUX_SCALE`. Success is the front within 1 % of $s^\ast$; the
temperature misfit against the noise-free profile is reported. The distance
to $q^\dagger$ is reported too, but it is not a target: other histories
reach the same final state.

All quantities are non-dimensional: $L = k = c = \Lambda = 1$ (Stefan
number 1 per unit temperature), initial temperature $-0.1$, final time
$t_f = 0.25$.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import jaxfd as fd

from ._base import InverseProblem, check_make_arguments

__all__ = [
    "DESCRIPTION",
    "DEFAULTS",
    "make",
    "liquid_fraction",
    "temperature",
    "front_position",
    "make_rhs",
    "flux_at",
    "true_flux",
    "simulate_melt",
    "time_step",
]

DESCRIPTION = "Stefan melting problem: find the surface heat flux q(t) that puts the melt front at a target depth"
DEFAULTS = {"size": 128, "iterations": 100, "noise": 0.01}

LENGTH = 1.0
CONDUCTIVITY = 1.0
HEAT_CAPACITY = 1.0
LATENT_HEAT = 1.0
INITIAL_TEMPERATURE = -0.1
FINAL_TIME = 0.25
SMOOTHING = 0.01  # enthalpy width of the softplus smoothing of T(H) and phi(H), in units of H
DIFFUSION_NUMBER = 0.4  # k dt / (c h^2); forward Euler is stable up to 0.5
CONTROL_INTERVALS = 20
FLUX_MAX = 10.0
FLUX_SCALE = 1.0
FRONT_WEIGHT = 100.0
REGULARIZATION = 1e-5
INITIAL_FLUX = 1.0
MIN_SIZE = 8

def liquid_fraction(H, *, latent_heat: float = LATENT_HEAT, smoothing: float = SMOOTHING):
    r"""Smoothed liquid fraction $\phi_\varepsilon(H)$ (see the module docstring).

    Arguments:
        H: enthalpy per unit volume (any shape), relative to the solid at the melting temperature.
        latent_heat: $\Lambda$.
        smoothing: $\varepsilon$, the enthalpy width of the smoothing (`> 0`).

    Returns:
        $\phi \in [0, 1]$, the same shape and dtype as `H`.
    """
    eps = smoothing
    return eps * (jax.nn.softplus(H / eps) - jax.nn.softplus((H - latent_heat) / eps)) / latent_heat


def temperature(H, *, latent_heat: float = LATENT_HEAT, heat_capacity: float = HEAT_CAPACITY,
                smoothing: float = SMOOTHING):
    r"""Temperature $T_\varepsilon(H) = (H - \Lambda\phi_\varepsilon(H))/c$, relative to the melting point.

    Arguments:
        H: enthalpy per unit volume.
        latent_heat: $\Lambda$.
        heat_capacity: $c$ (the same in both phases).
        smoothing: $\varepsilon$.

    Returns:
        $T$, the same shape and dtype as `H`; exactly $H = cT + \Lambda\phi$.
    """
    phi = liquid_fraction(H, latent_heat=latent_heat, smoothing=smoothing)
    return (H - latent_heat * phi) / heat_capacity


def front_position(H, spacing: float, *, latent_heat: float = LATENT_HEAT, smoothing: float = SMOOTHING):
    r"""Melted depth $s = h\sum_i \phi_\varepsilon(H_i)$, a smooth function of the state.

    Arguments:
        H: enthalpy on the cells, shape `(n,)` (or with leading batch/time axes).
        spacing: the cell width $h$.

    Returns:
        $s$ (a scalar, or one per leading index).
    """
    phi = liquid_fraction(H, latent_heat=latent_heat, smoothing=smoothing)
    return jnp.asarray(spacing, H.dtype) * jnp.sum(phi, axis=-1)


def flux_at(t, flux_nodes, final_time: float = FINAL_TIME):
    r"""The piecewise linear control $q(t)$ from its nodal values on a uniform grid of $[0, t_f]$.

    Arguments:
        t: time (scalar).
        flux_nodes: `(m + 1,)` nodal values at $t_j = j\, t_f / m$.
        final_time: $t_f$.

    Returns:
        $q(t)$, constant beyond the ends.
    """
    nodes = jnp.linspace(0.0, final_time, flux_nodes.shape[0], dtype=flux_nodes.dtype)
    return jnp.interp(jnp.asarray(t, flux_nodes.dtype), nodes, flux_nodes)


def true_flux(times) -> np.ndarray:
    r"""The flux history that generates the target, $q^\dagger(t) = 1.5 + 2.5\sin^2(\pi t / t_f)$.

    Arguments:
        times: times in $[0, t_f]$ (numpy).

    Returns:
        float64 numpy array of $q^\dagger$ at `times`.
    """
    times = np.asarray(times, dtype=np.float64)
    return 1.5 + 2.5 * np.sin(np.pi * times / FINAL_TIME) ** 2


def make_rhs(grid, *, conductivity: float = CONDUCTIVITY, heat_capacity: float = HEAT_CAPACITY,
             latent_heat: float = LATENT_HEAT, smoothing: float = SMOOTHING, final_time: float = FINAL_TIME):
    r"""Right-hand side $H_t = \partial_x(k\,\partial_x T(H))$ for `fd.simulate`.

    The surface $x = 0$ is heated by a flux or held at a temperature, chosen
    by the keys of `args`:

    * `{"flux": nodes}`: $-k T_x(0, t) = q(t)$, `nodes` the nodal values of the
      piecewise linear $q$ on $[0, t_f]$ (`fd.Neumann(q / k)`);
    * `{"surface_temperature": T_b}`: $T(0, t) = T_b$ (`fd.Dirichlet`), the
      classical one-phase Stefan problem used to verify the scheme.

    The far end $x = L$ is insulated. Conservative second-order flux form
    (`fd.diffusion`); energy is conserved exactly by the spatial scheme.

    Arguments:
        grid: a 1-D `fd.Grid`.
        conductivity, heat_capacity, latent_heat: $k$, $c$, $\Lambda$.
        smoothing: $\varepsilon$ of $T_\varepsilon(H)$.
        final_time: $t_f$, the span of the flux nodes.

    Returns:
        `rhs(t, H, args)`.
    """
    if grid.ndim != 1:
        raise ValueError(f"stefan.make_rhs: expected a 1-D grid, got a {grid.ndim}-D grid of shape {grid.shape}.")

    def rhs(t, H, args):
        T = temperature(H, latent_heat=latent_heat, heat_capacity=heat_capacity, smoothing=smoothing)
        if "surface_temperature" in args:
            left = fd.Dirichlet(jnp.asarray(args["surface_temperature"], H.dtype))
        else:
            q = flux_at(t, jnp.asarray(args["flux"], H.dtype), final_time)
            left = fd.Neumann(q / jnp.asarray(conductivity, H.dtype))
        return fd.diffusion(T, grid, jnp.asarray(conductivity, H.dtype), bc=((left, fd.Neumann(0.0)),))

    return rhs


def time_step(size: int, length: float = LENGTH) -> float:
    r"""The forward-Euler step at diffusion number `DIFFUSION_NUMBER`: $\Delta t = 0.4\, c h^2 / k$."""
    h = length / size
    return DIFFUSION_NUMBER * HEAT_CAPACITY * h * h / CONDUCTIVITY


def simulate_melt(rhs, H0, args, *, dt: float, final_time: float = FINAL_TIME, saveat=None,
                  checkpoint: str = "nested"):
    """Run `rhs` from `H0` to `final_time` with forward Euler; returns the `fd.Solution`.

    Arguments:
        rhs: from `make_rhs`.
        H0: initial enthalpy, shape `(n,)`.
        args: `{"flux": nodes}` or `{"surface_temperature": T_b}`.
        dt: time step (see `time_step`).
        final_time: end time.
        saveat: an `fd.SaveAt` (default: the final state).
        checkpoint: the gradient's memory policy (see `fd.simulate`).

    Returns:
        The `fd.Solution` (`us` stacked on a leading time axis).
    """
    return fd.simulate(rhs, H0, 0.0, final_time, dt, stepper=fd.Euler(), args=args,
                       saveat=fd.SaveAt() if saveat is None else saveat, checkpoint=checkpoint,
                       stability="ignore")


def make(*, size: int = DEFAULTS["size"], noise: float = DEFAULTS["noise"], seed: int = 0,
         dtype=jnp.float32) -> InverseProblem:
    r"""Build the Stefan flux-control problem.

    Arguments:
        size: number of cells (at least 8); the time step scales as $h^2$, so
            the cost grows as `size**3`.
        noise: relative standard deviation of the noise on the observed final
            temperature profile (0.01 is 1 %).
        seed: seed of the noise (numpy `default_rng`).
        dtype: `jnp.float32` or `jnp.float64`.

    Returns:
        An `InverseProblem` whose parameters are the 21 nodal values of the
            flux history, `{"flux": array}`.

    Raises:
        ValueError: size below 8, a noise level outside [0, 1), a non-integer
            seed, or an unsupported dtype.
    """
    size, noise, seed, dtype = check_make_arguments("stefan", size, noise, seed, dtype, min_size=MIN_SIZE)
    grid = fd.Grid((size,), ((0.0, LENGTH),))
    h = grid.spacing[0]
    dt = time_step(size)
    rhs = make_rhs(grid)
    H0 = jnp.full((size,), HEAT_CAPACITY * INITIAL_TEMPERATURE, dtype)
    node_times = np.linspace(0.0, FINAL_TIME, CONTROL_INTERVALS + 1)
    truth = {"flux": jnp.asarray(true_flux(node_times), dtype)}
    initial = {"flux": jnp.full((CONTROL_INTERVALS + 1,), INITIAL_FLUX, dtype)}

    def final_state(params):
        return simulate_melt(rhs, H0, {"flux": params["flux"]}, dt=dt).us[-1]

    final_state_jit = jax.jit(final_state)
    H_true = final_state_jit(truth)
    T_true = temperature(H_true)
    s_target = front_position(H_true, h)
    rng = np.random.default_rng(seed)
    T_obs = T_true * jnp.asarray(1.0 + noise * rng.standard_normal(size), dtype)
    T_obs_norm2 = jnp.sum(T_obs * T_obs)

    def objective(params):
        H = final_state(params)
        front = (front_position(H, h) - s_target) / s_target
        misfit = T_obs - temperature(H)
        q = params["flux"]
        dq = (q[1:] - q[:-1]) / jnp.asarray(FLUX_SCALE, q.dtype)
        return (0.5 * FRONT_WEIGHT * front * front + 0.5 * jnp.sum(misfit * misfit) / T_obs_norm2
                + 0.5 * REGULARIZATION * jnp.sum(dq * dq))

    T_true_norm = float(jnp.linalg.norm(T_true))
    q_true_norm = float(jnp.linalg.norm(truth["flux"]))

    def errors(params) -> dict[str, float]:
        H = final_state_jit(params)
        s = float(front_position(H, h))
        return {
            "front_position_relative_error": abs(s - float(s_target)) / float(s_target),
            "temperature_relative_misfit": float(jnp.linalg.norm(temperature(H) - T_true)) / T_true_norm,
            "flux_relative_error": float(jnp.linalg.norm(params["flux"] - truth["flux"])) / q_true_norm,
            "front_position": s,
            "front_position_target": float(s_target),
        }

    def plot(params, history, path):
        _plot(params, history, path, rhs=rhs, H0=H0, dt=dt, grid=grid, truth=truth,
              initial=initial, T_obs=T_obs, s_target=float(s_target))

    return InverseProblem(
        name="stefan",
        objective=objective,
        initial_params=initial,
        truth=truth,
        errors=errors,
        targets={"front_position_relative_error": 0.01},
        plot=plot,
        constraints={"flux": fd.inverse.Interval(0.0, FLUX_MAX)},
        fit_options={"optimizer": "lbfgs", "gtol": 1e-6},
        data={
            "grid": grid,
            "dt": dt,
            "num_steps": int(math.ceil(FINAL_TIME / dt - 1e-9)),
            "node_times": node_times,
            "initial_enthalpy": H0,
            "final_enthalpy_true": H_true,
            "temperature_true": T_true,
            "temperature_observed": T_obs,
            "front_target": float(s_target),
            "rhs": rhs,
            "final_state": final_state,
        },
    )


def _plot(params, history, path, *, rhs, H0, dt, grid, truth, initial, T_obs, s_target):
    # A bare Figure renders with Agg and leaves pyplot's backend and state alone.
    from matplotlib.figure import Figure

    every = max(1, int(round(FINAL_TIME / dt / 100)))
    x = grid.coords_numpy[0]
    h = grid.spacing[0]
    node_times = np.linspace(0.0, FINAL_TIME, CONTROL_INTERVALS + 1)
    fine_t = np.linspace(0.0, FINAL_TIME, 401)
    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2)
    runs = {}
    for label, p in (("initial", initial), ("true", truth), ("recovered", params)):
        sol = simulate_melt(rhs, H0, {"flux": jnp.asarray(p["flux"], H0.dtype)}, dt=dt,
                            saveat=fd.SaveAt(t0=True, every=every), checkpoint="none")
        runs[label] = (np.asarray(sol.ts), np.asarray(front_position(sol.us, h)),
                       np.asarray(temperature(sol.us[-1])))
    style = {"initial": dict(color="0.6", ls=":"), "true": dict(color="k", ls="--"),
             "recovered": dict(color="C0", ls="-")}
    ax = axes[0, 0]
    for label, p in (("initial", initial), ("true", truth), ("recovered", params)):
        q = np.asarray(p["flux"], dtype=np.float64)
        ax.plot(fine_t, np.interp(fine_t, node_times, q), label=label, **style[label])
        ax.plot(node_times, q, ".", color=style[label]["color"])
    ax.set(xlabel="t", ylabel="surface heat flux q(t)", title="control")
    ax.legend()
    ax = axes[0, 1]
    for label, (ts, s, _) in runs.items():
        ax.plot(ts, s, label=label, **style[label])
    ax.axhline(s_target, color="C3", lw=0.8, label=f"target s* = {s_target:.4f}")
    ax.set(xlabel="t", ylabel="melt front s(t)", title="front position")
    ax.legend(loc="lower right")
    ax = axes[1, 0]
    ax.plot(x, np.asarray(T_obs, dtype=np.float64), ".", color="C3", ms=3, label="observed (noisy)")
    for label, (ts, s, T) in runs.items():
        ax.plot(x, T, label=label, **style[label])
        ax.axvline(s[-1], lw=0.6, **{k: v for k, v in style[label].items()})
    ax.axhline(0.0, color="0.8", lw=0.6)
    ax.set(xlabel="x", ylabel="T(x, t_f) - T_m", title="final temperature profile")
    ax.legend()
    ax = axes[1, 1]
    loss = np.asarray(history.loss) if hasattr(history, "loss") else np.asarray(history["loss"])
    gnorm = np.asarray(history.grad_norm) if hasattr(history, "grad_norm") else np.asarray(history["grad_norm"])
    ax.semilogy(loss, label="objective")
    ax.semilogy(gnorm, label="gradient norm")
    ax.set(xlabel="iteration", title="optimisation history")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
