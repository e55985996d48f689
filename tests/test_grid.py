"""Cell-centred grids: spacing, coordinates, mesh, validation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfd as fd


def test_1d_cell_centred():
    g = fd.Grid(8, (0.0, 2.0))
    assert g.ndim == 1 and g.shape == (8,) and g.size == 8
    assert g.extent == ((0.0, 2.0),)
    assert g.spacing == (0.25,)
    assert g.lengths == (2.0,)
    (x,) = g.coords
    assert x.dtype == jnp.float64  # the default float under jax_enable_x64
    np.testing.assert_allclose(np.asarray(x), 0.125 + 0.25 * np.arange(8), rtol=0, atol=1e-15)
    # cell centres: the walls lie half a cell outside the first and last unknowns
    assert float(x[0]) - 0.0 == pytest.approx(0.125) and 2.0 - float(x[-1]) == pytest.approx(0.125)
    (m,) = g.mesh()
    np.testing.assert_array_equal(np.asarray(m), np.asarray(x))
    # the single-pair and the per-axis spellings are the same grid
    assert fd.Grid((8,), ((0.0, 2.0),)) == g
    assert fd.Grid(8, np.array([0.0, 2.0])) == g


def test_2d_spacing_coords_mesh():
    g = fd.Grid((4, 3), ((0.0, 1.0), (-1.0, 2.0)))
    assert g.ndim == 2 and g.shape == (4, 3) and g.size == 12
    assert g.spacing == (0.25, 1.0)
    assert g.cell_volume == pytest.approx(0.25)
    x, y = g.coords
    np.testing.assert_allclose(np.asarray(x), [0.125, 0.375, 0.625, 0.875], atol=1e-15)
    np.testing.assert_allclose(np.asarray(y), [-0.5, 0.5, 1.5], atol=1e-15)
    X, Y = g.mesh()
    assert X.shape == Y.shape == (4, 3)
    # indexing="ij": X varies along axis 0, Y along axis 1
    np.testing.assert_allclose(np.asarray(X), np.repeat(np.asarray(x)[:, None], 3, 1), atol=0)
    np.testing.assert_allclose(np.asarray(Y), np.repeat(np.asarray(y)[None, :], 4, 0), atol=0)
    assert g.face_shape(0) == (3,) and g.face_shape(1) == (4,) and g.face_shape(-1) == (4,)


def test_3d_spacing_coords_mesh():
    ext = ((0.0, 1.0), (0.0, 3.0), (-2.0, 2.0))
    g = fd.Grid((2, 3, 4), ext)
    assert g.ndim == 3 and g.size == 24
    np.testing.assert_allclose(g.spacing, (0.5, 1.0, 1.0))
    assert g.cell_volume == pytest.approx(0.5)
    mesh = g.mesh()
    assert len(mesh) == 3 and all(m.shape == (2, 3, 4) for m in mesh)
    for a, (c, m) in enumerate(zip(g.coords, mesh)):
        lo, hi = ext[a]
        h = (hi - lo) / g.shape[a]
        np.testing.assert_allclose(np.asarray(c), lo + h * (np.arange(g.shape[a]) + 0.5), atol=1e-15)
        shape = [1, 1, 1]
        shape[a] = g.shape[a]
        np.testing.assert_array_equal(np.asarray(m), np.broadcast_to(np.asarray(c).reshape(shape), g.shape))
    assert g.face_shape(1) == (2, 4)


def test_mesh_dtype_and_numpy_coords():
    g = fd.Grid((5, 6), ((0.0, 1.0), (0.0, 2.0)))
    assert all(m.dtype == jnp.float32 for m in g.mesh(dtype=jnp.float32))
    assert all(isinstance(c, np.ndarray) and c.dtype == np.float64 for c in g.coords_numpy)


def test_grid_is_static_metadata():
    g = fd.Grid((5, 6), ((0.0, 1.0), (0.0, 2.0)))
    assert jax.tree_util.tree_leaves(g) == []
    h = fd.Grid((5, 6), ((0, 1), (0, 2)))  # ints are normalised to floats
    assert g == h and hash(g) == hash(h)
    assert fd.Grid((5, 7), ((0.0, 1.0), (0.0, 2.0))) != g

    @jax.jit
    def total(grid, u):
        return jnp.sum(u) * grid.cell_volume

    u = jnp.ones(g.shape)
    assert float(total(g, u)) == pytest.approx(30 * (0.2 * 2 / 6))


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,extent,exc,match",
    [
        ((0,), ((0.0, 1.0),), ValueError, r"positive integer, got shape=\(0,\)"),
        ((4, -3), ((0.0, 1.0), (0.0, 1.0)), ValueError, r"positive integer, got shape=\(4, -3\)"),
        ((4.0,), ((0.0, 1.0),), ValueError, r"positive integer, got shape=\(4.0,\)"),
        ((True,), ((0.0, 1.0),), ValueError, r"positive integer"),
        ((), (), ValueError, r"at least one axis"),
        (None, ((0.0, 1.0),), TypeError, r"sequence of positive integers, got None"),
        ((4,), ((1.0, 0.0),), ValueError, r"lo < hi on axis 0, got \(1.0, 0.0\)"),
        ((4, 4), ((0.0, 1.0), (2.0, 2.0)), ValueError, r"lo < hi on axis 1, got \(2.0, 2.0\)"),
        ((4,), ((0.0, math.inf),), ValueError, r"finite lo < hi on axis 0"),
        ((4,), ((math.nan, 1.0),), ValueError, r"finite lo < hi on axis 0"),
        ((4, 4), ((0.0, 1.0),), ValueError, r"shape has 2 axes but extent has 1"),
        ((4,), ((0.0, 1.0), (0.0, 1.0)), ValueError, r"shape has 1 axes but extent has 2"),
        ((4, 4, 4), ((0.0, 1.0),) * 2, ValueError, r"one \(lo, hi\) pair per axis"),
        ((4,), ((0.0, 1.0, 2.0),), ValueError, r"extent\[0\] to be a \(lo, hi\) pair"),
        ((4,), (("a", "b"),), ValueError, r"extent\[0\] to be a \(lo, hi\) pair"),
    ],
)
def test_validation(shape, extent, exc, match):
    with pytest.raises(exc, match=match):
        fd.Grid(shape, extent)


def test_check_axis_and_field_messages():
    g = fd.Grid((4, 5), ((0.0, 1.0), (0.0, 1.0)))
    assert g.check_axis(-1) == 1
    with pytest.raises(ValueError, match=r"Axis 2 does not exist on a 2-D grid; expected an axis in \[-2, 1\]"):
        g.check_axis(2)
    with pytest.raises(TypeError, match=r"integer axis, got 0.5"):
        g.check_axis(0.5)
    with pytest.raises(ValueError, match=r"shape \(4, 5\).*got \(5, 4\)"):
        g.check_field(jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"shape \(2, 4, 5\).*got \(4, 5\)"):
        g.check_field(jnp.zeros((4, 5)), "v", leading=(2,))
    with pytest.raises(TypeError, match=r"floating-point dtype, got int32"):
        g.check_field(jnp.zeros((4, 5), jnp.int32))
    with pytest.raises(TypeError, match=r"array, got list"):
        g.check_field([[0.0] * 5] * 4)
