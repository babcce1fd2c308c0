"""Blocks write their output in the order of the output space the caller gave (as Tracr)."""

from tracr.craft import bases
from tracr.craft.chamber import categorical_attn, categorical_mlp, numerical_mlp

D = bases.BasisDirection
V = bases.VectorSpaceWithBasis
ONE = V([D("one")])
UNSORTED_OUT = V.from_values("z", [2, 0, 1])


def test_mlp_outputs_keep_the_given_order():
    inputs = V.from_values("x", [3, 1, 2])
    mlps = [
        categorical_mlp.map_categorical_mlp(inputs, UNSORTED_OUT, lambda d: D("z", d.value % 3)),
        numerical_mlp.map_numerical_to_categorical_mlp(
            f=lambda x: x % 3,
            input_space=V([D("n")]),
            output_space=UNSORTED_OUT,
            input_value_set={1, 2, 3},
            one_space=ONE,
            hidden_name="h",
        ),
        categorical_mlp.sequence_map_categorical_mlp(
            inputs, V.from_values("y", [1, 0]), UNSORTED_OUT, lambda a, b: D("z", 0), ONE
        ),
    ]
    for mlp in mlps:
        assert mlp.snd.output_space.basis == UNSORTED_OUT.basis


def test_attention_output_keeps_the_given_order():
    out = V.from_values("o", [5, 4])
    head = categorical_attn.categorical_attn(
        query_space=V.from_values("q", [1, 0]),
        key_space=V.from_values("k", [2, 0, 1]),
        value_space=V.from_values("v", [5, 4]),
        output_space=out,
        bos_space=V([D("tokens", "bos")]),
        one_space=ONE,
        attn_fn=lambda q, k: q == k,
    )
    assert head.w_ov.output_space.basis == out.basis


def test_direct_sum_keeps_order_and_join_sorts():
    a, b = V.from_values("b", [2, 1]), V.from_values("a", [0])
    assert bases.direct_sum(a, b).basis == a.basis + b.basis
    assert bases.join_vector_spaces(a, b).basis == bases.sort_directions(a.basis + b.basis)
