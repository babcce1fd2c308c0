"""Finds the parts of a RASP program that the compiler can't turn into weights.

The compiler's promise: a compiled model agrees with the RASP evaluator (the
causal one for causal models) at every position where the evaluator gives a
value, on every input where the evaluator gives a result; otherwise the
compiler refuses the program. Two checks keep it:

* ``static_validate`` looks at the program without an input: its structure,
  and, given the vocab and max_seq_len, where RASP has no value (None) but a
  compiled model would hold and select one. ``compile_rasp_to_model`` runs
  the same checks (the second part as ``value_set_validate``, on the value
  sets of basis inference) and raises NotImplementedError listing what they
  find.
* ``dynamic_validate`` runs the program on one input and reports why the
  evaluator has no result there: a categorical Aggregate that selects
  several different values, a ConstantSOp of another length, a function that
  raises an ArithmeticError. These depend on the input, so the compiler
  can't refuse them; such inputs are outside the program's meaning and the
  model's output there is arbitrary. An empty list means the evaluator (and
  so the model) has a result for that input.

Both return every problem at once, as a list of
``TracrUnsupportedExpr(expr, reason)``::

    from tracr.compiler import validating
    from tracr.rasp import rasp

    select_all = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE)
    first = rasp.Aggregate(select_all, rasp.tokens)     # categorical, selects many
    validating.validate(first, ["a", "a"])   # -> [] (both keys hold "a")
    validating.validate(first, ["a", "b"])
    # -> [TracrUnsupportedExpr(expr=Aggregate('aggregate_7'), reason='Categorical
    #     aggregate aggregate_7 selects 2 keys with different values ['a', 'b'] ...')]

See docs/fuzzing.md for how this promise is tested.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
from typing import Dict, List, Mapping, Optional, Sequence, Set, Union

import networkx as nx

from tracr.compiler import basis_inference, nodes
from tracr.rasp import causal_eval, rasp


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


def _contains_constant_selector(selector: rasp.RASPExpr) -> bool:
    return any(isinstance(e, rasp.ConstantSelector) for e in walk(selector))


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


def static_validate(
    program: rasp.RASPExpr,
    vocab: Optional[Set[rasp.Value]] = None,
    max_seq_len: Optional[int] = None,
) -> list[TracrUnsupportedExpr]:
    """Checks ``program`` against what the compiler supports, without running it.

    The structure is always checked. Given ``vocab`` and ``max_seq_len`` (as
    ``compile_rasp_to_model`` passes them), the values every SOp can take are
    checked too: where RASP has no value (None) but a compiled model would
    hold one and select it (see ``_none_flow_reasons``).

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
    exprs = walk(program)
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
    if not found and vocab is not None and max_seq_len is not None:
        inference = basis_inference.ValueSetInference(vocab, max_seq_len)
        for expr in exprs:
            if isinstance(expr, rasp.SOp):
                try:
                    inference.add(expr)
                except NotImplementedError as e:
                    return [TracrUnsupportedExpr(expr, str(e))]
        found.extend(_value_set_reasons(exprs, inference.value_sets))
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
    return _value_set_reasons(walk(program), value_sets)


# ----------------------------------------------------------------- None flow
#
# RASP's None ("no value") comes from a categorical Aggregate that selects
# nothing, a numerical Aggregate with default None, or a function that returns
# None. Maps and SequenceMaps pass it on; a Select never selects a None key,
# nor anything for a None query. A compiled model has no None: a categorical
# SOp holds the zero vector there, which the attention heads also never
# select, so the two agree -- unless (1) the zero vector was lost on the way,
# because a numerical SOp holds a number where RASP has None and a Map turned
# that number into a categorical value ("phantom" values), or (2) a SelectorNot
# or SelectorOr turns RASP's "a None never matches" into "matches", which no
# attention head can do for a position whose value is the zero vector.


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


def _value_set_reasons(
    exprs: Sequence[rasp.RASPExpr], value_sets: Mapping[str, set]
) -> List[TracrUnsupportedExpr]:
    """The None-flow checks (see above), given every SOp's value set by label."""
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


def _some(values: Sequence[rasp.Value], limit: int = 5) -> str:
    distinct: List[rasp.Value] = []
    for v in values:
        if not any(v is u or v == u for u in distinct):
            distinct.append(v)
    more = ", ..." if len(distinct) > limit else ""
    return "[" + ", ".join(repr(v) for v in distinct[:limit]) + more + "]"


class DynamicValidationEvaluator(rasp.DefaultRASPEvaluator):
    """Evaluates a program and records why it has no result on this input.

    Where the reference evaluator raises -- a categorical aggregate that
    selects several different values, a ConstantSOp of another length, a
    function raising an ArithmeticError -- the program has no meaning, and the
    compiled model's output there is arbitrary. This evaluator records each
    such problem instead (and continues with None there), so that one run
    reports every problem.
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

    def _apply(self, sop: rasp.SOp, f, args: Sequence[tuple], xs) -> List[rasp.Value]:
        """f at every position; an ArithmeticError is reported and gives None."""
        out: List[rasp.Value] = []
        for pos, a in enumerate(args):
            if any(v is None for v in a):
                out.append(None)
                continue
            try:
                out.append(f(*a))
            except ArithmeticError as e:
                shown = ", ".join(repr(v) for v in a)
                self._report(
                    sop,
                    f"The function of {sop.label} raises {type(e).__name__} ({e}) on {shown} "
                    f"at position {pos} (input {list(xs)!r}): the program has no value there, "
                    f"and the compiled model, which skips such values, outputs an arbitrary "
                    f"one. Make the function total, e.g. return a value for that case.",
                )
                out.append(None)
        return out

    def eval_map(self, sop: rasp.Map, xs: Sequence[rasp.Value]) -> Sequence[rasp.Value]:
        return self._apply(sop, sop.f, [(x,) for x in self.evaluate(sop.inner, xs)], xs)

    def eval_sequence_map(
        self, sop: rasp.SequenceMap, xs: Sequence[rasp.Value]
    ) -> Sequence[rasp.Value]:
        pairs = list(zip(self.evaluate(sop.fst, xs), self.evaluate(sop.snd, xs), strict=False))
        return self._apply(sop, sop.f, pairs, xs)

    def eval_constant_sop(
        self, sop: rasp.ConstantSOp, xs: Sequence[rasp.Value]
    ) -> Sequence[rasp.Value]:
        if len(sop.value) != len(xs):
            self._report(
                sop,
                f"{sop.label} is a ConstantSOp of length {len(sop.value)}, but the input "
                f"{list(xs)!r} has length {len(xs)}: the program only has a meaning for inputs "
                f"of length {len(sop.value)}. Build the constant from rasp.indices with a Map "
                f"to support every length.",
            )
            # Position i reads value[i], as in the compiled model (None past the end).
            return [sop.value[i] if i < len(sop.value) else None for i in range(len(xs))]
        return super().eval_constant_sop(sop, xs)

    def eval_aggregate(self, sop: rasp.Aggregate, xs: Sequence[rasp.Value]) -> Sequence[rasp.Value]:
        # A numerical Aggregate is compiled exactly for any values: the head
        # averages them and basis inference enumerates every mean.
        if rasp.is_numerical(sop):
            return super().eval_aggregate(sop, xs)
        selector = self.evaluate(sop.selector, xs)
        values = self.evaluate(sop.sop, xs)
        out: List[rasp.Value] = []
        reported = False
        for query, row in enumerate(selector):
            selected = [v for v, s in zip(values, row, strict=False) if s]
            distinct: List[rasp.Value] = []
            for v in selected:
                if not any(v is u or v == u for u in distinct):
                    distinct.append(v)
            if len(distinct) <= 1:
                out.append(distinct[0] if distinct else sop.default)
                continue
            # Averaging one-hots of equal values gives that one-hot again, so only
            # different values (None included) break the compiled head.
            if not reported:
                self._report(
                    sop,
                    f"Categorical aggregate {sop.label} selects {len(selected)} keys with "
                    f"different values {_some(distinct)} at query position {query} (input "
                    f"{list(xs)!r}): RASP gives no result there, and a compiled categorical "
                    f"Aggregate averages the one-hots. Narrow the selector so that it selects "
                    f"one value per query, or make the aggregate numerical.",
                )
                reported = True
            out.append(None)
        return out


class CausalDynamicValidationEvaluator(causal_eval.CausalEvaluator, DynamicValidationEvaluator):
    """DynamicValidationEvaluator with the causal mask (for models compiled with causal=True)."""


def dynamic_validate(
    program: rasp.RASPExpr, xs: Sequence[rasp.Value] | None = None, causal: bool = False
) -> list[TracrUnsupportedExpr]:
    """Runs ``program`` on ``xs`` and reports aggregates the compiler can't reproduce.

    Args:
      program: the program's output expression.
      xs: an input sequence; with None there is nothing to run and the result
        is empty.
      causal: evaluate as a causally compiled model sees it (query i selects
        only keys <= i).

    Returns:
      Every problem seen on ``xs``, in evaluation order.

    Raises:
      TypeError: if ``xs`` is not a list of tokens.
    """
    if xs is None:
        return []
    evaluator = CausalDynamicValidationEvaluator() if causal else DynamicValidationEvaluator()
    evaluator.evaluate(program, xs)
    return list(evaluator.unsupported_exprs)


def validate(
    program: rasp.RASPExpr, xs: Sequence[rasp.Value] | None = None, causal: bool = False
) -> list[TracrUnsupportedExpr]:
    """``static_validate`` plus, when ``xs`` is given, ``dynamic_validate``."""
    found = static_validate(program)
    for item in dynamic_validate(program, xs, causal=causal):
        if item not in found:
            found.append(item)
    return found
