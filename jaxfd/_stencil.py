"""Finite-difference weights, computed in float64 numpy at trace time.

Everything here is plain numpy: weights are constants of the compiled program,
computed once when an operator is traced and cast to the field's dtype there.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

__all__ = [
    "fornberg_weights",
    "central_offsets",
    "one_sided_offsets",
    "central_weights",
    "forward_weights",
    "backward_weights",
    "closure_weights",
    "check_accuracy",
]


def _check_deriv(deriv) -> int:
    if isinstance(deriv, bool) or not isinstance(deriv, (int, np.integer)) or deriv < 0:
        raise ValueError(
            f"Expected the derivative order to be a non-negative integer, got {deriv!r}. "
            "Pass deriv=0 for interpolation, 1 for a first derivative, and so on."
        )
    return int(deriv)


def check_accuracy(accuracy) -> int:
    """Validate an accuracy order: a positive even integer."""
    if (
        isinstance(accuracy, bool)
        or not isinstance(accuracy, (int, np.integer))
        or accuracy < 2
        or accuracy % 2
    ):
        raise ValueError(
            f"Expected accuracy to be a positive even integer (2, 4, 6, 8, ...), got "
            f"{accuracy!r}. Central stencils have even orders of accuracy; pick the even "
            "order you need, e.g. accuracy=4."
        )
    return int(accuracy)


def fornberg_weights(deriv: int, offsets: Sequence[float], x0: float = 0.0) -> np.ndarray:
    r"""Weights of the finite-difference formula for the `deriv`-th derivative at `x0`.

    Returns `w` such that $f^{(m)}(x_0) \approx \sum_j w_j f(x_j)$ with the
    points $x_j$ given by `offsets` in units of the grid spacing (divide by
    $h^m$ for a grid of spacing $h$). Uses Fornberg's recursion (Math. Comp. 51,
    1988), in float64, for any derivative order and any set of distinct,
    possibly non-integer offsets.

    Arguments:
        deriv: derivative order $m \ge 0$ (0 interpolates).
        offsets: distinct sample positions, at least `deriv + 1` of them.
        x0: where the derivative is evaluated.

    Returns:
        float64 numpy array of `len(offsets)` weights. The formula is exact for
            every polynomial of degree `< len(offsets)`, so its order of accuracy is
            `len(offsets) - deriv` (one more for symmetric central stencils of even
            derivatives, by cancellation).

    Raises:
        ValueError: repeated offsets, too few offsets, or a negative order.
    """
    m = _check_deriv(deriv)
    x = np.asarray(offsets, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"Expected offsets to be a 1-D sequence of numbers, got shape {x.shape}.")
    if not np.all(np.isfinite(x)) or not np.isfinite(x0):
        raise ValueError("Expected finite offsets and x0, got non-finite values.")
    n = x.size
    if n < m + 1:
        raise ValueError(
            f"A derivative of order {m} needs at least {m + 1} points; got {n} offsets "
            f"{list(x)}. Add points to the stencil."
        )
    if np.unique(x).size != n:
        raise ValueError(f"Expected distinct offsets, got repeated values in {list(x)}.")
    return _fornberg_cached(m, tuple(x.tolist()), float(x0)).copy()


@functools.lru_cache(maxsize=1024)
def _fornberg_cached(m: int, x: tuple[float, ...], x0: float) -> np.ndarray:
    n = len(x)
    # c[j, k]: weight of point j for derivative k, built up point by point.
    c = np.zeros((n, m + 1))
    c[0, 0] = 1.0
    c1 = 1.0
    c4 = x[0] - x0
    for i in range(1, n):
        mn = min(i, m)
        c2 = 1.0
        c5 = c4
        c4 = x[i] - x0
        for j in range(i):
            c3 = x[i] - x[j]
            c2 *= c3
            if j == i - 1:
                for k in range(mn, 0, -1):
                    c[i, k] = c1 * (k * c[i - 1, k - 1] - c5 * c[i - 1, k]) / c2
                c[i, 0] = -c1 * c5 * c[i - 1, 0] / c2
            for k in range(mn, 0, -1):
                c[j, k] = (c4 * c[j, k] - k * c[j, k - 1]) / c3
            c[j, 0] = c4 * c[j, 0] / c3
        c1 = c2
    out = c[:, m].copy()
    out.setflags(write=False)
    return out


def central_half_width(deriv: int, accuracy: int) -> int:
    """Half-width r of the central stencil (2r+1 points) of given derivative and accuracy."""
    m = _check_deriv(deriv)
    p = check_accuracy(accuracy)
    return (m + 1) // 2 - 1 + p // 2


def central_offsets(deriv: int, accuracy: int) -> np.ndarray:
    """Integer offsets `-r..r` of the central stencil of `accuracy` for `deriv`."""
    r = central_half_width(deriv, accuracy)
    return np.arange(-r, r + 1)


def one_sided_offsets(deriv: int, accuracy: int, direction: int = 1) -> np.ndarray:
    """Offsets `0..deriv+accuracy-1` (forward, `direction=+1`) or their negatives."""
    m = _check_deriv(deriv)
    if m == 0:
        raise ValueError("One-sided stencils are for derivatives of order >= 1, got deriv=0.")
    if accuracy < 1 or isinstance(accuracy, bool) or not isinstance(accuracy, (int, np.integer)):
        raise ValueError(f"Expected accuracy to be a positive integer, got {accuracy!r}.")
    if direction not in (1, -1):
        raise ValueError(f"Expected direction +1 or -1, got {direction!r}.")
    return direction * np.arange(m + accuracy)


def central_weights(deriv: int, accuracy: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, weights) of the central stencil; error O(h^accuracy)."""
    off = central_offsets(deriv, accuracy)
    return off, fornberg_weights(deriv, off)


def forward_weights(deriv: int, accuracy: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, weights) of the forward one-sided stencil; error O(h^accuracy)."""
    off = one_sided_offsets(deriv, accuracy, +1)
    return off, fornberg_weights(deriv, off)


def backward_weights(deriv: int, accuracy: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, weights) of the backward one-sided stencil; error O(h^accuracy)."""
    off = one_sided_offsets(deriv, accuracy, -1)
    return off, fornberg_weights(deriv, off)


def closure_weights(deriv: int, accuracy: int, row: int, size: int | None = None):
    """Boundary-closure stencil for the point `row` cells in from the first point.

    The stencil uses the first `deriv + accuracy` points `0..deriv+accuracy-1`
    (shifted so it is as central as the boundary allows) and is exact for
    polynomials of degree `< deriv + accuracy`: local error O(h^accuracy).
    Returns (offsets relative to `row`, weights).
    """
    m = _check_deriv(deriv)
    npts = m + accuracy
    if size is not None and size < npts:
        raise ValueError(
            f"A closure of accuracy {accuracy} for derivative {m} needs {npts} points, "
            f"the axis has {size}. Use a finer grid or a lower accuracy."
        )
    points = np.arange(npts)
    return points - row, fornberg_weights(m, points, x0=float(row))
