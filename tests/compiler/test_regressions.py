"""Regression tests, one per family of silent miscompilation found by fuzzing.

Each family was found by tracr.fuzz (benchmarks/fuzz.py) as a program whose
compiled model disagreed with the RASP evaluator without a warning; the tests
are named after the family and check the fix: either the program now
compiles exactly (compared on every input), or the compiler refuses it with
a NotImplementedError naming the expression and the reason. The last tests
guard suspects from the issue that fuzzing found to be compiled correctly.
See docs/fuzzing.md.
"""

import numpy as np
import pytest

from tracr.compiler import compiling, lib, validating
from tracr.fuzz import checker
from tracr.rasp import rasp
from tracr.transformer import spec as spec_lib

tokens, indices = rasp.tokens, rasp.indices
C = rasp.Comparison
num = rasp.numerical


def _assert_exact(program, vocab, max_seq_len, causal=False, partial=False, backend="numpy"):
    """Compiled == evaluator on every input; `partial`: some inputs are outside the meaning.

    The model runs in checker.numpy_forward (test_fuzz checks that it agrees with
    the Haiku model), or in the Haiku model itself with backend="haiku".
    """
    result = checker.check(program, sorted(vocab, key=repr), max_seq_len, causal, backend)
    assert result.outcome == checker.EXACT, f"{result.outcome}: {result.detail}"
    assert bool(result.flagged) == partial, result
    return result


def _assert_rejected(program, vocab, max_seq_len, expr, *fragments):
    with pytest.raises(NotImplementedError) as error:
        compiling.compile_rasp_to_model(program, set(vocab), max_seq_len)
    message = str(error.value)
    assert f"{expr.label}:" in message, message
    for fragment in fragments:
        assert fragment in message, message


def _frac_of_ones():
    """numerical: the fraction of tokens equal to 1 up to each position."""
    ones = num(rasp.Map(lambda x: 1 if x == 1 else 0, tokens))
    return num(rasp.Aggregate(rasp.Select(indices, indices, C.LEQ), ones, default=0))


# ------------------------------------------------------ rounded mean value sets
# Basis inference rounded means to 12 digits (1/3 -> 0.333333333333), so a
# Map's function was tabulated on values the evaluator never produces.


def test_rounded_mean_value_set():
    third = rasp.Map(lambda x: x == 1 / 3, _frac_of_ones())
    _assert_exact(third, {0, 1}, 4, backend="haiku")


def test_rounded_mean_value_set_numerical_map():
    scaled = num(rasp.Map(lambda x: 1 if x * 3 == 1 else 0, _frac_of_ones()))
    _assert_exact(scaled, {0, 1}, 4)


def test_indistinguishable_floats_are_rejected():
    # 0.1 + 0.2 + 0.3 and 0.3 + 0.2 + 0.1 differ in the last bit; a float32 model
    # can't tell them apart, so a function that does is refused.
    tenths = num(rasp.Map(lambda x: [0.1, 0.2, 0.3][x], tokens))
    mean = num(rasp.Aggregate(rasp.Select(indices, indices, C.TRUE), tenths, default=0))
    exact_compare = rasp.Map(lambda x: x == 0.2, mean)
    _assert_rejected(exact_compare, {0, 1, 2}, 3, exact_compare, "float rounding")
    tolerant = rasp.Map(lambda x: abs(x - 0.2) < 1e-6, mean)
    _assert_exact(tolerant, {0, 1, 2}, 3)


# ------------------------------------------- None from a numerical SOp to a Select
# A numerical SOp holds a number where RASP has None (a shifted value, a
# default); a Map back to categorical then gives a real one-hot, and a Select
# reading it selects what RASP never selects.


def test_none_from_numerical_into_select():
    shifted = lib.shift_by(1, tokens)  # None at position 0
    as_number = num(rasp.Map(lambda x: 1 if x == "a" else 0, shifted))
    back = rasp.Map(lambda x: x > 0, as_number, simplify=False)
    select = rasp.Select(back, back, C.EQ)
    program = rasp.SelectorWidth(select)
    _assert_rejected(program, {"a", "b"}, 3, select, "may be None", as_number.label)


def test_none_from_numerical_default_into_select():
    mean = num(rasp.Aggregate(rasp.Select(tokens, indices, C.EQ), num(tokens + 0), default=None))
    level = rasp.Map(lambda x: x > 0.5, mean)
    select = rasp.Select(indices, level, C.TRUE)
    _assert_rejected(rasp.SelectorWidth(select), {0, 1}, 3, select, "default None")


def test_none_from_numerical_map_into_select():
    # The numerical-to-categorical MLP can't output "nothing" for f(x) = None.
    value = num(rasp.Map(lambda x: x + 0, tokens))
    partial = rasp.Map(lambda x: None if x == 0 else x, value, simplify=False)
    select = rasp.Select(partial, partial, C.EQ)
    _assert_rejected(rasp.SelectorWidth(select), {0, 1, 2}, 3, select, "gives None for 0")


def test_numerical_sop_that_is_never_none_may_reach_a_select():
    level = rasp.Map(lambda x: x > 0.5, _frac_of_ones())
    _assert_exact(rasp.SelectorWidth(rasp.Select(level, level, C.EQ)), {0, 1}, 4)


def test_none_reaching_a_select_through_categorical_sops_is_fine():
    # The zero vector of a categorical None is never selected, as in RASP.
    shifted = lib.shift_by(1, tokens)
    flag = rasp.Map(lambda x: x == "a", shifted)
    _assert_exact(rasp.SelectorWidth(rasp.Select(flag, tokens, C.TRUE)), {"a", "b"}, 4)


# ------------------------------------------------ None under SelectorNot / Or
# In RASP a Select never selects a None key or query; a Not or an Or around
# it turns that into "selected", which an attention head can't do for the
# zero vector of a None.


def test_none_under_selector_not():
    shifted = lib.shift_by(1, tokens)
    selector = rasp.SelectorNot(rasp.Select(shifted, tokens, C.EQ))
    program = rasp.SelectorWidth(selector)
    _assert_rejected(program, {"a", "b"}, 3, selector, "SelectorNot", "key shift_by(1)")


def test_none_under_selector_or():
    shifted = lib.shift_by(1, tokens)
    selector = rasp.SelectorOr(
        rasp.Select(indices, shifted, C.EQ), rasp.Select(indices, indices, C.GEQ)
    )
    program = rasp.Aggregate(rasp.Select(indices, indices, C.EQ), rasp.SelectorWidth(selector))
    _assert_rejected(program, {"a", "b"}, 3, selector, "SelectorOr", "query shift_by(1)")


def test_none_under_selector_and_is_compiled():
    shifted = lib.shift_by(1, tokens)
    selector = rasp.SelectorAnd(
        rasp.Select(shifted, tokens, C.EQ), rasp.Select(indices, indices, C.LT)
    )
    _assert_exact(rasp.SelectorWidth(selector), {"a", "b"}, 4, backend="haiku")


def test_none_under_or_whose_parts_all_read_it_is_compiled():
    shifted = lib.shift_by(1, tokens)
    selector = rasp.SelectorOr(
        rasp.Select(shifted, tokens, C.EQ), rasp.Select(shifted, indices, C.TRUE)
    )
    _assert_exact(rasp.SelectorWidth(selector), {"a", "b"}, 4)


@pytest.mark.parametrize("causal", [False, True])
def test_combined_selectors_feeding_selector_width(causal):
    # Tracr crashed with AttributeError here.
    selector = ~(rasp.Select(tokens, tokens, C.EQ) | rasp.Select(indices, indices, C.GT)) & (
        rasp.SelectorNot(rasp.Select(tokens, indices, C.LEQ))
    )
    _assert_exact(rasp.SelectorWidth(selector), {0, 1, 2}, 4, causal=causal, backend="haiku")


# ------------------------------------------------- unreported evaluator errors
# Inputs where the evaluator raises are outside the program's meaning;
# dynamic_validate raised the same error instead of reporting it.


def test_unreported_categorical_aggregate_of_different_values():
    first = rasp.Aggregate(rasp.Select(indices, indices, C.LEQ), tokens)
    result = _assert_exact(first, {"a", "b"}, 3, partial=True)
    # Exactly the inputs with two different tokens are outside the meaning.
    assert result.flagged == sum(1 for n in (1, 2, 3) for _ in range(2**n)) - 6


def test_unreported_constant_sop_of_another_length():
    program = rasp.SequenceMap(lambda x, y: x * y, tokens, rasp.ConstantSOp([1, 2, 3]))
    _assert_exact(program, {1, 2}, 3, partial=True)
    assert validating.dynamic_validate(program, [1, 2]) != []
    unchecked = rasp.SelectorWidth(
        rasp.Select(rasp.ConstantSOp([1, 2, 3], check_length=False), tokens, C.LEQ)
    )
    _assert_exact(unchecked, {1, 2}, 3, partial=True)


def test_unreported_arithmetic_error():
    inverse = rasp.Map(lambda x: 6 // x, rasp.Map(lambda x: x - 1, tokens))
    _assert_exact(inverse, {1, 2, 3}, 3, partial=True)


# ------------------------------- suspects that fuzzing found compiled correctly


@pytest.mark.parametrize("causal", [False, True])
def test_chained_categorical_aggregates(causal):
    once = lib.shift_by(1, tokens)
    twice = rasp.Aggregate(rasp.Select(indices, indices, lambda k, q: q == k + 1), once)
    program = rasp.SequenceMap(lambda x, y: f"{x}{y}", twice, rasp.Map(lambda x: x, once))
    _assert_exact(program, {"a", "b"}, 4, causal=causal, backend="haiku")


@pytest.mark.parametrize("causal", [False, True])
def test_numerical_mean_of_non_binary_values(causal):
    values = num(rasp.Map(lambda x: x * x, tokens))
    mean = num(rasp.Aggregate(rasp.Select(indices, indices, C.LEQ), values, default=0))
    _assert_exact(mean, {1, 2, 3}, 4, causal=causal, backend="haiku")
    _assert_exact(rasp.Map(lambda x: x > 2, mean), {1, 2, 3}, 4, causal=causal)


def test_full_and_constant_sop_at_bos():
    # Both are silenced at BOS, so BOS is never a matching key.
    width = rasp.SelectorWidth(rasp.Select(rasp.Full(1), rasp.Full(1), C.EQ))
    _assert_exact(width, {"a"}, 4)
    const = rasp.ConstantSOp([0, 0, 0, 0], check_length=False)
    _assert_exact(rasp.SelectorWidth(rasp.Select(const, tokens, C.EQ)), {0, 1}, 4, partial=True)


@pytest.mark.parametrize("comparison", [C.TRUE, C.FALSE, C.LEQ, C.NEQ])
def test_selector_width_never_counts_bos(comparison):
    width = num(rasp.SelectorWidth(rasp.Select(indices, tokens, comparison)))
    _assert_exact(width, {0, 1}, 4, causal=True)


# ------------------------------------------- an output that never has a value
# A categorical output whose every value is None had no output dimension: the
# model compiled, and decoding it raised "argmax of an empty sequence".


def test_output_that_is_always_none_is_rejected():
    even = rasp.Map(lambda x: x % 2 == 0, tokens)
    program = rasp.Map(lambda x: None, even)
    _assert_rejected(program, {0, 1}, 3, program, "never has a value")
    # Inside a program it is fine: only the output is decoded (a width of 0).
    never = rasp.Map(lambda x: None, even)
    _assert_exact(rasp.SelectorWidth(rasp.Select(never, tokens, C.EQ)), {0, 1}, 3)


# ----------------------------------------------------------- mixed value types
# 1, 1.0 and True are one value in Python (equal, same hash). A numerical
# SequenceMap indexed its values by repr, so f returning 1.0 where the value set
# held 1 (or True) crashed the compiler with KeyError: '1.0' (or 'True').


def _mixed(x, y):
    return x if x > y else y / 2


@pytest.mark.parametrize("vocab", [{1, 2, 3}, {True, 2, 3}])
@pytest.mark.parametrize("numerical", [False, True])
def test_mixed_value_types_compile_exactly(vocab, numerical):
    encode = num if numerical else (lambda sop: sop)
    for snd in (indices, tokens):
        _assert_exact(encode(rasp.SequenceMap(_mixed, tokens, snd)), vocab, 4)


def test_mixed_value_types_through_map_aggregate_and_output():
    mixed = rasp.SequenceMap(_mixed, tokens, indices)
    copied = rasp.Aggregate(rasp.Select(indices, indices, C.EQ), mixed)
    _assert_exact(copied, {True, 2, 3}, 4)
    _assert_exact(rasp.Map(lambda v: v * 2, copied), {True, 2, 3}, 4)
    _assert_exact(rasp.Map(lambda x: {1: True, 2: 1.0, 3: 2}[x], tokens), {1, 2, 3}, 3)


# ------------------------------------------------------------ silent zeros
# The embedding writes tokens and indices one-hot whatever their annotation, so
# rasp.numerical(tokens) read one empty direction: 0 at every position, also
# for every expression reading it.


@pytest.mark.parametrize("primitive", [tokens, indices])
def test_numerical_input_primitive_is_refused(primitive):
    numerical = num(primitive)
    other = indices if primitive is tokens else tokens
    for program in (
        numerical,
        num(rasp.Map(lambda x: x + 1, numerical)),
        rasp.Map(lambda x: x + 1, numerical),
        num(rasp.Aggregate(rasp.Select(other, other, C.EQ), numerical, default=0)),
    ):
        _assert_rejected(program, {0, 1}, 3, primitive, "one-hot")
    # The rewrite the message suggests compiles exactly.
    _assert_exact(num(rasp.Map(lambda x: x, primitive)), {0, 1, 2}, 3)


# ------------------------------------------- functions that raise on some inputs
# The compiler reads a Map's function as errors.ignoring_arithmetic_errors does:
# where it raises an ArithmeticError there is no value. A categorical SOp has
# no active direction there (None); a numerical one would answer (0), so it is
# refused with the input (see test_basis_inference).


def test_partial_categorical_map_has_no_value_where_it_raises():
    inverse = rasp.Map(lambda x: 1 // (x - 2), tokens)
    model = compiling.compile_rasp_to_model(inverse, {1, 2, 3}, 3)
    residual = np.asarray(model.apply(["compiler_bos", 1, 2, 3]).transformer_output)[0]
    output = residual[:, list(model.spec.output.reads)]  # [T, output values]
    assert np.abs(output[2]).max() < spec_lib.ACTIVE_THRESHOLD / 10  # the 2: no value
    for position, value in ((1, -1), (3, 1)):
        assert output[position].max() > 1 - spec_lib.ACTIVE_THRESHOLD / 10
        assert model.spec.output.values[int(output[position].argmax())] == value
    _assert_exact(inverse, {1, 2, 3}, 3, partial=True)
    with pytest.raises(NotImplementedError, match="no 'no value'"):
        compiling.compile_rasp_to_model(num(inverse), {1, 2, 3}, 3)
