r"""Adaptive step-size control for embedded Runge-Kutta pairs.

A step of size $h$ from $(t, u)$ gives the pair's solution $u_{n+1}$ and an
error estimate $e$; with the scaled RMS norm

$$ \lVert e \rVert = \sqrt{\frac{1}{N}\sum_i \Big(\frac{e_i}{\text{atol} + \text{rtol}\,
\max(|u_i|, |u_{n+1,i}|)}\Big)^2} $$

over every entry of every field, the step is accepted when
$\lVert e \rVert \le 1$, and the next step is
$h\,\min(f_{\max}, \max(f_{\min}, s\,\lVert e \rVert^{-1/(q+1)}))$ with $q$
the order of the embedded solution (an integral controller with safety
factor $s$). Steps are shortened to land exactly on every save time and on
$t_1$. A non-finite error estimate counts as a rejection, so a blow-up
shrinks the step until it falls below `dt_min`, which ends the run with an
error.
"""

from __future__ import annotations

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np

from ._steppers import AbstractEmbeddedRK

__all__ = ["Adaptive"]

_RUNNING, _MAX_STEPS, _UNDERFLOW = 0, 1, 2


class Adaptive(eqx.Module):
    """Adaptive time steps for `fd.simulate` with an embedded pair (`fd.Dopri5()`, `fd.BogackiShampine3()`).

    Pass as `fd.simulate(..., dt, stepper=fd.Dopri5(), stepsize=fd.Adaptive(rtol=1e-6))`;
    `dt` is then the first step tried.

    Arguments:
        rtol, atol: relative and absolute tolerances of the local error.
        safety: factor on the optimal step (below 1).
        min_factor, max_factor: bounds on the change of the step from one
            attempt to the next.
        max_steps: the most attempts (accepted and rejected); reaching it
            before `t1` is an error.
        dt_min: the step below which the run stops with an error (default:
            100 machine epsilons of `max(|t|, 1)`).
    """

    rtol: float = 1e-6
    atol: float = 1e-8
    safety: float = 0.9
    min_factor: float = 0.2
    max_factor: float = 5.0
    max_steps: int = 100_000
    dt_min: float | None = None

    def __check_init__(self):
        if not (self.rtol >= 0 and self.atol >= 0 and (self.rtol > 0 or self.atol > 0)):
            raise ValueError(
                f"Adaptive: expected rtol >= 0 and atol >= 0, not both zero; got rtol={self.rtol}, atol={self.atol}."
            )
        if not 0 < self.safety <= 1:
            raise ValueError(f"Adaptive: expected 0 < safety <= 1, got {self.safety}.")
        if not 0 < self.min_factor < 1 < self.max_factor:
            raise ValueError(
                f"Adaptive: expected 0 < min_factor < 1 < max_factor, got {self.min_factor}, {self.max_factor}."
            )
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"Adaptive: expected an integer max_steps >= 1, got {self.max_steps!r}.")
        if self.dt_min is not None and not self.dt_min > 0:
            raise ValueError(f"Adaptive: expected dt_min > 0 (or None), got {self.dt_min!r}.")


def _error_norm(error, u, u_new, rtol, atol):
    total, count = 0.0, 0
    for e, a, b in zip(jax.tree_util.tree_leaves(error), jax.tree_util.tree_leaves(u),
                       jax.tree_util.tree_leaves(u_new)):
        scale = atol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b))
        total = total + jnp.sum((e / scale) ** 2)
        count += e.size
    return jnp.sqrt(total / count)


@eqx.filter_jit
def simulate_adaptive(rhs, u0, args, stepper: AbstractEmbeddedRK, controller: Adaptive, *, t0, t1, dt0,
                      stops, saved_stops, save_t0, checkpoint, checkpoints, throw):
    """The adaptive loop: returns (ts, us, stats). `stops`: times to land on, ending at t1."""
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(u0))
    stops_a = jnp.asarray(stops, dtype)
    is_saved = jnp.asarray(saved_stops)
    n_saves = int(np.sum(saved_stops))
    eps = float(jnp.finfo(dtype).eps)
    dt_min = controller.dt_min
    exponent = -1.0 / (stepper.error_order + 1)
    rtol = jnp.asarray(controller.rtol, dtype)
    atol = jnp.asarray(controller.atol, dtype)

    buffer = jax.tree_util.tree_map(lambda x: jnp.zeros((n_saves, *x.shape), x.dtype), u0)
    init = (jnp.asarray(t0, dtype), u0, jnp.asarray(dt0, dtype), jnp.asarray(0), jnp.asarray(0), buffer,
            jnp.asarray(0), jnp.asarray(0), jnp.asarray(_RUNNING))

    def cond(carry):
        t, u, dt, stop, save, us, accepted, rejected, status = carry
        return (status == _RUNNING) & (stop < len(stops))

    def body(carry):
        t, u, dt, stop, save, us, accepted, rejected, status = carry
        target = stops_a[stop]
        hits = dt >= target - t
        h = jnp.where(hits, target - t, dt)
        u_new, error = stepper.step_with_error(rhs, t, u, h, args)
        norm = _error_norm(error, u, u_new, rtol, atol)
        ok = jnp.isfinite(norm) & (norm <= 1.0)
        safe_norm = jnp.where(norm > 0, norm, 1.0)
        factor = jnp.where(norm > 0, controller.safety * safe_norm**exponent, controller.max_factor)
        factor = jnp.where(jnp.isfinite(norm), jnp.clip(factor, controller.min_factor, controller.max_factor),
                           controller.min_factor).astype(dtype)
        landed = ok & hits
        write = landed & is_saved[stop]
        us = jax.tree_util.tree_map(lambda x, b: b.at[save].set(x, pred=write), u_new, us)
        proposal = h * factor
        # a step shortened to land on a stop says little about the next one: keep the larger
        dt_next = jnp.where(landed & (h < dt), jnp.maximum(proposal, dt), proposal)
        floor = dt_min if dt_min is not None else 100 * eps * jnp.maximum(jnp.abs(t), 1.0)
        u = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), u_new, u)
        t = jnp.where(ok, jnp.where(hits, target, t + h), t)
        stop = stop + landed.astype(stop.dtype)
        attempts = accepted + rejected + 1
        status = jnp.where(dt_next < floor, _UNDERFLOW,
                           jnp.where((attempts >= controller.max_steps) & (stop < len(stops)), _MAX_STEPS, _RUNNING))
        return (t, u, dt_next, stop, save + write.astype(save.dtype), us,
                accepted + ok.astype(accepted.dtype), rejected + (~ok).astype(rejected.dtype), status)

    kind = "bounded" if checkpoint == "none" else "checkpointed"
    out = eqxi.while_loop(cond, body, init, max_steps=controller.max_steps, kind=kind,
                          checkpoints=checkpoints if kind == "checkpointed" else None,
                          buffers=lambda carry: carry[5])
    t, u, dt, stop, save, us, accepted, rejected, status = out
    if save_t0:
        us = jax.tree_util.tree_map(lambda x0, b: jnp.concatenate([x0[None], b]), u0, us)
    if throw:
        us = eqx.branched_error_if(
            us, status != _RUNNING, jnp.maximum(status - 1, 0),
            [
                f"simulate: adaptive stepping used max_steps={controller.max_steps} attempts before reaching "
                f"t1={t1}; raise fd.Adaptive(max_steps=...) or loosen rtol/atol.",
                "simulate: the adaptive step fell below dt_min before reaching t1 (the state may have become "
                "non-finite, or the problem is too stiff for an explicit pair: try an implicit stepper).",
            ],
        )
    stats = {"num_steps": accepted, "num_rejected": rejected, "dt": dt, "t_reached": t,
             "result": status}
    return us, stats
