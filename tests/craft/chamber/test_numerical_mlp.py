"""Tests for tracr.craft.chamber.numerical_mlp: every value of each value set."""

import numpy as np
import pytest

from tracr.craft import bases, transformers
from tracr.craft.chamber import numerical_mlp

D = bases.BasisDirection
ONE_SPACE = bases.VectorSpaceWithBasis.from_names(["one"])
X_SPACE = bases.VectorSpaceWithBasis.from_names(["x"])
Y_SPACE = bases.VectorSpaceWithBasis.from_names(["y"])


def _fractions(max_w):
    return sorted({k / w for w in range(1, max_w + 1) for k in range(w + 1)})


def _run(mlp, xs, output_space):
    residual = bases.join_vector_spaces(mlp.residual_space, X_SPACE, ONE_SPACE)
    mags = np.zeros((len(xs), residual.num_dims))
    mags[:, residual.index_by_direction[D("x")]] = xs
    mags[:, residual.index_by_direction[D("one")]] = 1.0
    return mlp.apply(residual.make_vector(mags)).project(output_space).magnitudes


def _inverse(x):
    return 1 / x


FUNCTIONS = {
    "identity": lambda x: x,
    "square": lambda x: x * x,
    "threshold": lambda x: float(x > 0.5),
    "inverse": _inverse,  # raises ZeroDivisionError at 0: that value is dropped
    "wiggle": lambda x: np.sin(40 * x),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("max_w", [1, 7, 30])
def test_map_numerical_mlp_every_value(name, max_w):
    f = FUNCTIONS[name]
    values = _fractions(max_w)
    mlp = numerical_mlp.map_numerical_mlp(
        f, X_SPACE, Y_SPACE, values, ONE_SPACE, hidden_name="_hidden_y_"
    )
    kept = [v for v in values if not (name == "inverse" and v == 0)]
    out = _run(mlp, kept, Y_SPACE)[:, 0]
    np.testing.assert_allclose(out, [f(v) for v in kept], atol=1e-3)


def test_tolerates_input_noise_up_to_most_of_the_local_gap():
    values = np.array([-3.0, -2.9, 0.0, 0.001, 0.5, 10.0])
    f = lambda x: x * 2 + 1  # noqa: E731
    mlp = numerical_mlp.map_numerical_mlp(f, X_SPACE, Y_SPACE, values, ONE_SPACE)
    gaps = np.diff(values)
    local = np.minimum(np.append(gaps, np.inf), np.insert(gaps, 0, np.inf))
    for shift in (-0.45, 0.45):
        out = _run(mlp, values + shift * local, Y_SPACE)[:, 0]
        np.testing.assert_allclose(out, f(values), atol=1e-9)


def test_single_value_is_constant_and_empty_is_zero():
    mlp = numerical_mlp.map_numerical_mlp(lambda x: 7.0, X_SPACE, Y_SPACE, [2.0], ONE_SPACE)
    np.testing.assert_allclose(_run(mlp, [2.0], Y_SPACE), [[7.0]])
    mlp = numerical_mlp.map_numerical_mlp(lambda x: None, X_SPACE, Y_SPACE, [1.0, 2.0], ONE_SPACE)
    np.testing.assert_allclose(_run(mlp, [1.0, 2.0], Y_SPACE), [[0.0], [0.0]])


@pytest.mark.parametrize("max_w", [5, 30])
def test_map_numerical_to_categorical_every_value(max_w):
    values = _fractions(max_w)
    f = lambda x: int(round(x * 4))  # noqa: E731
    output_space = bases.VectorSpaceWithBasis.from_values("y", range(5))
    mlp = numerical_mlp.map_numerical_to_categorical_mlp(
        f, X_SPACE, output_space, values, ONE_SPACE, hidden_name="_hidden_y_"
    )
    out = _run(mlp, values, output_space)
    np.testing.assert_allclose(out, np.eye(5)[[f(v) for v in values]], atol=1e-6)


def test_map_numerical_to_categorical_missing_value_raises():
    output_space = bases.VectorSpaceWithBasis.from_values("y", [0])
    with pytest.raises(ValueError, match="has no direction in output_space"):
        numerical_mlp.map_numerical_to_categorical_mlp(
            lambda x: x, X_SPACE, output_space, [0, 1], ONE_SPACE
        )


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="large_number must be >= 1"):
        numerical_mlp.map_numerical_mlp(
            lambda x: x, X_SPACE, Y_SPACE, [0, 1], ONE_SPACE, large_number=0.5
        )
    with pytest.raises(ValueError, match="input_space must have exactly 1"):
        numerical_mlp.map_numerical_mlp(
            lambda x: x, bases.join_vector_spaces(X_SPACE, Y_SPACE), Y_SPACE, [0, 1], ONE_SPACE
        )


def test_discretising_layer_materials():
    materials = numerical_mlp._get_discretising_layer(
        [0.0, 1.0, 3.0], lambda x: x * 10, "h", D("one"), 100
    )
    assert isinstance(materials, numerical_mlp.DiscretisingLayerMaterials)
    assert materials.output_values == [0.0, 10.0, 30.0]
    assert materials.hidden_space.num_dims == 5
    assert {d.name for d in materials.hidden_space.basis} == {"h"}
    assert materials.action(D("one")).basis_directions == materials.hidden_space.basis


def test_hidden_name_makes_mlps_combinable():
    a = numerical_mlp.map_numerical_mlp(
        lambda x: x, X_SPACE, Y_SPACE, [0, 1], ONE_SPACE, hidden_name="_hidden_a_"
    )
    z_space = bases.VectorSpaceWithBasis.from_names(["z"])
    b = numerical_mlp.map_numerical_mlp(
        lambda x: 1 - x, X_SPACE, z_space, [0, 1], ONE_SPACE, hidden_name="_hidden_b_"
    )
    both = transformers.MLP.combine_in_parallel([a, b])
    out = _run(both, [0.0, 1.0], bases.join_vector_spaces(Y_SPACE, z_space))
    np.testing.assert_allclose(out, [[0.0, 1.0], [1.0, 0.0]])


@pytest.mark.parametrize("same_input", [False, True])
def test_linear_sequence_map(same_input):
    second = D("x") if same_input else D("w")
    mlp = numerical_mlp.linear_sequence_map_numerical_mlp(
        D("x"), second, D("y"), 2.5, -0.5, hidden_name="_hidden_y_"
    )
    rng = np.random.default_rng(0)
    xs, ws = rng.normal(size=20) * 10, rng.normal(size=20) * 10
    residual = bases.join_vector_spaces(mlp.residual_space, ONE_SPACE)
    mags = np.zeros((20, residual.num_dims))
    mags[:, residual.index_by_direction[D("x")]] = xs
    if not same_input:
        mags[:, residual.index_by_direction[D("w")]] = ws
    out = mlp.apply(residual.make_vector(mags)).project(Y_SPACE).magnitudes[:, 0]
    expected = 2.5 * xs - 0.5 * (xs if same_input else ws)
    np.testing.assert_allclose(out, expected, atol=1e-9)


def test_steps_only_where_f_changes():
    values = _fractions(30)
    f = lambda x: x < 0.5  # noqa: E731
    output_space = bases.VectorSpaceWithBasis.from_values("y", [False, True])
    mlp = numerical_mlp.map_numerical_to_categorical_mlp(
        f, X_SPACE, output_space, values, ONE_SPACE, hidden_name="_hidden_y_"
    )
    # One breakpoint where f changes: the constant neuron and one pair.
    assert mlp.fst.output_space.num_dims == 3
    out = _run(mlp, values, output_space)
    np.testing.assert_allclose(out, np.eye(2)[[int(f(v)) for v in values]], atol=1e-6)


def test_distinct_sorted_numpy_path_matches_python_path():
    values = [3, 1.0, 1, -0.0, 0, 2.5, 10**15, 2.5, -7, True]
    keys, firsts = numerical_mlp._distinct_sorted(values)  # bool: the Python path
    fast_keys, fast_firsts = numerical_mlp._distinct_sorted(values[:-1])  # numpy path
    assert keys == fast_keys == [-7.0, 0.0, 1.0, 2.5, 3.0, 1e15]
    assert fast_firsts == firsts == [-7, -0.0, 1.0, 2.5, 3, 10**15]
    assert [type(v) for v in fast_firsts] == [type(v) for v in firsts]
