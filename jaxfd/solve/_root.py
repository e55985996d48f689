r"""`root`: Newton-Krylov for F(u, args) = 0, differentiated implicitly.

Newton steps solve $J \delta = -F$ matrix-free ($J v$ is a `jax.jvp` of $F$)
with a Krylov method from `jaxfd.solve`, followed by a backtracking line
search on $\|F\|^2$. Derivatives of the root with respect to anything $F$
depends on (`args`, closed-over fields) come from the implicit function
theorem through `lax.custom_root`: one linear solve with the Jacobian (or
its transpose), never by differentiating the Newton iterations.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from ._krylov import GMRES, AbstractLinearSolver, tight_rtol
from ._solve import solve

__all__ = ["NewtonKrylov", "RootInfo", "root"]


class NewtonKrylov(eqx.Module):
    """Inexact Newton with a Krylov inner solve and backtracking line search.

    Stops when `||F(u)|| <= atol + rtol * ||F(u0)||`. `rtol=None` (default)
    follows the dtype: 1e-10 in float64, 1e-5 in float32 (a residual cannot be
    computed more accurately than that). The linear solver's default
    tolerance follows the dtype the same way (`fd.GMRES`'s `rtol=None`).
    """

    rtol: float | None = None
    atol: float = 0.0
    max_steps: int = 50
    linear_solver: AbstractLinearSolver = GMRES(restart=50, max_steps=2000)
    max_backtracks: int = 20

    def effective_rtol(self, dtype) -> float:
        if self.rtol is not None:
            return self.rtol
        return tight_rtol(dtype)

    def __check_init__(self):
        rtol = 1.0 if self.rtol is None else self.rtol
        if not (rtol >= 0 and self.atol >= 0) or (rtol == 0 and self.atol == 0):
            raise ValueError(
                f"NewtonKrylov: expected rtol >= 0 and atol >= 0, not both zero; got rtol={self.rtol}, "
                f"atol={self.atol}."
            )
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"NewtonKrylov: expected an integer max_steps >= 1, got {self.max_steps!r}.")


class RootInfo(eqx.Module):
    iterations: jax.Array
    residual_norm: jax.Array
    converged: jax.Array


def _norm(x):
    return jnp.sqrt(jnp.vdot(x, x).real)


def root(F: Callable, u0, args=None, solver: NewtonKrylov = NewtonKrylov(), *,
         return_info: bool = False, throw: bool = True):
    r"""Solve $F(u, \text{args}) = 0$ for `u` (same shape/pytree as `u0`).

    Arguments:
        F: residual function `F(u, args)` returning a pytree like `u`.
        u0: initial guess.
        args: parameters; gradients of the root with respect to them (and to
            arrays `F` closes over) are implicit.
        solver: `fd.NewtonKrylov(...)`.
        return_info: also return a `RootInfo` (iterations, residual norm, converged).
        throw: raise inside jit (via `equinox.error_if`) if Newton did not converge.

    Returns:
        The root, or `(root, info)`.
    """
    if not isinstance(solver, NewtonKrylov):
        raise TypeError(f"Expected solver to be fd.NewtonKrylov(...), got {solver!r}.")
    flat0, unravel = ravel_pytree(u0)
    out = eqx.filter_eval_shape(F, u0, args)
    if jax.tree_util.tree_structure(out) != jax.tree_util.tree_structure(u0) or any(
        a.shape != b.shape for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(u0))
    ):
        raise ValueError("F(u, args) must return a residual with the structure and shapes of u0.")

    def residual(flat_u):
        return ravel_pytree(F(unravel(flat_u), args))[0]

    def newton(res_fn, x0):
        r0 = _norm(res_fn(x0))
        tol = solver.atol + solver.effective_rtol(x0.dtype) * r0

        def cond(state):
            _, rnorm, k = state
            return (rnorm > tol) & (k < solver.max_steps)

        def body(state):
            x, rnorm, k = state
            r = res_fn(x)

            def jacobian(v):
                return jax.jvp(res_fn, (x,), (v,))[1]

            delta = solve(jacobian, -r, solver.linear_solver, throw=False)

            def ls_cond(ls):
                t, trial_norm, j = ls
                return (trial_norm > (1 - 1e-4 * t) * rnorm) & (j < solver.max_backtracks)

            def ls_body(ls):
                t, _, j = ls
                t = 0.5 * t
                return t, _norm(res_fn(x + t * delta)), j + 1

            one = jnp.ones((), x.dtype)
            t, trial_norm, _ = lax.while_loop(ls_cond, ls_body, (one, _norm(res_fn(x + delta)), 0))
            return x + t * delta, trial_norm, k + 1

        x, rnorm, k = lax.while_loop(cond, body, (x0, r0, jnp.asarray(0)))
        # aux outputs of custom_root must be inexact (integer tangents are rejected)
        return x, (k.astype(x.dtype), rnorm, (rnorm <= tol).astype(x.dtype))

    def tangent_solve(linearized, rhs):
        # No convergence error here: JAX transposes this function for reverse mode,
        # and an error_if (a lax.cond on the solve's residual) cannot be transposed.
        return solve(linearized, rhs, solver.linear_solver, throw=False)

    flat_root, (iterations, rnorm, converged) = lax.custom_root(
        residual, lax.stop_gradient(flat0), newton, tangent_solve, has_aux=True)
    iterations = lax.stop_gradient(iterations).astype(jnp.int32)
    converged = lax.stop_gradient(converged) > 0
    rnorm = lax.stop_gradient(rnorm)
    if throw:
        flat_root = eqx.error_if(
            flat_root, ~converged,
            f"fd.root: Newton-Krylov did not converge within max_steps={solver.max_steps} "
            f"(rtol={solver.effective_rtol(flat0.dtype)}, atol={solver.atol}). Start closer to a root, "
            "raise max_steps, "
            "or pass throw=False and inspect return_info.",
        )
    result = unravel(flat_root)
    if return_info:
        return result, RootInfo(iterations, rnorm, converged)
    return result
