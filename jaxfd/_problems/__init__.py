"""Named problems that the `jaxfd` command runs (private; see `jaxfd.cli`).

Each problem exposes:

* `DESCRIPTION`: one line for `jaxfd list`;
* `DEFAULTS`: the problem's own options and their defaults (`size`, `steps`
  for a forward run; `size`, `iterations`, `noise`, `resume` for an inverse
  problem; a `None` leaves the choice to the problem, e.g. `default_steps(size)`);
  an option outside these and the common ones (`seed`, `out`, `float64`,
  `quiet`) is refused for that problem;
* `run(*, <its options>, seed, dtype, progress, ...) -> Result`: the computation;
* `plot(result, path)`: writes a PNG of the result.

Forward problems are modules here (`heat`); the worked inverse problems are
modules of `jaxfd.inverse.problems`, adapted by `inverse.InverseProblemCommand`.

Modules are imported only when a problem is run, so `jaxfd list` and input
errors stay fast.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

__all__ = ["PROBLEMS", "Result", "load"]

# name -> (module, one-line description). The description is repeated here so
# that listing problems does not import JAX.
PROBLEMS: dict[str, tuple[str, str]] = {
    "coefficient": (
        "jaxfd.inverse.problems.coefficient",
        "recover a discontinuous diffusivity k(x, y) (contrast 100) from 4 noisy steady experiments",
    ),
    "initial_state": (
        "jaxfd.inverse.problems.initial_state",
        "recover the initial temperature of 2-D advection-diffusion from sparse sensors over time",
    ),
    "stefan": (
        "jaxfd.inverse.problems.stefan",
        "Stefan melting problem: find the surface heat flux q(t) that puts the melt front at a target depth",
    ),
    "chromatography": (
        "jaxfd.inverse.problems.chromatography",
        "Chromatography column: fit velocity, dispersion, exchange rate and isotherm slope to an outlet curve",
    ),
    "heat": (
        "jaxfd._problems.heat",
        "2-D heat equation u_t = nu * laplacian(u), Dirichlet walls, exact sine-mode solution",
    ),
}


@dataclasses.dataclass
class Result:
    """What a problem hands back to the CLI: a JSON-able summary and arrays to plot."""

    summary: dict[str, Any]
    fields: dict[str, Any]


def load(name: str):
    """The problem `name` (a module, or an adapted inverse problem); KeyError if unknown."""
    module, _ = PROBLEMS[name]
    if module.startswith("jaxfd.inverse.problems."):
        from .inverse import InverseProblemCommand

        return InverseProblemCommand(name, module)
    return importlib.import_module(module)
