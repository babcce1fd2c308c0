"""Tests for tracr.craft.vectorspace_fns."""

import numpy as np
import pytest

from tracr.craft import bases
from tracr.craft import vectorspace_fns as vf

D = bases.BasisDirection


def _spaces():
    return (
        bases.VectorSpaceWithBasis.from_names(["a", "b"]),
        bases.VectorSpaceWithBasis.from_names(["c", "d", "e"]),
    )


def test_linear_applies_matrix():
    space_in, space_out = _spaces()
    matrix = np.arange(6.0).reshape(2, 3)
    fn = vf.Linear(space_in, space_out, matrix)
    out = fn(space_in.make_vector([1.0, 2.0]))
    assert out == space_out.make_vector(np.array([1.0, 2.0]) @ matrix)
    # A vector over a subset of the input directions is fine.
    assert fn(bases.VectorInBasis([D("b")], np.ones(1))) == space_out.make_vector(matrix[1])
    # Batch dimensions pass through.
    assert fn(space_in.make_vector(np.ones((4, 5, 2)))).magnitudes.shape == (4, 5, 3)


def test_linear_shape_mismatch_raises():
    space_in, space_out = _spaces()
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        vf.Linear(space_in, space_out, np.zeros((3, 2)))


def test_linear_rejects_vector_outside_input_space():
    space_in, space_out = _spaces()
    fn = vf.Linear(space_in, space_out, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="outside the input space"):
        fn(bases.VectorInBasis([D("a"), D("zzz")], np.ones(2)))


def test_from_action():
    space_in, space_out = _spaces()

    def action(d):
        if d.name == "a":
            return space_out.vector_from_basis_direction(D("e"))
        return None

    fn = vf.Linear.from_action(space_in, space_out, action)
    np.testing.assert_allclose(fn.matrix, [[0, 0, 1], [0, 0, 0]])
    bad = lambda d: bases.VectorInBasis([D("nope")], np.ones(1))  # noqa: E731
    with pytest.raises(ValueError, match="outside output_space"):
        vf.Linear.from_action(space_in, space_out, bad)


def test_combine_in_parallel_sums_functions():
    space_ab, space_cde = _spaces()
    f = vf.Linear(space_ab, space_cde, np.arange(6.0).reshape(2, 3))
    space_b = bases.VectorSpaceWithBasis([D("b")])
    space_e = bases.VectorSpaceWithBasis([D("e"), D("f")])
    g = vf.Linear(space_b, space_e, np.array([[10.0, 20.0]]))
    h = vf.Linear.combine_in_parallel([f, g])
    x = space_ab.make_vector([1.0, 2.0])
    expected = f(x).add_directions(g(x.project(space_b)))
    assert h(x) == expected.project(h.output_space)


def test_project():
    from_space = bases.VectorSpaceWithBasis.from_names(["a", "b", "c"])
    to_space = bases.VectorSpaceWithBasis.from_names(["c", "a", "z"])
    p = vf.project(from_space, to_space)
    out = p(from_space.make_vector([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(out.magnitudes, [3.0, 1.0, 0.0])


def test_project_is_vectorised_for_large_spaces():
    big = bases.VectorSpaceWithBasis.from_values("t", range(5000))
    half = bases.VectorSpaceWithBasis.from_values("t", range(0, 10000, 2))
    p = vf.project(big, half)
    assert p.matrix.shape == (5000, 5000)
    assert p.matrix.sum() == 2500


def test_scalar_bilinear():
    left, right = _spaces()
    matrix = np.arange(6.0).reshape(2, 3)
    form = vf.ScalarBilinear(left, right, matrix)
    x, y = left.make_vector([1.0, 2.0]), right.make_vector([0.0, 1.0, -1.0])
    assert form(x, y) == pytest.approx(np.array([1.0, 2.0]) @ matrix @ np.array([0.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        vf.ScalarBilinear(left, right, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="outside the input space"):
        form(y, y)
    built = vf.ScalarBilinear.from_action(left, right, lambda lft, rgt: float(lft.name == "a"))
    np.testing.assert_allclose(built.matrix, [[1, 1, 1], [0, 0, 0]])
