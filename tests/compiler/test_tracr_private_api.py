"""Tracr's private compiler functions that third-party tools call keep Tracr's behaviour."""

import haiku as hk
import jax.numpy as jnp
import numpy as np
import pytest

from tracr.compiler import (
    assemble,
    basis_inference,
    compiling,
    craft_graph_to_model,
    expr_to_craft_graph,
    lib,
    rasp_to_graph,
)
from tracr.craft import bases
from tracr.rasp import rasp

D = bases.BasisDirection
BOS = D("tokens", "compiler_bos")
ONE = D("one")


def _graph(program, vocab, max_seq_len, with_blocks=True):
    extracted = rasp_to_graph.extract_rasp_graph(program)
    basis_inference.infer_bases(extracted.graph, extracted.sink, vocab, max_seq_len)
    if with_blocks:
        expr_to_craft_graph.add_craft_components_to_rasp_graph(
            extracted.graph, bos_dir=BOS, one_dir=ONE
        )
    return extracted


def test_make_embedding_modules_projects_the_given_spaces():
    residual = bases.VectorSpaceWithBasis(
        [ONE, D("tokens", "a"), D("tokens", "b"), D("indices", 0), D("indices", 1), D("out", 0)]
        + [D("out", 1)]
    )
    tokens_space = bases.VectorSpaceWithBasis.from_values("tokens", ["a", "b", "c"])
    indices_space = bases.VectorSpaceWithBasis.from_values("indices", [0, 1])
    output_space = bases.VectorSpaceWithBasis.from_values("out", [0, 1])

    @hk.without_apply_rng
    @hk.transform
    def embed(ids, x):
        modules = assemble._make_embedding_modules(
            residual_space=residual,
            tokens_space=tokens_space,
            indices_space=indices_space,
            output_space=output_space,
        )
        return (
            modules.token_embed(ids),
            modules.pos_embed(jnp.arange(2)),
            modules.unembed(x, use_unembed_argmax=True),
        )

    x = jnp.zeros((1, 2, residual.num_dims)).at[0, 0, 6].set(1.0).at[0, 1, 5].set(1.0)
    params = embed.init(None, jnp.array([0, 1, 2]), x)
    tok, pos, out = embed.apply(params, jnp.array([0, 1, 2]), x)
    # Token id i is tokens_space.basis[i] plus `one`; "c" is not in the residual.
    np.testing.assert_array_equal(
        tok, [[1, 1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(pos, [[0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(out, [[1, 0]])


def test_allocate_modules_to_layers_gives_half_layer_numbers():
    program = lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=3, min_key=1)
    extracted = _graph(program, {1, 2, 3}, 3)
    allocation = craft_graph_to_model._allocate_modules_to_layers(
        extracted.graph, extracted.sources
    )
    layers = craft_graph_to_model.allocate_layers(extracted.graph).layers
    starts = {}
    for number, layer in enumerate(layers):
        for label, _ in layer.heads:
            starts.setdefault(label, 2 * number)
        for label, _ in layer.mlps:
            starts.setdefault(label, 2 * number + 1)
    assert allocation == starts
    assert set(allocation) == {
        label for label, data in extracted.graph.nodes(data=True) if data.get("MODEL_BLOCK")
    }
    # sort's Aggregate is a head (even); the key Map is an MLP (odd).
    assert allocation[program.label] % 2 == 0
    depth = craft_graph_to_model.compute_computational_depth(extracted.graph, extracted.sources)
    assert depth[rasp.tokens.label] == -1
    assert depth[program.label] == max(depth.values())


def test_add_craft_components_refuses_graphs_it_cannot_annotate():
    program = lib.make_hist()
    extracted = rasp_to_graph.extract_rasp_graph(program)
    with pytest.raises(ValueError, match="infer_bases"):
        expr_to_craft_graph.add_craft_components_to_rasp_graph(extracted.graph)
    extracted = _graph(program, {"a", "b"}, 3)
    with pytest.raises(ValueError, match="already has model blocks"):
        expr_to_craft_graph.add_craft_components_to_rasp_graph(extracted.graph)


@pytest.mark.parametrize(
    "vocab, order",
    [
        ({"c", "a", "b"}, ["a", "b", "c", "compiler_bos", "compiler_pad"]),
        ({3, 1, 2}, ["compiler_bos", "compiler_pad", 1, 2, 3]),  # Tracr: str < int
    ],
)
def test_token_ids_follow_tracrs_order_with_bos_and_pad(vocab, order):
    model = compiling.compile_rasp_to_model(rasp.tokens == 2, vocab, 2)
    assert model.input_encoder.encoding_map == {v: i for i, v in enumerate(order)}
    got = model.apply(["compiler_bos", *sorted(vocab)[:2]]).decoded[1:]
    assert got == (rasp.tokens == 2)(sorted(vocab)[:2])


@pytest.mark.parametrize(
    "tokens, message",
    [
        (["a", "b"], r"^First input token must be BOS token\."),
        (["compiler_bos", "z"], r"^Inputs \{'z'\} not found in encoding"),
    ],
)
def test_encoder_errors_start_with_tracrs_wording(tokens, message):
    model = compiling.compile_rasp_to_model(rasp.tokens == "b", {"a", "b"}, 2)
    with pytest.raises(ValueError, match=message):
        model.input_encoder.encode(tokens)
    with pytest.raises(ValueError, match=r"^Inputs \{99\} not found in decoding map"):
        model.input_encoder.decode([99])


def test_basis_inference_logs_ignored_arithmetic_errors(caplog):
    program = rasp.Map(lambda x: 1 / x, rasp.tokens)
    with caplog.at_level("WARNING", logger="tracr.utils.errors"):
        _graph(program, {0, 1, 2}, 2, with_blocks=False)
    assert any("Encountered arithmetic error" in r.getMessage() for r in caplog.records)
