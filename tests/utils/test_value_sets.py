"""Tests for tracr.utils.value_sets.SortedNumbers: it reads as a Python set."""

import pickle

import numpy as np
import pytest

from tracr.utils.value_sets import SortedNumbers

VALUES = [0.5, -1.0, 0.5, 2.0, 1 / 3, 0.0, -0.0, 7.0]
AS_SET = {0.5, -1, 2, 1 / 3, 0, 7}


def test_behaves_as_the_python_set():
    s = SortedNumbers.from_array(VALUES)
    assert len(s) == len(AS_SET)
    assert s == AS_SET and AS_SET == s and set(s) == AS_SET
    assert list(s) == sorted(AS_SET)
    assert [type(v) for v in s] == [int, int, float, float, int, int]
    for x in [0, 0.0, False, -1, 2.0, 1 / 3, np.float64(0.5)]:
        assert x in s, x
    for x in [0.25, True, "0.5", None, 2**60 + 1, float("nan"), (1,)]:
        assert x not in s, x
    assert s | {9} == AS_SET | {9} and isinstance(s | {9}, set)
    assert s & {2, 3} == {2}
    assert max(s) == 7 and bool(s) and not SortedNumbers.from_array([])
    assert "SortedNumbers(6 numbers from -1 to 7)" == repr(s)


def test_array_is_sorted_read_only_and_pickles():
    s = SortedNumbers.from_array(VALUES)
    np.testing.assert_array_equal(s.array, sorted(float(v) for v in AS_SET))
    with pytest.raises(ValueError):
        s.array[0] = 5.0
    assert pickle.loads(pickle.dumps(s)) == s


def test_rejects_non_finite():
    with pytest.raises(ValueError, match="finite"):
        SortedNumbers.from_array([1.0, float("inf")])
