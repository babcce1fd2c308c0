"""None flow: where RASP has no value but a compiled model would hold or select one.

RASP's None ("no value") comes from a categorical Aggregate that selects
nothing, a numerical Aggregate with default None, or a function that returns
None. Maps and SequenceMaps pass it on; a Select never selects a None key,
nor anything for a None query. A compiled model has no None: a categorical
SOp holds the zero vector there, which the attention heads also never
select, so the two agree -- unless (1) the zero vector was lost on the way,
because a numerical SOp holds a number where RASP has None and a Map turned
that number into a categorical value ("phantom" values), or (2) a SelectorNot
or SelectorOr turns RASP's "a None never matches" into "matches", which no
attention head can do for a position whose value is the zero vector.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
from typing import Dict, List, Mapping, Optional, Sequence

from tracr.compiler import basis_inference
from tracr.compiler.unsupported import TracrUnsupportedExpr
from tracr.rasp import rasp


@dataclasses.dataclass(frozen=True)
class _NoneFlow:
    """Why an SOp can be None in RASP ('' if never), and why the model may disagree.

    ``phantom`` (categorical SOps): why the compiled model can hold a value at
    a position where RASP has None.
    """

    may_be_none: str = ""
    phantom: str = ""


def _first_none(f, arg_tuples) -> Optional[tuple]:
    """The first arguments for which f gives None (or raises ArithmeticError)."""
    for args in arg_tuples:
        try:
            if f(*args) is None:
                return args
        except ArithmeticError:
            return args
    return None


def _gives_none(f, arg_tuples) -> bool:
    """Whether f gives None (or raises ArithmeticError) on some arguments.

    Checked in any order first, so that the sorted scan of `_first_none` (which
    names the first such arguments deterministically) only runs when there is
    something to report: value sets of numerical means hold a million values.
    """
    try:
        # Mapped in C: f runs once per element of a value set (or a product of two).
        return any(map(_is_none, itertools.starmap(f, arg_tuples)))
    except ArithmeticError:
        return True


_is_none = functools.partial(operator.is_, None)


def _sorted_values(values) -> list:
    return sorted(values, key=lambda v: (type(v).__name__, repr(v)))


def _flow_of(
    expr: rasp.SOp, flow: Dict[int, _NoneFlow], value_sets: Mapping[str, set]
) -> _NoneFlow:
    label = expr.label
    if isinstance(expr, rasp.Full):
        return _NoneFlow(f"{label} is Full(None)" if expr.fill is None else "")
    if isinstance(expr, rasp.ConstantSOp):
        return _NoneFlow(f"{label} holds None" if None in expr.value else "")
    if isinstance(expr, rasp.Map):
        inner = flow[id(expr.inner)]
        inner_values = value_sets[expr.inner.label]
        bad = (
            _first_none(expr.f, [(v,) for v in _sorted_values(inner_values)])
            if _gives_none(expr.f, zip(inner_values))
            else None
        )
        own = f"{label}'s function gives None for {bad[0]!r}" if bad else ""
        phantom = ""
        if rasp.is_categorical(expr):
            if rasp.is_numerical(expr.inner) and inner.may_be_none:
                phantom = (
                    f"{label} maps the numerical {expr.inner.label}, which can be None "
                    f"({inner.may_be_none}) but is a number in the compiled model"
                )
            elif rasp.is_numerical(expr.inner) and bad:
                phantom = (
                    f"{label}'s function gives None for {bad[0]!r}, which the compiled "
                    f"numerical-to-categorical MLP replaces by a neighbouring value"
                )
            else:
                phantom = inner.phantom
        return _NoneFlow(inner.may_be_none or own, phantom)
    if isinstance(expr, rasp.SequenceMap):
        fst, snd = flow[id(expr.fst)], flow[id(expr.snd)]
        same = expr.fst.label == expr.snd.label
        fst_set, snd_set = value_sets[expr.fst.label], value_sets[expr.snd.label]
        unordered = zip(fst_set, fst_set) if same else itertools.product(fst_set, snd_set)
        bad = None
        total = isinstance(expr, rasp.LinearSequenceMap) and (
            basis_inference.linear_combination_is_total(expr, fst_set, snd_set)
        )
        if not total and _gives_none(expr.f, unordered):
            fst_values = _sorted_values(fst_set)
            if same:
                pairs = [(v, v) for v in fst_values]
            else:
                snd_values = _sorted_values(snd_set)
                pairs = [(a, b) for a in fst_values for b in snd_values]
            bad = _first_none(expr.f, pairs)
        own = f"{label}'s function gives None for {bad!r}" if bad else ""
        phantom = (fst.phantom or snd.phantom) if rasp.is_categorical(expr) else ""
        return _NoneFlow(fst.may_be_none or snd.may_be_none or own, phantom)
    if isinstance(expr, rasp.Aggregate):
        sop = flow[id(expr.sop)]
        if _always_selects(expr.selector, flow, value_sets):
            own = ""
        elif rasp.is_numerical(expr):
            own = f"{label} has default None" if expr.default is None else ""
        else:
            own = f"{label} is None where its selector selects nothing"
        return _NoneFlow(sop.may_be_none or own, "" if rasp.is_numerical(expr) else sop.phantom)
    return _NoneFlow()  # tokens, indices, SelectorWidth: always a value


def _always_selects(
    selector: rasp.Selector, flow: Dict[int, _NoneFlow], value_sets: Mapping[str, set]
) -> bool:
    """Whether every query surely selects some key (causal or not): its own position.

    True for a Select whose predicate holds between any never-None value and
    itself when keys and queries are the same SOp (Select(x, x, EQ)), or
    always (Comparison.TRUE over never-None keys and queries); for an Or with
    such a part.
    """
    if isinstance(selector, rasp.SelectorOr):
        return _always_selects(selector.fst, flow, value_sets) or _always_selects(
            selector.snd, flow, value_sets
        )
    if not isinstance(selector, rasp.Select):
        return False
    keys, queries = selector.keys, selector.queries
    if flow[id(keys)].may_be_none or flow[id(queries)].may_be_none:
        return False
    if selector.predicate is rasp.Comparison.TRUE:
        return True
    if keys.label != queries.label:
        return False
    try:
        return all(selector.predicate(v, v) for v in value_sets[keys.label])
    except Exception:  # noqa: BLE001 - a predicate that fails can't be relied on
        return False


def _outcomes(
    select: rasp.Select, flow: Dict[int, _NoneFlow], value_sets: Mapping[str, set]
) -> set:
    """Every value the Select can take at one (query, key): True, False or both."""
    outcomes = set()
    if flow[id(select.keys)].may_be_none or flow[id(select.queries)].may_be_none:
        outcomes.add(False)
    try:
        for k in value_sets[select.keys.label]:
            for q in value_sets[select.queries.label]:
                outcomes.add(bool(select.predicate(k, q)))
                if len(outcomes) == 2:
                    return outcomes
    except Exception:  # noqa: BLE001 - unknown, as if it could be either
        return {False, True}
    return outcomes


def _when_none(selector: rasp.Selector, leaf: tuple, outcomes) -> Optional[bool]:
    """What the selector says where `leaf` ((role, label)) is None: False, True or None (either).

    A Select is False at a None key (its column) or query (its row); a Select
    that doesn't read the leaf is whatever its predicate can give
    (``outcomes(select)``): always False, always True or either.
    """
    if isinstance(selector, rasp.Select):
        role, label = leaf
        sop = selector.keys if role == "keys" else selector.queries
        if sop.label == label:
            return False
        possible = outcomes(selector)
        return next(iter(possible)) if len(possible) == 1 else None
    if isinstance(selector, rasp.SelectorNot):
        inner = _when_none(selector.inner, leaf, outcomes)
        return None if inner is None else not inner
    if isinstance(selector, (rasp.SelectorAnd, rasp.SelectorOr)):
        a = _when_none(selector.fst, leaf, outcomes)
        b = _when_none(selector.snd, leaf, outcomes)
        decisive = isinstance(selector, rasp.SelectorOr)  # True decides an Or, False an And
        if a is decisive or b is decisive:
            return decisive
        return (not decisive) if (a is not None and b is not None) else None
    return None


def _leaves(selector: rasp.Selector) -> List[tuple]:
    """(role, SOp) for every key and query SOp the selector's Selects read."""
    if isinstance(selector, rasp.Select):
        return [("keys", selector.keys), ("queries", selector.queries)]
    out: List[tuple] = []
    for child in selector.children:
        if isinstance(child, rasp.Selector):
            out.extend(_leaves(child))
    return out


_SINGULAR = {"keys": "key", "queries": "query"}


def unsupported_exprs(
    exprs: Sequence[rasp.RASPExpr], value_sets: Mapping[str, set]
) -> List[TracrUnsupportedExpr]:
    """The None-flow checks (see above) of ``exprs`` (children first), given value sets by label."""
    found: List[TracrUnsupportedExpr] = []
    flow: Dict[int, _NoneFlow] = {}
    for expr in exprs:
        if isinstance(expr, rasp.SOp):
            flow[id(expr)] = _flow_of(expr, flow, value_sets)

    memo: Dict[int, set] = {}

    def outcomes(select: rasp.Select) -> set:
        if id(select) not in memo:
            memo[id(select)] = _outcomes(select, flow, value_sets)
        return memo[id(select)]

    for expr in exprs:
        if isinstance(expr, rasp.Select):
            for role, sop in (("keys", expr.keys), ("queries", expr.queries)):
                phantom = flow[id(sop)].phantom
                # A phantom value is one of the SOp's values, so a predicate that is
                # never true can't select it.
                if phantom and True in outcomes(expr):
                    found.append(
                        TracrUnsupportedExpr(
                            expr,
                            f"Select's {role} {sop.label} may be None in RASP where the compiled "
                            f"model holds a value: {phantom}. RASP never selects a None "
                            f"{_SINGULAR[role]}; the compiled attention head would. Keep None out "
                            f"of the numerical SOps it is computed from (e.g. numerical "
                            f"Aggregates with default=0 of SOps that are never None).",
                        )
                    )
        elif isinstance(expr, (rasp.Aggregate, rasp.SelectorWidth)) and not isinstance(
            expr.selector, rasp.Select
        ):
            selector = expr.selector
            reported = set()
            for role, sop in _leaves(selector):
                why = flow[id(sop)].may_be_none
                leaf = (role, sop.label)
                if not why or leaf in reported or _when_none(selector, leaf, outcomes) is False:
                    continue
                reported.add(leaf)
                found.append(
                    TracrUnsupportedExpr(
                        selector,
                        f"{type(selector).__name__} selects where its {_SINGULAR[role]} "
                        f"{sop.label} may be None ({why}): a Select inside never selects a None "
                        f"{_SINGULAR[role]}, and the Not/Or around it turns that into "
                        f"'selected', but a compiled attention head can't select a None. Make "
                        f"{sop.label} never None, or use a single Select, e.g. "
                        f"Select(k, q, Comparison.NEQ) rather than ~Select(k, q, Comparison.EQ).",
                    )
                )
    output = exprs[-1] if exprs else None  # the program: children come first
    if isinstance(output, rasp.SOp) and rasp.is_categorical(output):
        if flow[id(output)].phantom:
            found.append(
                TracrUnsupportedExpr(
                    output,
                    f"The program's output {output.label} may be None in RASP where the "
                    f"compiled model outputs a value: {flow[id(output)].phantom}. Keep None out "
                    f"of the numerical SOps it is computed from (e.g. numerical Aggregates with "
                    f"default=0, functions that return a value for every input).",
                )
            )
        if not value_sets.get(output.label):
            found.append(
                TracrUnsupportedExpr(
                    output,
                    f"The program's output {output.label} never has a value (its value set is "
                    f"empty: its function gives None, or raises, on every input), so a compiled "
                    f"model would have no output dimension to decode. Make it return a value "
                    f"for some input.",
                )
            )
    return found
