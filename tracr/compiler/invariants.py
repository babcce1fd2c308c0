"""Checkers of the compiler IR's invariants, run between passes in tests.

Each function raises `InvariantError` naming the node and the broken rule;
they cost a walk over the graph, so the compiler itself does not run them.
"""

from __future__ import annotations

from typing import Set

import networkx as nx

from tracr.compiler import craft_graph_to_model, nodes
from tracr.craft import bases, transformers
from tracr.rasp import rasp


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


def check_layer_order(graph: nx.DiGraph) -> None:
    """After layer allocation: every block runs after the blocks it depends on."""
    depth = craft_graph_to_model.compute_computational_depth(graph, [])
    for label in graph.nodes:
        if graph.nodes[label].get(nodes.MODEL_BLOCK) is None:
            continue
        for ancestor in nx.ancestors(graph, label):
            if (
                graph.nodes[ancestor].get(nodes.MODEL_BLOCK) is not None
                and depth[ancestor] >= depth[label]
            ):
                raise InvariantError(
                    f"{label} (half-layer {depth[label]}) does not run after {ancestor} "
                    f"(half-layer {depth[ancestor]})."
                )
