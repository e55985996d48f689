r"""Hessian-free trust-region Newton-CG (Steihaug-Toint) on any pytree of parameters.

Each iteration minimises the quadratic model
$m(p) = f + g^\top p + \tfrac12 p^\top H p$ over the ball $\lVert p\rVert \le \Delta$
approximately, by conjugate gradients on Hessian-vector products
(Steihaug 1983, Toint 1981): CG stops at the boundary when an iterate
leaves the ball or a direction of non-positive curvature appears, and
otherwise when the residual drops below
$\min(\tfrac12, \sqrt{\lVert g\rVert})\,\lVert g\rVert$ (superlinear
convergence, Nocedal & Wright, *Numerical Optimization*, 2nd ed., Alg. 7.2).
The step is accepted when the ratio $\rho$ of actual to predicted reduction
exceeds `eta`, and the radius follows the standard rule: quarter it when
$\rho < 1/4$, double it (up to `max_radius`) when $\rho > 3/4$ and the step
reached the boundary (Alg. 4.1).

Hessian-vector products are exact (forward-over-reverse: the `jvp` of the
gradient, about the cost of two gradients) or finite differences of
gradients along the direction (`jaxfd.directional_difference` on the
gradient, central: two gradients, error $O(\varepsilon^2)$). No Hessian is
ever formed. Optionally (`preconditioner="jacobi"`) the problem is scaled by
the square root of the Hessian's diagonal at every iteration, which makes
the trust region an ellipsoid and CG effective on badly scaled problems.
The whole loop is one `lax.while_loop` inside one compiled program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from .._directional import directional_difference

__all__ = ["TrustRegionNewtonCG", "TrustRegionInfo", "trust_region_minimize"]

_HVP_KINDS = ("exact", "finite_difference")
_PRECONDITIONERS = (None, "jacobi")
#: a rejected step predicting less than this many ulps of f ends the run (result 2)
_STALL = 16
#: diagonal entries below this fraction of the largest count as no curvature (Jacobi scaling)
_DIAGONAL_FLOOR = 1e-12
_MESSAGES = {
    0: "converged: gradient norm <= max(gtol, rtol * initial gradient norm)",
    1: "max_steps reached",
    2: "stalled: the trust radius fell below min_radius or a rejected step predicted a decrease "
       "at the round-off level of f (no further progress possible at this precision)",
    3: "non-finite function value or gradient at the starting point",
    4: "converged: an accepted step decreased f by less than ftol * |f|",
}


def _is_number(x) -> bool:
    try:
        float(x)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return False
    return True


class TrustRegionNewtonCG(eqx.Module):
    r"""Settings of the Hessian-free trust-region Newton-CG method (Steihaug-Toint CG).

    Arguments:
        max_steps: maximum number of outer (trust-region) iterations.
        gtol: stop when the Euclidean norm of the gradient (all parameters
            together) is `<= gtol`.
        rtol: also stop when it is `<= rtol` times its value at the start
            (0 by default: absolute test only).
        ftol: also stop when an accepted step decreases $f$ by less than
            `ftol * |f|` (0 by default: off). Useful on ill-conditioned
            problems whose gradient norm stalls above round-off while $f$ no
            longer moves.
        initial_radius: initial trust radius $\Delta_0 > 0$.
        max_radius: largest trust radius, `>= initial_radius`.
        eta: accept a step when $\rho > \eta$, $0 \le \eta < 1/4$.
        min_radius: stop (unconverged, `result=2`) when the radius falls below
            this; round-off makes $\rho$ meaningless for tinier steps. The run
            also stops with `result=2` when a rejected step predicted a
            decrease of $f$ within 16 ulps of $f$.
        cg_max_steps: cap on CG iterations per outer step (default: the
            number of parameters).
        hvp: `"exact"` (jvp of the gradient) or `"finite_difference"`
            (central difference of gradients, `jaxfd.directional_difference`).
        fd_eps: length of the finite-difference perturbation
            $\varepsilon\, v / \lVert v\rVert$ (default: the cube root of the
            dtype's machine epsilon, which balances the $O(\varepsilon^2)$
            truncation of the central difference against round-off).
        preconditioner: `None`, or `"jacobi"`: scale the problem by
            $D = \sqrt{|\operatorname{diag} H|}$ at every iteration (the exact
            diagonal, from $n$ Hessian-vector products in one batch), so the
            trust region becomes the ellipsoid $\lVert D p\rVert \le \Delta$ and
            CG works on $D^{-1} H D^{-1}$. For badly scaled problems with a few
            (up to some hundreds of) parameters, such as the coefficients and
            moments of a learnable PDE: CG then needs far fewer iterations
            and Newton's fast local convergence returns. Coordinates whose
            diagonal entry is below $10^{-12}$ of the largest (no measurable
            curvature) are scaled like the stiffest one.

    Raises:
        ValueError: a non-positive (or negative) radius, `max_radius <
            initial_radius`, `eta` outside $[0, 1/4)$, non-positive `gtol` or
            `fd_eps`, `max_steps < 1`, an unknown `hvp` kind.
    """

    max_steps: int = eqx.field(static=True, default=100)
    gtol: float = 1e-8
    rtol: float = 0.0
    ftol: float = 0.0
    initial_radius: float = 1.0
    max_radius: float = 1e3
    eta: float = 0.1
    min_radius: float = 1e-14
    cg_max_steps: int | None = eqx.field(static=True, default=None)
    hvp: Literal["exact", "finite_difference"] = eqx.field(static=True, default="exact")
    fd_eps: float | None = None
    preconditioner: Literal["jacobi"] | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        where = "TrustRegionNewtonCG"
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, (int, np.integer)) or self.max_steps < 1:
            raise ValueError(f"{where}: expected max_steps to be an integer >= 1, got {self.max_steps!r}.")
        if self.cg_max_steps is not None and (
            isinstance(self.cg_max_steps, bool)
            or not isinstance(self.cg_max_steps, (int, np.integer))
            or self.cg_max_steps < 1
        ):
            raise ValueError(f"{where}: expected cg_max_steps to be None or an integer >= 1, got {self.cg_max_steps!r}.")
        if self.preconditioner not in _PRECONDITIONERS:
            raise ValueError(
                f"{where}: expected preconditioner in {_PRECONDITIONERS}, got {self.preconditioner!r}."
            )
        if self.hvp not in _HVP_KINDS:
            raise ValueError(f"{where}: expected hvp in {_HVP_KINDS}, got {self.hvp!r}.")
        checks = [
            ("initial_radius", self.initial_radius, "a positive initial trust radius, e.g. initial_radius=1.0"),
            ("max_radius", self.max_radius, "a positive maximum trust radius"),
            ("min_radius", self.min_radius, "a positive minimum trust radius (e.g. 1e-14)"),
            ("gtol", self.gtol, "a positive gradient tolerance"),
        ]
        if self.fd_eps is not None:
            checks.append(("fd_eps", self.fd_eps, "a positive finite-difference step (or None for the default)"))
        for name, value, fix in checks:
            if _is_number(value) and not float(value) > 0:
                raise ValueError(f"{where}: expected {name} > 0, got {name}={value!r}; pass {fix}.")
        if _is_number(self.initial_radius) and _is_number(self.max_radius):
            if float(self.max_radius) < float(self.initial_radius):
                raise ValueError(
                    f"{where}: expected max_radius >= initial_radius, got max_radius={self.max_radius!r} < "
                    f"initial_radius={self.initial_radius!r}."
                )
        for name in ("rtol", "ftol"):
            value = getattr(self, name)
            if _is_number(value) and not float(value) >= 0:
                raise ValueError(f"{where}: expected {name} >= 0, got {name}={value!r}.")
        if _is_number(self.eta) and not 0.0 <= float(self.eta) < 0.25:
            raise ValueError(f"{where}: expected 0 <= eta < 0.25 (the acceptance threshold), got eta={self.eta!r}.")


class TrustRegionInfo(eqx.Module):
    """What `trust_region_minimize` reports besides the solution.

    Attributes:
        steps: outer iterations taken.
        value: final function value.
        grad_norm: final gradient norm.
        radius: final trust radius.
        num_hvp: Hessian-vector products evaluated (all CG iterations).
        num_grad: gradient evaluations (one per outer step plus the start;
            each finite-difference product adds two more, not counted here).
        accepted: number of accepted steps.
        result: 0 converged (gradient test), 1 `max_steps` reached, 2 stalled
            at round-off (radius collapsed), 3 non-finite start, 4 converged
            (`ftol` test); see `message`.
        history: per-iteration arrays of length `max_steps + 1` (`value`,
            `grad_norm`, `radius`, `num_hvp` cumulative), NaN after the last
            iteration; entry 0 is the start.
    """

    steps: jax.Array
    value: jax.Array
    grad_norm: jax.Array
    radius: jax.Array
    num_hvp: jax.Array
    num_grad: jax.Array
    accepted: jax.Array
    result: jax.Array
    history: dict

    @property
    def converged(self) -> jax.Array:
        """True when the gradient-norm test (or the `ftol` test) was met."""
        return (self.result == 0) | (self.result == 4)

    @property
    def message(self) -> str:
        """The meaning of `result` (concrete results only)."""
        return _MESSAGES[int(self.result)]


def _boundary_tau(z, d, radius):
    """tau >= 0 with ||z + tau d|| = radius (z inside the ball)."""
    dd = jnp.vdot(d, d)
    zd = jnp.vdot(z, d)
    zz = jnp.vdot(z, z)
    disc = jnp.maximum(zd * zd + dd * (radius * radius - zz), 0.0)
    dd_safe = jnp.where(dd > 0, dd, 1.0)
    return jnp.where(dd > 0, (-zd + jnp.sqrt(disc)) / dd_safe, 0.0)


def _steihaug(hvp, g, radius, tol, max_iter):
    """Steihaug-Toint CG for min g.p + p.Hp/2, ||p|| <= radius. Returns (p, Hp, n_hvp, hit_boundary)."""
    zero = jnp.zeros_like(g)

    def cond(state):
        return ~state["done"]

    def body(state):
        z, hz, r, d, j = state["z"], state["hz"], state["r"], state["d"], state["j"]
        bd = hvp(d)
        dbd = jnp.vdot(d, bd)
        rr = jnp.vdot(r, r)
        negative = ~(dbd > 0)  # also catches NaN curvature
        alpha = rr / jnp.where(negative, 1.0, dbd)
        z_new = z + alpha * d
        outside = jnp.linalg.norm(z_new) >= radius
        to_boundary = negative | outside
        tau = _boundary_tau(z, d, radius)
        z_b = z + tau * d
        hz_b = hz + tau * bd
        r_new = r + alpha * bd
        small = jnp.linalg.norm(r_new) <= tol
        rr_new = jnp.vdot(r_new, r_new)
        beta = rr_new / jnp.where(rr > 0, rr, 1.0)
        d_new = -r_new + beta * d
        j_new = j + 1
        done = to_boundary | small | (j_new >= max_iter)
        return {
            "z": jnp.where(to_boundary, z_b, z_new),
            "hz": jnp.where(to_boundary, hz_b, hz + alpha * bd),
            "r": r_new,
            "d": d_new,
            "j": j_new,
            "done": done,
            "boundary": to_boundary,
        }

    init = {
        "z": zero,
        "hz": zero,
        "r": g,
        "d": -g,
        "j": jnp.zeros((), jnp.int32),
        "done": jnp.linalg.norm(g) <= tol,
        "boundary": jnp.zeros((), bool),
    }
    out = lax.while_loop(cond, body, init)
    return out["z"], out["hz"], out["j"], out["boundary"]


def _split(x0):
    params, static = eqx.partition(x0, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    return flat, unravel, static


@eqx.filter_jit
def _minimize(f, x0, solver: TrustRegionNewtonCG, args):
    flat0, unravel, static = _split(x0)
    dtype = flat0.dtype
    n = flat0.size

    def fun(z):
        value = f(eqx.combine(unravel(z), static), *args)
        return jnp.asarray(value).astype(dtype)

    value_and_grad = jax.value_and_grad(fun)
    grad = jax.grad(fun)
    if solver.hvp == "exact":
        def hvp_at(x):
            return lambda v: jax.jvp(grad, (x,), (v,))[1]
    else:
        eps = solver.fd_eps if solver.fd_eps is not None else float(np.finfo(dtype).eps) ** (1.0 / 3.0)

        def hvp_at(x):
            return lambda v: directional_difference(grad, x, v, eps, scheme="central", step="relative")

    max_iter = n if solver.cg_max_steps is None else min(n, solver.cg_max_steps)
    gtol = jnp.asarray(solver.gtol, dtype)
    eta = jnp.asarray(solver.eta, dtype)
    max_radius = jnp.asarray(solver.max_radius, dtype)
    min_radius = jnp.asarray(solver.min_radius, dtype)
    ftol = jnp.asarray(solver.ftol, dtype)
    steps_cap = solver.max_steps

    f0, g0 = value_and_grad(flat0)
    gn0 = jnp.linalg.norm(g0)
    gtol = jnp.maximum(gtol, jnp.asarray(solver.rtol, dtype) * gn0)
    nan_hist = jnp.full((steps_cap + 1,), jnp.nan, dtype)
    history = {
        "value": nan_hist.at[0].set(f0),
        "grad_norm": nan_hist.at[0].set(gn0),
        "radius": nan_hist.at[0].set(jnp.asarray(solver.initial_radius, dtype)),
        "num_hvp": nan_hist.at[0].set(0.0),
    }
    bad_start = ~(jnp.isfinite(f0) & jnp.isfinite(gn0))
    state = {
        "x": flat0,
        "f": f0,
        "g": g0,
        "radius": jnp.asarray(solver.initial_radius, dtype),
        "k": jnp.zeros((), jnp.int32),
        "num_hvp": jnp.zeros((), jnp.int32),
        "num_grad": jnp.ones((), jnp.int32),
        "accepted": jnp.zeros((), jnp.int32),
        "result": jnp.where(bad_start, 3, jnp.where(gn0 <= gtol, 0, -1)).astype(jnp.int32),
        "history": history,
    }

    def cond(s):
        return s["result"] < 0

    def body(s):
        x, fx, g, radius = s["x"], s["f"], s["g"], s["radius"]
        gnorm = jnp.linalg.norm(g)
        tol = jnp.minimum(jnp.asarray(0.5, dtype), jnp.sqrt(gnorm)) * gnorm
        hvp = hvp_at(x)
        if solver.preconditioner == "jacobi":
            # Trust region ||D p|| <= radius with D = sqrt|diag H| (exact diagonal, n HVPs in
            # one batch): plain Steihaug CG on the scaled problem D^-1 H D^-1, D^-1 g.
            diag = jnp.abs(jax.vmap(lambda e: jnp.vdot(e, hvp(e)))(jnp.eye(n, dtype=dtype)))
            top = jnp.max(diag)
            # Coordinates without measurable curvature (e.g. a stencil moment whose term's
            # coefficient is zero) are scaled like the stiffest one: a floor instead would
            # license huge steps along them, only to be rejected.
            floor = top * jnp.asarray(_DIAGONAL_FLOOR, dtype)
            d = jnp.sqrt(jnp.where(diag > floor, diag, top))
            d = jnp.where(top > 0, d, jnp.ones_like(diag))
            g_s = g / d
            gnorm_s = jnp.linalg.norm(g_s)
            tol_s = jnp.minimum(jnp.asarray(0.5, dtype), jnp.sqrt(gnorm_s)) * gnorm_s
            p_s, hp_s, n_cg, boundary = _steihaug(lambda v: hvp(v / d) / d, g_s, radius, tol_s, max_iter)
            p, hp = p_s / d, hp_s * d
            pnorm = jnp.linalg.norm(p_s)
            n_cg = n_cg + n
        else:
            p, hp, n_cg, boundary = _steihaug(hvp, g, radius, tol, max_iter)
            pnorm = jnp.linalg.norm(p)
        predicted = -(jnp.vdot(g, p) + 0.5 * jnp.vdot(p, hp))
        f_new, g_new = value_and_grad(x + p)
        actual = fx - f_new
        ok = jnp.isfinite(f_new) & jnp.all(jnp.isfinite(g_new)) & (predicted > 0)
        rho = jnp.where(ok, actual / jnp.where(predicted > 0, predicted, 1.0), -jnp.inf)
        radius_new = jnp.where(
            rho < 0.25,
            0.25 * radius,
            jnp.where((rho > 0.75) & (boundary | (pnorm >= 0.99 * radius)),
                      jnp.minimum(2.0 * radius, max_radius), radius),
        )
        accept = rho > eta
        x = jnp.where(accept, x + p, x)
        fx = jnp.where(accept, f_new, fx)
        g = jnp.where(accept, g_new, g)
        k = s["k"] + 1
        num_hvp = s["num_hvp"] + n_cg
        gn = jnp.linalg.norm(g)
        small_decrease = accept & (actual <= ftol * jnp.abs(f_new))
        # A rejected step whose predicted decrease is at the round-off level of f: no
        # smaller radius can do better at this precision.
        stalled = (~accept) & (jnp.abs(predicted) <= _STALL * jnp.finfo(dtype).eps * jnp.abs(fx))
        result = jnp.where(
            gn <= gtol, 0,
            jnp.where(small_decrease, 4,
                      jnp.where((radius_new < min_radius) | stalled, 2, jnp.where(k >= steps_cap, 1, -1))),
        ).astype(jnp.int32)
        h = s["history"]
        history = {
            "value": h["value"].at[k].set(fx),
            "grad_norm": h["grad_norm"].at[k].set(gn),
            "radius": h["radius"].at[k].set(radius_new),
            "num_hvp": h["num_hvp"].at[k].set(num_hvp.astype(dtype)),
        }
        return {
            "x": x,
            "f": fx,
            "g": g,
            "radius": radius_new,
            "k": k,
            "num_hvp": num_hvp,
            "num_grad": s["num_grad"] + 1,
            "accepted": s["accepted"] + accept.astype(jnp.int32),
            "result": result,
            "history": history,
        }

    s = lax.while_loop(cond, body, state)
    info = TrustRegionInfo(
        steps=s["k"],
        value=s["f"],
        grad_norm=jnp.linalg.norm(s["g"]),
        radius=s["radius"],
        num_hvp=s["num_hvp"],
        num_grad=s["num_grad"],
        accepted=s["accepted"],
        result=s["result"],
        history=s["history"],
    )
    return eqx.combine(unravel(s["x"]), static), info


def trust_region_minimize(f: Callable, x0: Any, solver: TrustRegionNewtonCG | None = None, *,
                          args: tuple = ()) -> tuple[Any, TrustRegionInfo]:
    r"""Minimise a scalar function of a pytree by Hessian-free trust-region Newton-CG.

    `f(x, *args)` is differentiated with respect to the inexact array
    leaves of `x` (an equinox model works: other leaves are kept as they
    are); they are flattened into one vector, so the method sees every
    parameter together. One compiled program (`eqx.filter_jit` around a
    `lax.while_loop`); `f` and the solver's static settings are compiled in,
    `x0` and `args` are traced (new data reuses the program).

    Arguments:
        f: scalar function `f(x, *args)`; twice differentiable for
            `hvp="exact"`, once for `"finite_difference"`.
        x0: the starting point, any pytree.
        solver: the settings (`TrustRegionNewtonCG()` by default).
        args: extra arguments of `f` (data), passed traced.

    Returns:
        `(x, info)`: the last accepted point (the pytree of `x0`) and a
            `TrustRegionInfo` (iterations, final value, gradient norm, radius,
            counts of Hessian-vector products and gradients, a result code and
            the per-iteration history).

    Raises:
        TypeError: a solver that is not a `TrustRegionNewtonCG`, `args` not a tuple.
        ValueError: `x0` without floating-point array leaves, leaves of mixed
            floating dtypes.
    """
    if solver is None:
        solver = TrustRegionNewtonCG()
    if not isinstance(solver, TrustRegionNewtonCG):
        raise TypeError(f"trust_region_minimize: expected a TrustRegionNewtonCG solver, got {solver!r}.")
    if not isinstance(args, tuple):
        raise TypeError(f"trust_region_minimize: expected args to be a tuple, got {type(args).__name__}.")
    leaves = jax.tree_util.tree_leaves(eqx.filter(x0, eqx.is_inexact_array))
    if not leaves:
        raise ValueError(
            "trust_region_minimize: x0 has no floating-point array leaves to optimise; pass arrays "
            "(jnp.asarray(...)), not Python numbers."
        )
    dtypes = {jnp.result_type(leaf) for leaf in leaves}
    if len(dtypes) > 1:
        raise ValueError(
            f"trust_region_minimize: expected all parameters in one floating dtype, got {sorted(map(str, dtypes))}; "
            "cast them to one dtype first."
        )
    return _minimize(f, x0, solver, args)
