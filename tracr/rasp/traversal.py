"""Walking a RASP program and telling whether two expressions are interchangeable.

Every pass that looks at a whole program (validation, the certificate, the
fuzzer) needs the same traversal: each expression once, children first::

    from tracr.rasp import rasp, traversal

    prog = rasp.Map(lambda x: x + 1, rasp.tokens)
    [e.label for e in traversal.walk(prog)]   # -> ['tokens', 'map_1']
"""

from __future__ import annotations

from typing import Dict, List, Optional, TypeVar

from tracr.rasp import rasp

ExprT = TypeVar("ExprT", bound=rasp.RASPExpr)


def walk(program: rasp.RASPExpr) -> List[rasp.RASPExpr]:
    """All expressions of ``program``, each once, children before parents."""
    order: List[rasp.RASPExpr] = []
    seen = set()
    stack = [(program, False)]
    while stack:
        expr, expanded = stack.pop()
        if expanded:
            order.append(expr)
            continue
        if id(expr) in seen:
            continue
        seen.add(id(expr))
        stack.append((expr, True))
        for child in reversed(list(expr.children)):
            if id(child) not in seen:
                stack.append((child, False))
    return order


# Fields that say which copy an expression is, not what it computes.
_IDENTITY_FIELDS = ("unique_id", "_annotations")

_PLAIN_TYPES = (int, float, str, bool, tuple, type(None), rasp.Comparison)


def _same_field(x: object, y: object) -> bool:
    if x is y:
        return True
    return type(x) is type(y) and isinstance(x, _PLAIN_TYPES) and x == y


def same_expression(a: rasp.RASPExpr, b: rasp.RASPExpr, memo: Optional[Dict] = None) -> bool:
    """Whether two expressions are interchangeable (so sharing a label is harmless).

    True for the same expression built twice from the same parts, e.g. two
    calls of ``lib.make_length()``; functions must be the same objects.
    """
    if a is b:
        return True
    if memo is None:
        memo = {}
    key = (id(a), id(b))
    if key not in memo:
        memo[key] = False  # expressions form a DAG, but stay safe against cycles
        children_a, children_b = list(a.children), list(b.children)
        child_ids = {id(c) for c in children_a + children_b}
        fields_a = {k: v for k, v in vars(a).items() if k not in _IDENTITY_FIELDS}
        fields_b = {k: v for k, v in vars(b).items() if k not in _IDENTITY_FIELDS}
        memo[key] = (
            type(a) is type(b)
            and dict(a.annotations) == dict(b.annotations)
            and fields_a.keys() == fields_b.keys()
            and len(children_a) == len(children_b)
            and all(
                same_expression(x, y, memo) for x, y in zip(children_a, children_b, strict=False)
            )
            and all(
                # Children were compared above.
                (id(fields_a[k]) in child_ids and id(fields_b[k]) in child_ids)
                or _same_field(fields_a[k], fields_b[k])
                for k in fields_a
            )
        )
    return memo[key]


def in_place_of(new: ExprT, old: rasp.RASPExpr) -> ExprT:
    """A copy of ``new`` with ``old``'s annotations and label, to stand in for ``old``.

    Rewriting passes (e.g. lowering combined selectors) rebuild expressions whose
    inputs changed; the rebuilt ones keep the labels the user's program has, so that
    value sets, residual labels and reports still name the user's expressions.
    """
    out = rasp.annotate(new, **dict(old.annotations))
    out.__dict__["unique_id"] = old.unique_id  # the cached_property's slot
    return out


def contains(expr: rasp.RASPExpr, kind: type) -> bool:
    """Whether ``expr`` or one of its descendants is an instance of ``kind``."""
    return any(isinstance(e, kind) for e in walk(expr))
