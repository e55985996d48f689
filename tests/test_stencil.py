"""Finite-difference weights: known stencils, polynomial exactness, bad input."""

from __future__ import annotations

import math
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxfd as fd

# Rational weights are reproduced to a few ulps of the largest weight.
KNOWN_RTOL = 1e-13


def _frac(*xs):
    return np.array([float(F(x)) for x in xs])


KNOWN = [
    # (description, computed (offsets, weights), expected offsets, expected weights)
    ("d1 central acc2", fd.central_weights(1, 2), [-1, 0, 1], _frac("-1/2", 0, "1/2")),
    ("d1 central acc4", fd.central_weights(1, 4), [-2, -1, 0, 1, 2],
     _frac("1/12", "-2/3", 0, "2/3", "-1/12")),
    ("d1 central acc6", fd.central_weights(1, 6), list(range(-3, 4)),
     _frac("-1/60", "3/20", "-3/4", 0, "3/4", "-3/20", "1/60")),
    ("d1 central acc8", fd.central_weights(1, 8), list(range(-4, 5)),
     _frac("1/280", "-4/105", "1/5", "-4/5", 0, "4/5", "-1/5", "4/105", "-1/280")),
    ("d2 central acc2", fd.central_weights(2, 2), [-1, 0, 1], _frac(1, -2, 1)),
    ("d2 central acc4", fd.central_weights(2, 4), [-2, -1, 0, 1, 2],
     _frac("-1/12", "4/3", "-5/2", "4/3", "-1/12")),
    ("d2 central acc6", fd.central_weights(2, 6), list(range(-3, 4)),
     _frac("1/90", "-3/20", "3/2", "-49/18", "3/2", "-3/20", "1/90")),
    ("d2 central acc8", fd.central_weights(2, 8), list(range(-4, 5)),
     _frac("-1/560", "8/315", "-1/5", "8/5", "-205/72", "8/5", "-1/5", "8/315", "-1/560")),
    ("d3 central acc2", fd.central_weights(3, 2), [-2, -1, 0, 1, 2],
     _frac("-1/2", 1, 0, -1, "1/2")),
    ("d4 central acc2", fd.central_weights(4, 2), [-2, -1, 0, 1, 2], _frac(1, -4, 6, -4, 1)),
    ("d1 forward acc1", fd.forward_weights(1, 1), [0, 1], _frac(-1, 1)),
    ("d1 forward acc2", fd.forward_weights(1, 2), [0, 1, 2], _frac("-3/2", 2, "-1/2")),
    ("d1 forward acc4", fd.forward_weights(1, 4), [0, 1, 2, 3, 4],
     _frac("-25/12", 4, -3, "4/3", "-1/4")),
    ("d2 forward acc1", fd.forward_weights(2, 1), [0, 1, 2], _frac(1, -2, 1)),
    ("d2 forward acc2", fd.forward_weights(2, 2), [0, 1, 2, 3], _frac(2, -5, 4, -1)),
    ("d1 backward acc2", fd.backward_weights(1, 2), [0, -1, -2], _frac("3/2", -2, "1/2")),
    ("d2 backward acc2", fd.backward_weights(2, 2), [0, -1, -2, -3], _frac(2, -5, 4, -1)),
    ("closure d1 acc2 row0", fd.closure_weights(1, 2, 0), [0, 1, 2], _frac("-3/2", 2, "-1/2")),
    ("closure d1 acc2 row1", fd.closure_weights(1, 2, 1), [-1, 0, 1], _frac("-1/2", 0, "1/2")),
    ("closure d1 acc2 row2", fd.closure_weights(1, 2, 2), [-2, -1, 0], _frac("1/2", -2, "3/2")),
]


@pytest.mark.parametrize("name,computed,offsets,weights", KNOWN, ids=[k[0] for k in KNOWN])
def test_known_stencils(name, computed, offsets, weights):
    off, w = computed
    np.testing.assert_array_equal(np.asarray(off), np.asarray(offsets))
    assert w.dtype == np.float64
    np.testing.assert_allclose(w, weights, rtol=KNOWN_RTOL, atol=KNOWN_RTOL * np.abs(weights).max())


@pytest.mark.parametrize(
    "deriv,offsets,x0,expected",
    [
        (0, [0.0, 1.0], 0.5, _frac("1/2", "1/2")),  # midpoint interpolation
        (0, [-1.5, -0.5, 0.5, 1.5], 0.0, _frac("-1/16", "9/16", "9/16", "-1/16")),
        (1, [-0.5, 0.5], 0.0, _frac(-1, 1)),  # staggered first derivative
        (1, [-1.5, -0.5, 0.5, 1.5], 0.0, _frac("1/24", "-9/8", "9/8", "-1/24")),
        (1, [0.0, 1.0, 2.0], 1.0, _frac("-1/2", 0, "1/2")),  # x0 shifts the stencil
        (2, [0.0, 1.0, 2.0], 0.0, _frac(1, -2, 1)),  # 3 points: same weights anywhere
        (1, [2.0, 0.0, 1.0], 0.0, _frac("-1/2", "-3/2", 2)),  # any order of the points
        (2, [0.0, 0.5, 1.5, 3.0], 0.0, None),  # checked by exactness below
    ],
)
def test_fornberg_known_and_nonuniform(deriv, offsets, x0, expected):
    w = fd.fornberg_weights(deriv, offsets, x0=x0)
    assert w.shape == (len(offsets),) and w.dtype == np.float64
    if expected is not None:
        np.testing.assert_allclose(w, expected, rtol=KNOWN_RTOL, atol=KNOWN_RTOL)
    # exact on 1, x, ..., x^(n-1)
    x = np.asarray(offsets) - x0
    for d in range(len(offsets)):
        exact = math.factorial(d) if d == deriv else 0.0
        assert abs(np.dot(w, x**d) - exact) < 1e-12 * (1 + np.abs(w).sum() * np.abs(x).max() ** d)


def test_fornberg_returns_a_fresh_copy():
    w = fd.fornberg_weights(1, [-1, 0, 1])
    w[:] = 123.0  # must not corrupt the internal cache
    np.testing.assert_allclose(fd.fornberg_weights(1, [-1, 0, 1]), [-0.5, 0.0, 0.5])


# --- polynomial exactness (property test) --------------------------------------------------

# The check: a stencil of n <= 13 points applied to t^d with t = (x - x0)/s scaled to
# [-1, 1] is a sum of n products w_j t_j^d. Rounding in the weights and in the sum is a few
# ulps of the size of the terms: over 20 000 random draws of the point sets used here
# (<= 9 points, separation >= 0.25) the worst relative discrepancy was 1.2e-14. 1e-11 keeps a
# 1000x margin, while a wrong weight shows as an O(1) discrepancy.
EXACT_RTOL = 1e-11


def _apply(offsets, weights, x0, deriv, degree):
    """(stencil applied to ((x - x0)/s)^degree, exact value, size of the terms)."""
    x = np.asarray(offsets, dtype=np.float64) - x0
    s = max(np.abs(x).max(), 1.0)
    t = x / s
    value = float(np.dot(weights, t**degree))  # in units where the grid spacing is 1
    exact = math.factorial(deriv) / s**deriv if degree == deriv else 0.0
    scale = float(np.abs(weights * t**degree).sum()) + abs(exact)
    return value, exact, scale


def _check_exact(offsets, weights, x0, deriv, accuracy, strict_order):
    for degree in range(deriv + accuracy):
        value, exact, scale = _apply(offsets, weights, x0, deriv, degree)
        assert abs(value - exact) <= EXACT_RTOL * scale, (
            f"deriv {deriv}, accuracy {accuracy}, offsets {list(offsets)}, x0 {x0}: degree "
            f"{degree} gives {value!r}, exact {exact!r}"
        )
    if strict_order:
        # ... and the order is not better than declared: degree m + p is not differentiated
        # exactly (the stencil is not secretly wider or of higher order than its label).
        value, exact, scale = _apply(offsets, weights, x0, deriv, deriv + accuracy)
        assert abs(value - exact) > 1e-6 * scale


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(deriv=st.integers(1, 4), accuracy=st.sampled_from([2, 4, 6, 8]))
def test_central_exact_for_polynomials(deriv, accuracy):
    off, w = fd.central_weights(deriv, accuracy)
    assert len(off) == 2 * ((deriv + 1) // 2 - 1 + accuracy // 2) + 1
    np.testing.assert_array_equal(off, -off[::-1])
    _check_exact(off, w, 0.0, deriv, accuracy, strict_order=True)


@SETTINGS
@given(deriv=st.integers(1, 4), accuracy=st.integers(1, 8), forward=st.booleans())
def test_one_sided_exact_for_polynomials(deriv, accuracy, forward):
    off, w = (fd.forward_weights if forward else fd.backward_weights)(deriv, accuracy)
    assert len(off) == deriv + accuracy
    assert (off >= 0).all() if forward else (off <= 0).all()
    _check_exact(off, w, 0.0, deriv, accuracy, strict_order=True)


@SETTINGS
@given(data=st.data(), deriv=st.integers(0, 4), accuracy=st.integers(1, 8))
def test_closure_exact_for_polynomials_at_any_row(data, deriv, accuracy):
    npts = deriv + accuracy
    row = data.draw(st.integers(0, npts - 1), label="row")
    off, w = fd.closure_weights(deriv, accuracy, row)
    np.testing.assert_array_equal(off, np.arange(npts) - row)
    # offsets are relative to the row: evaluate the derivative at 0 of the shifted points
    _check_exact(off, w, 0.0, deriv, accuracy, strict_order=False)


@st.composite
def distinct_offsets(draw):
    """2..9 distinct non-integer points in [-6, 6], separated by at least 0.25."""
    n = draw(st.integers(2, 9))
    gaps = draw(st.lists(st.floats(0.25, 1.5), min_size=n - 1, max_size=n - 1))
    start = draw(st.floats(-6.0, 0.0))
    pts = start + np.concatenate([[0.0], np.cumsum(gaps)])
    perm = draw(st.permutations(range(n)))
    return [float(pts[i]) for i in perm]


@SETTINGS
@given(data=st.data(), offsets=distinct_offsets())
def test_random_offsets_exact_for_polynomials(data, offsets):
    n = len(offsets)
    deriv = data.draw(st.integers(0, n - 1), label="deriv")
    lo, hi = min(offsets), max(offsets)
    x0 = data.draw(st.floats(lo - 0.5, hi + 0.5), label="x0")
    w = fd.fornberg_weights(deriv, offsets, x0=x0)
    # n points: exact for degree < n = deriv + accuracy with accuracy = n - deriv
    _check_exact(offsets, w, x0, deriv, n - deriv, strict_order=False)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: fd.fornberg_weights(1, [0.0, 1.0, 1.0]), r"distinct"),
        (lambda: fd.fornberg_weights(1, [0.5, 0.5]), r"distinct"),
        (lambda: fd.fornberg_weights(2, [0.0, 1.0]), r"at least 3 points; got 2"),
        (lambda: fd.fornberg_weights(1, []), r"at least 2 points; got 0"),
        (lambda: fd.fornberg_weights(-1, [0.0, 1.0]), r"non-negative integer, got -1"),
        (lambda: fd.fornberg_weights(1.5, [0.0, 1.0, 2.0]), r"non-negative integer, got 1.5"),
        (lambda: fd.fornberg_weights(True, [0.0, 1.0]), r"non-negative integer, got True"),
        (lambda: fd.fornberg_weights(1, [[0.0, 1.0]]), r"1-D"),
        (lambda: fd.fornberg_weights(1, [0.0, float("nan")]), r"finite"),
        (lambda: fd.central_weights(1, 3), r"positive even integer.*got 3"),
        (lambda: fd.central_weights(2, 0), r"positive even integer.*got 0"),
        (lambda: fd.central_weights(1, -2), r"positive even integer.*got -2"),
        (lambda: fd.central_weights(1, 4.0), r"positive even integer.*got 4.0"),
        (lambda: fd.central_weights(-1, 2), r"non-negative integer, got -1"),
        (lambda: fd.forward_weights(1, 0), r"positive integer, got 0"),
        (lambda: fd.forward_weights(0, 2), r"order >= 1"),
        (lambda: fd.closure_weights(2, 4, 0, size=5), r"needs 6 points.*has 5"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
