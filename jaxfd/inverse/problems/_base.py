"""What a worked inverse problem hands to `fit`, the tests and the `jaxfd` command."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["InverseProblem", "check_make_arguments", "plot_truth_recovered_loss"]


@dataclasses.dataclass(frozen=True)
class InverseProblem:
    """One worked inverse problem at a given size, noise level and seed.

    Attributes:
        name: the problem's name (as `jaxfd list` shows it).
        objective: `objective(params) -> scalar`, pure and jit-able: data
            misfit plus regularization, the functional `fit` minimises and
            `taylor_test` checks.
        initial_params: the starting guess (a pytree, in the constrained space).
        truth: the parameters that generated the data (same structure).
        errors: `errors(params) -> dict[str, float]`: named errors of a
            recovered estimate against the truth (the JSON summary reports them).
        targets: the bound each named error must stay below at the default
            size (what the issue asks for); tests at small size use their own.
        plot: `plot(params, history, path)`: writes a PNG (truth vs
            recovered, loss history).
        constraints: `None` or a pytree prefix of `params` of
            `fd.inverse.Positive()` / `fd.inverse.Interval(lo, hi)` / `None`,
            handed to `fit`.
        fit_options: keyword arguments for `fd.inverse.fit` (optimizer,
            tolerances) that suit this problem.
        data: the synthetic observations and anything a notebook may want to show.
    """

    name: str
    objective: Callable[[Any], Any]
    initial_params: Any
    truth: Any
    errors: Callable[[Any], dict[str, float]]
    targets: dict[str, float]
    plot: Callable[..., None]
    constraints: Any = None
    fit_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


def check_make_arguments(name: str, size, noise, seed, dtype, *, min_size: int):
    """Validate the arguments every problem's `make` takes; returns them normalised."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < min_size:
        raise ValueError(f"{name}.make: expected an integer size >= {min_size} (cells), got size={size!r}.")
    if not (isinstance(noise, (int, float, np.floating)) and math.isfinite(noise) and 0 <= noise < 1):
        raise ValueError(f"{name}.make: expected a relative noise level 0 <= noise < 1, got noise={noise!r}.")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"{name}.make: expected an integer seed, got seed={seed!r}.")
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"{name}.make: expected dtype float32 or float64, got {dtype}.")
    if dtype == jnp.dtype(jnp.float64) and not jax.config.jax_enable_x64:
        raise ValueError(f"{name}.make: dtype float64 needs jax.config.update('jax_enable_x64', True).")
    return int(size), float(noise), int(seed), dtype


def plot_truth_recovered_loss(grid, truth, recovered, history, path, *, name: str, log: bool = False,
                              cmap: str = "viridis", markers=None) -> None:
    """Truth and recovered 2-D fields side by side (one colour scale) and the loss history.

    Draws on a bare matplotlib `Figure`, so pyplot's backend (a notebook's inline one) is untouched.
    `markers`: an optional boolean mask of cells to mark on the truth (e.g. sensors).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    lo, hi = min(truth.min(), recovered.min()), max(truth.max(), recovered.max())
    norm = LogNorm(vmin=lo, vmax=hi) if log else Normalize(vmin=lo, vmax=hi)
    extent = [grid.extent[0][0], grid.extent[0][1], grid.extent[1][0], grid.extent[1][1]]
    for ax, field, title in ((axes[0], truth, f"true {name}"), (axes[1], recovered, f"recovered {name}")):
        image = ax.imshow(field.T, origin="lower", extent=extent, norm=norm, cmap=cmap)
        ax.set_title(title)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    if markers is not None:
        x, y = np.meshgrid(*grid.coords_numpy, indexing="ij")
        axes[0].plot(x[markers], y[markers], ".", color="cyan", markersize=2, label="sensors")
        axes[0].legend(loc="upper right", fontsize=7)
    fig.colorbar(image, ax=axes[:2], shrink=0.8)
    axes[2].semilogy(history.loss)
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("objective")
    axes[2].set_title("loss history")
    fig.savefig(path, dpi=110)
