"""Checkers of the compiler IR's invariants, run between passes when asked.

Each function raises `InvariantError` naming the node and the broken rule.
They cost a walk over the graph, so `compile_rasp_to_model` runs them only
when the environment variable `TRACR_CHECK_INVARIANTS` is `1` (the test suite
sets it, in tests/conftest.py) or `check_invariants=True` is passed to
`compiling.compile_rasp_to_model_with_report`.
"""

from __future__ import annotations

import os
from typing import Optional, Set

import networkx as nx
import numpy as np

from tracr.compiler import craft_graph_to_model, nodes
from tracr.craft import bases, transformers
from tracr.rasp import rasp
from tracr.transformer import assembled
from tracr.transformer import spec as spec_lib

CHECK_ENV = "TRACR_CHECK_INVARIANTS"


def enabled(check: Optional[bool] = None) -> bool:
    """Whether to run the checkers: `check` if given, else the environment variable."""
    if check is not None:
        return check
    return os.environ.get(CHECK_ENV, "") == "1"


class InvariantError(AssertionError):
    """A compiler pass produced an IR that breaks one of its invariants."""


def _sops(graph: nx.DiGraph):
    for label in graph.nodes:
        expr = graph.nodes[label][nodes.EXPR]
        if isinstance(expr, rasp.SOp):
            yield label, graph.nodes[label], expr


def check_bases(graph: nx.DiGraph) -> None:
    """After basis_inference: every SOp has a value set and its own basis."""
    for label, node, expr in _sops(graph):
        if nodes.VALUE_SET not in node or nodes.OUTPUT_BASIS not in node:
            raise InvariantError(f"{label}: no value set or output basis after basis inference.")
        basis = node[nodes.OUTPUT_BASIS]
        if any(d.name != label for d in basis):
            raise InvariantError(f"{label}: output basis has directions of another SOp: {basis}.")
        if rasp.is_numerical(expr) and len(basis) != 1:
            raise InvariantError(f"{label}: a numerical SOp must own exactly one direction.")
        if rasp.is_categorical(expr) and len(basis) != len(node[nodes.VALUE_SET]):
            raise InvariantError(f"{label}: a categorical SOp needs one direction per value.")


def _directions(space: bases.VectorSpaceWithBasis) -> Set[bases.BasisDirection]:
    return set(space.basis)


def _io(block) -> tuple:
    """(directions read, directions written) of a block, hidden units excluded."""
    if isinstance(block, transformers.MLP):
        return _directions(block.fst.input_space), _directions(block.snd.output_space)
    if isinstance(block, transformers.AttentionHead):
        read = (
            _directions(block.w_qk.left_space)
            | _directions(block.w_qk.right_space)
            | _directions(block.w_ov.input_space)
        )
        return read, _directions(block.w_ov.output_space)
    if isinstance(block, transformers.MultiAttentionHead):
        read, written = set(), set()
        for head in block.heads():
            r, w = _io(head)
            read |= r
            written |= w
        return read, written
    if isinstance(block, transformers.SeriesWithResiduals):
        read, written = set(), set()
        for sub in block.blocks:
            r, w = _io(sub)
            read |= r - written  # what a later sub-block reads from an earlier one is internal
            written |= w
        return read, written
    raise InvariantError(f"Unknown block type {type(block).__name__}.")


def check_blocks(
    graph: nx.DiGraph, bos_dir: bases.BasisDirection, one_dir: bases.BasisDirection
) -> None:
    """After expr_to_craft_graph: blocks read only their inputs and write their own space."""
    for label, node, expr in _sops(graph):
        block = node.get(nodes.MODEL_BLOCK)
        is_input = isinstance(expr, (rasp.TokensType, rasp.IndicesType))
        if block is None:
            if not is_input:
                raise InvariantError(f"{label}: a computed SOp has no block.")
            continue
        allowed_reads = {bos_dir, one_dir}
        for ancestor in nx.ancestors(graph, label):
            allowed_reads |= set(graph.nodes[ancestor].get(nodes.OUTPUT_BASIS, []))
        read, written = _io(block)
        own = set(node[nodes.OUTPUT_BASIS])
        stray_reads = {
            d for d in read - allowed_reads if d.name != label and not str(d.name).startswith(label)
        }
        if stray_reads:
            raise InvariantError(
                f"{label}: block reads directions that are not its inputs: {stray_reads}."
            )
        stray_writes = {d for d in written - own if not str(d.name).startswith(label)}
        if stray_writes:
            raise InvariantError(f"{label}: block writes outside its own space: {stray_writes}.")


def check_layer_order(
    graph: nx.DiGraph, allocation: Optional[craft_graph_to_model.Allocation] = None
) -> None:
    """After layer allocation: every block runs after the blocks it depends on."""
    if allocation is None:
        allocation = craft_graph_to_model.allocate_layers(graph)
    half: dict = {}  # label -> half-layers (2L attention, 2L + 1 MLP) of its blocks
    for index, layer in enumerate(allocation.layers):
        for label, _ in layer.heads:
            half.setdefault(label, []).append(2 * index)
        for label, _ in layer.mlps:
            half.setdefault(label, []).append(2 * index + 1)
    for label, halves in half.items():
        for ancestor in nx.ancestors(graph, label):
            if ancestor in half and max(half[ancestor]) >= min(halves):
                raise InvariantError(
                    f"{label} (half-layer {min(halves)}) does not run after {ancestor} "
                    f"(half-layer {max(half[ancestor])})."
                )


def _rows_used(w: np.ndarray) -> Set[int]:
    return set(np.flatnonzero(np.any(np.asarray(w) != 0, axis=1)).tolist())


def check_spec(model: assembled.AssembledTransformerModel) -> None:
    """After assembly: the params have the spec's shapes, and every non-zero weight
    row lies inside what the spec says its head or MLP reads or writes."""
    spec = model.spec
    if spec is None:
        raise InvariantError("The assembled model has no spec.")
    shapes = {
        name: {k: tuple(np.shape(v)) for k, v in inner.items()}
        for name, inner in model.params.items()
    }
    if shapes != spec.param_shapes():
        raise InvariantError("The params' shapes differ from spec.param_shapes().")

    def weights(layer: int, sublayer: str, linear: str) -> np.ndarray:
        return np.asarray(model.params[spec_lib.param_name(layer, sublayer, linear)]["w"])

    k = spec.key_size
    for layer in spec.layers:
        i = layer.index
        wq, wk, wv = (weights(i, "attn", n) for n in ("query", "key", "value"))
        wo = weights(i, "attn", "linear")
        for head in layer.heads:
            cols = slice(head.head * k, (head.head + 1) * k)
            for what, w, allowed in (
                ("query", wq[:, cols], head.query),
                ("key", wk[:, cols], head.key),
                ("value", wv[:, cols], head.value),
                ("writes", wo[cols].T, head.writes),
            ):
                stray = _rows_used(w) - set(allowed)
                if stray:
                    raise InvariantError(f"head {head.name} ({head.label}): {what} uses {stray}.")
        if layer.mlp is not None:
            w1, w2 = weights(i, "mlp", "linear_1"), weights(i, "mlp", "linear_2")
            for part in layer.mlp.parts:
                hidden = list(part.hidden)
                if _rows_used(w1[:, hidden]) - set(part.reads) or _rows_used(w2[hidden].T) - set(
                    part.writes
                ):
                    raise InvariantError(f"MLP {i} ({part.label}) uses rows outside its spec.")
