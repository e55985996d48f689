"""What a worked inverse problem hands to `fit`, the tests and the `jaxfd` command."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["InverseProblem"]


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
