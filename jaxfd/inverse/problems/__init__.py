"""Worked inverse problems: each module builds an `InverseProblem` with `make(size=, noise=, seed=, dtype=)`."""

from ._base import InverseProblem as InverseProblem
