"""The IR invariants hold between passes for every library program."""

import dataclasses

import numpy as np
import pytest

from tracr.compiler import (
    basis_inference,
    combined_selectors,
    compiling,
    craft_graph_to_model,
    expr_to_craft_graph,
    invariants,
    rasp_to_graph,
)
from tracr.compiler.library_cases import LIBRARY_CASES
from tracr.craft import bases, transformers
from tracr.transformer import spec as spec_lib

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


def test_layer_order_checker_catches_a_bad_schedule():
    case = LIBRARY_CASES[1]  # reverse: several dependent blocks
    extracted = rasp_to_graph.extract_rasp_graph(case.program(4))
    graph = extracted.graph
    basis_inference.infer_bases(graph, extracted.sink, set(case.vocab), 4)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(graph, bos_dir=BOS, one_dir=ONE)
    good = craft_graph_to_model.allocate_layers(graph)
    invariants.check_layer_order(graph, good)
    squashed = craft_graph_to_model.LayerAllocation(
        heads=tuple(h for layer in good.layers for h in layer.heads),
        mlps=tuple(m for layer in good.layers for m in layer.mlps),
    )
    bad = craft_graph_to_model.Allocation(layers=(squashed,), craft_model=good.craft_model)
    with pytest.raises(invariants.InvariantError, match="does not run after"):
        invariants.check_layer_order(graph, bad)


def test_spec_checker_catches_a_weight_outside_the_spec():
    model = compiling.compile_rasp_to_model(LIBRARY_CASES[1].program(3), {"a", "b"}, 3)
    invariants.check_spec(model)
    head = next(model.spec.heads())
    name = spec_lib.param_name(head.layer, "attn", "query")
    stray = next(i for i in range(model.spec.d_model) if i not in head.query)
    w = np.array(model.params[name]["w"])
    w[stray, head.head * model.spec.key_size] = 1.0
    edited = dataclasses.replace(
        model, params={**model.params, name: {**model.params[name], "w": w}}
    )
    with pytest.raises(invariants.InvariantError, match=f"head {head.name}"):
        invariants.check_spec(edited)


def test_compiling_runs_the_checkers_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(invariants, "check_spec", lambda model: calls.append(model))
    compiling.compile_rasp_to_model_with_report(
        LIBRARY_CASES[0].program(3), {"a"}, 3, check_invariants=True
    )
    compiling.compile_rasp_to_model_with_report(
        LIBRARY_CASES[0].program(3), {"a"}, 3, check_invariants=False
    )
    assert len(calls) == 1


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
