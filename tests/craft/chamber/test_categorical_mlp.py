"""Tests for tracr.craft.chamber.categorical_mlp: every input value, every pair."""

import numpy as np
import pytest

from tracr.craft import bases, transformers
from tracr.craft.chamber import categorical_mlp

D = bases.BasisDirection
ONE_SPACE = bases.VectorSpaceWithBasis.from_names(["one"])


def _apply(mlp, rows):
    """Runs `mlp` on positions given as {direction: magnitude}, plus `one`."""
    residual = bases.join_vector_spaces(mlp.residual_space, ONE_SPACE)
    mags = np.zeros((len(rows), residual.num_dims))
    for p, row in enumerate(rows):
        mags[p, residual.index_by_direction[D("one")]] = 1.0
        for d, m in row.items():
            mags[p, residual.index_by_direction[d]] += m
    return mlp.apply(residual.make_vector(mags))


def test_map_categorical_mlp_every_value():
    values = list(range(7))
    f = lambda x: None if x == 6 else (x * x) % 4  # noqa: E731
    input_space = bases.VectorSpaceWithBasis.from_values("x", values)
    output_space = bases.VectorSpaceWithBasis.from_values("y", range(4))
    mlp = categorical_mlp.map_categorical_mlp(
        input_space, output_space, lambda d: D("y", f(d.value))
    )
    assert {d.name for d in mlp.fst.output_space.basis} == {"_hidden_y_"}
    out = _apply(mlp, [{D("x", v): 1} for v in values]).project(output_space).magnitudes
    for v, row in zip(values, out, strict=True):
        expected = np.zeros(4) if f(v) is None else np.eye(4)[f(v)]
        np.testing.assert_allclose(row, expected)


def test_map_categorical_mlp_ignores_outputs_outside_space():
    input_space = bases.VectorSpaceWithBasis.from_values("x", ["a", "b"])
    output_space = bases.VectorSpaceWithBasis.from_values("y", ["a"])
    mlp = categorical_mlp.map_categorical_mlp(input_space, output_space, lambda d: D("y", d.value))
    out = _apply(mlp, [{D("x", "a"): 1}, {D("x", "b"): 1}]).project(output_space)
    np.testing.assert_allclose(out.magnitudes, [[1.0], [0.0]])


def test_map_categorical_to_numerical_every_value():
    values = ["a", "bb", "ccc", "dddd"]
    input_space = bases.VectorSpaceWithBasis.from_values("x", values)
    output_space = bases.VectorSpaceWithBasis.from_names(["len"])
    mlp = categorical_mlp.map_categorical_to_numerical_mlp(
        input_space, output_space, lambda v: None if v == "a" else len(v) / 2
    )
    out = _apply(mlp, [{D("x", v): 1} for v in values]).project(output_space).magnitudes[:, 0]
    np.testing.assert_allclose(out, [0.0, 1.0, 1.5, 2.0])
    with pytest.raises(ValueError, match="output_space must have exactly 1"):
        categorical_mlp.map_categorical_to_numerical_mlp(input_space, input_space, len)


def _check_sequence_map(mlp, space1, space2, output_space, f, name1="x", name2="y"):
    pairs = [(a.value, b.value) for a in space1.basis for b in space2.basis]
    rows = [{D(name1, a): 1, D(name2, b): 1} for a, b in pairs]
    out = _apply(mlp, rows).project(output_space).magnitudes
    values = [d.value for d in output_space.basis]
    for (a, b), row in zip(pairs, out, strict=True):
        result = f(a, b)
        expected = np.zeros(len(values))
        if result in values:
            expected[values.index(result)] = 1.0
        np.testing.assert_allclose(row, expected, err_msg=f"f({a}, {b})")


def test_sequence_map_every_pair():
    space1 = bases.VectorSpaceWithBasis.from_values("x", range(5))
    space2 = bases.VectorSpaceWithBasis.from_values("y", ["p", "q", "r"])
    f = lambda a, b: None if (a, b) == (0, "p") else f"{b}{a % 3}"  # noqa: E731
    output_values = sorted({f(a, b) for a in range(5) for b in "pqr"} - {None, "r2"})
    output_space = bases.VectorSpaceWithBasis.from_values("z", output_values)
    mlp = categorical_mlp.sequence_map_categorical_mlp(
        space1,
        space2,
        output_space,
        lambda d1, d2: D("z", f(d1.value, d2.value)),
        one_space=ONE_SPACE,
        hidden_name="_hidden_z_",
    )
    assert mlp.fst.output_space.num_dims == 15
    assert {d.name for d in mlp.fst.output_space.basis} == {"_hidden_z_"}
    _check_sequence_map(mlp, space1, space2, output_space, f)


@pytest.mark.parametrize("overlap", [range(4), [3]])
def test_sequence_map_with_overlapping_inputs_raises(overlap):
    space = bases.VectorSpaceWithBasis.from_values("x", range(4))
    other = bases.VectorSpaceWithBasis.from_values("x", overlap)
    output_space = bases.VectorSpaceWithBasis.from_values("z", range(7))
    with pytest.raises(ValueError, match=r"^Input spaces to a SequenceMap must be disjoint"):
        categorical_mlp.sequence_map_categorical_mlp(
            space, other, output_space, lambda d1, d2: D("z", d1.value + d2.value)
        )


def test_sequence_map_large_value_sets_are_fast():
    space1 = bases.VectorSpaceWithBasis.from_values("x", range(60))
    space2 = bases.VectorSpaceWithBasis.from_values("y", range(60))
    output_space = bases.VectorSpaceWithBasis.from_values("z", range(120))
    mlp = categorical_mlp.sequence_map_categorical_mlp(
        space1, space2, output_space, lambda d1, d2: D("z", d1.value + d2.value)
    )
    assert mlp.fst.output_space.num_dims == 3600
    _check_sequence_map(mlp, space1, space2, output_space, lambda a, b: a + b)


def test_default_hidden_names_collide_loudly():
    space1 = bases.VectorSpaceWithBasis.from_values("x", range(2))
    space2 = bases.VectorSpaceWithBasis.from_values("y", range(2))
    out1 = bases.VectorSpaceWithBasis.from_values("z1", range(3))
    out2 = bases.VectorSpaceWithBasis.from_values("z2", range(3))
    op = lambda d1, d2: D(d1.name, 0)  # noqa: E731
    mlps = [
        categorical_mlp.sequence_map_categorical_mlp(space1, space2, out, op)
        for out in (out1, out2)
    ]
    with pytest.raises(ValueError, match="hidden directions collide"):
        transformers.MLP.combine_in_parallel(mlps)
    # Maps derive their hidden names from the output space, so they combine.
    maps = [
        categorical_mlp.map_categorical_mlp(space1, out, lambda d: None) for out in (out1, out2)
    ]
    assert transformers.MLP.combine_in_parallel(maps).fst.output_space.num_dims == 4
