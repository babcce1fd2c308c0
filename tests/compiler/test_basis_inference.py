"""Tests for tracr.compiler.basis_inference helpers."""

import random

import pytest

from tracr.compiler import basis_inference
from tracr.rasp import rasp

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
