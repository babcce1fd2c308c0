"""The IR invariants hold between passes for every library program."""

import pytest

from tracr.compiler import (
    basis_inference,
    combined_selectors,
    craft_graph_to_model,
    expr_to_craft_graph,
    invariants,
    rasp_to_graph,
)
from tracr.compiler.library_cases import LIBRARY_CASES
from tracr.craft import bases, transformers

BOS = bases.BasisDirection("tokens", "compiler_bos")
ONE = bases.BasisDirection("one")


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=lambda c: c.name)
def test_invariants_hold_between_passes(case):
    program = combined_selectors.lower_combined_selectors(case.program(5))
    extracted = rasp_to_graph.extract_rasp_graph(program)
    graph = extracted.graph
    basis_inference.infer_bases(graph, extracted.sink, set(case.vocab), 5)
    invariants.check_bases(graph)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(graph, bos_dir=BOS, one_dir=ONE)
    invariants.check_blocks(graph, BOS, ONE)
    invariants.check_layer_order(graph)
    model = craft_graph_to_model.craft_graph_to_model(graph, extracted.sources)
    for block in model.blocks:
        assert block.residual_space.issubspace(model.residual_space)


def test_layer_order_checker_catches_a_bad_schedule(monkeypatch):
    case = LIBRARY_CASES[1]  # reverse: several dependent blocks
    extracted = rasp_to_graph.extract_rasp_graph(case.program(4))
    graph = extracted.graph
    basis_inference.infer_bases(graph, extracted.sink, set(case.vocab), 4)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(graph, bos_dir=BOS, one_dir=ONE)
    monkeypatch.setattr(
        craft_graph_to_model,
        "compute_computational_depth",
        lambda graph, sources: {label: 0 for label in graph.nodes},
    )
    with pytest.raises(invariants.InvariantError, match="does not run after"):
        invariants.check_layer_order(graph)


def test_block_checker_catches_a_stray_write():
    case = LIBRARY_CASES[0]  # length
    extracted = rasp_to_graph.extract_rasp_graph(case.program(4))
    graph = extracted.graph
    basis_inference.infer_bases(graph, extracted.sink, set(case.vocab), 4)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(graph, bos_dir=BOS, one_dir=ONE)
    label = extracted.sink["ID"]
    block = graph.nodes[label]["MODEL_BLOCK"]
    mlp = block.blocks[-1]
    assert isinstance(mlp, transformers.MLP)
    bad_space = bases.VectorSpaceWithBasis([bases.BasisDirection("tokens", "a")])
    graph.nodes[label]["MODEL_BLOCK"] = transformers.MLP(
        mlp.fst, type(mlp.snd)(mlp.snd.input_space, bad_space, mlp.snd.matrix[:, :1])
    )
    with pytest.raises(invariants.InvariantError, match="writes outside"):
        invariants.check_blocks(graph, BOS, ONE)
