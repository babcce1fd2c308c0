"""Tests for tracr.craft.bases."""

import dataclasses

import numpy as np
import pytest

from tracr.craft import bases

D = bases.BasisDirection


def test_direction_str():
    assert str(D("tokens", "a")) == "tokens:a"
    assert str(D("one")) == "one"
    assert str(D("indices", 0)) == "indices:0"


def test_direction_is_hashable_and_frozen():
    assert {D("a", 1), D("a", 1)} == {D("a", 1)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        D("a").name = "b"


def test_sorting_mixed_values_is_total_and_deterministic():
    dirs = [
        D("x", "b"),
        D("x", 2),
        D("x"),
        D("x", 1.5),
        D("x", (1, "a")),
        D(3, 1),
        D("x", True),
        D("w", None),
        D("x", "a"),
        D("x", (1, 2)),
    ]
    first = sorted(dirs)
    for seed in range(5):
        shuffled = list(np.random.default_rng(seed).permutation(len(dirs)))
        assert sorted(dirs[i] for i in shuffled) == first
    # Python's own order where it applies.
    assert D("a", 1) < D("a", 2) < D("b", 0)
    assert D("x", 1) < D("x", "a")  # numbers before strings
    assert D("x") < D("x", 0)  # None first


def test_duplicate_directions_raise():
    with pytest.raises(ValueError, match="more than once"):
        bases.VectorSpaceWithBasis([D("a"), D("a")])
    with pytest.raises(ValueError, match="more than once"):
        bases.VectorInBasis([D("a"), D("a")], np.zeros(2))


def test_magnitude_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        bases.VectorInBasis([D("a"), D("b")], np.zeros(3))


def test_vector_arithmetic():
    space = bases.VectorSpaceWithBasis.from_names(["a", "b"])
    x = space.make_vector(np.array([1.0, 2.0]))
    y = space.make_vector(np.array([3.0, -1.0]))
    assert x + y == space.make_vector([4.0, 1.0])
    assert x - y == space.make_vector([-2.0, 3.0])
    assert 2 * x == space.make_vector([2.0, 4.0]) == x * 2
    assert x / 2 == space.make_vector([0.5, 1.0])
    assert -x == space.make_vector([-1.0, -2.0])
    assert sum([x, y]) == x + y
    assert bases.VectorInBasis.sum([x, y, x]) == space.make_vector([5.0, 3.0])


def test_vector_equality_tolerance_and_order():
    x = bases.VectorInBasis([D("a"), D("b")], np.array([1.0, 2.0]))
    y = bases.VectorInBasis([D("b"), D("a")], np.array([2.0 + 1e-12, 1.0]))
    assert x == y
    assert x + y == bases.VectorInBasis([D("a"), D("b")], np.array([2.0, 4.0]))
    assert x != bases.VectorInBasis([D("a"), D("b")], np.array([1.0, 2.1]))
    assert x != bases.VectorInBasis([D("a"), D("c")], np.array([1.0, 2.0]))


def test_adding_different_bases_raises():
    x = bases.VectorInBasis([D("a")], np.array([1.0]))
    y = bases.VectorInBasis([D("b")], np.array([1.0]))
    with pytest.raises(ValueError, match="different directions"):
        _ = x + y


def test_add_directions_is_union():
    x = bases.VectorInBasis([D("a"), D("b")], np.array([1.0, 2.0]))
    y = bases.VectorInBasis([D("c"), D("b")], np.array([5.0, 1.0]))
    z = x.add_directions(y)
    assert z.basis_directions == [D("a"), D("b"), D("c")]
    np.testing.assert_allclose(z.magnitudes, [1.0, 3.0, 5.0])


def test_batched_vectors_and_stack():
    space = bases.VectorSpaceWithBasis.from_values("t", range(3))
    batch = space.make_vector(np.arange(12.0).reshape(2, 2, 3))
    assert batch.project([D("t", 2), D("t", 9)]).magnitudes.shape == (2, 2, 2)
    stacked = bases.VectorInBasis.stack(space.basis_vectors())
    np.testing.assert_allclose(stacked.magnitudes, np.eye(3))
    with pytest.raises(ValueError, match="axis"):
        bases.VectorInBasis.stack(space.basis_vectors(), axis=-1)


def test_project_keeps_fills_and_drops():
    x = bases.VectorInBasis([D("a"), D("b")], np.array([[1.0, 2.0], [3.0, 4.0]]))
    target = bases.VectorSpaceWithBasis([D("b"), D("c")])
    p = x.project(target)
    assert p.basis_directions == target.basis
    np.testing.assert_allclose(p.magnitudes, [[2.0, 0.0], [4.0, 0.0]])


def test_copy_with_new_magnitudes():
    space = bases.VectorSpaceWithBasis.from_names(["a", "b"])
    x = space.null_vector().copy_with_new_magnitudes(np.array([1, 2]))
    assert x == space.make_vector([1.0, 2.0])
    with pytest.raises(ValueError):
        x.copy_with_new_magnitudes(np.zeros(3))


def test_space_membership_and_vectors():
    space = bases.VectorSpaceWithBasis.from_values("t", ["a", "b"])
    assert D("t", "a") in space and D("t", "c") not in space
    assert space.vector_from_basis_direction(D("t", "b")) in space
    assert bases.VectorInBasis([D("t", "c")], np.ones(1)) not in space
    assert space.num_dims == 2
    assert space.index_by_direction[D("t", "b")] == 1
    assert space.basis_set == {D("t", "a"), D("t", "b")}
    assert [v.magnitudes.tolist() for v in space.basis_vectors()] == [[1, 0], [0, 1]]
    assert space.null_vector() == space.make_vector(np.zeros(2))
    with pytest.raises(ValueError, match="not a direction"):
        space.vector_from_basis_direction(D("t", "c"))
    sub = bases.VectorSpaceWithBasis([D("t", "b")])
    assert sub.issubspace(space) and not space.issubspace(sub)
    assert bases.VectorSpaceWithBasis.from_names(["one"]).basis == [D("one")]


def test_direct_sum_and_join():
    a = bases.VectorSpaceWithBasis.from_values("z", [2, 1])
    b = bases.VectorSpaceWithBasis.from_names(["a"])
    assert bases.direct_sum(a, b).basis == [D("z", 2), D("z", 1), D("a")]
    with pytest.raises(ValueError, match="z:1"):
        bases.direct_sum(a, bases.VectorSpaceWithBasis([D("z", 1)]))
    joined = bases.join_vector_spaces(a, b, bases.VectorSpaceWithBasis([D("z", "s"), D("z", 1)]))
    assert joined.basis == [D("a"), D("z", 1), D("z", 2), D("z", "s")]


def test_ensure_dims():
    bases.ensure_dims(bases.VectorSpaceWithBasis.from_names(["one"]), 1)
    with pytest.raises(ValueError, match="bos_space must have exactly 1"):
        bases.ensure_dims(bases.VectorSpaceWithBasis.from_names(["a", "b"]), 1, "bos_space")


def test_spaces_compare_and_hash_by_basis():
    a = bases.VectorSpaceWithBasis.from_names(["x", "y"])
    b = bases.VectorSpaceWithBasis([D("x"), D("y")])
    assert a == b and hash(a) == hash(b)


def test_module_docstring_example_runs():
    import doctest

    assert doctest.testmod(bases).failed == 0
