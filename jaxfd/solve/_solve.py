"""`solve`: a linear solve with implicit differentiation and convergence reporting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .._linear import LinearOperator
from ._krylov import CG, GMRES, AbstractLinearSolver

__all__ = ["solve", "SolveInfo"]


class SolveInfo(eqx.Module):
    """Convergence report of a linear solve."""

    iterations: jax.Array
    residual_norm: jax.Array
    tolerance: jax.Array
    converged: jax.Array


_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.UnexpectedTracerError,
)


def _symmetry_defect(matvec, like) -> float:
    """Largest relative |<Au, v> - <u, Av>| over random probe pairs (concrete operators only).

    Besides vectors spread over the whole grid, the probes include vectors
    confined to the cells next to the walls: that is where boundary closures
    break symmetry, and on large grids the asymmetry of a few rows would
    otherwise drown in the round-off of the whole inner product.
    """
    k1, k2 = jax.random.split(jax.random.PRNGKey(1234))
    u = jax.random.normal(k1, like.shape, like.dtype)
    v = jax.random.normal(k2, like.shape, like.dtype)
    edge = jnp.zeros(like.shape, bool)
    for axis, n in enumerate(like.shape):
        index = jax.lax.broadcasted_iota(jnp.int32, like.shape, axis)
        edge = edge | (index < 6) | (index >= n - 6)
    worst = 0.0
    for a, b in ((u, v), (jnp.where(edge, u, 0), jnp.where(edge, v, 0))):
        aa, ab = matvec(a), matvec(b)
        left, right = jnp.vdot(aa, b), jnp.vdot(a, ab)
        scale = jnp.sum(jnp.abs(aa * b)) + jnp.sum(jnp.abs(a * ab))
        worst = max(worst, float(jnp.abs(left - right) / jnp.where(scale > 0, scale, 1.0)))
    return worst


def _symmetry_tolerance(dtype) -> float:
    # relative to the sum of |products|, round-off stays within a few eps
    return 16 * float(jnp.finfo(dtype).eps)


def _operator_closure(A, b):
    if isinstance(A, LinearOperator):
        if A.shape != tuple(b.shape):
            raise ValueError(
                f"The operator acts on arrays of shape {A.shape}, the right-hand side has shape "
                f"{tuple(b.shape)}."
            )
        return A.matvec, A
    if not callable(A):
        raise TypeError(f"Expected A to be a callable u -> A(u) or an fd.LinearOperator, got {A!r}.")
    return A, None


def _preconditioner(preconditioner, matvec, op, b):
    if preconditioner is None:
        return lambda r: r
    if isinstance(preconditioner, str):
        if preconditioner != "jacobi":
            raise ValueError(f"Expected preconditioner='jacobi', a callable or None, got {preconditioner!r}.")
        linear = op if op is not None else LinearOperator(matvec, b)
        try:
            diag = linear.diagonal()
        except _TRACER_ERRORS:
            raise ValueError(
                "preconditioner='jacobi' needs the operator's stencil structure, which cannot be "
                "probed when A closes over traced values (inside jit/grad); pass "
                "fd.LinearOperator(matvec, like, bandwidth=..., periodic=...) (the per-axis "
                "coupling distance and wrap-around of the stencil) or a callable preconditioner."
            ) from None
        inv = jnp.where(diag != 0, 1.0 / jnp.where(diag != 0, diag, 1.0), 1.0).astype(b.dtype)
        return lambda r: inv * r
    if isinstance(preconditioner, LinearOperator):
        return preconditioner.matvec
    if callable(preconditioner):
        return preconditioner
    raise TypeError(f"Expected a preconditioner callable, 'jacobi' or None, got {preconditioner!r}.")


def solve(
    A: Callable | LinearOperator,
    b,
    solver: AbstractLinearSolver | None = None,
    *,
    preconditioner: Any = None,
    x0=None,
    symmetric: bool | None = None,
    return_info: bool = False,
    throw: bool = True,
    differentiate: str = "implicit",
):
    r"""Solve $A x = b$ for a matrix-free linear operator, differentiably.

    Reverse- and forward-mode derivatives with respect to `b` and to
    everything `A` closes over (coefficient fields, boundary values) use the
    implicit function theorem via `lax.custom_linear_solve`: one more solve
    with $A^T$ per derivative, memory independent of the iteration count.

    Arguments:
        A: a linear callable `u -> A u`, or an `fd.LinearOperator`. For an
            affine operator (non-zero boundary values) split it with
            `fd.LinearOperator.from_affine` and move the offset to `b`.
        b: right-hand side, an array.
        solver: `fd.CG()`, `fd.BiCGStab()` or `fd.GMRES()`. Default: CG when
            `A` is symmetric (declared via `symmetric`, or measured on two
            random vectors when `A` is concrete), GMRES otherwise.
        preconditioner: `None`, `"jacobi"` (the operator's exact diagonal),
            or a callable approximating $A^{-1}$ (e.g. a multigrid cycle).
        x0: initial guess (zeros by default).
        symmetric: declare symmetry (skips the check; selects transpose-free
            differentiation).
        return_info: also return a `SolveInfo`.
        throw: raise (inside jit, via `equinox.error_if`) if the solver did
            not reach its tolerance within `max_steps`.
        differentiate: `"implicit"` (default): derivatives by the implicit
            function theorem, one transposed solve, memory independent of the
            iteration count. `"unrolled"`: reverse mode through the iterations
            themselves (and through a preconditioner built from the
            differentiated values); it stores every iteration up to the
            solver's `max_steps`, so set `max_steps` to what the solve needs.
            For comparisons and for the rare case where the derivative of the
            truncated iteration is wanted.

    Returns:
        `x`, or `(x, info)` with `return_info=True`.

    Raises:
        ValueError: shape mismatch between `A` and `b`; CG given an operator
            measured non-symmetric.
    """
    b = jnp.asarray(b)
    if not jnp.issubdtype(b.dtype, jnp.inexact):
        raise TypeError(f"Expected a floating-point right-hand side, got dtype {b.dtype}.")
    matvec, op = _operator_closure(A, b)
    out_struct = jax.eval_shape(matvec, b)
    if out_struct.shape != b.shape:
        raise ValueError(
            f"A maps arrays of shape {b.shape} to shape {out_struct.shape}; a linear solve needs a "
            "square operator whose output has the right-hand side's shape."
        )
    if x0 is not None and jnp.shape(x0) != b.shape:
        raise ValueError(f"Expected x0 with shape {b.shape}, got {jnp.shape(x0)}.")
    if symmetric is None:
        try:
            symmetric = _symmetry_defect(matvec, b) <= _symmetry_tolerance(b.dtype)
        except _TRACER_ERRORS:
            symmetric = None  # A closes over traced values: cannot measure here
    if solver is None:
        solver = CG() if symmetric else GMRES()
    if not isinstance(solver, AbstractLinearSolver):
        raise TypeError(f"Expected a jaxfd linear solver (fd.CG(), fd.GMRES(), ...), got {solver!r}.")
    if solver.needs_symmetric and symmetric is False:
        raise ValueError(
            f"{type(solver).__name__} needs a symmetric operator, and this one is not symmetric "
            "(measured <Au, v> != <u, Av> on random vectors). Use fd.GMRES() or fd.BiCGStab(), or "
            "pass symmetric=True if the asymmetry is round-off."
        )
    if differentiate not in ("implicit", "unrolled"):
        raise ValueError(
            f"Expected differentiate='implicit' or 'unrolled', got {differentiate!r}. 'implicit' "
            "(the default) differentiates by one adjoint solve; 'unrolled' goes through the iterations."
        )
    precondition = _preconditioner(preconditioner, matvec, op, b)
    x_init = jnp.zeros_like(b) if x0 is None else jnp.asarray(x0, b.dtype)

    def run(mv, rhs):
        x, iterations, residual = solver.run(mv, rhs, lax.stop_gradient(x_init), precondition)
        return x, (iterations, residual)

    def transpose_run(mv_t, rhs):
        # The transposed preconditioner equals the preconditioner for the
        # symmetric ones we build (Jacobi) and for symmetric multigrid cycles.
        x, iterations, residual = solver.run(mv_t, rhs, jnp.zeros_like(rhs), precondition)
        return x, (iterations, residual)

    if differentiate == "unrolled":
        x, iterations, residual = solver.run(matvec, b, x_init, precondition, unrolled=True)
    else:
        x, (iterations, residual) = lax.custom_linear_solve(
            matvec, b, run, transpose_run, symmetric=bool(symmetric), has_aux=True
        )
    tolerance = solver.tolerance(lax.stop_gradient(b))
    converged = residual <= tolerance * (1 + 1e-6)
    if throw:
        x = eqx.error_if(
            x,
            ~converged,
            f"fd.solve: {type(solver).__name__} did not reach its tolerance "
            f"(rtol={solver.effective_rtol(b.dtype)}, "
            f"atol={solver.atol}) within max_steps={solver.max_steps} iterations. Use a "
            "preconditioner, raise max_steps, check that A is non-singular (a pure Neumann or "
            "periodic problem needs a compatible right-hand side), or pass throw=False and "
            "inspect return_info." + solver.breakdown_hint,
        )
    if return_info:
        return x, SolveInfo(iterations, residual, tolerance, converged)
    return x
