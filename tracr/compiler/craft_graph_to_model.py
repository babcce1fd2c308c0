"""Pass 4: allocate craft blocks to layers and chain them into one model.

Half-layers alternate attention (even) and MLP (odd). Every block is placed
as early as its inputs allow (ASAP on the dependency graph), which uses
exactly as many layers as the longest chain of dependencies requires. Blocks
placed in the same half-layer run in parallel: heads of one multi-head
attention, or MLPs side by side.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence, Tuple

import networkx as nx

from tracr.compiler import nodes
from tracr.craft import transformers

Node = nodes.Node
NodeID = nodes.NodeID


def _is_attn(block) -> bool:
    return isinstance(block, (transformers.AttentionHead, transformers.MultiAttentionHead))


def _sub_blocks(block) -> List[transformers.HalfLayerBlock]:
    if isinstance(block, transformers.SeriesWithResiduals):
        out = []
        for b in block.blocks:
            out.extend(_sub_blocks(b))
        return out
    return [block]


def _schedule(graph: nx.DiGraph) -> Dict[NodeID, List[int]]:
    """Half-layer index of each sub-block of every node that has a block.

    A node's "ready" half-layer is where its value is available: -1 for inputs,
    else the half-layer of its last sub-block. Nodes without blocks (selectors)
    are ready when their inputs are.
    """
    ready: Dict[NodeID, int] = {}
    placement: Dict[NodeID, List[int]] = {}
    for label in nx.topological_sort(graph):
        node = graph.nodes[label]
        start = max((ready[p] for p in graph.predecessors(label)), default=-1)
        block = node.get(nodes.MODEL_BLOCK)
        if block is None:
            ready[label] = start
            continue
        halves = []
        h = start
        for sub in _sub_blocks(block):
            h += 1
            want_parity = 0 if _is_attn(sub) else 1
            if h % 2 != want_parity:
                h += 1
            halves.append(h)
        placement[label] = halves
        ready[label] = h
    return placement


def compute_computational_depth(
    graph: nx.DiGraph, sources_ids: Sequence[NodeID]
) -> Dict[NodeID, int]:
    """Node id -> the half-layer at which its value becomes available (-1 for inputs).

    Half-layers count as in `_allocate_modules_to_layers`: 2l is layer l's attention,
    2l + 1 its MLP.
    """
    del sources_ids
    placement = _schedule(graph)
    depth: Dict = {}
    for label in nx.topological_sort(graph):
        if label in placement:
            depth[label] = placement[label][-1]
        else:
            depth[label] = max((depth[p] for p in graph.predecessors(label)), default=-1)
    return depth


def _allocate_modules_to_layers(graph: nx.DiGraph, sources: Sequence[Node]) -> Dict[NodeID, int]:
    """Node id -> the half-layer where its block starts, for every node with a block.

    Tracr's interface, which decompilers and circuit tools call: half-layer 2l is
    layer l's attention and 2l + 1 its MLP, so an MLP's number is odd and a head's
    even; a block of several sublayers (SelectorWidth) gets its first one.
    """
    del sources  # the schedule starts from the graph's inputs
    return {label: halves[0] for label, halves in _schedule(graph).items()}


@dataclasses.dataclass(frozen=True)
class LayerAllocation:
    """What one transformer layer computes: labelled heads, then labelled MLPs.

    Each entry is (RASP label of the expression, its craft block). MLPs of one
    layer run side by side in one sublayer.
    """

    heads: Tuple[Tuple[NodeID, transformers.AttentionHead], ...]
    mlps: Tuple[Tuple[NodeID, transformers.MLP], ...]


@dataclasses.dataclass(frozen=True)
class Allocation:
    """The result of layer allocation: the layers, and the craft model chaining them."""

    layers: Tuple[LayerAllocation, ...]
    craft_model: transformers.SeriesWithResiduals


def allocate_layers(graph: nx.DiGraph) -> Allocation:
    """Places every block of the graph in a layer (ASAP), keeping which expression it computes."""
    placement = _schedule(graph)
    by_half: Dict[int, List[Tuple[NodeID, transformers.HalfLayerBlock]]] = {}
    for label in nx.topological_sort(graph):
        if label not in placement:
            continue
        subs = _sub_blocks(graph.nodes[label][nodes.MODEL_BLOCK])
        for h, sub in zip(placement[label], subs):
            if isinstance(sub, transformers.MultiAttentionHead):
                by_half.setdefault(h, []).extend((label, head) for head in sub.heads())
            else:
                by_half.setdefault(h, []).append((label, sub))

    num_layers = max(by_half) // 2 + 1 if by_half else 0
    layers = tuple(
        LayerAllocation(
            heads=tuple(by_half.get(2 * layer, ())), mlps=tuple(by_half.get(2 * layer + 1, ()))
        )
        for layer in range(num_layers)
    )
    blocks: List[transformers.HalfLayerBlock] = []
    for h in sorted(by_half):
        group = [block for _, block in by_half[h]]
        if h % 2 == 0:
            blocks.append(transformers.MultiAttentionHead(group))
        else:
            blocks.append(
                group[0] if len(group) == 1 else transformers.MLP.combine_in_parallel(group)
            )
    return Allocation(layers=layers, craft_model=transformers.SeriesWithResiduals(blocks))


def craft_graph_to_model(
    graph: nx.DiGraph, sources: Sequence[Node]
) -> transformers.SeriesWithResiduals:
    """Chains the blocks of the graph into half-layers, in order (Tracr's interface).

    The result lists one block per non-empty half-layer (a MultiAttentionHead
    or a combined MLP); `assemble` reads the alternation to place empty
    sublayers. `allocate_layers` also returns which expression each block computes.
    """
    del sources
    return allocate_layers(graph).craft_model
