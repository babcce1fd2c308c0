"""Static validation: what the compiler can't compile, found without running the program.

The structure is checked per expression; given the vocab and max_seq_len, the
value sets (the same ``basis_inference.ValueSetInference`` the compiler runs)
feed the None-flow checks of ``none_flow``.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Set, Union

import networkx as nx

from tracr.compiler import basis_inference, nodes, none_flow
from tracr.compiler.unsupported import TracrUnsupportedExpr
from tracr.rasp import rasp, traversal


def _contains_constant_selector(selector: rasp.RASPExpr) -> bool:
    return traversal.contains(selector, rasp.ConstantSelector)


def _static_reasons(expr: rasp.RASPExpr) -> List[str]:
    """The reasons the compiler can't compile ``expr`` itself (not its children)."""
    reasons: List[str] = []
    if isinstance(expr, (rasp.TokensType, rasp.IndicesType)) and rasp.is_numerical(expr):
        reasons.append(
            f"A numerical {expr.label} can't be compiled: the model embeds {expr.label} one-hot, "
            f"so no direction would hold its value. Use a numerical Map of it instead, e.g. "
            f"rasp.numerical(rasp.Map(lambda x: x, rasp.{expr.label}))."
        )
    if isinstance(expr, rasp.LengthType):
        reasons.append(
            "The length primitive can't be compiled; use tracr.compiler.lib.make_length() "
            "(or lib.length), which computes the length with a SelectorWidth."
        )
    elif isinstance(expr, rasp.Aggregate):
        if rasp.is_numerical(expr):
            if not rasp.is_numerical(expr.sop):
                reasons.append(
                    f"A numerical Aggregate needs a numerical SOp to average, but "
                    f"{expr.sop.label} is categorical; wrap it in rasp.numerical(...) or make "
                    f"the aggregate categorical."
                )
            if expr.default is not None and expr.default != 0:
                reasons.append(
                    f"Numerical aggregate only supports 0 as default value. A numerical "
                    f"Aggregate must have default 0 (or None), got "
                    f"{expr.default!r}: queries that select nothing read 0 in the compiled "
                    f"model. Add the offset with a Map afterwards instead."
                )
        else:
            if rasp.is_numerical(expr.sop):
                reasons.append(
                    f"A categorical Aggregate can't read the numerical SOp {expr.sop.label}; "
                    f"make the aggregate numerical (rasp.numerical(Aggregate(...))) or the "
                    f"SOp categorical."
                )
            if expr.default is not None:
                reasons.append(
                    f"Categorical aggregate only supports None as default value. A categorical "
                    f"Aggregate must have default None, got {expr.default!r}; "
                    f"replace missing values with a Map afterwards instead."
                )
        if _contains_constant_selector(expr.selector):
            reasons.append(
                "An Aggregate over a ConstantSelector can't be compiled: attention patterns "
                "must come from a Select over tokens/indices-derived SOps."
            )
    elif isinstance(expr, rasp.SelectorWidth):
        if _contains_constant_selector(expr.selector):
            reasons.append(
                "SelectorWidth of a ConstantSelector can't be compiled: attention patterns "
                "must come from a Select; compute the constant width with a Map of indices."
            )
    elif isinstance(expr, rasp.Select):
        for role, sop in (("keys", expr.keys), ("queries", expr.queries)):
            if rasp.is_numerical(sop):
                reasons.append(
                    f"Select's {role} {sop.label} are numerical, but a selector compares "
                    f"categorical (one-hot) values; pass rasp.categorical(...) {role}."
                )
    elif isinstance(expr, rasp.SequenceMap):
        fst_num, snd_num = rasp.is_numerical(expr.fst), rasp.is_numerical(expr.snd)
        if isinstance(expr, rasp.LinearSequenceMap):
            if fst_num != snd_num:
                reasons.append(
                    f"A LinearSequenceMap needs both inputs with the same encoding, but "
                    f"{expr.fst.label} is {rasp.get_encoding(expr.fst).value} and "
                    f"{expr.snd.label} is {rasp.get_encoding(expr.snd).value}."
                )
            elif fst_num and not rasp.is_numerical(expr):
                reasons.append(
                    "A LinearSequenceMap of numerical inputs gives a numerical output; wrap it "
                    "in rasp.numerical(...)."
                )
        elif fst_num or snd_num:
            numeric = [s.label for s in (expr.fst, expr.snd) if rasp.is_numerical(s)]
            reasons.append(
                f"A SequenceMap needs categorical inputs, but {', '.join(numeric)} "
                f"{'is' if len(numeric) == 1 else 'are'} numerical; use a LinearSequenceMap "
                f"for a weighted sum of numerical SOps, or make the inputs categorical."
            )
    return reasons


def static_validate(
    program: rasp.RASPExpr,
    vocab: Optional[Set[rasp.Value]] = None,
    max_seq_len: Optional[int] = None,
) -> list[TracrUnsupportedExpr]:
    """Checks ``program`` against what the compiler supports, without running it.

    The structure is always checked. Given ``vocab`` and ``max_seq_len`` (as
    ``compile_rasp_to_model`` passes them), the values every SOp can take are
    checked too: where RASP has no value (None) but a compiled model would
    hold one and select it (see ``none_flow``).

    Args:
      program: the program's output expression.
      vocab: the vocabulary the program will be compiled for (optional).
      max_seq_len: the longest input it will be compiled for (optional).

    Returns:
      Every unsupported expression with its reason, children before parents;
      empty if the program can be compiled.
    """
    if not isinstance(program, rasp.RASPExpr):
        raise TypeError(f"static_validate expects a RASP expression, got {program!r}.")
    found: List[TracrUnsupportedExpr] = []
    exprs = traversal.walk(program)
    if isinstance(program, rasp.Selector):
        found.append(
            TracrUnsupportedExpr(
                program,
                "A program's output must be an SOp, not a selector; aggregate it with "
                "rasp.Aggregate or rasp.SelectorWidth.",
            )
        )
    by_label: Dict[str, rasp.RASPExpr] = {}
    memo: Dict = {}
    for expr in exprs:
        for reason in _static_reasons(expr):
            found.append(TracrUnsupportedExpr(expr, reason))
        other = by_label.setdefault(expr.label, expr)
        if other is not expr and not traversal.same_expression(other, expr, memo):
            found.append(
                TracrUnsupportedExpr(
                    expr,
                    f"Another expression in the program is also labelled {expr.label!r}; the "
                    f"compiler identifies expressions by label. Give one of them a different "
                    f"name with .named(...).",
                )
            )
    if not found and vocab is not None and max_seq_len is not None:
        inference = basis_inference.ValueSetInference(vocab, max_seq_len)
        for expr in exprs:
            if isinstance(expr, rasp.SOp):
                try:
                    inference.add(expr)
                except NotImplementedError as e:
                    return [TracrUnsupportedExpr(expr, str(e))]
        found.extend(none_flow.unsupported_exprs(exprs, inference.value_sets))
    return found


def value_set_validate(
    program: rasp.RASPExpr, value_sets: Union[nx.DiGraph, Mapping[str, set]]
) -> list[TracrUnsupportedExpr]:
    """The checks of ``static_validate`` that need value sets, given the value sets.

    ``compile_rasp_to_model`` runs it after basis inference, on the program
    as the user wrote it (before combined selectors are lowered), so that the
    value sets are computed once.

    Args:
      program: a program that passes the structural checks of static_validate.
      value_sets: the value set of every SOp of ``program`` by label, or the
        graph annotated by ``basis_inference.infer_bases`` (its VALUE_SETs).

    Returns:
      Every problem found, as by ``static_validate``.
    """
    if isinstance(value_sets, nx.DiGraph):
        graph = value_sets
        value_sets = {
            label: data[nodes.VALUE_SET]
            for label, data in graph.nodes(data=True)
            if nodes.VALUE_SET in data
        }
    return none_flow.unsupported_exprs(traversal.walk(program), value_sets)
