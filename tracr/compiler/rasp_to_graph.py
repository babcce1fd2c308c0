"""Pass 1: a RASP program -> a networkx DiGraph with one node per expression.

Nodes are keyed by expression label; edges go from a child (an input) to the
expression that reads it. Two different expressions sharing a label would be
silently merged, so that is an error here.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Dict, List

import networkx as nx

from tracr.compiler import nodes
from tracr.rasp import rasp, traversal

Node = nodes.Node
NodeID = nodes.NodeID


@dataclasses.dataclass
class ExtractRaspGraphOutput:
    graph: nx.DiGraph
    sink: Node  # the program's output expression
    sources: List[Node]  # leaves: tokens, indices and constant expressions


def extract_rasp_graph(tip: rasp.SOp) -> ExtractRaspGraphOutput:
    """Builds the expression graph of the program whose output is `tip`.

    Raises:
      ValueError: two different expressions in the program share a label.
    """
    if not isinstance(tip, rasp.RASPExpr):
        raise TypeError(f"Expected a RASP expression, got {type(tip).__name__}: {tip!r}.")
    graph = nx.DiGraph()
    by_label: Dict[str, rasp.RASPExpr] = {}
    sources: List[Node] = []

    def ensure_node(expr: rasp.RASPExpr) -> bool:
        """Adds expr; returns True if it is new."""
        label = expr.label
        seen = by_label.get(label)
        if seen is not None:
            # The same expression built twice (e.g. two lib.make_length() calls) is
            # one node; anything else sharing a label would be silently merged.
            if seen is not expr and not traversal.same_expression(seen, expr):
                raise ValueError(
                    f"Two different expressions in the program are both labelled {label!r} "
                    f"({seen!r} and {expr!r}). Give them different names with .named(...)."
                )
            return False
        by_label[label] = expr
        graph.add_node(label, **{nodes.ID: label, nodes.EXPR: expr})
        return True

    ensure_node(tip)
    queue = collections.deque([tip])
    while queue:
        expr = queue.popleft()
        if (
            isinstance(expr, (rasp.TokensType, rasp.IndicesType))
            or not expr.children
            and not isinstance(expr, rasp.ConstantSOp)
        ):
            sources.append(graph.nodes[expr.label])
        children = list(expr.children)
        if isinstance(expr, rasp.ConstantSOp):
            # Compiled as a lookup on the position, so it reads the indices.
            children.append(rasp.indices)
        for child in children:
            if ensure_node(child):
                queue.append(child)
            graph.add_edge(child.label, expr.label)

    return ExtractRaspGraphOutput(graph=graph, sink=graph.nodes[tip.label], sources=sources)
