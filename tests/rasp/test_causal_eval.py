"""Tests for causal evaluation (tracr.rasp.causal_eval)."""

import pytest

from tracr.compiler import lib
from tracr.rasp import causal_eval, rasp

tokens, indices = rasp.tokens, rasp.indices
C = rasp.Comparison


def _mat(rows):
    return [[c == "1" for c in row] for row in rows.split()]


def test_length_is_prefix_length():
    assert causal_eval.evaluate(rasp.length, ["a", "b", "c"]) == [1, 2, 3]
    assert causal_eval.evaluate(lib.make_length(), ["a", "b", "c"]) == [1, 2, 3]
    assert rasp.evaluate(rasp.length, ["a", "b", "c"]) == [3, 3, 3]


def test_selectors_are_masked():
    sel = rasp.Select(tokens, tokens, C.TRUE)
    assert causal_eval.evaluate(sel, [0, 0, 0]) == _mat("100 110 111")
    constant = rasp.ConstantSelector([[True, True], [False, True]])
    assert causal_eval.evaluate(constant, [0, 0]) == _mat("10 01")


def test_negation_does_not_reveal_the_future():
    neg = rasp.selector_not(rasp.Select(tokens, tokens, C.FALSE), simplify=False)
    assert isinstance(neg, rasp.SelectorNot)
    assert causal_eval.evaluate(neg, [0, 0, 0]) == _mat("100 110 111")
    assert causal_eval.evaluate(~rasp.Select(tokens, tokens, C.FALSE), [0, 0]) == _mat("10 11")


def test_selector_combinations_stay_masked():
    a = rasp.Select(tokens, tokens, C.TRUE)
    b = rasp.Select(indices, indices, C.GEQ)
    assert causal_eval.evaluate(rasp.selector_or(a, b, simplify=False), [0, 0]) == _mat("10 11")
    assert causal_eval.evaluate(rasp.selector_and(a, b, simplify=False), [0, 0]) == _mat("10 01")


def test_selector_width_counts_visible_keys():
    hist = lib.make_hist()
    assert causal_eval.evaluate(hist, list("abab")) == [1, 1, 2, 2]
    assert hist(list("abab")) == [2, 2, 2, 2]


def test_numerical_aggregate_averages_the_prefix():
    frac_a = rasp.numerical(
        rasp.Aggregate(
            rasp.Select(indices, indices, C.TRUE), rasp.numerical(tokens == "a"), default=0
        )
    )
    assert causal_eval.evaluate(frac_a, list("abab")) == pytest.approx([1.0, 0.5, 2 / 3, 0.5])
    assert rasp.evaluate(frac_a, list("abab")) == [0.5] * 4


def test_reading_the_future_gives_the_default():
    next_token = rasp.Aggregate(rasp.Select(indices, indices, lambda k, q: k == q + 1), tokens)
    assert next_token(list("abc")) == ["b", "c", None]
    assert causal_eval.evaluate(next_token, list("abc")) == [None, None, None]
    prev_token = lib.shift_by(1, tokens)
    assert causal_eval.evaluate(prev_token, list("abc")) == [None, "a", "b"]


def test_frac_prevs_is_already_causal():
    prog = lib.make_frac_prevs(tokens == "x")
    xs = list("xyxxy")
    assert causal_eval.evaluate(prog, xs) == rasp.evaluate(prog, xs)


def test_reverse_sees_only_itself_causally():
    # Causally, length at position i is i + 1, so position i reads position
    # (i + 1) - i - 1 = 0: the first token.
    assert causal_eval.evaluate(lib.make_reverse(tokens), list("abc")) == ["a", "a", "a"]


def test_elementwise_expressions_are_unchanged():
    m = tokens * 2 + indices
    assert causal_eval.evaluate(m, [1, 2, 3]) == [2, 5, 8]
    assert causal_eval.evaluate(rasp.Full(1), [0, 0]) == [1, 1]


@pytest.mark.parametrize("xs", [[], ["a"]])
def test_empty_and_single_inputs(xs):
    prog = lib.make_hist()
    assert causal_eval.evaluate(prog, xs) == [1] * len(xs)
    assert causal_eval.evaluate(rasp.Select(tokens, tokens, C.TRUE), xs) == [[True]] * len(xs)


def test_evaluator_class():
    evaluator = causal_eval.CausalEvaluator()
    assert isinstance(evaluator, rasp.DefaultRASPEvaluator)
    assert evaluator.evaluate(rasp.length, [0, 0]) == [1, 2]
    assert evaluator.evaluate(rasp.length, "ab") == [1, 2]
