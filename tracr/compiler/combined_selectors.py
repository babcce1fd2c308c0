"""Pass 0: lower And/Or/Not selectors to a single Select.

An attention head scores (query, key) pairs with one bilinear form, so it can
only read one query SOp and one key SOp. A combined selector over the same
keys and queries becomes one Select whose predicate combines the parts.
Parts over different SOps are first zipped into tuple-valued SOps with a
SequenceMap (an extra MLP), whose values are pairs; the combined predicate
then reads each half. Programs without combined selectors are returned as
they are (the same objects).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Tuple

from tracr.rasp import rasp, traversal

_in_place_of = traversal.in_place_of

Predicate = Callable[[rasp.Value, rasp.Value], bool]


def _pair(a, b):
    return (a, b)


def _zip(fst: rasp.SOp, snd: rasp.SOp, label: str) -> rasp.SOp:
    if fst is snd or fst.label == snd.label:
        return fst
    return rasp.categorical(rasp.SequenceMap(_pair, fst, snd)).named(label)


@dataclasses.dataclass(frozen=True)
class _Negated:
    """not pred(key, query); equal for equal parts, so that basis inference sees
    two lowerings of equal selectors as one selector (joint value sets)."""

    pred: Predicate

    def __call__(self, k: rasp.Value, q: rasp.Value) -> bool:
        return not self.pred(k, q)


@dataclasses.dataclass(frozen=True)
class _Combined:
    """all/any of two predicates, each reading its half of a zipped key/query."""

    combine: Callable[[Tuple[bool, bool]], bool]  # all or any
    fst: Predicate
    snd: Predicate
    zipped_keys: bool
    zipped_queries: bool

    def __call__(self, k: Any, q: Any) -> bool:
        ka, kb = k if self.zipped_keys else (k, k)
        qa, qb = q if self.zipped_queries else (q, q)
        return self.combine((self.fst(ka, qa), self.snd(kb, qb)))


def _lower(selector: rasp.Selector, memo: Dict[Any, Any]) -> Tuple[rasp.SOp, rasp.SOp, Predicate]:
    """(keys, queries, predicate(key, query)) equivalent to the selector."""
    if isinstance(selector, rasp.Select):
        return rebuild(selector.keys, memo), rebuild(selector.queries, memo), selector.predicate
    if isinstance(selector, rasp.SelectorNot):
        keys, queries, pred = _lower(selector.inner, memo)
        return keys, queries, _Negated(pred)
    if isinstance(selector, (rasp.SelectorAnd, rasp.SelectorOr)):
        k1, q1, p1 = _lower(selector.fst, memo)
        k2, q2, p2 = _lower(selector.snd, memo)
        combine = all if isinstance(selector, rasp.SelectorAnd) else any
        keys = _zip(k1, k2, f"{selector.label}_keys")
        queries = _zip(q1, q2, f"{selector.label}_queries")
        pred = _Combined(combine, p1, p2, keys is not k1, queries is not q1)
        return keys, queries, pred
    raise NotImplementedError(
        f"{selector.label}: {type(selector).__name__} cannot be compiled into an attention pattern."
    )


def rebuild(expr: rasp.RASPExpr, memo: Dict[Any, Any]) -> rasp.RASPExpr:
    """expr with every Aggregate/SelectorWidth reading a single Select."""
    key = id(expr)
    if key in memo:
        return memo[key]
    new: rasp.RASPExpr = expr
    if isinstance(expr, (rasp.Aggregate, rasp.SelectorWidth)):
        selector = expr.selector
        if isinstance(selector, rasp.ConstantSelector):
            new_selector = selector  # rejected by validation
        elif isinstance(selector, rasp.Select):
            keys, queries = rebuild(selector.keys, memo), rebuild(selector.queries, memo)
            unchanged = keys is selector.keys and queries is selector.queries
            new_selector = (
                selector
                if unchanged
                else _in_place_of(rasp.Select(keys, queries, selector.predicate), selector)
            )
        else:
            # Memoised so that a selector read twice is lowered (and labelled) once.
            lowered_key = ("lowered", id(selector))
            if lowered_key not in memo:
                keys, queries, pred = _lower(selector, memo)
                memo[lowered_key] = _in_place_of(rasp.Select(keys, queries, pred), selector)
            new_selector = memo[lowered_key]
        if isinstance(expr, rasp.Aggregate):
            sop = rebuild(expr.sop, memo)
            if new_selector is not expr.selector or sop is not expr.sop:
                new = _in_place_of(rasp.Aggregate(new_selector, sop, default=expr.default), expr)
        elif new_selector is not expr.selector:
            new = _in_place_of(rasp.SelectorWidth(new_selector), expr)
    elif isinstance(expr, rasp.Map):
        inner = rebuild(expr.inner, memo)
        if inner is not expr.inner:
            new = _in_place_of(rasp.Map(expr.f, inner, simplify=False), expr)
    elif isinstance(expr, rasp.LinearSequenceMap):
        fst, snd = rebuild(expr.fst, memo), rebuild(expr.snd, memo)
        if fst is not expr.fst or snd is not expr.snd:
            new = _in_place_of(rasp.LinearSequenceMap(fst, snd, expr.fst_fac, expr.snd_fac), expr)
    elif isinstance(expr, rasp.SequenceMap):
        fst, snd = rebuild(expr.fst, memo), rebuild(expr.snd, memo)
        if fst is not expr.fst or snd is not expr.snd:
            new = _in_place_of(rasp.SequenceMap(expr.f, fst, snd), expr)
    memo[key] = new
    return new


def lower_combined_selectors(program: rasp.SOp) -> rasp.SOp:
    """Returns an equivalent program in which every selector read is a Select."""
    return rebuild(program, {})
