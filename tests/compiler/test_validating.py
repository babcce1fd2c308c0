"""Tests for finding unsupported RASP constructs (tracr.compiler.validating)."""

import itertools

import pytest

from tracr.compiler import compiling, lib, validating
from tracr.rasp import rasp

tokens, indices = rasp.tokens, rasp.indices
C = rasp.Comparison
num = rasp.numerical


def _select_all():
    return rasp.Select(tokens, tokens, C.TRUE)


def _one_problem(problems, expr, *fragments):
    assert len(problems) == 1, [str(p) for p in problems]
    assert problems[0].expr is expr
    for fragment in fragments:
        assert fragment in problems[0].reason, problems[0].reason


# ----------------------------------------------------------------- static rules


def test_length_primitive():
    prog = rasp.length + 1
    _one_problem(validating.static_validate(prog), rasp.length, "make_length()")


def test_numerical_aggregate_of_categorical_sop():
    agg = num(rasp.Aggregate(_select_all(), tokens, default=0))
    _one_problem(validating.static_validate(agg), agg, "numerical Aggregate", "rasp.numerical")


def test_categorical_aggregate_of_numerical_sop():
    agg = rasp.Aggregate(rasp.Select(indices, indices, C.EQ), num(tokens + 1))
    _one_problem(validating.static_validate(agg), agg, "categorical Aggregate", "numerical SOp")


@pytest.mark.parametrize("default", [0, None])
def test_numerical_aggregate_default_zero_or_none_is_fine(default):
    agg = num(rasp.Aggregate(_select_all(), num(tokens == "a"), default=default))
    assert validating.static_validate(agg) == []


def test_numerical_aggregate_nonzero_default():
    agg = num(rasp.Aggregate(_select_all(), num(tokens == "a"), default=1))
    _one_problem(validating.static_validate(agg), agg, "default 0", "got 1")


def test_categorical_aggregate_default_must_be_none():
    agg = rasp.Aggregate(rasp.Select(indices, indices, C.EQ), tokens, default="x")
    _one_problem(validating.static_validate(agg), agg, "default None", "'x'")


def test_selector_width_of_constant_selector():
    width = rasp.SelectorWidth(rasp.ConstantSelector([[True, False], [True, True]]))
    _one_problem(validating.static_validate(width), width, "ConstantSelector")


def test_constant_selector_nested_in_selector_width():
    sel = rasp.ConstantSelector([[True]]) & rasp.Select(tokens, tokens, C.EQ)
    width = rasp.SelectorWidth(sel)
    _one_problem(validating.static_validate(width), width, "ConstantSelector")


def test_aggregate_of_constant_selector():
    agg = rasp.Aggregate(rasp.ConstantSelector([[True]]), tokens)
    _one_problem(validating.static_validate(agg), agg, "ConstantSelector")


@pytest.mark.parametrize("role", ["keys", "queries"])
def test_select_with_numerical_inputs(role):
    numeric = num(tokens + 1)
    keys, queries = (numeric, indices) if role == "keys" else (indices, numeric)
    sel = rasp.Select(keys, queries, C.EQ)
    prog = rasp.SelectorWidth(sel)
    _one_problem(validating.static_validate(prog), sel, f"Select's {role}", "categorical")


def test_sequence_map_with_numerical_input():
    sm = rasp.SequenceMap(lambda x, y: x + y, num(tokens + 1), indices)
    _one_problem(validating.static_validate(sm), sm, "categorical inputs", "LinearSequenceMap")


def test_linear_sequence_map_with_numerical_inputs_is_fine():
    lsm = num(rasp.LinearSequenceMap(num(tokens + 1), num(indices + 0), 1, -1))
    assert validating.static_validate(lsm) == []
    assert validating.static_validate(rasp.LinearSequenceMap(tokens, indices, 1, 1)) == []


def test_linear_sequence_map_with_mixed_encodings():
    lsm = num(rasp.LinearSequenceMap(num(tokens + 1), indices, 1, 1))
    _one_problem(validating.static_validate(lsm), lsm, "same encoding")


def test_linear_sequence_map_of_numericals_must_be_numerical():
    lsm = rasp.LinearSequenceMap(num(tokens + 1), num(indices + 0), 1, 1)
    _one_problem(validating.static_validate(lsm), lsm, "rasp.numerical")


def test_sequence_map_of_the_same_sop_is_supported():
    # The compiler builds it as a Map of f(x, x).
    x = tokens + 1
    assert validating.static_validate(rasp.SequenceMap(lambda a, b: a * b, x, x)) == []


@pytest.mark.parametrize(
    "build",
    [
        lambda: num(rasp.Map(lambda x: x * 2, num(tokens + 0), simplify=False)),
        lambda: rasp.Map(lambda x: x > 1, num(tokens + 0), simplify=False),
        lambda: num(rasp.Map(lambda x: x * 2, tokens)),
        lambda: num(rasp.SelectorWidth(_select_all())),
        lambda: rasp.SequenceMap(lambda x, y: (x, y), tokens, indices),
    ],
)
def test_supported_maps_and_widths(build):
    assert validating.static_validate(build()) == []


def test_selector_program():
    sel = _select_all()
    _one_problem(validating.static_validate(sel), sel, "must be an SOp")


def test_expressions_named_alike_are_fine():
    a = (tokens + 1).named("x")
    b = (indices + 1).named("x")
    assert a.name == b.name and a.label != b.label
    assert validating.static_validate(a + b) == []


def test_different_expressions_sharing_a_label_are_reported():
    saved = rasp.RASPExpr._ids
    try:
        rasp.RASPExpr._ids = itertools.count(1)
        a = (tokens + 1).named("x")
        a_label = a.label
        rasp.RASPExpr._ids = itertools.count(1)
        b = (indices + 1).named("x")
        assert b.label == a_label  # a reset id source hands out the same id again
    finally:
        rasp.RASPExpr._ids = saved
    problems = validating.static_validate(a + b)
    assert len(problems) == 1
    assert f"labelled {a_label!r}" in problems[0].reason and problems[0].expr is b


def test_identical_expressions_may_share_a_label():
    prog = lib.make_length() + lib.make_length() * 2
    assert validating.static_validate(prog) == []
    m = tokens + 1
    assert validating.static_validate(m + m.copy()) == []  # one node, read twice
    assert (
        validating.static_validate(rasp.SequenceMap(lambda x, y: x, m, m.copy().named("m2"))) == []
    )


def test_annotated_copy_next_to_original_is_its_own_expression():
    m = tokens + 1
    prog = rasp.LinearSequenceMap(num(m), num(indices + 0), 1, 1)
    prog = rasp.SequenceMap(lambda x, y: x, m, rasp.Map(lambda v: v, num(prog)))
    assert num(m).label != m.label
    assert validating.static_validate(prog) == []


def test_every_problem_is_reported_children_first():
    bad_agg = num(rasp.Aggregate(_select_all(), tokens, default=2))
    prog = bad_agg + rasp.length
    problems = validating.static_validate(prog)
    # Two problems with the aggregate, the length primitive, and a SequenceMap
    # of a numerical input, in that order (children before parents).
    assert [p.expr.label for p in problems] == [bad_agg.label] * 2 + ["length", prog.label]
    assert problems[0].expr is bad_agg and problems[3].expr is prog


def test_static_validate_rejects_non_expressions():
    with pytest.raises(TypeError, match="RASP expression"):
        validating.static_validate("tokens")


# ---------------------------------------------------------------- dynamic rules


def test_categorical_aggregate_selecting_several_keys():
    agg = rasp.Aggregate(rasp.Select(tokens, tokens, C.EQ), indices)
    assert validating.dynamic_validate(agg, ["a", "b"]) == []
    # Equal values: the evaluator's result, and the compiled head's average of
    # identical one-hots, are that value.
    same = rasp.Aggregate(rasp.Select(tokens, tokens, C.EQ), indices * 0)
    assert validating.dynamic_validate(same, ["a", "b", "a"]) == []
    problems = validating.dynamic_validate(agg, ["a", "b", "a"])
    _one_problem(problems, agg, "selects 2 keys", "different values [0, 2]", "query position 0")


def test_dynamic_validation_continues_after_conflicting_values():
    first = rasp.Aggregate(_select_all(), tokens)
    second = rasp.Aggregate(rasp.Select(indices, indices, C.LEQ), indices)
    problems = validating.dynamic_validate(
        rasp.SequenceMap(lambda x, y: x, first, second), ["a", "b"]
    )
    assert len(problems) == 2
    assert problems[0].expr is first and problems[1].expr is second
    assert "query position 1" in problems[1].reason


def test_numerical_aggregate_of_non_binary_values():
    # Compiled exactly (every mean is in the value set); see test_regressions.
    values = num(tokens + 0)
    mean = num(rasp.Aggregate(rasp.Select(indices, indices, C.LEQ), values, default=0))
    assert validating.dynamic_validate(mean, [1, 3]) == []
    assert validating.dynamic_validate(mean, [1, 0, 1]) == []


def test_evaluator_failures_are_reported():
    const = rasp.ConstantSOp([1, 2, 3])
    _one_problem(validating.dynamic_validate(const + 1, [0, 0]), const, "length 3", "length 2")
    assert validating.dynamic_validate(const + 1, [0, 0, 0]) == []
    inverse = rasp.Map(lambda x: 6 // x, indices)
    _one_problem(validating.dynamic_validate(inverse, [5, 5]), inverse, "ZeroDivisionError")
    pair = rasp.SequenceMap(lambda x, y: x / y, tokens, indices)
    _one_problem(validating.dynamic_validate(pair, [1, 1]), pair, "position 0")


def test_causal_dynamic_validation():
    # Keys at or after the query: several non-causally, only itself causally.
    later = rasp.Aggregate(rasp.Select(indices, indices, C.GEQ), tokens)
    assert len(validating.dynamic_validate(later, ["a", "b"])) == 1
    assert validating.dynamic_validate(later, ["a", "b"], causal=True) == []
    assert validating.validate(later, ["a", "b"], causal=True) == []


def test_numerical_aggregate_of_non_binary_values_with_width_one():
    pick = num(rasp.Aggregate(rasp.Select(indices, indices, C.EQ), num(tokens + 0), default=0))
    assert validating.dynamic_validate(pick, [7, 8, 9]) == []


def test_dynamic_validate_without_input():
    agg = rasp.Aggregate(_select_all(), tokens)
    assert validating.dynamic_validate(agg) == []
    assert validating.dynamic_validate(agg, None) == []


def test_validate_combines_static_and_dynamic():
    agg = rasp.Aggregate(_select_all(), tokens)
    prog = agg + rasp.length
    assert len(validating.validate(prog)) == 1
    problems = validating.validate(prog, ["a", "b"])
    assert {id(p.expr) for p in problems} == {id(agg), id(rasp.length)}


def test_dynamic_validation_evaluator():
    evaluator = validating.DynamicValidationEvaluator()
    assert isinstance(evaluator, rasp.DefaultRASPEvaluator)
    agg = rasp.Aggregate(_select_all(), tokens)
    assert evaluator.evaluate(agg, ["a", "b"]) == [None, None]
    assert evaluator.evaluate(agg, ["a", "b"]) == [None, None]
    assert len(evaluator.unsupported_exprs) == 1  # reported once
    assert evaluator.evaluate(agg, ["a", "a"]) == ["a", "a"]
    assert len(evaluator.unsupported_exprs) == 1  # equal values are fine
    assert evaluator.evaluate(agg, ["b", "a"]) == [None, None]
    assert len(evaluator.unsupported_exprs) == 2  # a new input, a new report


def test_dynamic_validate_rejects_bad_input():
    assert validating.dynamic_validate(tokens, "abc") == []  # a str is its characters
    with pytest.raises(TypeError, match="list of tokens"):
        validating.dynamic_validate(tokens, 3)


def test_unsupported_expr_value():
    m = tokens + 1
    a = validating.TracrUnsupportedExpr(m, "why")
    assert a == validating.TracrUnsupportedExpr(m, "why")
    assert a != validating.TracrUnsupportedExpr(tokens + 1, "why")
    assert a != validating.TracrUnsupportedExpr(m, "other")
    assert str(a) == f"{m.label}: why"
    assert (a.expr, a.reason)[1] == "why"
    with pytest.raises(AttributeError):
        a.reason = "x"  # type: ignore[misc]


def _number_of_tokens():
    return rasp.numerical(rasp.Map(lambda x: x, rasp.tokens))


@pytest.mark.parametrize(
    "program,why",
    [
        (  # a numerical mean with default None, read by a categorical Map
            rasp.Map(
                lambda x: x > 0,
                rasp.numerical(
                    rasp.Aggregate(
                        rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT),
                        _number_of_tokens(),
                        default=None,
                    )
                ),
            ),
            "which can be None",
        ),
        (  # a numerical-to-categorical Map whose function gives None
            rasp.Map(
                lambda x: None if x == 0 else x > 0.5,
                rasp.numerical(
                    rasp.LinearSequenceMap(
                        _number_of_tokens(),
                        rasp.numerical(rasp.Map(lambda x: x, rasp.indices)),
                        1,
                        1,
                    )
                ),
            ),
            "replaces by a neighbouring value",
        ),
    ],
    ids=["none_default_mean", "map_gives_none"],
)
def test_output_that_rasp_leaves_none_but_the_model_would_fill_is_refused(program, why):
    """Both compiled once to models that output a value (False, True) where
    the evaluator gives None: [1, 1, 2] -> [None, None, True] came out as
    [False, False, True]."""
    with pytest.raises(NotImplementedError, match="may be None in RASP where the compiled") as e:
        compiling.compile_rasp_to_model(program, {0, 1, 2}, 3)
    assert why in str(e.value)


def test_a_select_predicate_that_raises_is_named_with_the_values():
    program = rasp.SelectorWidth(
        rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT).named("mixed_lt")
    )
    with pytest.raises(ValueError, match=r"mixed_lt_\d+ \(the selector of selector_width_\d+\)"):
        compiling.compile_rasp_to_model(program, {1, "a"}, 2)
