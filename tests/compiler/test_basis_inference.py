"""Tests for tracr.compiler.basis_inference helpers."""

import itertools
import random

import pytest

from tracr.compiler import (
    basis_inference,
    combined_selectors,
    compiling,
    equivalence,
    lib,
    nodes,
    rasp_to_graph,
    validating,
)
from tracr.craft import bases
from tracr.rasp import causal_eval, rasp
from tracr.utils import errors

_RNG = random.Random(0)
VALUE_SETS = {
    "means": basis_inference.mean_value_set({0, 1}, 12),
    "small_ints": {1, 2, 3, -4},
    "floats": {0.1, 0.2, -7.25, 1e-9},
    "random": {_RNG.random() * 100 for _ in range(40)} | {_RNG.randint(-(10**6), 10**6)},
    "huge_ints": {2**60, 1},  # beyond float64's exact ints: the pairwise path
    "bools": {True, False},  # not plain numbers: the pairwise path
}


@pytest.mark.parametrize("factors", [(1, -1), (0.5, 3), (2, 2), (-1.5, 0.1)])
@pytest.mark.parametrize("fst", sorted(VALUE_SETS))
@pytest.mark.parametrize("snd", ["means", "small_ints", "floats"])
def test_linear_value_set_matches_pairwise(factors, fst, snd):
    expr = rasp.numerical(rasp.LinearSequenceMap(rasp.tokens, rasp.indices, *factors))
    x, y = VALUE_SETS[fst], VALUE_SETS[snd]
    fast = basis_inference._linear_value_set(expr, x, y)
    assert fast == basis_inference._apply_all(expr.f, x, y)


def test_apply_all_skips_none_and_arithmetic_errors():
    assert basis_inference._apply_all(lambda x: None if x == 2 else 1 / x, {0, 1, 2, 4}) == {
        1.0,
        0.25,
    }
    assert basis_inference._apply_all(lambda x, y: x // y, {1, 2}, {0, 1}) == {1, 2}


# ------------------------------------------------------------ joint value sets


def _inferred(program, vocab, max_seq_len):
    inference = basis_inference.ValueSetInference(vocab, max_seq_len)
    for expr in validating.walk(program):
        if isinstance(expr, rasp.SOp):
            inference.add(expr)
    return inference.value_sets


def _observed(program, vocab, max_seq_len):
    """Every value `program` takes on every input of length 1..max_seq_len."""
    seen = set()
    for length in range(1, max_seq_len + 1):
        for xs in itertools.product(sorted(vocab), repeat=length):
            seen.update(v for v in program(list(xs)) if v is not None)
    return seen


def _frac(bools, predicate=rasp.Comparison.LEQ):
    prevs = rasp.Select(rasp.indices, rasp.indices, predicate)
    return rasp.numerical(rasp.Aggregate(prevs, bools, default=0))


def _bools(token):
    return rasp.numerical(rasp.Map(lambda x, t=token: x == t, rasp.tokens))


@pytest.mark.parametrize("max_seq_len", [1, 4, 7])
def test_balance_values_are_sound_and_joint(max_seq_len):
    vocab = {"(", ")", "x"}
    balance = lib.make_pair_balance(rasp.tokens, "(", ")")
    inferred = _inferred(balance, vocab, max_seq_len)[balance.label]
    assert _observed(balance, vocab, max_seq_len) <= set(inferred)
    # Only differences of fractions with the same denominator.
    expected = {
        basis_inference._canonical(a / w - b / w)
        for w in range(1, max_seq_len + 1)
        for a in range(w + 1)
        for b in range(w + 1)
    } | {0}
    assert set(inferred) == expected


def test_balance_values_grow_with_the_model_not_its_square():
    balance = lib.make_pair_balance(rasp.tokens, "(", ")")
    inferred = _inferred(balance, {"(", ")"}, 100)
    opens = inferred[balance.fst.label]
    assert len(opens) == 3045  # |{k/w : 0 <= k <= w <= 100}|
    # a / w - b / w over a, b <= w <= 100: 343,400 pairs, ~6,000 fractions, a
    # few ulp-apart copies of some (float rounding); not ~ len(opens) ** 2 = 9.3 M.
    assert len(inferred[balance.label]) < 20_000


@pytest.mark.parametrize(
    "second_predicate",
    [rasp.Comparison.LT, lambda k, q: k <= q],  # other positions; an unknown predicate
)
def test_different_selectors_pair_every_value(second_predicate):
    opens, closes = _frac(_bools("(")), _frac(_bools(")"), second_predicate)
    diff = rasp.numerical(rasp.LinearSequenceMap(opens, closes, 1, -1))
    inferred = _inferred(diff, {"(", ")"}, 5)
    assert set(inferred[diff.label]) == {
        a - b for a in inferred[opens.label] for b in inferred[closes.label]
    }
    assert _observed(diff, {"(", ")"}, 5) <= set(inferred[diff.label])


def test_same_predicate_object_is_joint_through_maps_and_sequence_maps():
    leq = lambda k, q: k <= q  # noqa: E731
    opens, closes = _frac(_bools("("), leq), _frac(_bools(")"), leq)
    scaled = rasp.numerical(rasp.Map(lambda x: 2 * x, opens))
    diff = rasp.numerical(rasp.SequenceMap(lambda x, y: x - y, scaled, closes))
    width = rasp.SelectorWidth(rasp.Select(rasp.indices, rasp.indices, leq))
    total = rasp.numerical(rasp.SequenceMap(lambda x, w: round(x * w), closes, width))
    vocab = {"(", ")"}
    for program in (diff, total):
        inferred = _inferred(program, vocab, 6)[program.label]
        assert _observed(program, vocab, 6) <= set(inferred)
    # closes * width is a whole count of closing brackets, 0..6.
    assert set(_inferred(total, vocab, 6)[total.label]) == set(range(7))
    # (2 a - b) / w only: 2 * 1/5 - 1/6 = 7/30 pairs two different widths.
    assert 2 * (1 / 5) - 1 / 6 not in set(_inferred(diff, vocab, 6)[diff.label])


def test_sequence_map_of_one_sop_with_itself_takes_diagonal_values():
    square = rasp.tokens * rasp.tokens  # SequenceMap(x * y, tokens, tokens)
    vocab = {1, 2, 3}
    assert set(_inferred(square, vocab, 4)[square.label]) == {1, 4, 9}  # not 2, 3, 6
    model = compiling.compile_rasp_to_model(square, vocab, 4)
    own = [label for label in model.residual_labels if label.startswith(f"{square.label}:")]
    assert own == [f"{square.label}:{v}" for v in (1, 4, 9)]
    inputs = list(equivalence.all_inputs(vocab, 4))
    assert not equivalence.find_mismatches(model, square, inputs)
    # Through a shared selector too: a mean times itself.
    mean = _frac(_bools("("))
    squared_mean = rasp.numerical(rasp.SequenceMap(lambda x, y: x * y, mean, mean))
    inferred = _inferred(squared_mean, {"(", ")"}, 5)
    assert set(inferred[squared_mean.label]) == {m * m for m in inferred[mean.label]}


def test_means_of_huge_integers_are_refused():
    with pytest.raises(NotImplementedError, match="2\\*\\*52"):
        basis_inference.means_by_width({1, 2**53 + 4}, 3)


def test_lowered_equal_selectors_stay_joint():
    """Two separate SelectorNot of one Select: equal after lowering too."""
    sel = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.GT)
    opens = rasp.numerical(rasp.Aggregate(rasp.SelectorNot(sel), _bools("("), default=0))
    closes = rasp.numerical(rasp.Aggregate(rasp.SelectorNot(sel), _bools(")"), default=0))
    diff = rasp.numerical(rasp.LinearSequenceMap(opens, closes, 1, -1))
    vocab, n = {"(", ")"}, 8
    lowered = combined_selectors.lower_combined_selectors(diff)
    extracted = rasp_to_graph.extract_rasp_graph(lowered)
    basis_inference.infer_bases(extracted.graph, extracted.sink, vocab, n)
    compiled_set = extracted.graph.nodes[diff.label][nodes.VALUE_SET]
    assert set(compiled_set) == set(_inferred(diff, vocab, n)[diff.label])
    assert len(compiled_set) < len(_inferred(opens, vocab, n)[opens.label]) ** 2 / 2
    assert _observed(diff, vocab, n) <= set(compiled_set)


def _observed_causal(program, vocab, max_seq_len):
    seen = set()
    for length in range(1, max_seq_len + 1):
        for xs in itertools.product(sorted(vocab), repeat=length):
            seen.update(v for v in causal_eval.evaluate(program, list(xs)) if v is not None)
    return seen


def test_values_split_by_position_are_sound_and_tight():
    vocab, n = {"a", "b"}, 5
    length = lib.make_length()
    opp = (length - rasp.indices).named("opp")  # 1..n, not -3..5
    mod = rasp.SequenceMap(lambda m, i: (m - i) % 3, rasp.Map(lambda m: m, length), rasp.indices)
    linear = rasp.numerical(rasp.LinearSequenceMap(length, rasp.indices, 1, -2))
    for program in (opp, mod, linear, lib.make_reverse(rasp.tokens)):
        inferred = set(_inferred(program, vocab, n)[program.label])
        assert _observed(program, vocab, n) <= inferred, program.label
        assert _observed_causal(program, vocab, n) <= inferred, program.label
    assert set(_inferred(opp, vocab, n)[opp.label]) == set(range(1, n + 1))
    assert set(_inferred(length, vocab, n)[length.label]) == set(range(1, n + 1))


def test_a_width_that_can_skip_positions_is_not_the_length():
    shifted = lib.shift_by(1, rasp.tokens)  # None at position 0: never selected
    width = rasp.SelectorWidth(rasp.Select(shifted, rasp.tokens, rasp.Comparison.TRUE))
    diff = width - rasp.indices
    vocab, n = {"a", "b"}, 4
    inferred = set(_inferred(diff, vocab, n)[diff.label])
    assert _observed(diff, vocab, n) <= inferred
    assert 0 in _observed(diff, vocab, n)  # width n - 1 at the last position


def _graph(program):
    return rasp_to_graph.extract_rasp_graph(program)


def test_infer_value_sets_returns_a_frozen_result_and_infer_bases_writes_a_view():
    doubled = rasp.Map(lambda x: 2 * x, rasp.tokens)
    frac = rasp.numerical(rasp.Map(lambda x: x > 1, doubled, simplify=False))
    extracted = _graph(frac)
    result = basis_inference.infer_value_sets(extracted.graph, {1, 2}, 3)
    assert nodes.VALUE_SET not in extracted.graph.nodes[doubled.label]  # graph untouched
    assert result.value_set(doubled) == {2, 4}
    assert result.output_basis(doubled) == tuple(
        bases.BasisDirection(doubled.label, v) for v in (2, 4)
    )
    assert result.output_basis(frac) == (bases.BasisDirection(frac.label),)
    with pytest.raises(TypeError):
        result.value_sets[doubled.label] = {0}
    with pytest.raises(AttributeError):
        result.value_set(doubled).add(6)
    # The graph attributes are the same values (Tracr's interface).
    assert basis_inference.infer_bases(extracted.graph, extracted.sink, {1, 2}, 3) == result
    for label, value_set in result.value_sets.items():
        node = extracted.graph.nodes[label]
        assert node[nodes.VALUE_SET] == value_set
        assert node[nodes.OUTPUT_BASIS] == list(result.output_bases[label])


def test_unhashable_map_value_names_the_expression():
    listed = rasp.Map(lambda x: [x], rasp.tokens)
    with pytest.raises(errors.TracrUserError, match=f"{listed.label}: .*\\[1\\].*unhashable"):
        basis_inference.infer_value_sets(_graph(listed).graph, {1, 2}, 3)


def test_function_raising_another_error_names_the_expression_and_input():
    keyed = rasp.SequenceMap(lambda x, y: {1: "a"}[x] + str(y), rasp.tokens, rasp.indices)
    with pytest.raises(errors.TracrUserError, match=f"{keyed.label}: .*KeyError.*\\(2, 0\\)"):
        compiling.compile_rasp_to_model(keyed, {1, 2}, 3)


def test_numerical_function_that_raises_is_refused_with_the_input():
    """1 // (x - 2) raises at x = 2: a numerical model would answer there (0), RASP raises."""
    inverse = rasp.numerical(rasp.Map(lambda x: 1 // (x - 2), rasp.tokens))
    with pytest.raises(NotImplementedError, match=f"{inverse.label}: .*ZeroDivisionError.*\\(2\\)"):
        compiling.compile_rasp_to_model(inverse, {1, 2, 3}, 3)
