"""Krylov solvers (CG, BiCGStab, restarted GMRES) with convergence reporting.

By default the iterations run in `lax.while_loop`s and are never
differentiated through: `jaxfd.solve` wraps them in `lax.custom_linear_solve`,
so derivatives cost one more (transposed) solve and no stored iterations.
Only when the caller asks (`fd.solve(..., differentiate="unrolled")`) do they
run in a bounded loop that reverse mode can go through, storing every
iteration up to `max_steps`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["AbstractLinearSolver", "CG", "BiCGStab", "GMRES", "default_rtol", "tight_rtol", "iterate"]


def _dot(a, b):
    return jnp.vdot(a, b).real


def _norm(a):
    return jnp.sqrt(_dot(a, a))


def _safe_divide(a, b):
    """a / b, and 0 where b == 0 (the inner where keeps reverse mode finite too)."""
    nonzero = b != 0
    return jnp.where(nonzero, a / jnp.where(nonzero, b, 1), 0)


def default_rtol(dtype) -> float:
    """The relative tolerance a solver uses when `rtol=None`: what the precision can reach.

    1e-8 in float64; 1e-5 in float32 (a residual can only be computed to
    about eps * ||A|| ||x||, so 1e-8 would never be met); 1e-2 in 16-bit floats.
    """
    eps = float(jnp.finfo(dtype).eps)
    if eps < 1e-10:
        return 1e-8
    if eps < 1e-5:
        return 1e-5
    return 1e-2


def tight_rtol(dtype) -> float:
    """1e-10 in float64, else `default_rtol(dtype)`: for inner solves whose error feeds an
    outer iteration (Newton steps, implicit time steps)."""
    return 1e-10 if jnp.finfo(dtype).eps < 1e-10 else default_rtol(dtype)


def iterate(cond, body, init, max_steps: int, unrolled: bool):
    """`lax.while_loop(cond, body, init)`, or with `unrolled=True` a loop of at most
    `max_steps` iterations that reverse mode can differentiate (it stores them all)."""
    if not unrolled:
        return lax.while_loop(cond, body, init)

    # A scan of max_steps conditional iterations: after convergence the identity
    # branch runs (no operator applications), and reverse mode keeps the residuals
    # of every iteration, which is what unrolled differentiation means.
    def step(state, _):
        return lax.cond(cond(state), body, lambda s: s, state), None

    return lax.scan(step, init, None, length=max_steps)[0]


class AbstractLinearSolver(eqx.Module):
    """A linear solver: `run(matvec, b, x0, precondition) -> (x, iterations, residual_norm)`.

    `rtol`/`atol`: stop when `||b - A x|| <= atol + rtol * ||b||`; `rtol=None`
    (the default) is `default_rtol(b.dtype)`: 1e-8 in float64, 1e-5 in float32.
    `max_steps`: iteration limit (for GMRES: inner iterations in total).
    `run(..., unrolled=True)` runs the iterations in a loop reverse mode can go
    through (`fd.solve(..., differentiate="unrolled")`).
    """

    rtol: eqx.AbstractVar[float | None]
    atol: eqx.AbstractVar[float]
    max_steps: eqx.AbstractVar[int]
    needs_symmetric: ClassVar[bool] = False
    # appended to fd.solve's non-convergence error by solvers that can stop early
    breakdown_hint: ClassVar[str] = ""

    @abc.abstractmethod
    def run(self, matvec: Callable, b, x0, precondition: Callable, *, unrolled: bool = False):
        ...

    def effective_rtol(self, dtype) -> float:
        """`rtol`, or the dtype's default when it is `None`."""
        return default_rtol(dtype) if self.rtol is None else self.rtol

    def tolerance(self, b):
        return self.atol + self.effective_rtol(b.dtype) * _norm(b)


def _check_tols(rtol, atol, max_steps, name):
    if rtol is None:
        rtol = 1.0  # dtype-dependent default, positive
    if not (rtol >= 0 and atol >= 0) or (rtol == 0 and atol == 0):
        raise ValueError(
            f"{name}: expected rtol >= 0 and atol >= 0, not both zero; got rtol={rtol}, atol={atol}."
        )
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"{name}: expected an integer max_steps >= 1, got {max_steps!r}.")


class CG(AbstractLinearSolver):
    """Preconditioned conjugate gradients, for symmetric positive (or negative) definite A."""

    rtol: float | None = None
    atol: float = 0.0
    max_steps: int = 10_000
    needs_symmetric: ClassVar[bool] = True

    def __check_init__(self):
        _check_tols(self.rtol, self.atol, self.max_steps, "CG")

    def run(self, matvec, b, x0, precondition, *, unrolled=False):
        tol = self.tolerance(b)
        r = b - matvec(x0)

        def cond(state):
            _, r, _, _, k = state
            return (_norm(r) > tol) & (k < self.max_steps)

        def body(state):
            # The preconditioner is applied at the top of the iteration (and nowhere
            # else), so the compiled program holds one copy of it: a multigrid cycle
            # is a large program, and two copies doubled the compile time.
            x, r, p, rz_old, k = state
            z = precondition(r)
            rz = _dot(r, z)
            p = z + jnp.where(k > 0, rz / rz_old, 0) * p  # p = z on the first iteration
            ap = matvec(p)
            alpha = rz / _dot(p, ap)
            return x + alpha * p, r - alpha * ap, p, rz, k + 1

        init = (x0, r, jnp.zeros_like(r), jnp.ones_like(_dot(r, r)), jnp.asarray(0))
        x, r, _, _, k = iterate(cond, body, init, self.max_steps, unrolled)
        return x, k, _norm(r)


class BiCGStab(AbstractLinearSolver):
    """Preconditioned BiCGStab (van der Vorst), for general non-singular A."""

    breakdown_hint: ClassVar[str] = (
        " BiCGStab also stops early when its recurrence broke down (a zero inner product short "
        "of the tolerance; return_info.iterations says when): try fd.GMRES(), which does not."
    )

    rtol: float | None = None
    atol: float = 0.0
    max_steps: int = 10_000

    def __check_init__(self):
        _check_tols(self.rtol, self.atol, self.max_steps, "BiCGStab")

    def run(self, matvec, b, x0, precondition, *, unrolled=False):
        tol = self.tolerance(b)
        r = b - matvec(x0)
        r_hat = r
        one = jnp.ones((), r.dtype)
        zeros = jnp.zeros_like(r)

        def cond(state):
            *_, residual, k, broken = state
            return (residual > tol) & (k < self.max_steps) & ~broken

        def body(state):
            x, r, p, v, rho, alpha, omega, _, k, _ = state
            rho_new = _dot(r_hat, r)
            beta = _safe_divide(rho_new, rho) * _safe_divide(alpha, omega)
            p = r + beta * (p - omega * v)
            p_hat = precondition(p)
            v = matvec(p_hat)
            alpha = _safe_divide(rho_new, _dot(r_hat, v))
            s = r - alpha * v
            s_hat = precondition(s)
            t = matvec(s_hat)
            # s = 0 (converged at the half step, e.g. A a multiple of the identity) gives
            # t = 0 and omega = 0/0: take omega = 0, so that x and r keep the half step
            omega = _safe_divide(_dot(t, s), _dot(t, t))
            x = x + alpha * p_hat + omega * s_hat
            r = s - omega * t
            residual = _norm(r)
            # rho = 0 or omega = 0 short of the tolerance: the recurrence cannot go on
            broken = (residual > tol) & ((rho_new == 0) | (omega == 0))
            return x, r, p, v, rho_new, alpha, omega, residual, k + 1, broken

        init = (x0, r, zeros, zeros, one, one, one, _norm(r), jnp.asarray(0), jnp.asarray(False))
        x, r, *_, k, _ = iterate(cond, body, init, self.max_steps, unrolled)
        return x, k, _norm(b - matvec(x))


class GMRES(AbstractLinearSolver):
    """Restarted GMRES(m) with modified Gram-Schmidt and Givens rotations; right-preconditioned."""

    rtol: float | None = None
    atol: float = 0.0
    max_steps: int = 10_000
    restart: int = 30

    def __check_init__(self):
        _check_tols(self.rtol, self.atol, self.max_steps, "GMRES")
        if isinstance(self.restart, bool) or not isinstance(self.restart, int) or self.restart < 1:
            raise ValueError(f"GMRES: expected an integer restart >= 1, got {self.restart!r}.")

    def run(self, matvec, b, x0, precondition, *, unrolled=False):
        tol = self.tolerance(b)
        m = self.restart
        shape, dtype = b.shape, b.dtype
        n = b.size

        def cycle(x, budget):
            r = (b - matvec(x)).ravel()
            beta = _norm(r)
            basis = jnp.zeros((m + 1, n), dtype).at[0].set(r / jnp.where(beta > 0, beta, 1))
            hess = jnp.zeros((m + 1, m), dtype)
            cs = jnp.zeros((m,), dtype)
            sn = jnp.zeros((m,), dtype)
            g = jnp.zeros((m + 1,), dtype).at[0].set(beta)

            def cond(state):
                j, _, _, _, _, g = state
                return (j < jnp.minimum(m, budget)) & (jnp.abs(g[j]) > tol)

            def body(state):
                j, basis, hess, cs, sn, g = state
                w = matvec(precondition(basis[j].reshape(shape))).ravel()

                def gram_schmidt(i, carry):
                    w, h = carry
                    hij = jnp.where(i <= j, _dot(basis[i], w), 0.0)
                    return w - hij * basis[i], h.at[i].set(hij)

                w, h = lax.fori_loop(0, m, gram_schmidt, (w, jnp.zeros((m + 1,), dtype)))
                hnorm = _norm(w)
                h = h.at[j + 1].set(hnorm)
                basis = basis.at[j + 1].set(w / jnp.where(hnorm > 0, hnorm, 1))

                def rotate(i, h):
                    active = i < j
                    hi, hi1 = h[i], h[i + 1]
                    new_i = jnp.where(active, cs[i] * hi + sn[i] * hi1, hi)
                    new_i1 = jnp.where(active, -sn[i] * hi + cs[i] * hi1, hi1)
                    return h.at[i].set(new_i).at[i + 1].set(new_i1)

                h = lax.fori_loop(0, m, rotate, h)
                denom = jnp.sqrt(h[j] ** 2 + h[j + 1] ** 2)
                c = jnp.where(denom > 0, h[j] / denom, 1.0)
                s = jnp.where(denom > 0, h[j + 1] / denom, 0.0)
                h = h.at[j].set(c * h[j] + s * h[j + 1]).at[j + 1].set(0.0)
                cs, sn = cs.at[j].set(c), sn.at[j].set(s)
                g = g.at[j + 1].set(-s * g[j]).at[j].set(c * g[j])
                return j + 1, basis, hess.at[:, j].set(h), cs, sn, g

            j, basis, hess, _, _, g = iterate(cond, body, (jnp.asarray(0), basis, hess, cs, sn, g),
                                              m, unrolled)
            # back substitution on the leading j x j upper-triangular block
            mask = jnp.arange(m) < j
            upper = jnp.where(mask[:, None] & mask[None, :], hess[:m], 0.0)
            upper = upper + jnp.diag(jnp.where(mask, 0.0, 1.0))
            y = jax.scipy.linalg.solve_triangular(upper, jnp.where(mask, g[:m], 0.0), lower=False)
            dx = (basis[:m].T @ y).reshape(shape)
            return x + precondition(dx), j

        def outer_cond(state):
            _, res, k = state
            return (res > tol) & (k < self.max_steps)

        def outer_body(state):
            x, _, k = state
            x, j = cycle(x, self.max_steps - k)
            return x, _norm(b - matvec(x)), k + j

        init = (x0, _norm(b - matvec(x0)), jnp.asarray(0))
        # every inner iteration counts against max_steps; the last cycle stops at the budget
        cycles = -(-self.max_steps // m) + 1
        x, res, k = iterate(outer_cond, outer_body, init, cycles, unrolled)
        return x, k, res
