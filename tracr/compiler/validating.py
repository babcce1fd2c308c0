"""Finds the parts of a RASP program that the compiler can't turn into weights.

RASP is more expressive than what a transformer built by this compiler can
compute exactly. ``static_validate`` checks the program's structure;
``dynamic_validate`` also runs it on an input and checks what the selectors
actually select. Both return every problem at once, as a list of
``TracrUnsupportedExpr(expr, reason)``::

    from tracr.compiler import validating
    from tracr.rasp import rasp

    select_all = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE)
    first = rasp.Aggregate(select_all, rasp.tokens)     # categorical, selects many
    validating.validate(first, ["a", "b"])
    # -> [TracrUnsupportedExpr(expr=Aggregate('aggregate_7'), reason='Categorical
    #     aggregate ... selects 2 keys at query position 0 ...')]

An empty list means the compiler supports the program (for that input).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Union

from tracr.rasp import rasp


@dataclasses.dataclass(frozen=True, eq=False)
class TracrUnsupportedExpr:
    """An expression the compiler can't compile, and why."""

    expr: rasp.RASPExpr
    reason: str

    # SOps overload ``==``, so compare expressions by identity.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TracrUnsupportedExpr):
            return NotImplemented
        return self.expr is other.expr and self.reason == other.reason

    def __hash__(self) -> int:
        return hash((id(self.expr), self.reason))

    def __str__(self) -> str:
        return f"{self.expr.label}: {self.reason}"


def _walk(program: rasp.RASPExpr) -> List[rasp.RASPExpr]:
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


def _contains_constant_selector(selector: rasp.RASPExpr) -> bool:
    return any(isinstance(e, rasp.ConstantSelector) for e in _walk(selector))


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
        fields_a = {k: v for k, v in vars(a).items() if k not in ("_id", "_annotations")}
        fields_b = {k: v for k, v in vars(b).items() if k not in ("_id", "_annotations")}
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


def _static_reasons(expr: rasp.RASPExpr) -> List[str]:
    """The reasons the compiler can't compile ``expr`` itself (not its children)."""
    reasons: List[str] = []
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
                    f"A numerical Aggregate must have default 0 (or None), got "
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
                    f"A categorical Aggregate must have default None, got {expr.default!r}; "
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


def static_validate(program: rasp.RASPExpr) -> list[TracrUnsupportedExpr]:
    """Checks the structure of ``program`` against what the compiler supports.

    Args:
      program: the program's output expression.

    Returns:
      Every unsupported expression with its reason, children before parents;
      empty if the program's structure can be compiled.
    """
    if not isinstance(program, rasp.RASPExpr):
        raise TypeError(f"static_validate expects a RASP expression, got {program!r}.")
    found: List[TracrUnsupportedExpr] = []
    exprs = _walk(program)
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
        if other is not expr and not same_expression(other, expr, memo):
            found.append(
                TracrUnsupportedExpr(
                    expr,
                    f"Another expression in the program is also labelled {expr.label!r}; the "
                    f"compiler identifies expressions by label. Give one of them a different "
                    f"name with .named(...).",
                )
            )
    return found


def _some(values: Sequence[rasp.Value], limit: int = 5) -> str:
    distinct: List[rasp.Value] = []
    for v in values:
        if not any(v is u or v == u for u in distinct):
            distinct.append(v)
    more = ", ..." if len(distinct) > limit else ""
    return "[" + ", ".join(repr(v) for v in distinct[:limit]) + more + "]"


class DynamicValidationEvaluator(rasp.DefaultRASPEvaluator):
    """Evaluates a program and records aggregates the compiled model would get wrong.

    Unlike the reference evaluator it doesn't stop at a categorical aggregate
    that selects several different values: it records it (and outputs None
    there) so that one run reports every problem.
    """

    def __init__(self):
        super().__init__()
        self.unsupported_exprs: List[TracrUnsupportedExpr] = []

    def _report(self, expr: rasp.RASPExpr, reason: str) -> None:
        item = TracrUnsupportedExpr(expr, reason)
        if item not in self.unsupported_exprs:
            self.unsupported_exprs.append(item)

    def evaluate(
        self, expr: rasp.RASPExpr, xs: Sequence[rasp.Value]
    ) -> Union[Sequence[rasp.Value], rasp.SelectorValue]:
        return super().evaluate(expr, xs)

    def eval_aggregate(self, sop: rasp.Aggregate, xs: Sequence[rasp.Value]) -> Sequence[rasp.Value]:
        selector = self.evaluate(sop.selector, xs)
        values = self.evaluate(sop.sop, xs)
        widths = [sum(row) for row in selector]
        wide = [q for q, w in enumerate(widths) if w > 1]
        if rasp.is_numerical(sop):
            non_binary = [v for v in values if not any(v is b or v == b for b in (0, 1))]
            if wide and non_binary:
                self._report(
                    sop,
                    f"A numerical Aggregate that selects several keys (query position "
                    f"{wide[0]} selects {widths[wide[0]]}) can only average values 0 and 1, "
                    f"but {sop.sop.label} takes the values {_some(non_binary)}: "
                    f"the mean of non-binary values is not supported. Select at most one key "
                    f"per query or aggregate a 0/1 SOp.",
                )
            return super().eval_aggregate(sop, xs)
        if wide:
            q = wide[0]
            self._report(
                sop,
                f"Categorical aggregate {sop.label} selects {widths[q]} keys at query position "
                f"{q} (input {list(xs)!r}); a compiled categorical Aggregate averages one-hots, "
                f"so it must select at most one key per query. Narrow the selector or make the "
                f"aggregate numerical.",
            )
            out: List[rasp.Value] = []
            for row in selector:
                selected = [v for v, s in zip(values, row, strict=False) if s]
                if not selected:
                    out.append(sop.default)
                else:
                    # Several different values have no categorical meaning.
                    same = all(v is selected[0] or v == selected[0] for v in selected)
                    out.append(selected[0] if same else None)
            return out
        return super().eval_aggregate(sop, xs)


def dynamic_validate(
    program: rasp.RASPExpr, xs: Sequence[rasp.Value] | None = None
) -> list[TracrUnsupportedExpr]:
    """Runs ``program`` on ``xs`` and reports aggregates the compiler can't reproduce.

    Args:
      program: the program's output expression.
      xs: an input sequence; with None there is nothing to run and the result
        is empty.

    Returns:
      Every problem seen on ``xs``, in evaluation order.

    Raises:
      TypeError: if ``xs`` is not a list of tokens.
    """
    if xs is None:
        return []
    evaluator = DynamicValidationEvaluator()
    evaluator.evaluate(program, xs)
    return list(evaluator.unsupported_exprs)


def validate(
    program: rasp.RASPExpr, xs: Sequence[rasp.Value] | None = None
) -> list[TracrUnsupportedExpr]:
    """``static_validate`` plus, when ``xs`` is given, ``dynamic_validate``."""
    found = static_validate(program)
    for item in dynamic_validate(program, xs):
        if item not in found:
            found.append(item)
    return found
