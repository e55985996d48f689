"""Shared configuration and helpers for the jaxfd verification suite.

* float64 everywhere (verification needs the head-room: accuracy-8 errors
  reach 1e-12 before round-off);
* strict dtype promotion and rank promotion that raises, so an operator that
  silently mixes dtypes (a float64 weight times a float32 field) or relies on
  implicit rank broadcasting fails loudly here;
* `fit_order` / `assert_order`: the observed order of accuracy, as the slope
  of log(error) against log(h) over at least four resolutions.

The float32 check (tests/test_transforms.py) runs under the same strict
promotion with explicitly float32 inputs.
"""

from __future__ import annotations

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

#: Observed orders must lie within this distance of the declared order.
ORDER_TOL = 0.2


def fit_order(hs, errors) -> float:
    """Least-squares slope of log(error) against log(h)."""
    hs = np.asarray(hs, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    if hs.shape != errors.shape or hs.ndim != 1:
        raise ValueError(f"hs and errors must be 1-D and equally long, got {hs.shape}, {errors.shape}")
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


def assert_order(hs, errors, expected, *, tol=ORDER_TOL, at_least=False, label=""):
    """Assert the observed order is within `tol` of `expected` (or `>= expected - tol`).

    Guards against fits that would pass by accident: at least four
    resolutions, every error finite and strictly positive (an error that is
    exactly zero means the manufactured solution is too simple to measure an
    order), distinct spacings.
    """
    hs = np.asarray(hs, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    assert hs.size >= 4, f"{label}: need at least 4 resolutions, got {hs.size}"
    assert np.unique(hs).size == hs.size, f"{label}: repeated spacings {hs}"
    assert np.all(np.isfinite(errors)), f"{label}: non-finite errors {errors}"
    assert np.all(errors > 0), f"{label}: zero errors {errors}: measure on a richer solution"
    order = fit_order(hs, errors)
    detail = (
        f"{label}: observed order {order:.3f}, declared {expected}"
        f" (h={np.array2string(hs, precision=4)}, errors={np.array2string(errors, precision=3)})"
    )
    if at_least:
        assert order >= expected - tol, detail
    else:
        assert abs(order - expected) <= tol, detail
    return order
