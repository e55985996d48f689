r"""Initial-state recovery: a 2-D temperature field from sparse sensors sampled over time.

Model, on the unit square with $u = 0$ on the walls:

$$ u_t + \mathbf v\cdot\nabla u = D\,\nabla^2 u , \qquad
\mathbf v = \omega\,(-(y - \tfrac12),\ x - \tfrac12) , $$

a solid-body rotation that carries the initial features past the sensors
while they diffuse. Discretised by `fd.models.advection_diffusion_reaction`
(third-order upwind advection, second-order Laplacian) and stepped by
`fd.simulate` with SSP-RK3 at 0.8 times `fd.max_stable_dt`; gradients
through the rollout use the bounded-memory `checkpoint="nested"` policy
(O(sqrt(T)) stored states; it compiles in half the time of "recursive").

The truth is a sum of three Gaussian blobs. Sensors sit at every
`SENSOR_STRIDE`-th cell in both directions (about 6% of the cells) and
record $u$ at `SAMPLES` evenly spaced times; noise, when asked, is Gaussian
with standard deviation `noise` times the RMS of the readings.

Objective (misfit normalised by the data, plus a small $H^1$ smoothness
term that fills in between sensors):

$$ J(u_0) = \frac{\sum_{i} \lVert S u(t_i; u_0) - d_i \rVert^2}{2 \sum_i \lVert d_i \rVert^2}
 + \beta \int |\nabla u_0|^2 . $$
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxfd as fd

from ._base import InverseProblem, check_make_arguments, plot_truth_recovered_loss

DESCRIPTION = "recover the initial temperature of 2-D advection-diffusion from sparse sensors over time"
DEFAULTS = {"size": 48, "iterations": 200, "noise": 0.0}

OMEGA = np.pi  # half a turn by FINAL_TIME = 1
DIFFUSIVITY = 2e-3
FINAL_TIME = 1.0
SAMPLES = 20
SENSOR_STRIDE = 4
H1_WEIGHT = 1e-7
BLOBS = ((0.32, 0.35, 0.09, 1.0), (0.64, 0.62, 0.11, 0.8), (0.40, 0.70, 0.07, -0.6))  # x, y, width, amplitude


def true_initial_state(grid: fd.Grid) -> np.ndarray:
    """The sum of Gaussian blobs on the cell centres (float64 numpy)."""
    x, y = np.meshgrid(*grid.coords_numpy, indexing="ij")
    return sum(a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * w**2)) for cx, cy, w, a in BLOBS)


def sensor_mask(grid: fd.Grid) -> np.ndarray:
    """Boolean mask of the sensor cells."""
    mask = np.zeros(grid.shape, bool)
    offset = SENSOR_STRIDE // 2
    mask[offset::SENSOR_STRIDE, offset::SENSOR_STRIDE] = True
    return mask


def make(*, size: int = DEFAULTS["size"], noise: float = DEFAULTS["noise"], seed: int = 0,
         dtype=jnp.float32) -> InverseProblem:
    """Build the problem: grid, flow, sensors, synthetic readings, objective."""
    size, noise, seed, dtype = check_make_arguments("initial_state", size, noise, seed, dtype, min_size=16)
    grid = fd.Grid((size, size), ((0.0, 1.0), (0.0, 1.0)))
    x, y = grid.mesh()
    velocity = (jnp.asarray(-OMEGA * (y - 0.5), dtype), jnp.asarray(OMEGA * (x - 0.5), dtype))
    args = {"velocity": velocity, "diffusivity": jnp.asarray(DIFFUSIVITY, dtype), "bc": fd.Dirichlet(0.0)}
    rhs = fd.models.advection_diffusion_reaction(grid, scheme="upwind3")
    stepper = fd.SSPRK3()
    limit = fd.max_stable_dt(stepper, grid, diffusivity=DIFFUSIVITY, velocity=[np.asarray(v) for v in velocity])
    steps = int(np.ceil(FINAL_TIME / (0.8 * limit) / SAMPLES)) * SAMPLES  # sample times on the step grid
    dt = FINAL_TIME / steps
    sample_times = tuple(float(t) for t in FINAL_TIME * np.arange(1, SAMPLES + 1) / SAMPLES)
    saveat = fd.SaveAt(ts=sample_times, t1=False)
    mask = sensor_mask(grid)
    rows, cols = np.nonzero(mask)

    def readings(u0, *, stability="ignore"):
        sol = fd.simulate(rhs, u0, 0.0, FINAL_TIME, dt, stepper=stepper, args=args, saveat=saveat,
                          checkpoint="nested", stability=stability)
        return sol.us[:, rows, cols]

    u0_true = true_initial_state(grid)
    clean = np.asarray(readings(jnp.asarray(u0_true, dtype), stability="check"), np.float64)
    rng = np.random.default_rng(seed)
    rms = np.sqrt(np.mean(clean**2))
    data = jnp.asarray(clean + noise * rms * rng.standard_normal(clean.shape), dtype)
    scale = 1.0 / jnp.sum(data**2)

    def objective(params):
        u0 = params["u0"]
        misfit = 0.5 * scale * jnp.sum((readings(u0) - data) ** 2)
        return misfit + H1_WEIGHT * fd.inverse.h1_seminorm(u0, grid)

    def errors(params):
        u0 = np.asarray(params["u0"], np.float64)
        return {
            "u0_relative_l2": float(np.linalg.norm(u0 - u0_true) / np.linalg.norm(u0_true)),
            "u0_max_error": float(np.max(np.abs(u0 - u0_true))),
        }

    def plot(params, history, path):
        plot_truth_recovered_loss(grid, u0_true, np.asarray(params["u0"], np.float64), history, path,
                                  name="initial state", cmap="magma", markers=mask)

    return InverseProblem(
        name="initial_state",
        objective=objective,
        initial_params={"u0": jnp.zeros(grid.shape, dtype)},
        truth={"u0": jnp.asarray(u0_true, dtype)},
        errors=errors,
        targets={"u0_relative_l2": 0.05},
        plot=plot,
        fit_options={"optimizer": "lbfgs", "gtol": 1e-8 if jnp.dtype(dtype) == jnp.float64 else 1e-4},
        data={"grid": grid, "sensors": mask, "sample_times": sample_times, "readings": data,
              "steps": steps, "dt": dt},
    )

