r"""`fit`: minimise a differentiable loss over any pytree of parameters.

The iterations run in compiled chunks (`lax.while_loop`, one program compiled
once per problem); between chunks the host updates the progress bar and
writes a checkpoint. Chunk boundaries fall on multiples of
`checkpoint_every`, so a run resumed from its checkpoint takes exactly the
steps an uninterrupted run takes and ends with the same result, to the bit.

Iteration $k$ evaluates the loss and gradient at $p_k$, records them in
the history, stops if a tolerance is met, and otherwise takes one optimizer
step. The history therefore holds $L(p_0), \dots, L(p_n)$ for a fit of
$n$ steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._constraints import to_constrained, to_unconstrained
from ._optimizers import make_backend

__all__ = ["fit", "FitResult", "FitHistory", "FitDivergedError"]

_RUNNING, _GTOL, _FTOL, _MAX_STEPS, _NONFINITE, _STALLED = range(6)
_REASONS = {_RUNNING: "running", _GTOL: "gtol", _FTOL: "ftol", _MAX_STEPS: "max_steps",
            _NONFINITE: "non-finite", _STALLED: "stalled"}
_CHECKPOINT_VERSION = 1


class FitDivergedError(RuntimeError):
    """The loss or its gradient became non-finite during `fit`."""


@dataclasses.dataclass(frozen=True)
class FitHistory:
    """Loss and gradient norm (of the optimised variables) at every iterate $p_0, \\dots, p_n$."""

    loss: np.ndarray
    grad_norm: np.ndarray


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What `fit` returns.

    Attributes:
        params: the final parameters (constrained space; the last finite
            iterate if the run diverged with `throw=False`).
        history: `FitHistory` (`loss`, `grad_norm` as numpy arrays, one entry per iterate).
        steps: optimizer steps taken.
        converged: a tolerance (`gtol` or `ftol`) was met.
        reason: `"gtol"`, `"ftol"`, `"max_steps"`, `"stalled"` (a step left the
            parameters unchanged) or `"non-finite"`.
        wall_time_s: wall-clock time of this call (compile included).
        compile_time_s: time JAX spent tracing and compiling during this call
            (zero when the same loss was fitted before with the same shapes).
        resumed_from: the step a checkpoint was resumed from, or `None`.
    """

    params: Any
    history: FitHistory
    steps: int
    converged: bool
    reason: str
    wall_time_s: float
    compile_time_s: float
    resumed_from: int | None = None

    @property
    def loss(self) -> float:
        """The loss at the final parameters."""
        return float(self.history.loss[-1])


class _Carry(eqx.Module):
    z: Any
    state: Any
    z_good: Any  # the last iterate with a finite loss and gradient
    step: jax.Array
    reason: jax.Array
    grad_ref: jax.Array  # gradient norm at p_0: gtol is relative to it
    previous_loss: jax.Array


class _Objective(eqx.Module):
    """The loss of the unconstrained variables; equal for equal (loss, constraints), so jit caches hit."""

    loss: Callable
    constraints: Any
    dtypes: tuple = eqx.field(static=True)

    def __call__(self, z, *args):
        # Line searches may hand back wider floats (x64 on, float32 parameters): keep the parameters' dtypes.
        leaves, treedef = jax.tree_util.tree_flatten(z)
        z = jax.tree_util.tree_unflatten(treedef, [x.astype(d) for x, d in zip(leaves, self.dtypes)])
        return self.loss(to_constrained(self.constraints, z), *args)


# Seconds JAX spent tracing, lowering and compiling, summed by one process-wide listener.
_COMPILE_SECONDS = [0.0]
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


def _count_compile_time(event: str, duration: float, **_) -> None:
    if event in _COMPILE_EVENTS:
        _COMPILE_SECONDS[0] += duration


jax.monitoring.register_event_duration_secs_listener(_count_compile_time)


def _run_chunk(objective, backend, carry: _Carry, args, chunk_end, max_steps, gtol, ftol, *, length):
    loss_of_z = lambda z: objective(z, *args)  # noqa: E731
    history = jnp.full((2, length), jnp.nan, dtype=carry.grad_ref.dtype)
    start = carry.step

    def cond(c):
        carry, _ = c
        return (carry.reason == _RUNNING) & (carry.step < chunk_end)

    def body(c):
        carry, history = c
        value, grad = backend.value_and_grad(loss_of_z, carry.z, carry.state)
        norm = backend.stationarity(carry.z, grad).astype(history.dtype)
        value = jnp.asarray(value).astype(history.dtype)
        history = history.at[:, carry.step - start].set(jnp.stack([value, norm]))
        grad_ref = jnp.where(jnp.isnan(carry.grad_ref), norm, carry.grad_ref)
        finite = jnp.isfinite(value) & jnp.isfinite(norm)
        small_change = jnp.abs(value - carry.previous_loss) <= ftol * jnp.abs(value)
        reason = jnp.select(
            [~finite, norm <= gtol * grad_ref, (ftol > 0) & small_change, carry.step >= max_steps],
            [_NONFINITE, _GTOL, _FTOL, _MAX_STEPS],
            _RUNNING,
        )

        def step(_):
            return backend.update(loss_of_z, carry.z, carry.state, value, grad)

        z, state = lax.cond(reason == _RUNNING, step, lambda _: (carry.z, carry.state), None)
        unchanged = jax.tree_util.tree_reduce(
            jnp.logical_and,
            jax.tree_util.tree_map(lambda a, b: jnp.all(a == b), z, carry.z),
            jnp.asarray(True),
        )
        reason = jnp.where((reason == _RUNNING) & unchanged, _STALLED, reason)
        z_good = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), carry.z, carry.z_good)
        new = _Carry(z, state, z_good, carry.step + (reason == _RUNNING).astype(carry.step.dtype), reason,
                     grad_ref, value)
        return new, history

    carry, history = lax.while_loop(cond, body, (carry, history))
    return carry, history


_run_chunk_jit = eqx.filter_jit(_run_chunk)


def _check_fit_arguments(max_steps, gtol, ftol, checkpoint_every):
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 0:
        raise ValueError(f"fit: expected an integer max_steps >= 0, got {max_steps!r}.")
    for name, value in (("gtol", gtol), ("ftol", ftol)):
        if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
            raise ValueError(f"fit: expected a finite {name} >= 0, got {name}={value!r}.")
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"fit: expected an integer checkpoint_every >= 1, got {checkpoint_every!r}.")


def fit(
    loss: Callable[..., jax.Array],
    params: Any,
    *args: Any,
    optimizer: Any = "lbfgs",
    max_steps: int = 200,
    gtol: float = 1e-6,
    ftol: float = 0.0,
    constraints: Any = None,
    bounds: tuple[Any, Any] | None = None,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    resume: bool = False,
    throw: bool = True,
) -> FitResult:
    r"""Minimise `loss(params, *args)` over a pytree of parameters.

    Arguments:
        loss: scalar loss, differentiable in `params` (jit-able: it runs
            inside one compiled loop).
        params: the initial parameters, any pytree of inexact arrays.
        *args: further arrays handed to `loss` unchanged (data, masks).
        optimizer: `"lbfgs"` (optax's L-BFGS with a zoom line search; with
            `bounds`, L-BFGS-B) or any `optax.GradientTransformation`, e.g.
            `optax.adam(1e-2)`.
        max_steps: the most optimizer steps.
        gtol: stop when the gradient norm (projected, with bounds) falls below
            `gtol` times its value at the start.
        ftol: stop when one step changes the loss by at most `ftol * |loss|`
            (0 turns this off).
        constraints: `None` or a pytree prefix of `params` with entries
            `None`, `fd.inverse.Positive()` or `fd.inverse.Interval(lo, hi)`;
            the optimizer then works on unconstrained variables (log or logit).
        bounds: `(lower, upper)`, pytrees like `params` (or scalars), for box
            constraints enforced by projection (L-BFGS-B for `"lbfgs"`).
            Use either `constraints` or `bounds`.
        progress: show a progress bar (tqdm if installed, else a line per chunk on stderr).
        checkpoint: a file path; the state is written there every
            `checkpoint_every` steps (atomically: a killed run leaves the last
            complete checkpoint).
        checkpoint_every: steps between checkpoints and progress updates.
        resume: continue from `checkpoint` if it exists (same loss, shapes and
            options); the result equals that of an uninterrupted run.
        throw: raise `FitDivergedError` when the loss or gradient becomes
            non-finite (the checkpoint keeps the last good state); with
            `False`, return the last finite iterate with `reason="non-finite"`.

    Returns:
        FitResult: the parameters, the history of loss and gradient
            norm, the number of steps and why it stopped.

    Raises:
        ValueError/TypeError: bad options or parameters outside their constraints.
        FitDivergedError: non-finite loss or gradient (with `throw=True`), naming the step.
    """
    start_time = time.perf_counter()
    _check_fit_arguments(max_steps, gtol, ftol, checkpoint_every)
    if constraints is not None and bounds is not None:
        raise ValueError("fit: pass either constraints (reparameterisation) or bounds (projection), not both.")
    if resume and checkpoint is None:
        raise ValueError("fit: resume=True needs checkpoint=<path> to resume from.")
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves or not all(eqx.is_inexact_array(leaf) for leaf in leaves):
        raise TypeError(
            "fit: params must be a non-empty pytree of floating-point arrays; got leaf types "
            f"{sorted({type(leaf).__name__ for leaf in leaves})}. Convert with jnp.asarray(x, dtype=float)."
        )
    dtype = jnp.result_type(*leaves)

    z0 = to_unconstrained(constraints, params)
    if bounds is not None:
        bounds = _broadcast_bounds(bounds, params)
    backend = make_backend(optimizer, bounds)

    objective = _Objective(loss, constraints, tuple(jnp.dtype(leaf.dtype) for leaf in jax.tree_util.tree_leaves(z0)))
    value_shape = jax.eval_shape(objective, z0, *args)
    if value_shape.shape != ():
        raise ValueError(f"fit: loss must return a scalar, got shape {value_shape.shape}.")

    state0 = backend.init(lambda z: objective(z, *args), z0)
    carry = _Carry(z0, state0, z0, jnp.asarray(0), jnp.asarray(_RUNNING), jnp.asarray(jnp.nan, dtype),
                   jnp.asarray(jnp.nan, dtype))
    # Strong dtypes throughout, as a checkpoint restores them: a resumed run reuses the compiled program.
    carry = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=x.dtype) if eqx.is_array(x) else x, carry)
    history: list[np.ndarray] = []
    resumed_from = None
    path = Path(checkpoint) if checkpoint is not None else None
    if resume and path.exists():
        carry, history = _load_checkpoint(path, carry)
        resumed_from = int(carry.step)

    length = checkpoint_every
    # Limits are traced, not constants: a resumed run with other limits runs the same program,
    # and a second fit of the same loss (same function object) reuses the compiled chunk.
    limits = (jnp.asarray(max_steps), jnp.asarray(gtol, dtype), jnp.asarray(ftol, dtype))
    compile_before = _COMPILE_SECONDS[0]

    def compiled(carry, args, chunk_end, limits):
        return _run_chunk_jit(objective, backend, carry, args, chunk_end, *limits, length=length)

    bar = _Progress(max_steps, enabled=progress, initial=int(carry.step))
    try:
        while int(carry.reason) == _RUNNING:
            chunk_end = min(int(carry.step) + length, max_steps + 1)
            first = int(carry.step)
            carry, block = compiled(carry, args, jnp.asarray(chunk_end), limits)
            reason = int(carry.reason)
            # one evaluation per step taken, plus the one at which the run stopped
            evaluated = int(carry.step) - first + (reason != _RUNNING)
            history.append(np.asarray(block)[:, :evaluated])
            bar.update(int(carry.step), float(history[-1][0, -1]) if evaluated else float("nan"))
            if path is not None and reason != _NONFINITE:
                _save_checkpoint(path, carry, np.concatenate(history, axis=1))
    finally:
        bar.close()

    compile_time = _COMPILE_SECONDS[0] - compile_before
    reason = int(carry.reason)
    full = np.concatenate(history, axis=1) if history else np.zeros((2, 0))
    steps = int(carry.step)
    if reason == _NONFINITE:
        where = f"; the last good state is in {path}" if path is not None else ""
        message = (f"fit: the loss or its gradient became non-finite at step {steps} "
                   f"(loss {full[0, -1]:.4g}, gradient norm {full[1, -1]:.4g}){where}. Lower the "
                   "learning rate, start closer, or constrain the parameters.")
        if throw:
            raise FitDivergedError(message)
        final_z = carry.z_good
    else:
        final_z = carry.z
    return FitResult(
        params=to_constrained(constraints, final_z),
        history=FitHistory(loss=full[0], grad_norm=full[1]),
        steps=steps,
        converged=reason in (_GTOL, _FTOL),
        reason=_REASONS[reason],
        wall_time_s=time.perf_counter() - start_time,
        compile_time_s=compile_time,
        resumed_from=resumed_from,
    )


def _broadcast_bounds(bounds, params):
    if not (isinstance(bounds, tuple) and len(bounds) == 2):
        raise ValueError(f"fit: bounds must be a pair (lower, upper), got {bounds!r}.")

    def expand(bound):
        if jnp.ndim(bound) == 0 and not isinstance(bound, (dict, list, tuple)):
            return jax.tree_util.tree_map(lambda p: jnp.full(p.shape, bound, p.dtype), params)
        try:
            return jax.tree_util.tree_map(lambda b, p: jnp.broadcast_to(jnp.asarray(b, p.dtype), p.shape), bound, params)
        except (ValueError, TypeError) as e:
            raise ValueError(f"fit: each bound must be a scalar or a pytree like params; {e}") from None

    lower, upper = (expand(b) for b in bounds)
    inside = jax.tree_util.tree_map(lambda lo, p, hi: bool(jnp.all((lo <= p) & (p <= hi))), lower, params, upper)
    if not all(jax.tree_util.tree_leaves(inside)):
        raise ValueError("fit: the initial parameters lie outside bounds; start inside (lower <= params <= upper).")
    return lower, upper


class _Progress:
    def __init__(self, total, *, enabled, initial):
        self.bar = None
        self.enabled = enabled
        self.total = total
        self.last = initial
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, initial=initial, desc="fit", unit="step", file=sys.stderr)

    def update(self, step, loss):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.last)
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        else:
            print(f"fit: step {step}/{self.total}, loss {loss:.6g}", file=sys.stderr, flush=True)
        self.last = step

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _fingerprint(carry: _Carry) -> str:
    arrays, _ = eqx.partition(carry, eqx.is_array)
    leaves = jax.tree_util.tree_leaves(arrays)
    return json.dumps([str(jax.tree_util.tree_structure(arrays))] + [[list(x.shape), str(x.dtype)] for x in leaves])


def _save_checkpoint(path: Path, carry: _Carry, history: np.ndarray) -> None:
    arrays, _ = eqx.partition(carry, eqx.is_array)
    leaves = {f"leaf_{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(arrays))}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, version=np.asarray(_CHECKPOINT_VERSION), fingerprint=np.asarray(_fingerprint(carry)),
                 history=history, **leaves)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_checkpoint(path: Path, template: _Carry):
    try:
        with np.load(path) as data:
            if int(data["version"]) != _CHECKPOINT_VERSION:
                raise ValueError(f"checkpoint format {int(data['version'])}, expected {_CHECKPOINT_VERSION}")
            if str(data["fingerprint"]) != _fingerprint(template):
                raise ValueError("it was written for parameters or an optimizer of another structure or shape")
            arrays, static = eqx.partition(template, eqx.is_array)
            treedef = jax.tree_util.tree_structure(arrays)
            count = treedef.num_leaves
            loaded = [jnp.asarray(data[f"leaf_{i}"]) for i in range(count)]
            history = np.asarray(data["history"])
    except (OSError, KeyError, ValueError, EOFError) as e:
        raise ValueError(
            f"fit: cannot resume from {path}: {e}. Delete the file to start afresh, or resume with the "
            "same loss, parameters and options."
        ) from None
    carry = eqx.combine(jax.tree_util.tree_unflatten(treedef, loaded), static)
    if int(carry.reason) == _MAX_STEPS:
        # Continue a run that used up its steps: its last iterate is evaluated again.
        carry = eqx.tree_at(lambda c: c.reason, carry, jnp.asarray(_RUNNING))
        history = history[:, :-1]
    return carry, [history]
