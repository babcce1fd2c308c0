"""Tests for tracr.compiler.predicate_tables: vectorised tables equal per-pair ones."""

import math

import numpy as np
import pytest

from tracr.compiler import predicate_tables
from tracr.craft import bases
from tracr.craft.chamber import categorical_attn
from tracr.rasp import rasp

VALUE_SETS = {
    "ints": ([3, 1, 2, -5, 0], [0, 2, 7]),
    "ints_and_floats": ([1, 1.5, 2.0, -0.0, 10**15], [1.0, 0, 2, 0.5]),
    "bools_and_ints": ([True, False, 2], [1, 0, True]),
    "strings": (["b", "a", "ab", "", "B"], ["a", "b", "c"]),
    "mixed": ([1, "a", 2.5], ["a", 1, "b"]),  # order comparisons fall back (and raise)
    "tuples": ([(1, "a"), (0, "b")], [(1, "a"), (2, "c")]),  # pair by pair
    "nan": ([1.0, math.nan], [math.nan, 2.0]),  # pair by pair
    "empty": ([], [1, 2]),
}


def _slow(predicate, keys, queries):
    return np.array([[bool(predicate(k, q)) for k in keys] for q in queries], dtype=bool).reshape(
        len(queries), len(keys)
    )


@pytest.mark.parametrize("comparison", list(rasp.Comparison))
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_comparison_table_matches_pairwise(comparison, name):
    keys, queries = VALUE_SETS[name]
    try:
        expected = _slow(comparison, keys, queries)
    except TypeError as error:  # named with the first pair that raises, for the user
        with pytest.raises(predicate_tables.PredicateError, match=type(error).__name__):
            predicate_tables.predicate_table(comparison, keys, queries)
        return
    table = predicate_tables.predicate_table(comparison, keys, queries)
    assert table.dtype == bool
    np.testing.assert_array_equal(table, expected)


def test_lambda_predicates_are_evaluated_pair_by_pair():
    calls = []

    def predicate(k, q):
        calls.append((k, q))
        return k + 1 == q

    table = predicate_tables.predicate_table(predicate, [1, 2, 3], [2, 4])
    np.testing.assert_array_equal(table, [[True, False, False], [False, False, True]])
    assert len(calls) == 6


def test_attn_fn_table_matches_calls_and_categorical_attn_uses_it():
    attn_fn = predicate_tables.PredicateAttnFn(rasp.Comparison.LEQ)
    queries = [bases.BasisDirection("q", v) for v in [0, 2, 4]]
    keys = [bases.BasisDirection("k", v) for v in [1, 2, 3]]
    per_pair = np.array([[attn_fn(q, k) for k in keys] for q in queries], dtype=float)
    np.testing.assert_array_equal(attn_fn.table(queries, keys), per_pair)
    np.testing.assert_array_equal(categorical_attn.attn_table(attn_fn, queries, keys), per_pair)
    # A plain function (no `table`) goes pair by pair and gives the same.
    plain = lambda q, k: attn_fn(q, k)  # noqa: E731
    np.testing.assert_array_equal(categorical_attn.attn_table(plain, queries, keys), per_pair)
