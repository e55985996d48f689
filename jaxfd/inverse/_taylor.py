r"""`taylor_test`: verify a functional's gradient (and Hessian action) by Taylor remainders.

For a scalar functional $J$ of a pytree $m$, a direction $\delta m$ and steps
$h_k = h_0 / 2^k$, the remainders

$$
r_0(h) = |J(m + h\,\delta m) - J(m)| = O(h), \quad
r_1(h) = |J(m + h\,\delta m) - J(m) - h\, \nabla J \cdot \delta m| = O(h^2),
$$

$$
r_2(h) = |r_1(h)\ \text{without the absolute value} - \tfrac{h^2}{2}\,\delta m^\top H \delta m| = O(h^3)
$$

decay at rates 1, 2 and 3 exactly when the gradient (and the Hessian action)
are right; a wrong gradient leaves $r_1$ at rate 1. The observed rate
between consecutive steps is $\log_2(r(h_k) / r(h_{k+1}))$, as in pyadjoint's
`taylor_test`.

Round-off: once a remainder falls to the noise floor of evaluating $J$
(about $10^3\,\varepsilon\,|J|$), its rate says nothing; such pairs are
dropped, and a remainder that is at the floor at every step (for example
$r_1$ of a linear functional) counts as exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._directional import check_same_structure, tree_axpy

__all__ = ["TaylorTestResult", "taylor_test"]


class TaylorTestResult:
    """Observed Taylor remainders and rates of one `taylor_test` call.

    Attributes:
        steps: the steps $h_k$.
        remainders: `(order + 1, len(steps))` array: $r_0$, $r_1$ (and $r_2$).
        rates: rates of the remainder that checks the gradient ($r_1$, or $r_2$
            with `hessian=True`): one per consecutive pair of steps, `nan`
            where the pair was at the round-off floor.
        all_rates: the rates of every remainder, same layout as `remainders`.
        expected: the rate a correct derivative gives (2, or 3 with `hessian=True`).
        rate: the observed rate of the checked remainder at the smallest
            steps above the round-off floor (the smaller of the last two
            meaningful rates: large steps may still feel higher-order terms);
            `inf` if it was at the floor throughout (exact).
        passed: `rate >= expected - tol`.
    """

    def __init__(self, steps, remainders, floor, expected, tol):
        self.steps = np.asarray(steps)
        self.remainders = np.asarray(remainders)
        self.floor = float(floor)
        self.expected = expected
        self.tol = tol
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = self.remainders[:, :-1] / self.remainders[:, 1:]
            rates = np.log2(ratios)
        usable = self.remainders[:, 1:] > floor  # the smaller remainder of the pair is above noise
        self.all_rates = np.where(usable, rates, np.nan)
        self.rates = self.all_rates[-1]
        meaningful = self.rates[np.isfinite(self.rates)]
        # Rates approach their limit as h -> 0 (higher-order terms fade at small h), so the
        # verdict reads the smallest steps that are still above the round-off floor.
        self.rate = float(meaningful[-2:].min()) if meaningful.size else float("inf")
        self.passed = bool(self.rate >= expected - tol)

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        names = ["r0 (rate 1)", "r1 (rate 2)", "r2 (rate 3)"][: self.remainders.shape[0]]
        lines = [f"TaylorTestResult(passed={self.passed}, rate={self.rate:.3f}, expected={self.expected})"]
        lines.append("  h         " + "  ".join(f"{n:>22}" for n in names))
        for k, h in enumerate(self.steps):
            cells = []
            for i in range(self.remainders.shape[0]):
                rate = self.all_rates[i, k - 1] if k > 0 else np.nan
                rate_text = "" if k == 0 else ("  (floor)" if np.isnan(rate) else f"  ({rate:5.2f})")
                cells.append(f"{self.remainders[i, k]:11.3e}{rate_text:>11}")
            lines.append(f"  {h:9.3e} " + "  ".join(f"{c:>22}" for c in cells))
        return "\n".join(lines)


def _as_array(leaf):
    return jnp.asarray(leaf) if isinstance(leaf, (float, complex)) else leaf


def _tree_vdot(a, b):
    return sum(jnp.vdot(x, y).real for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def taylor_test(
    J: Callable[[Any], jax.Array],
    m: Any,
    dm: Any,
    *,
    hessian: bool = False,
    h0: float | None = None,
    num_steps: int = 6,
    tol: float = 0.1,
) -> TaylorTestResult:
    r"""Taylor remainder test of the gradient of `J` at `m` along `dm`.

    Evaluates $J$ at $m + h_k\,\delta m$ for $h_k = h_0 / 2^k$ and the
    directional derivative $\nabla J(m) \cdot \delta m$ by `jax.grad` (and,
    with `hessian=True`, $\delta m^\top H \delta m$ by a `jax.jvp` of the
    gradient), then reports the observed decay rates of the remainders (see
    the module docstring). Use float64: in float32 the round-off floor leaves
    few usable steps.

    Arguments:
        J: scalar functional of a pytree of arrays.
        m: the point (pytree of inexact arrays).
        dm: the direction (same structure and shapes as `m`).
        hessian: also check the Hessian action (expected rate 3).
        h0: the largest step; default `1e-2 * max(1, ||m||) / ||dm||`.
        num_steps: number of steps (halving), at least 3.
        tol: pass when the smallest meaningful rate is `>= expected - tol`.

    Returns:
        TaylorTestResult: `.rates`, `.rate`, `.passed` (also its truth
            value) and a printable table.

    Raises:
        ValueError: `dm` does not match `m`, `dm` is zero, `num_steps < 3`,
            or `J` does not return a scalar.
    """
    if not isinstance(num_steps, int) or num_steps < 3:
        raise ValueError(f"taylor_test: expected an integer num_steps >= 3, got {num_steps!r}.")
    check_same_structure(dm, m, name="dm", where="taylor_test")
    # Python floats in m are parameters like any other: as arrays they are perturbed too
    # (tree_axpy moves only the inexact arrays of m).
    m, dm = (jax.tree_util.tree_map(_as_array, t) for t in (m, dm))
    shape = jax.eval_shape(J, m).shape
    if shape != ():
        raise ValueError(f"taylor_test: J must return a scalar, got shape {shape}.")
    # One compiled program serves every evaluation (the gradient it also returns is cheap next
    # to compiling a second program for J alone).
    value_and_grad = jax.jit(jax.value_and_grad(J))
    j0, g = value_and_grad(m)
    leaves = jax.tree_util.tree_leaves(m)
    dtype = jnp.result_type(*leaves) if leaves else jnp.float64
    norm_dm = float(jnp.sqrt(_tree_vdot(dm, dm)))
    if norm_dm == 0:
        raise ValueError("taylor_test: the direction dm is zero; pass a non-zero perturbation.")
    if h0 is None:
        h0 = 1e-2 * max(1.0, float(jnp.sqrt(_tree_vdot(m, m)))) / norm_dm
    slope = float(_tree_vdot(g, dm))
    curvature = 0.0
    if hessian:
        _, hv = jax.jvp(jax.grad(J), (m,), (dm,))
        curvature = float(_tree_vdot(hv, dm))

    j0 = float(j0)
    steps = h0 / 2.0 ** np.arange(num_steps)
    rows = []
    for h in steps:
        jh = float(value_and_grad(tree_axpy(h, dm, m))[0])
        first = jh - j0 - h * slope
        row = [abs(jh - j0), abs(first)]
        if hessian:
            row.append(abs(first - 0.5 * h * h * curvature))
        rows.append(row)
    remainders = np.asarray(rows).T
    eps = float(jnp.finfo(dtype).eps)
    floor = 1e3 * eps * max(abs(j0), 1e-300)
    return TaylorTestResult(steps, remainders, floor, 3 if hessian else 2, tol)
