"""Pass 5: wrap the layered craft model with embeddings and encoders."""

from __future__ import annotations

import functools
from typing import Iterable, List, Optional, Set

import networkx as nx

from tracr.compiler import assemble, craft_graph_to_model, nodes
from tracr.craft import bases, transformers
from tracr.rasp import rasp


def _tracr_less(a: bases.BasisDirection, b: bases.BasisDirection) -> bool:
    """Tracr's ``BasisDirection.__lt__``: (name, value) tuples, else their reprs."""
    try:
        return (a.name, a.value) < (b.name, b.value)
    except TypeError:
        return repr(a) < repr(b)


def _tracr_compare(a: bases.BasisDirection, b: bases.BasisDirection) -> int:
    return -1 if _tracr_less(a, b) else int(_tracr_less(b, a))


def tracr_token_order(directions: Iterable[bases.BasisDirection]) -> List[bases.BasisDirection]:
    """Token directions in the order Tracr gives them ids, BOS and PAD included.

    Users' code hard-codes Tracr's token ids, so they follow Tracr's comparison,
    under which e.g. the strings BOS and PAD come before int tokens. The canonical
    sort first makes the result independent of the hash order of a set of strings.
    """
    canonical = bases.sort_directions(directions)
    return sorted(canonical, key=functools.cmp_to_key(_tracr_compare))


def craft_model_to_transformer(
    craft_model: transformers.SeriesWithResiduals,
    graph: nx.DiGraph,
    sink: nodes.Node,
    max_seq_len: int,
    compiler_bos: str,
    compiler_pad: str,
    causal: bool = False,
    *,
    vocab: Optional[Set[rasp.Value]] = None,
    allocation: Optional[craft_graph_to_model.Allocation] = None,
) -> assemble.AssembledTransformerModel:
    """Builds the runnable model: token/position embeddings, unembedding, encoders.

    `allocation` (from `craft_graph_to_model.allocate_layers`) names the RASP
    expression of every block in the model's spec; without it, it is read
    from the graph's blocks (the same ones `craft_model` chains).
    """
    if allocation is None:
        allocation = craft_graph_to_model.allocate_layers(graph)
    if vocab is None:
        vocab = graph.nodes[rasp.tokens.label][nodes.VALUE_SET]
    tokens_space = bases.VectorSpaceWithBasis(
        tracr_token_order(
            bases.BasisDirection(rasp.tokens.label, v)
            for v in set(vocab) | {compiler_bos, compiler_pad}
        )
    )
    indices_space = bases.VectorSpaceWithBasis.from_values(rasp.indices.label, range(max_seq_len))
    sink_expr = sink[nodes.EXPR]
    categorical_output = rasp.is_categorical(sink_expr)
    output_space = bases.VectorSpaceWithBasis(sink[nodes.OUTPUT_BASIS])

    return assemble.assemble_craft_model(
        craft_model=craft_model,
        tokens_space=tokens_space,
        indices_space=indices_space,
        output_space=output_space,
        categorical_output=categorical_output,
        causal=causal,
        bos_token=compiler_bos,
        pad_token=compiler_pad,
        allocation=allocation.layers,
        output_label=sink_expr.label,
        max_seq_len=max_seq_len,
    )
