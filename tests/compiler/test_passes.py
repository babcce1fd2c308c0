"""One test group per compiler pass, each on its own input and output.

rasp_to_graph -> basis_inference -> expr_to_craft_graph -> craft_graph_to_model
-> assemble. Each pass is run on a hand-built program and its result is
checked against what the RASP evaluator or the previous pass says.
"""

import itertools

import networkx as nx
import numpy as np

from tracr.compiler import (
    assemble,
    basis_inference,
    craft_graph_to_model,
    expr_to_craft_graph,
    nodes,
    rasp_to_graph,
)
from tracr.craft import bases, transformers
from tracr.rasp import rasp

BOS = bases.BasisDirection("tokens", "compiler_bos")
ONE = bases.BasisDirection("one")
VOCAB = {1, 2, 3}
MAX_SEQ_LEN = 3


def _program():
    """A map, a selector width and a categorical aggregate: every kind of block."""
    incremented = rasp.categorical(rasp.Map(lambda x: x + 1, rasp.tokens))
    smaller = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT)
    count = rasp.SelectorWidth(smaller)
    flip = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.EQ)
    moved = rasp.categorical(rasp.Aggregate(flip, incremented))
    out = rasp.categorical(rasp.SequenceMap(lambda a, b: a + b, moved, count))
    return out, {"incremented": incremented, "count": count, "moved": moved}


def _graph(program):
    extracted = rasp_to_graph.extract_rasp_graph(program)
    basis_inference.infer_bases(extracted.graph, extracted.sink, VOCAB, MAX_SEQ_LEN)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(
        extracted.graph, bos_dir=BOS, one_dir=ONE, max_seq_len=MAX_SEQ_LEN
    )
    return extracted


def _inputs():
    for n in range(1, MAX_SEQ_LEN + 1):
        yield from itertools.product(sorted(VOCAB), repeat=n)


# ---------------------------------------------------------------- rasp_to_graph


def test_rasp_to_graph_has_one_node_per_expression_and_child_edges():
    program, parts = _program()
    extracted = rasp_to_graph.extract_rasp_graph(program)
    graph = extracted.graph
    assert extracted.sink[nodes.EXPR] is program
    for expr in parts.values():
        assert graph.nodes[expr.label][nodes.EXPR] is expr
        for child in expr.children:
            assert graph.has_edge(child.label, expr.label)
    source_labels = {s[nodes.ID] for s in extracted.sources}
    assert source_labels == {rasp.tokens.label, rasp.indices.label}
    assert nx.is_directed_acyclic_graph(graph)


# -------------------------------------------------------------- basis_inference


def test_basis_inference_value_sets_contain_every_evaluated_value():
    program, parts = _program()
    extracted = rasp_to_graph.extract_rasp_graph(program)
    basis_inference.infer_bases(extracted.graph, extracted.sink, VOCAB, MAX_SEQ_LEN)
    graph = extracted.graph
    for expr in [program, *parts.values()]:
        value_set = graph.nodes[expr.label][nodes.VALUE_SET]
        for tokens in _inputs():
            seen = set(rasp.evaluate(expr, list(tokens))) - {None}
            assert seen <= value_set, (expr.label, tokens)
        basis = graph.nodes[expr.label][nodes.OUTPUT_BASIS]
        assert {d.value for d in basis} == value_set
        assert all(d.name == expr.label for d in basis)


# ---------------------------------------------------------- expr_to_craft_graph


def test_expr_to_craft_graph_blocks_compute_their_expression():
    """Each block, applied to residuals that hold its inputs, writes its expression."""
    program, parts = _program()
    graph = _graph(program).graph
    block = graph.nodes[parts["incremented"].label][nodes.MODEL_BLOCK]
    assert isinstance(block, transformers.MLP)
    in_space = bases.VectorSpaceWithBasis(graph.nodes[rasp.tokens.label][nodes.OUTPUT_BASIS])
    one_space = bases.VectorSpaceWithBasis([ONE])
    residual = bases.join_vector_spaces(in_space, one_space, block.residual_space)
    for token in sorted(VOCAB):
        x = residual.vector_from_basis_direction(
            bases.BasisDirection(rasp.tokens.label, token)
        ) + residual.vector_from_basis_direction(ONE)
        out = block.apply(x)
        hot = [d for d, m in zip(out.basis_directions, out.magnitudes) if abs(m - 1) < 1e-6]
        assert hot == [bases.BasisDirection(parts["incremented"].label, token + 1)]
    for expr in (parts["count"], parts["moved"], program):
        assert graph.nodes[expr.label][nodes.MODEL_BLOCK] is not None


def test_expr_to_craft_graph_leaves_selectors_and_inputs_without_blocks():
    program, _ = _program()
    graph = _graph(program).graph
    for label in graph.nodes:
        expr = graph.nodes[label][nodes.EXPR]
        if isinstance(expr, (rasp.Selector, rasp.TokensType, rasp.IndicesType)):
            assert graph.nodes[label].get(nodes.MODEL_BLOCK) is None


# --------------------------------------------------------- craft_graph_to_model


def test_allocation_places_each_block_after_its_inputs_and_as_early_as_possible():
    program, parts = _program()
    graph = _graph(program).graph
    allocation = craft_graph_to_model.allocate_layers(graph)
    layer_of = {}
    for index, layer in enumerate(allocation.layers):
        for label, block in layer.heads:
            assert isinstance(block, transformers.AttentionHead)
            layer_of.setdefault(label, []).append(2 * index)
        for label, block in layer.mlps:
            assert isinstance(block, transformers.MLP)
            layer_of.setdefault(label, []).append(2 * index + 1)
    # The map needs only tokens: the first MLP. The selector width starts with a head.
    assert layer_of[parts["incremented"].label] == [1]
    assert min(layer_of[parts["count"].label]) == 0
    # The aggregate reads the map: the attention after it.
    assert layer_of[parts["moved"].label] == [2]
    assert min(layer_of[program.label]) > max(layer_of[parts["moved"].label])
    # The chained craft model has the same blocks, half-layer by half-layer.
    heads = [h for layer in allocation.layers for _, h in layer.heads]
    chained = [
        h
        for block in allocation.craft_model.blocks
        if isinstance(block, transformers.MultiAttentionHead)
        for h in block.heads()
    ]
    assert chained == heads


def test_craft_graph_to_model_keeps_tracrs_interface():
    program, _ = _program()
    extracted = _graph(program)
    model = craft_graph_to_model.craft_graph_to_model(extracted.graph, extracted.sources)
    assert isinstance(model, transformers.SeriesWithResiduals)
    again = craft_graph_to_model.allocate_layers(extracted.graph).craft_model
    assert [type(b) for b in model.blocks] == [type(b) for b in again.blocks]


# ------------------------------------------------------------------- assemble


def test_assemble_writes_the_craft_model_exactly():
    """The Haiku model's residual after every sublayer equals the craft model's."""
    program, _ = _program()
    extracted = _graph(program)
    graph = extracted.graph
    allocation = craft_graph_to_model.allocate_layers(graph)
    tokens_space = bases.VectorSpaceWithBasis(
        bases.sort_directions(
            bases.BasisDirection(rasp.tokens.label, v)
            for v in VOCAB | {"compiler_bos", "compiler_pad"}
        )
    )
    indices_space = bases.VectorSpaceWithBasis.from_values(rasp.indices.label, range(MAX_SEQ_LEN))
    output_space = bases.VectorSpaceWithBasis(graph.nodes[program.label][nodes.OUTPUT_BASIS])
    model = assemble.assemble_craft_model(
        allocation.craft_model,
        tokens_space,
        indices_space,
        output_space,
        categorical_output=True,
        bos_token="compiler_bos",
        pad_token="compiler_pad",
        allocation=allocation.layers,
        output_label=program.label,
    )
    spec = model.spec
    residual = bases.VectorSpaceWithBasis(
        [bases.BasisDirection(n, v) for n, v in zip(spec.residual_names, spec.residual_values)]
    )
    assert [str(d) for d in residual.basis] == model.residual_labels
    for tokens in [(1, 2, 3), (3, 3), (2,)]:
        ids = model.input_encoder.encode(["compiler_bos", *tokens])
        out = model.forward(model.params, np.asarray([ids]))
        embedded = np.asarray(out.transformer_output.input_embeddings[0])
        x = residual.make_vector(embedded.astype(np.float64))
        for block, expected in zip(allocation.craft_model.blocks, _sublayer_residuals(model, out)):
            x = x + block.apply(x).project(residual)
            np.testing.assert_allclose(x.magnitudes, expected, atol=1e-4)
        decoded = model.output_encoder.decode(np.asarray(out.unembedded_output[0]).tolist())
        assert decoded[1:] == rasp.evaluate(program, list(tokens))


def _sublayer_residuals(model, out):
    """The residual after each non-empty sublayer, in block order."""
    residuals = [np.asarray(r[0]) for r in out.transformer_output.residuals]
    spec = model.spec
    kept = []
    for layer in spec.layers:
        if layer.heads:
            kept.append(residuals[2 * layer.index])
        if layer.mlp is not None:
            kept.append(residuals[2 * layer.index + 1])
    return kept


def test_assemble_spec_labels_every_block():
    program, parts = _program()
    graph = _graph(program).graph
    allocation = craft_graph_to_model.allocate_layers(graph)
    labelled = {label for layer in allocation.layers for label, _ in layer.heads + layer.mlps}
    assert {program.label, *(e.label for e in parts.values())} <= labelled
