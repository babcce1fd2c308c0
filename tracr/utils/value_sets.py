"""A large set of numbers kept as a sorted numpy array instead of a Python set.

Basis inference gives every SOp the set of values it can take. A
LinearSequenceMap of two numerical means (a bracket balance) can take
millions of values at max_seq_len 100, and putting millions of floats into a
Python set costs seconds (hashing, memory), more than everything the
compiler then does with them. `SortedNumbers` holds them as a sorted float64
array and behaves as the Python set of the same numbers (whole numbers as
ints, others as floats, as `basis_inference.mean_value_set` returns them):
it supports `len`, `in`, iteration (in increasing order), `==` and the other
read-only set operations, so code written for Python sets reads it unchanged.
Code that wants the numbers sorted (the discretising MLPs) reads `.array`.

Example::

    >>> s = SortedNumbers.from_array([0.5, -1.0, 0.5, 2.0])
    >>> list(s), 2 in s, 0.25 in s, s == {-1, 0.5, 2}
    ([-1, 0.5, 2], True, False, True)
"""

from __future__ import annotations

import collections.abc
import numbers
from typing import Any, Iterable, Iterator, List

import numpy as np


class SortedNumbers(collections.abc.Set):
    """An immutable set of distinct finite numbers, stored sorted as float64.

    Build it with `from_array`. Iteration yields Python ints for whole numbers
    and floats for the others, in increasing order.
    """

    __slots__ = ("_array",)

    def __init__(self, sorted_unique: np.ndarray):
        """Wraps an array that is already 1-d, float64, finite, sorted and unique.

        Prefer `from_array`, which checks and prepares any array.
        """
        array = np.asarray(sorted_unique, dtype=np.float64)
        array.flags.writeable = False
        self._array = array

    @classmethod
    def from_array(cls, values: Iterable[float]) -> "SortedNumbers":
        """The set of `values` (any order, repeats allowed; all finite numbers).

        Raises:
          ValueError: if a value is NaN or infinite (a set of them has no order).
        """
        array = np.asarray(values, dtype=np.float64).ravel()
        if not np.isfinite(array).all():
            raise ValueError("SortedNumbers.from_array: values must be finite numbers.")
        array = np.sort(array)
        keep = np.ones(len(array), dtype=bool)
        keep[1:] = array[1:] != array[:-1]
        return cls(array[keep])

    @property
    def array(self) -> np.ndarray:
        """The numbers, sorted increasing, as a read-only float64 array [N]."""
        return self._array

    def tolist(self) -> List[Any]:
        """The numbers in increasing order: ints where whole, floats otherwise."""
        values = self._array.tolist()
        for i in np.flatnonzero(self._array == np.floor(self._array)).tolist():
            values[i] = int(values[i])
        return values

    def __len__(self) -> int:
        return len(self._array)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.tolist())

    def __contains__(self, x: object) -> bool:
        # As in a Python set of these numbers: 1, 1.0 and True are the same
        # element; strings and other non-numbers are never elements.
        if not isinstance(x, numbers.Real):
            return False
        try:
            f = float(x)
        except (OverflowError, ValueError):
            return False
        if f != x:  # an int too large to be a float exactly
            return False
        i = int(np.searchsorted(self._array, f))
        return i < len(self._array) and bool(self._array[i] == f)

    @classmethod
    def _from_iterable(cls, it: Iterable[Any]) -> set:
        # Results of |, &, -, ^ are plain Python sets.
        return set(it)

    def __repr__(self) -> str:
        if not len(self):
            return "SortedNumbers([])"
        lo, hi = (_as_python(v) for v in (self._array[0], self._array[-1]))
        return f"SortedNumbers({len(self)} numbers from {lo!r} to {hi!r})"

    def __reduce__(self):
        return (SortedNumbers, (np.array(self._array),))


def _as_python(v: np.floating) -> Any:
    f = float(v)
    return int(f) if f.is_integer() else f
