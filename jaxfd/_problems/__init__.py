"""Named problems that the `jaxfd` command runs (private; see `jaxfd.cli`).

Each problem lives in its own module and exposes:

* `DESCRIPTION`: one line for `jaxfd list`;
* `DEFAULTS`: a dict of the default option values it wants (`size`, `steps`; a
  `None` leaves the choice to the problem, e.g. `default_steps(size)`);
* `run(*, size, steps, seed, dtype, progress) -> Result`: the computation;
* `plot(result, path)`: writes a PNG of the result.

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
    """The module of problem `name`; raises KeyError for an unknown name."""
    module, _ = PROBLEMS[name]
    return importlib.import_module(module)
