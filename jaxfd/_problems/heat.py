r"""`jaxfd run heat`: the 2-D heat equation with an exact solution.

$u_t = \nu \nabla^2 u$ on the unit square, $u = 0$ on the walls, on a
cell-centred `size x size` grid. The initial condition is a sum of the
lowest sine modes with seeded random amplitudes,

$$u(x, y, t) = \sum_{k,l=1}^{3} a_{kl}\, e^{-\nu \pi^2 (k^2 + l^2) t}
\sin(k\pi x) \sin(l\pi y),$$

which is also the exact solution the summary compares against.

Stepping is `fd.simulate` with forward Euler (`fd.Euler()`) and the
second-order Laplacian (`fd.laplacian`, ghost-cell Dirichlet walls): the
whole loop is one `lax.scan` inside one compiled program, with
`checkpoint="none"` (nothing is differentiated here). The time step is
`SAFETY = 0.8` times `fd.max_stable_dt(fd.Euler(), grid, diffusivity=nu)`,
the forward-Euler limit of diffusion number 1/2, so the diffusion number is
$r = \nu\, \Delta t \sum_a h_a^{-2} = 0.4$, $\Delta t = O(h^2)$ and the
error against the exact solution is $O(h^2)$. By default it takes as many
steps as reach $t = 0.05$.

Progress is reported once, when the compiled loop has finished: `simulate`
runs all steps in one program without host callbacks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

DESCRIPTION = "2-D heat equation u_t = nu * laplacian(u), Dirichlet walls, exact sine-mode solution"
# steps=None: as many stable steps as it takes to reach DEFAULT_FINAL_TIME.
DEFAULTS = {"size": 128, "steps": None}

NU = 1.0
DEFAULT_FINAL_TIME = 0.05  # the (1, 1) mode decays to e^(-2 pi^2 0.05) = 37 %
SAFETY = 0.8  # dt = SAFETY * fd.max_stable_dt(...): diffusion number 0.4 (forward Euler: 0.5)
MODES = 3


def initial_amplitudes(seed: int) -> np.ndarray:
    """Amplitudes a[k-1, l-1] of the sine modes: the (1, 1) mode plus seeded smaller ones."""
    rng = np.random.default_rng(seed)
    k = np.arange(1, MODES + 1)
    amplitudes = 0.5 * rng.standard_normal((MODES, MODES)) / np.outer(k, k)
    amplitudes[0, 0] = 1.0
    return amplitudes


def exact_solution(grid, amplitudes: np.ndarray, t: float, nu: float = NU) -> np.ndarray:
    """The exact solution at time `t` on the cell centres, float64 numpy."""
    x, y = grid.coords_numpy
    out = np.zeros(grid.shape)
    for k in range(1, amplitudes.shape[0] + 1):
        for l in range(1, amplitudes.shape[1] + 1):
            decay = math.exp(-nu * math.pi**2 * (k * k + l * l) * t)
            out += amplitudes[k - 1, l - 1] * decay * np.outer(
                np.sin(k * math.pi * x), np.sin(l * math.pi * y)
            )
    return out


def stable_dt(grid, nu: float = NU, safety: float = SAFETY) -> float:
    """`safety` times the largest stable forward-Euler step for diffusion `nu` on `grid`."""
    import jaxfd as fd

    return safety * fd.max_stable_dt(fd.Euler(), grid, diffusivity=nu)


def _make_solver(grid, nu: float, dt: float, steps: int, dtype):
    """`u0 -> (u(steps * dt), failed_step)` as one jitted function around `fd.simulate`."""
    import jax
    import jax.numpy as jnp

    import jaxfd as fd

    bc = fd.Dirichlet(0.0)

    def rhs(t, u, nu):
        return nu * fd.laplacian(u, grid, bc=bc)

    def solve(u0):
        # dt comes from fd.max_stable_dt, so the (eager-only) stability check is not needed;
        # throw=False: a non-finite state is reported in stats and raised below with a clear message.
        sol = fd.simulate(
            rhs, u0, 0.0, steps * dt, dt, stepper=fd.Euler(), args=jnp.asarray(nu, dtype),
            checkpoint="none", throw=False, stability="ignore",
        )
        return sol.us[-1], sol.stats["failed_step"]

    # Donation reuses the input buffer on GPU/TPU; the CPU backend ignores it with a warning.
    donate = () if jax.default_backend() == "cpu" else (0,)
    return jax.jit(solve, donate_argnums=donate)


def default_steps(size: int) -> int:
    """Steps of the stable dt that reach DEFAULT_FINAL_TIME on a `size x size` grid."""
    import jaxfd as fd

    grid = fd.Grid((size, size), ((0.0, 1.0), (0.0, 1.0)))
    return max(1, math.ceil(DEFAULT_FINAL_TIME / stable_dt(grid) - 1e-9))


def run(*, size: int, steps: int | None, seed: int, dtype,
        progress: Callable[[int, int], None] | None = None):
    """Run the problem; returns a `Result` with the summary and the fields to plot.

    `steps=None` takes as many steps as reach `DEFAULT_FINAL_TIME`.
    """
    import jax
    import jax.numpy as jnp

    import jaxfd as fd

    from . import Result

    start = time.perf_counter()
    grid = fd.Grid((size, size), ((0.0, 1.0), (0.0, 1.0)))
    dt = stable_dt(grid)
    if steps is None:
        steps = default_steps(size)
    t_final = steps * dt
    amplitudes = initial_amplitudes(seed)
    u0_np = exact_solution(grid, amplitudes, 0.0)
    u0 = jnp.asarray(u0_np, dtype=dtype)

    solver = _make_solver(grid, NU, dt, steps, dtype)
    t0 = time.perf_counter()
    compiled = solver.lower(u0).compile()
    compile_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    u, failed_step = jax.block_until_ready(compiled(u0))
    run_time = time.perf_counter() - t0
    if progress is not None:
        progress(steps, steps)  # the compiled loop reports nothing while it runs

    u_np = np.asarray(u, dtype=np.float64)
    if int(failed_step) >= 0 or not np.all(np.isfinite(u_np)):
        raise RuntimeError(
            f"heat: the solution became non-finite within {steps} steps (dt={dt:.3g}); "
            "this should not happen at a stable diffusion number, please report it."
        )
    exact = exact_solution(grid, amplitudes, t_final)
    error = u_np - exact
    max_error = float(np.max(np.abs(error)))
    scale = float(np.max(np.abs(exact)))
    wall_time = time.perf_counter() - start
    summary = {
        "problem": "heat",
        "size": size,
        "steps": steps,
        "seed": seed,
        "dtype": str(jnp.dtype(dtype)),
        "backend": jax.default_backend(),
        "nu": NU,
        "diffusion_number": fd.diffusion_number(NU, dt, grid),
        "scheme": "fd.simulate: forward Euler, second-order Laplacian, ghost-cell Dirichlet walls",
        "dt": dt,
        "final_time": t_final,
        "max_error": max_error,
        "relative_error": max_error / scale if scale > 0 else max_error,
        "wall_time_s": wall_time,
        "compile_time_s": compile_time,
        "run_time_s": run_time,
        "compile_time_share": compile_time / wall_time if wall_time > 0 else 0.0,
    }
    fields = {
        "x": grid.coords_numpy[0],
        "y": grid.coords_numpy[1],
        "initial": u0_np,
        "final": u_np,
        "error": error,
    }
    return Result(summary=summary, fields=fields)


def plot(result, path) -> None:
    """Initial state, final state and error against the exact solution, side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    f = result.fields
    s = result.summary
    extent = (0.0, 1.0, 0.0, 1.0)
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    panels = [
        (f["initial"], "u at t = 0", "inferno"),
        (f["final"], f"u at t = {s['final_time']:.3g} ({s['steps']} steps)", "inferno"),
        (f["error"], f"u - exact (max {s['max_error']:.2e})", "RdBu_r"),
    ]
    for ax, (data, title, cmap) in zip(fig.subplots(1, 3), panels):
        kwargs = {}
        if cmap == "RdBu_r":
            bound = float(np.max(np.abs(data))) or 1.0
            kwargs = {"vmin": -bound, "vmax": bound}
        image = ax.imshow(data.T, origin="lower", extent=extent, cmap=cmap, **kwargs)
        ax.set_title(title)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        fig.colorbar(image, ax=ax, shrink=0.85)
    fig.suptitle(
        f"jaxfd heat: {s['size']}x{s['size']} cells, nu = {s['nu']}, dt = {s['dt']:.3g}, "
        f"{s['dtype']}"
    )
    fig.savefig(path, dpi=100)
