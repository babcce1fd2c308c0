"""Pass 2: the value set of every SOp, and the residual subspace it owns.

Value sets come from the vocabulary and max_seq_len: tokens -> vocab,
indices -> 0..max_seq_len-1, a Map applies its function to every input value,
a SequenceMap to every pair, SelectorWidth -> 0..max_seq_len, a categorical
Aggregate -> its SOp's values, a numerical Aggregate -> the means it can
produce. Categorical SOps own one direction per value (`label:value`),
numerical SOps a single direction (`label`).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, Iterable, Set

import networkx as nx

from tracr.compiler import nodes
from tracr.craft import bases
from tracr.rasp import rasp
from tracr.utils import errors

Node = nodes.Node

# A numerical Aggregate's value set (the means of up to max_seq_len values) is
# enumerated exactly; past this size we refuse rather than build a huge MLP.
MAX_NUMERICAL_VALUE_SET = 200_000


@dataclasses.dataclass
class InferBasesOutput:
    graph: nx.DiGraph


def _apply_all(f: Callable[..., Any], *value_sets: Iterable[Any]) -> Set[Any]:
    """Every non-None output of f over the product of the value sets."""
    safe_f = errors.ignoring_arithmetic_errors(f)
    out = set()
    for args in itertools.product(*value_sets):
        y = safe_f(*args)
        if y is not None:
            out.add(y)
    return out


def mean_value_set(values: Set[float], max_seq_len: int, include_zero: bool = True) -> Set[float]:
    """All means of 1..max_seq_len values drawn (with repetition) from `values`.

    For 0/1 inputs this is {k/w}. Sums with exactly w terms are built one term at
    a time (a set per w), so the cost is the number of distinct sums, not the
    number of multisets.

    Raises:
      NotImplementedError: the set would exceed MAX_NUMERICAL_VALUE_SET values.
    """
    values = {float(v) for v in values}
    means: Set[float] = {0.0} if include_zero else set()
    sums = {0.0}
    for width in range(1, max_seq_len + 1):
        sums = {s + v for s in sums for v in values}
        means.update(s / width for s in sums)
        if len(means) > MAX_NUMERICAL_VALUE_SET:
            raise NotImplementedError(
                f"A numerical Aggregate over values {sorted(values)[:10]}... can take more than "
                f"{MAX_NUMERICAL_VALUE_SET} different means at max_seq_len={max_seq_len}."
            )
    return {_canonical(m) for m in means}


def _canonical(x: float) -> float:
    """Rounds away float noise so that 1/3 computed two ways is one value."""
    r = round(x, 12)
    return int(r) if r == int(r) else r


def infer_bases(graph: nx.DiGraph, sink: Node, vocab: Set[rasp.Value], max_seq_len: int) -> None:
    """Annotates every SOp node with VALUE_SET and OUTPUT_BASIS (in place)."""
    del sink  # every node of the graph is annotated
    for label in nx.topological_sort(graph):
        node = graph.nodes[label]
        expr = node[nodes.EXPR]
        if not isinstance(expr, rasp.SOp):
            continue
        value_set = _value_set(graph, expr, set(vocab), max_seq_len)
        node[nodes.VALUE_SET] = value_set
        node[nodes.OUTPUT_BASIS] = output_basis(expr, value_set)


def output_basis(expr: rasp.SOp, value_set: Set[Any]) -> list:
    if rasp.is_numerical(expr):
        return [bases.BasisDirection(expr.label)]
    return sorted(bases.BasisDirection(expr.label, v) for v in value_set)


def _value_set(graph: nx.DiGraph, expr: rasp.SOp, vocab: Set[Any], max_seq_len: int) -> Set[Any]:
    def of(child: rasp.RASPExpr) -> Set[Any]:
        return graph.nodes[child.label][nodes.VALUE_SET]

    if isinstance(expr, rasp.TokensType):
        return set(vocab)
    if isinstance(expr, rasp.IndicesType):
        return set(range(max_seq_len))
    if isinstance(expr, rasp.LengthType):
        return set(range(1, max_seq_len + 1))
    if isinstance(expr, rasp.Map):
        return _apply_all(expr.f, of(expr.inner))
    if isinstance(expr, rasp.SequenceMap):
        return _apply_all(expr.f, of(expr.fst), of(expr.snd))
    if isinstance(expr, rasp.Full):
        return {expr.fill}
    if isinstance(expr, rasp.ConstantSOp):
        return {v for v in expr.value if v is not None}
    if isinstance(expr, rasp.SelectorWidth):
        return set(range(0, max_seq_len + 1))
    if isinstance(expr, rasp.Aggregate):
        sop_values = of(expr.sop)
        if rasp.is_numerical(expr):
            return mean_value_set(sop_values, max_seq_len)
        out = set(sop_values)
        if expr.default is not None:
            out.add(expr.default)
        return out
    raise NotImplementedError(
        f"Cannot infer the value set of {expr.label} ({type(expr).__name__})."
    )
