"""Tests for the RASP language and its reference evaluator (tracr.rasp.rasp)."""

import itertools
import re
import subprocess
import sys
import threading
from collections.abc import Mapping

import numpy as np
import pytest

from tracr.rasp import rasp
from tracr.utils import debugging, errors

tokens, indices, length = rasp.tokens, rasp.indices, rasp.length
C = rasp.Comparison


def _all_exprs(program):
    seen, stack, out = set(), [program], []
    while stack:
        expr = stack.pop()
        if id(expr) in seen:
            continue
        seen.add(id(expr))
        out.append(expr)
        stack.extend(expr.children)
    return out


# ---------------------------------------------------------------- primitives


@pytest.mark.parametrize(
    "xs, toks, idx, lens",
    [
        ([], [], [], []),
        (["a"], ["a"], [0], [1]),
        (["a", "b", "c"], ["a", "b", "c"], [0, 1, 2], [3, 3, 3]),
        ((1, 2), [1, 2], [0, 1], [2, 2]),
    ],
)
def test_primitives(xs, toks, idx, lens):
    assert tokens(xs) == toks
    assert indices(xs) == idx
    assert length(xs) == lens
    assert rasp.evaluate(tokens, xs) == toks


def test_primitive_labels():
    assert (tokens.label, indices.label, length.label) == ("tokens", "indices", "length")
    assert tokens.children == [] and indices.children == [] and length.children == []
    assert repr(tokens) == "tokens"


# --------------------------------------------------------- evaluation table

_EVAL_CASES = {
    # name: (expression factory, input, expected output)
    "map": (lambda: rasp.Map(lambda x: x + 1, tokens), [1, 2, 3], [2, 3, 4]),
    "map_none": (lambda: rasp.Map(lambda x: x + 1, tokens), [1, None, 3], [2, None, 4]),
    "map_empty": (lambda: rasp.Map(lambda x: x + 1, tokens), [], []),
    "map_len1": (lambda: rasp.Map(lambda x: x * 2, tokens), [5], [10]),
    "sequence_map": (
        lambda: rasp.SequenceMap(lambda x, y: x * y, tokens, indices),
        [3, 3, 3],
        [0, 3, 6],
    ),
    "sequence_map_none_fst": (
        lambda: rasp.SequenceMap(lambda x, y: x + y, tokens, indices),
        [None, 1],
        [None, 2],
    ),
    "sequence_map_none_snd": (
        lambda: rasp.SequenceMap(lambda x, y: x + y, indices, tokens),
        [1, None],
        [1, None],
    ),
    "linear_sequence_map": (
        lambda: rasp.LinearSequenceMap(tokens, indices, 2, -1),
        [1, 1, 1],
        [2, 1, 0],
    ),
    "full": (lambda: rasp.Full(7), ["a", "b"], [7, 7]),
    "full_empty": (lambda: rasp.Full(7), [], []),
    "constant_sop": (lambda: rasp.ConstantSOp([4, 5, 6]), ["a", "b", "c"], [4, 5, 6]),
    "constant_sop_unchecked": (lambda: rasp.ConstantSOp([4, 5], check_length=False), ["a"], [4, 5]),
    "select_lt": (
        lambda: rasp.Select(indices, indices, C.LT),
        [0, 0, 0],
        [[False, False, False], [True, False, False], [True, True, False]],
    ),
    "select_keys_vs_queries": (
        # keys are the tokens, queries the indices: m[q][k] = tokens[k] == q
        lambda: rasp.Select(tokens, indices, C.EQ),
        [1, 0],
        [[False, True], [True, False]],
    ),
    "select_none": (
        lambda: rasp.Select(tokens, tokens, C.TRUE),
        [1, None],
        [[True, False], [False, False]],
    ),
    "select_empty": (lambda: rasp.Select(tokens, tokens, C.TRUE), [], []),
    "constant_selector": (
        lambda: rasp.ConstantSelector([[True, False], [True, True]]),
        ["a", "b"],
        [[True, False], [True, True]],
    ),
    "selector_width": (
        lambda: rasp.SelectorWidth(rasp.Select(indices, indices, C.LEQ)),
        [0] * 4,
        [1, 2, 3, 4],
    ),
    "selector_width_empty_rows": (
        lambda: rasp.SelectorWidth(rasp.Select(tokens, tokens, C.FALSE)),
        [1, 2],
        [0, 0],
    ),
    "selector_width_len1": (
        lambda: rasp.SelectorWidth(rasp.Select(tokens, tokens, C.TRUE)),
        ["x"],
        [1],
    ),
    "aggregate_categorical": (
        lambda: rasp.Aggregate(rasp.Select(indices, indices, C.EQ), tokens),
        ["a", "b"],
        ["a", "b"],
    ),
    "aggregate_categorical_default": (
        lambda: rasp.Aggregate(rasp.Select(indices, indices, lambda k, q: k == q + 1), tokens),
        ["a", "b", "c"],
        ["b", "c", None],
    ),
    "aggregate_categorical_custom_default": (
        lambda: rasp.Aggregate(rasp.Select(tokens, tokens, C.FALSE), tokens, default="z"),
        ["a", "b"],
        ["z", "z"],
    ),
    "aggregate_categorical_same_values": (
        lambda: rasp.Aggregate(rasp.Select(tokens, tokens, C.EQ), tokens),
        ["a", "b", "a"],
        ["a", "b", "a"],
    ),
    "aggregate_numerical_mean": (
        lambda: rasp.numerical(
            rasp.Aggregate(rasp.Select(indices, indices, C.LEQ), rasp.numerical(tokens))
        ),
        [1, 0, 2, 1],
        [1.0, 0.5, 1.0, 1.0],
    ),
    "aggregate_numerical_default": (
        lambda: rasp.numerical(
            rasp.Aggregate(rasp.Select(indices, indices, C.LT), rasp.numerical(tokens), default=0)
        ),
        [4, 2],
        [0, 4.0],
    ),
    "aggregate_numerical_bools": (
        lambda: rasp.numerical(
            rasp.Aggregate(
                rasp.Select(tokens, tokens, C.TRUE), rasp.numerical(tokens == "a"), default=0
            )
        ),
        ["a", "b", "b", "b"],
        [0.25] * 4,
    ),
    "aggregate_numerical_none": (
        lambda: rasp.numerical(
            rasp.Aggregate(rasp.Select(indices, indices, C.LEQ), rasp.numerical(tokens))
        ),
        [None, 1],
        [None, None],
    ),
    "aggregate_empty": (
        lambda: rasp.Aggregate(rasp.Select(indices, indices, C.EQ), tokens),
        [],
        [],
    ),
}


@pytest.mark.parametrize("name", sorted(_EVAL_CASES))
def test_evaluation(name):
    factory, xs, expected = _EVAL_CASES[name]
    expr = factory()
    assert expr(xs) == expected
    assert rasp.evaluate(expr, xs) == expected
    assert rasp.DefaultRASPEvaluator().evaluate(expr, xs) == expected


def test_numerical_mean_is_exact_fraction():
    frac = rasp.numerical(
        rasp.Aggregate(rasp.Select(indices, indices, C.LEQ), rasp.numerical(tokens == 1), default=0)
    )
    assert frac([1, 0, 1]) == pytest.approx([1.0, 0.5, 2 / 3])


def test_categorical_aggregate_of_several_values_averages_as_tracr():
    agg = rasp.Aggregate(rasp.Select(tokens, tokens, C.TRUE), tokens)
    assert agg([1, 2, 6]) == [3.0, 3.0, 3.0]
    assert agg(["a", "b"]) == ["ab", "ab"]
    assert agg([True, True]) == [True, True] and agg([True, True])[0] is True
    bad = agg.named("bad_agg")
    with pytest.raises(ValueError, match=r"^Unsupported type for aggregation.*bad_agg.*position 0"):
        bad([(1,), (2,)])


def test_constant_sop_length_mismatch():
    with pytest.raises(ValueError, match=r"^Constant len 2 doesn't match input len 3\."):
        rasp.ConstantSOp([1, 2])([0, 0, 0])
    assert rasp.ConstantSOp([1, 2], check_length=False)([0, 0, 0]) == [1, 2]
    assert rasp.ConstantSOp("ab")([0, 0]) == ["a", "b"]


def test_constant_selector_length_mismatch():
    with pytest.raises(ValueError, match="must be 3x3"):
        rasp.ConstantSelector([[True]])([0, 0, 0])
    assert rasp.ConstantSelector([[True]], check_length=False)([0, 0]) == [[True]]


def test_errors_in_user_functions_propagate():
    div = rasp.Map(lambda x: 1 / x, tokens)
    with pytest.raises(ZeroDivisionError):
        div([1, 0])


def test_shared_subexpressions_are_evaluated_once():
    calls = []

    def f(x):
        calls.append(x)
        return x + 1

    x = rasp.Map(f, tokens)
    for _ in range(25):  # 2**25 evaluations without caching
        x = rasp.SequenceMap(lambda a, b: max(a, b), x, rasp.Map(lambda v: v, x, simplify=False))
    assert x([0, 1]) == [1, 2]
    assert calls == [0, 1]


def test_evaluation_is_thread_safe():
    prog = rasp.SelectorWidth(rasp.Select(tokens, tokens, C.EQ))
    results = {}

    def run(i):
        xs = [i % 3] * (i % 5 + 1)
        results[i] = (prog(xs), [len(xs)] * len(xs))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(got == want for got, want in results.values())


def test_a_string_input_is_the_sequence_of_its_characters():
    assert tokens("hello") == list("hello")
    assert rasp.evaluate(indices, "abc") == [0, 1, 2]
    assert (tokens == "l")("hello") == [False, False, True, True, False]


@pytest.mark.parametrize("bad", [3, None, {"a": 1}])
def test_non_list_input_raises_type_error(bad):
    with pytest.raises(TypeError, match="list of tokens"):
        tokens(bad)


def test_numpy_input_is_accepted():
    assert indices(np.array([5, 6])) == [0, 1]


def test_evaluate_requires_an_expression():
    with pytest.raises(TypeError, match="RASP expression"):
        rasp.evaluate(lambda x: x, [1])


# ------------------------------------------------------------------ Map folding


def test_map_of_map_folds():
    inner = rasp.Map(lambda x: x + 1, tokens)
    outer = rasp.Map(lambda x: x * 10, inner)
    assert outer.inner is tokens
    assert outer([1, 2]) == [20, 30]
    assert len(outer.children) == 1 and outer.children[0] is tokens


def test_map_folding_keeps_none_semantics():
    inner = rasp.Map(lambda x: None if x == 0 else x, tokens)
    outer = rasp.Map(lambda x: 10 // x, inner)  # would fail on None
    assert outer.inner is tokens
    assert outer([0, 5]) == [None, 2]


def test_map_without_simplify_keeps_nesting():
    inner = rasp.Map(lambda x: x + 1, tokens)
    outer = rasp.Map(lambda x: x * 10, inner, simplify=False)
    assert outer.inner is inner
    assert outer([1]) == [20]


def test_attributes_used_by_the_compiler():
    f = lambda x, y: x  # noqa: E731
    sm = rasp.SequenceMap(f, tokens, indices)
    # Compare by identity: == on SOps builds a Map.
    assert sm.f is f and sm.fst is tokens and sm.snd is indices
    assert sm.children[0] is tokens and sm.children[1] is indices
    lsm = rasp.LinearSequenceMap(tokens, indices, 2, 3)
    assert isinstance(lsm, rasp.SequenceMap)
    assert (lsm.fst_fac, lsm.snd_fac) == (2, 3)
    assert lsm.f(1, 10) == 32
    assert rasp.Full(3).fill == 3
    assert list(rasp.ConstantSOp([1, 2]).value) == [1, 2]
    sel = rasp.Select(tokens, indices, C.GT)
    assert sel.keys is tokens and sel.queries is indices and sel.predicate is C.GT
    agg = rasp.Aggregate(sel, tokens, default=0)
    assert agg.selector is sel and agg.sop is tokens and agg.default == 0
    assert agg.children[0] is sel and agg.children[1] is tokens
    assert rasp.SelectorWidth(sel).selector is sel
    other = rasp.Select(indices, tokens, C.LT)
    conj = rasp.SelectorAnd(sel, other)
    assert conj.fst is sel and conj.snd is other
    assert rasp.SelectorNot(sel).inner is sel
    assert [list(r) for r in rasp.ConstantSelector([[1, 0], [0, 1]]).value] == [
        [True, False],
        [False, True],
    ]


@pytest.mark.parametrize(
    "build",
    [
        lambda: rasp.Map(lambda x: x, rasp.Select(tokens, tokens, C.TRUE)),
        lambda: rasp.Map(3, tokens),
        lambda: rasp.SequenceMap(lambda x, y: x, tokens, 3),
        lambda: rasp.Select(tokens, "tokens", C.EQ),
        lambda: rasp.Select(tokens, tokens, "=="),
        lambda: rasp.Aggregate(tokens, tokens),
        lambda: rasp.SelectorWidth(tokens),
        lambda: rasp.LinearSequenceMap(tokens, indices, "2", 1),
        lambda: rasp.ConstantSOp(3),
    ],
)
def test_constructors_reject_wrong_types(build):
    with pytest.raises(TypeError):
        build()


# ------------------------------------------------------------------ Comparison


@pytest.mark.parametrize(
    "comparison, key, query, expected",
    [
        (C.EQ, 1, 1, True),
        (C.EQ, 1, 2, False),
        (C.LT, 1, 2, True),
        (C.LT, 2, 1, False),
        (C.LEQ, 2, 2, True),
        (C.LEQ, 3, 2, False),
        (C.GT, 3, 2, True),
        (C.GT, 2, 2, False),
        (C.GEQ, 2, 2, True),
        (C.GEQ, 1, 2, False),
        (C.NEQ, 1, 2, True),
        (C.NEQ, 2, 2, False),
        (C.TRUE, 1, 2, True),
        (C.FALSE, 1, 1, False),
    ],
)
def test_comparison_called_as_key_query(comparison, key, query, expected):
    assert comparison(key, query) is expected


def test_comparison_from_string():
    assert C("<") is C.LT
    assert C("True") is C.TRUE
    assert str(C.LEQ) == "<="
    with pytest.raises(ValueError, match=r"Unknown comparison '~~'.*'<='"):
        C("~~")


# ------------------------------------------------------------ selector algebra


def _mat(rows):
    return [[c == "1" for c in row] for row in rows.split()]


def test_selector_and_same_inputs_folds_into_select():
    lt = rasp.Select(indices, indices, C.LT)
    ne = rasp.Select(indices, indices, C.GT)
    both = lt | ne
    assert isinstance(both, rasp.Select)
    assert both([0, 0, 0]) == _mat("011 101 110")
    conj = rasp.selector_and(lt, rasp.Select(indices, indices, C.GEQ))
    assert isinstance(conj, rasp.Select)
    assert conj([0, 0]) == _mat("00 00")


def test_selector_combinations_without_simplify():
    a = rasp.Select(indices, indices, C.LEQ)
    b = rasp.Select(indices, indices, C.GEQ)
    conj = rasp.selector_and(a, b, simplify=False)
    disj = rasp.selector_or(a, b, simplify=False)
    neg = rasp.selector_not(a, simplify=False)
    assert isinstance(conj, rasp.SelectorAnd)
    assert isinstance(disj, rasp.SelectorOr)
    assert isinstance(neg, rasp.SelectorNot)
    assert conj([0, 0, 0]) == _mat("100 010 001")
    assert disj([0, 0, 0]) == _mat("111 111 111")
    assert neg([0, 0, 0]) == _mat("011 001 000")
    assert conj.children[0] is a and conj.children[1] is b
    assert disj.fst is a and disj.snd is b and neg.inner is a


def test_selectors_over_different_inputs_are_combined_not_folded():
    a = rasp.Select(tokens, tokens, C.EQ)
    b = rasp.Select(indices, indices, C.LEQ)
    conj = a & b
    assert isinstance(conj, rasp.SelectorAnd)
    assert conj(["x", "y", "x"]) == _mat("100 010 101")
    disj = a | b
    assert isinstance(disj, rasp.SelectorOr)
    assert disj(["x", "y", "x"]) == _mat("101 110 111")


@pytest.mark.parametrize(
    "comparison, negated",
    [(C.EQ, C.NEQ), (C.LT, C.GEQ), (C.LEQ, C.GT), (C.TRUE, C.FALSE), (C.GT, C.LEQ)],
)
def test_selector_not_negates_the_predicate(comparison, negated):
    sel = rasp.Select(tokens, indices, comparison)
    neg = ~sel
    assert isinstance(neg, rasp.Select)
    assert neg.predicate is negated
    assert neg.keys is tokens and neg.queries is indices
    xs = [2, 0, 1]
    assert neg(xs) == [[not v for v in row] for row in sel(xs)]


def test_selector_not_of_custom_predicate():
    sel = rasp.Select(indices, indices, lambda k, q: k == q + 1)
    assert (~sel)([0, 0]) == _mat("10 11")


def test_selector_operators_reject_sops():
    with pytest.raises(TypeError, match="Selector"):
        rasp.Select(tokens, tokens, C.EQ) & tokens


# ------------------------------------------------------------------ operators


@pytest.mark.parametrize(
    "build, xs, expected",
    [
        (lambda: tokens + 1, [1, 2], [2, 3]),
        (lambda: 1 + tokens, [1, 2], [2, 3]),
        (lambda: tokens - 1, [1, 2], [0, 1]),
        (lambda: 10 - tokens, [1, 2], [9, 8]),
        (lambda: tokens * 3, [1, 2], [3, 6]),
        (lambda: 3 * tokens, [1, 2], [3, 6]),
        (lambda: tokens / 2, [1, 2], [0.5, 1.0]),
        (lambda: 2 / tokens, [1, 2], [2.0, 1.0]),
        (lambda: tokens == 1, [1, 2], [True, False]),
        (lambda: tokens != 1, [1, 2], [False, True]),
        (lambda: tokens < 2, [1, 2], [True, False]),
        (lambda: tokens <= 1, [1, 2], [True, False]),
        (lambda: tokens > 1, [1, 2], [False, True]),
        (lambda: tokens >= 2, [1, 2], [False, True]),
        (lambda: 2 > tokens, [1, 2], [True, False]),
        (lambda: tokens & True, [True, False], [True, False]),
        (lambda: True & tokens, [True, False], [True, False]),
        (lambda: tokens | False, [True, False], [True, False]),
        (lambda: False | tokens, [True, False], [True, False]),
        (lambda: ~tokens, [True, False], [False, True]),
        (lambda: rasp.sop_not(tokens), [True, 0], [False, True]),
        (lambda: "x" + tokens, ["a"], ["xa"]),
    ],
)
def test_operators_with_constants_build_maps(build, xs, expected):
    expr = build()
    assert isinstance(expr, rasp.Map)
    assert expr(xs) == expected


@pytest.mark.parametrize(
    "build, expected",
    [
        (lambda: tokens + indices, [3, 3, 3]),
        (lambda: tokens - indices, [3, 1, -1]),
        (lambda: tokens * indices, [0, 2, 2]),
        (lambda: indices / tokens, [0.0, 0.5, 2.0]),
        (lambda: tokens == indices, [False, False, False]),
        (lambda: tokens != indices, [True, True, True]),
        (lambda: tokens < indices, [False, False, True]),
        (lambda: tokens <= indices, [False, False, True]),
        (lambda: tokens > indices, [True, True, False]),
        (lambda: tokens >= indices, [True, True, False]),
        (lambda: tokens + 1 == indices + 2, [False, True, False]),
        (lambda: (tokens > 1) & (indices > 0), [False, True, False]),
        (lambda: (tokens > 1) | (indices > 1), [True, True, True]),
    ],
)
def test_operators_with_sops_build_sequence_maps(build, expected):
    expr = build()
    assert isinstance(expr, rasp.SequenceMap)
    assert expr([3, 2, 1]) == expected


def test_sops_stay_hashable():
    m = tokens + 1
    assert {m: 1}[m] == 1


# ------------------------------------------------- labels, names, annotations

_KINDS = [
    (lambda: rasp.Map(lambda x: x, tokens), "map"),
    (lambda: rasp.SequenceMap(lambda x, y: x, tokens, indices), "sequence_map"),
    (lambda: rasp.LinearSequenceMap(tokens, indices, 1, 1), "linear_sequence_map"),
    (lambda: rasp.Full(1), "full"),
    (lambda: rasp.ConstantSOp([1]), "constant_sop"),
    (lambda: rasp.Select(tokens, tokens, C.EQ), "select"),
    (lambda: rasp.ConstantSelector([[True]]), "constant_selector"),
    (lambda: rasp.SelectorWidth(rasp.Select(tokens, tokens, C.EQ)), "selector_width"),
    (lambda: rasp.Aggregate(rasp.Select(tokens, tokens, C.EQ), tokens), "aggregate"),
    (
        lambda: rasp.SelectorAnd(
            rasp.Select(tokens, tokens, C.EQ), rasp.Select(indices, indices, C.EQ)
        ),
        "selector_and",
    ),
    (
        lambda: rasp.SelectorOr(
            rasp.Select(tokens, tokens, C.EQ), rasp.Select(indices, indices, C.EQ)
        ),
        "selector_or",
    ),
    (lambda: rasp.SelectorNot(rasp.Select(tokens, tokens, C.EQ)), "selector_not"),
]


@pytest.mark.parametrize("build, kind", _KINDS, ids=[k for _, k in _KINDS])
def test_default_labels(build, kind):
    expr = build()
    assert re.fullmatch(rf"{kind}_\d+", expr.label)
    assert expr.name == expr.annotations["name"] == kind
    assert expr.label == f"{kind}_{expr.unique_id}"
    assert rasp.default_name(expr) == {"name": kind}


@pytest.mark.parametrize("sop", [tokens, indices, rasp.length], ids=["tokens", "indices", "length"])
def test_inputs_are_labelled_by_their_bare_names(sop):
    assert sop.label == sop.name == type(sop)._kind


def test_ids_can_be_reset_for_reproducible_labels():
    saved = rasp.RASPExpr._ids
    try:
        rasp.RASPExpr._ids = itertools.count(1)
        first = [e.label for e in (tokens + 1, rasp.Full(2).named("two"))]
        rasp.RASPExpr._ids = itertools.count(1)
        second = [e.label for e in (tokens + 1, rasp.Full(2).named("two"))]
    finally:
        rasp.RASPExpr._ids = saved
    assert first == second == ["map_1", "two_2"]


def test_unique_id_is_cached():
    m = tokens + 1
    assert m.unique_id == m.unique_id and m.label == m.label


def test_labels_are_unique_within_a_program():
    x = tokens + indices
    y = rasp.Aggregate(rasp.Select(indices, indices, C.EQ), x) * 2
    prog = rasp.SelectorWidth(rasp.Select(y, x, C.LT) & rasp.Select(y, x, C.GT))
    labels = [e.label for e in _all_exprs(prog)]
    # tokens, indices, x, select, aggregate, y, the folded select, selector_width
    assert len(labels) == len(set(labels)) == 8


def test_labels_are_deterministic_across_processes():
    code = (
        "from tracr.rasp import rasp\n"
        "from tracr.compiler import lib\n"
        "p = lib.make_shuffle_dyck(['()', '[]'])\n"
        "q = rasp.Map(lambda x: x, rasp.tokens + rasp.indices)\n"
        "seen, stack, out = set(), [p, q], []\n"
        "while stack:\n"
        "    e = stack.pop()\n"
        "    if id(e) in seen: continue\n"
        "    seen.add(id(e)); out.append(e.label); stack.extend(e.children)\n"
        "print(','.join(out))\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert "shuffle_dyck" in runs[0] and re.search(r"map_\d+", runs[0])


def test_named_returns_a_renamed_copy():
    m = tokens + 1
    original = m.label
    n = m.named("plus_one")
    assert n.name == "plus_one" and n.label == f"plus_one_{n.unique_id}"
    assert m.label == original and n.unique_id != m.unique_id
    assert n is not m and isinstance(n, rasp.Map)
    assert n([1]) == [2]
    with pytest.raises(TypeError, match="non-empty str"):
        m.named(3)


def test_annotations_are_immutable_and_merged():
    m = (tokens + 1).named("m")
    ann = m.annotations
    assert isinstance(ann, Mapping)
    assert dict(ann) == {"name": "m", "encoding": rasp.Encoding.CATEGORICAL}
    with pytest.raises(TypeError):
        ann["name"] = "x"  # type: ignore[index]
    a = m.annotated(color="red")
    assert dict(a.annotations) == {
        "name": "m",
        "encoding": rasp.Encoding.CATEGORICAL,
        "color": "red",
    }
    assert "color" not in m.annotations
    b = rasp.annotate(a, size=2)
    assert (
        b.name == "m"
        and b.label != a.label
        and b.annotations["color"] == "red"
        and b.annotations["size"] == 2
    )


def test_annotate_keeps_default_name_with_a_new_id():
    m = tokens + 1
    for copy in (rasp.annotate(m, foo=1), rasp.numerical(m)):
        assert copy.name == m.name == "map"
        assert copy.unique_id != m.unique_id and copy.label != m.label


def test_annotations_setter():
    m = tokens + 1
    label = m.label
    m.annotations = {"encoding": rasp.Encoding.NUMERICAL}
    assert m.label == label and rasp.is_numerical(m)


def test_default_annotators_is_empty_and_read_only():
    assert len(rasp.DEFAULT_ANNOTATORS) == 0
    with pytest.raises(TypeError):
        rasp.DEFAULT_ANNOTATORS["x"] = lambda e: 1  # type: ignore[index]


def test_copy_keeps_name_and_gets_a_new_id():
    m = (tokens + 1).named("m")
    m_label = m.label
    c = m.copy()
    assert c is not m and c.name == m.name and c.inner is m.inner
    assert c.unique_id != m.unique_id and c.label != m_label == m.label


def test_unique_ids_differ():
    a, b = rasp.Full(1), rasp.Full(1)
    assert a.unique_id != b.unique_id and a.label != b.label


def test_user_subclass_gets_snake_case_kind():
    class MyThing(rasp.SOp):
        @property
        def children(self):
            return []

    assert re.fullmatch(r"my_thing_\d+", MyThing().label)
    with pytest.raises(NotImplementedError, match="MyThing"):
        MyThing()([1])


# ------------------------------------------------------------------ encodings


def test_encodings():
    m = tokens + 1
    assert rasp.get_encoding(m) is rasp.Encoding.CATEGORICAL
    assert rasp.is_categorical(m) and not rasp.is_numerical(m)
    n = rasp.numerical(m)
    assert rasp.get_encoding(n) is rasp.Encoding.NUMERICAL
    assert rasp.is_numerical(n) and not rasp.is_categorical(n)
    assert rasp.is_categorical(rasp.categorical(n))
    assert rasp.is_categorical(m), "numerical() must not change its argument"
    assert rasp.Encoding.numerical is rasp.Encoding.NUMERICAL
    assert rasp.Encoding("categorical") is rasp.Encoding.CATEGORICAL


def test_selectors_have_no_encoding():
    sel = rasp.Select(tokens, tokens, C.EQ)
    assert rasp.default_encoding(sel) is None
    assert "encoding" not in sel.annotations
    assert not rasp.is_numerical(sel) and not rasp.is_categorical(sel)
    with pytest.raises(TypeError, match="must be an SOp"):
        rasp.get_encoding(sel)
    with pytest.raises(TypeError):
        rasp.numerical(sel)


def test_string_encoding_annotation_is_understood():
    m = (tokens + 1).annotated(encoding="numerical")
    assert rasp.is_numerical(m)
    with pytest.raises(ValueError, match="encoding annotation 'weird'"):
        rasp.get_encoding(m.annotated(encoding="weird"))


# ------------------------------------------------------------------ utils


def test_ignoring_arithmetic_errors():
    safe = errors.ignoring_arithmetic_errors(lambda x, y: x / y)
    assert safe(1, 2) == 0.5
    assert safe(1, 0) is None
    with pytest.raises(TypeError):
        safe("a", 1)


def test_print_arrays(capsys):
    debugging.print_arrays(
        [np.array([[1, 2], [3, 4]]), np.array([0.5])], labels=["m", "v"], colwidth=5
    )
    out = capsys.readouterr().out.splitlines()
    assert out == ["m", "    1    2", "    3    4", "v", "  0.5"]
    with pytest.raises(ValueError, match="one label per array"):
        debugging.print_arrays([np.zeros(2)], labels=["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        debugging.print_arrays([np.zeros((1, 1, 1))])


# -------------------------------------------------------- Tracr's simplifications


@pytest.mark.parametrize("combine", [rasp.selector_and, rasp.selector_or])
def test_selector_combination_with_a_full_side_is_one_select(combine):
    x = tokens + 1
    full = rasp.Full(2)
    cases = [
        (rasp.Select(full, indices, C.LT), rasp.Select(x, indices, C.EQ), x, indices),
        (rasp.Select(x, indices, C.EQ), rasp.Select(full, indices, C.LT), x, indices),
        (rasp.Select(x, full, C.GEQ), rasp.Select(x, indices, C.NEQ), x, indices),
        (rasp.Select(full, indices, C.LT), rasp.Select(x, full, C.GT), x, indices),
    ]
    for fst, snd, keys, queries in cases:
        sel = combine(fst, snd)
        assert isinstance(sel, rasp.Select) and sel.keys is keys and sel.queries is queries
        unsimplified = combine(fst, snd, simplify=False)
        assert not isinstance(unsimplified, rasp.Select)
        for xs in itertools.product(range(4), repeat=3):
            assert sel(list(xs)) == unsimplified(list(xs)), (fst, snd, xs)


def test_selector_combination_of_unrelated_selects_is_not_simplified():
    a, b = rasp.Select(tokens, indices, C.EQ), rasp.Select(indices, tokens, C.EQ)
    assert isinstance(rasp.selector_and(a, b), rasp.SelectorAnd)
    assert isinstance(rasp.selector_or(a, b), rasp.SelectorOr)


def test_sequence_map_of_one_sop_twice_warns(caplog):
    with caplog.at_level("WARNING", logger="tracr.rasp.rasp"):
        rasp.SequenceMap(lambda x, y: x + y, tokens, tokens)
    assert any("both inputs being the same SOp" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="tracr.rasp.rasp"):
        rasp.SequenceMap(lambda x, y: x + y, tokens, indices)
    assert not caplog.records


def test_ignored_arithmetic_errors_are_logged(caplog):
    safe = errors.ignoring_arithmetic_errors(lambda x: 1 / x)
    with caplog.at_level("WARNING", logger="tracr.utils.errors"):
        assert safe(0) is None
    assert any(
        r.getMessage().startswith("Encountered arithmetic error in function")
        for r in caplog.records
    )
