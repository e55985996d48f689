"""The `jaxfd` command's view of a worked inverse problem (`jaxfd.inverse.problems.*`).

`run` builds the problem with `make(size=, noise=, seed=, dtype=)`, fits it
with `fd.inverse.fit` (progress bar, a checkpoint every `CHECKPOINT_EVERY`
steps, `--resume` continues from it) and reports the errors against the
truth. The Taylor tests of each objective live in the test suite.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

from . import Result

CHECKPOINT_EVERY = 10


class InverseProblemCommand:
    """Adapts a problem module (DESCRIPTION, DEFAULTS, make) to the CLI's problem protocol."""

    def __init__(self, name: str, module_path: str):
        self.name = name
        self.module = importlib.import_module(module_path)
        self.DESCRIPTION = self.module.DESCRIPTION
        self.DEFAULTS = {**self.module.DEFAULTS, "resume": False}

    def run(self, *, size: int, iterations: int, noise: float, resume: bool, seed: int, dtype,
            progress: bool, checkpoint: Path) -> Result:
        import jax
        import jax.numpy as jnp

        import jaxfd as fd

        start = time.perf_counter()
        problem = self.module.make(size=size, noise=noise, seed=seed, dtype=dtype)
        build_time = time.perf_counter() - start
        if not resume and checkpoint.exists():
            checkpoint.unlink()  # a fresh run must not pick up an old state
        result = fd.inverse.fit(
            problem.objective, problem.initial_params, constraints=problem.constraints,
            max_steps=iterations, progress=progress, checkpoint=checkpoint,
            checkpoint_every=CHECKPOINT_EVERY, resume=resume, **problem.fit_options,
        )
        errors = problem.errors(result.params)
        wall_time = time.perf_counter() - start
        summary: dict[str, Any] = {
            "problem": self.name,
            "size": size,
            "noise": noise,
            "seed": seed,
            "dtype": str(jnp.dtype(dtype)),
            "backend": jax.default_backend(),
            "iterations": result.steps,
            "max_iterations": iterations,
            "stopped_because": result.reason,
            "converged": result.converged,
            "final_loss": result.loss,
            "initial_loss": float(result.history.loss[0]),
            "gradient_norm": float(result.history.grad_norm[-1]),
            "errors": errors,
            "targets": problem.targets,
            "targets_met": {k: errors[k] <= v for k, v in problem.targets.items() if k in errors},
            "resumed_from": result.resumed_from,
            "checkpoint": str(checkpoint),
            "build_time_s": build_time,
            "fit_time_s": result.wall_time_s,
            "compile_time_s": result.compile_time_s,
            "wall_time_s": wall_time,
            "compile_time_share": result.compile_time_s / wall_time if wall_time > 0 else 0.0,
        }
        return Result(summary=summary, fields={"problem": problem, "fit": result})

    def plot(self, result: Result, path) -> None:
        problem, fit = result.fields["problem"], result.fields["fit"]
        problem.plot(fit.params, fit.history, path)
