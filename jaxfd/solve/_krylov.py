"""Krylov solvers (CG, BiCGStab, restarted GMRES) with convergence reporting.

The iterations run in `lax.while_loop`s and are never differentiated
through: `jaxfd.solve` wraps them in `lax.custom_linear_solve`, so
derivatives cost one more (transposed) solve and no stored iterations.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["AbstractLinearSolver", "CG", "BiCGStab", "GMRES"]


def _dot(a, b):
    return jnp.vdot(a, b).real


def _norm(a):
    return jnp.sqrt(_dot(a, a))


class AbstractLinearSolver(eqx.Module):
    """A linear solver: `run(matvec, b, x0, precondition) -> (x, iterations, residual_norm)`.

    `rtol`/`atol`: stop when `||b - A x|| <= atol + rtol * ||b||`.
    `max_steps`: iteration limit (for GMRES: inner iterations in total).
    """

    rtol: eqx.AbstractVar[float]
    atol: eqx.AbstractVar[float]
    max_steps: eqx.AbstractVar[int]
    needs_symmetric: ClassVar[bool] = False

    @abc.abstractmethod
    def run(self, matvec: Callable, b, x0, precondition: Callable):
        ...

    def tolerance(self, b):
        return self.atol + self.rtol * _norm(b)


def _check_tols(rtol, atol, max_steps, name):
    if not (rtol >= 0 and atol >= 0) or (rtol == 0 and atol == 0):
        raise ValueError(
            f"{name}: expected rtol >= 0 and atol >= 0, not both zero; got rtol={rtol}, atol={atol}."
        )
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"{name}: expected an integer max_steps >= 1, got {max_steps!r}.")


class CG(AbstractLinearSolver):
    """Preconditioned conjugate gradients, for symmetric positive (or negative) definite A."""

    rtol: float = 1e-8
    atol: float = 0.0
    max_steps: int = 10_000
    needs_symmetric: ClassVar[bool] = True

    def __check_init__(self):
        _check_tols(self.rtol, self.atol, self.max_steps, "CG")

    def run(self, matvec, b, x0, precondition):
        tol = self.tolerance(b)
        r = b - matvec(x0)
        z = precondition(r)
        p = z
        rz = _dot(r, z)

        def cond(state):
            _, r, _, _, k = state
            return (_norm(r) > tol) & (k < self.max_steps)

        def body(state):
            x, r, p, rz, k = state
            ap = matvec(p)
            alpha = rz / _dot(p, ap)
            x = x + alpha * p
            r = r - alpha * ap
            z = precondition(r)
            rz_new = _dot(r, z)
            p = z + (rz_new / rz) * p
            return x, r, p, rz_new, k + 1

        x, r, _, _, k = lax.while_loop(cond, body, (x0, r, p, rz, jnp.asarray(0)))
        return x, k, _norm(r)


class BiCGStab(AbstractLinearSolver):
    """Preconditioned BiCGStab (van der Vorst), for general non-singular A."""

    rtol: float = 1e-8
    atol: float = 0.0
    max_steps: int = 10_000

    def __check_init__(self):
        _check_tols(self.rtol, self.atol, self.max_steps, "BiCGStab")

    def run(self, matvec, b, x0, precondition):
        tol = self.tolerance(b)
        r = b - matvec(x0)
        r_hat = r
        one = jnp.ones((), r.dtype)
        zeros = jnp.zeros_like(r)

        def cond(state):
            return (state[-2] > tol) & (state[-1] < self.max_steps)

        def body(state):
            x, r, p, v, rho, alpha, omega, _, k = state
            rho_new = _dot(r_hat, r)
            beta = (rho_new / rho) * (alpha / omega)
            p = r + beta * (p - omega * v)
            p_hat = precondition(p)
            v = matvec(p_hat)
            alpha = rho_new / _dot(r_hat, v)
            s = r - alpha * v
            s_hat = precondition(s)
            t = matvec(s_hat)
            omega = _dot(t, s) / _dot(t, t)
            x = x + alpha * p_hat + omega * s_hat
            r = s - omega * t
            return x, r, p, v, rho_new, alpha, omega, _norm(r), k + 1

        init = (x0, r, zeros, zeros, one, one, one, _norm(r), jnp.asarray(0))
        x, r, *_, k = lax.while_loop(cond, body, init)
        return x, k, _norm(b - matvec(x))


class GMRES(AbstractLinearSolver):
    """Restarted GMRES(m) with modified Gram-Schmidt and Givens rotations; right-preconditioned."""

    rtol: float = 1e-8
    atol: float = 0.0
    max_steps: int = 10_000
    restart: int = 30

    def __check_init__(self):
        _check_tols(self.rtol, self.atol, self.max_steps, "GMRES")
        if isinstance(self.restart, bool) or not isinstance(self.restart, int) or self.restart < 1:
            raise ValueError(f"GMRES: expected an integer restart >= 1, got {self.restart!r}.")

    def run(self, matvec, b, x0, precondition):
        tol = self.tolerance(b)
        m = self.restart
        shape, dtype = b.shape, b.dtype
        n = b.size

        def cycle(x):
            r = (b - matvec(x)).ravel()
            beta = _norm(r)
            basis = jnp.zeros((m + 1, n), dtype).at[0].set(r / jnp.where(beta > 0, beta, 1))
            hess = jnp.zeros((m + 1, m), dtype)
            cs = jnp.zeros((m,), dtype)
            sn = jnp.zeros((m,), dtype)
            g = jnp.zeros((m + 1,), dtype).at[0].set(beta)

            def cond(state):
                j, _, _, _, _, g = state
                return (j < m) & (jnp.abs(g[j]) > tol)

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

            j, basis, hess, _, _, g = lax.while_loop(cond, body, (0, basis, hess, cs, sn, g))
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
            x, j = cycle(x)
            return x, _norm(b - matvec(x)), k + j

        x, res, k = lax.while_loop(outer_cond, outer_body, (x0, _norm(b - matvec(x0)), jnp.asarray(0)))
        return x, k, res
