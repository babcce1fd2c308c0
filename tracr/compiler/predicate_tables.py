"""A Select predicate over every (query value, key value) pair, as one boolean table.

An attention head's W_QK has one entry per pair of query and key directions,
so building it calls the predicate |Q| x |K| times; with value sets of a few
thousand (a sort key at max_seq_len 60) that is ten million Python calls. For
the built-in `rasp.Comparison` predicates on plain values the table is a
numpy comparison of small integer codes instead:

* EQ / NEQ: each value gets the code of the first value equal to it (a dict
  lookup, which agrees with `==` for ints, floats, bools and strings);
* LT / LEQ / GT / GEQ: each value gets its rank in the sorted list of all
  values, which preserves `<` when the values are totally ordered (all
  numbers without NaN, or all strings);
* TRUE / FALSE: a constant table.

Anything else (a lambda, a lowered combined selector, mixed or unusual
values) is evaluated pair by pair, exactly as before.

Example::

    >>> from tracr.rasp import rasp
    >>> predicate_table(rasp.Comparison.LT, keys=[1, 2, 3], queries=[2, 3]).astype(int)
    array([[1, 0, 0],
           [1, 1, 0]])
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

from tracr.craft import bases
from tracr.rasp import rasp
from tracr.utils import errors

_ORDER = {
    rasp.Comparison.LT: np.less,
    rasp.Comparison.LEQ: np.less_equal,
    rasp.Comparison.GT: np.greater,
    rasp.Comparison.GEQ: np.greater_equal,
}


def _plain_kind(values: Sequence[Any]) -> Optional[str]:
    """What the values are: "str", "number" (int, float or bool, no NaN), "mixed"
    (some of each) or None (anything else, where codes might not be exact)."""
    kinds = set()
    for v in values:
        t = type(v)
        if t is str:
            kinds.add("str")
        elif t in (int, bool) or (t is float and not math.isnan(v)):
            kinds.add("number")
        else:
            return None
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _comparison_table(
    comparison: rasp.Comparison, keys: Sequence[Any], queries: Sequence[Any]
) -> Optional[np.ndarray]:
    """The [Q, K] table of a Comparison, or None where codes would not be exact."""
    if comparison is rasp.Comparison.TRUE:
        return np.ones((len(queries), len(keys)), dtype=bool)
    if comparison is rasp.Comparison.FALSE:
        return np.zeros((len(queries), len(keys)), dtype=bool)
    everything: List[Any] = list(keys) + list(queries)
    kind = _plain_kind(everything)
    # Equality is exact for any plain values; order needs one kind (1 < "a" raises).
    if kind is None or (kind == "mixed" and comparison in _ORDER):
        return None
    if comparison in (rasp.Comparison.EQ, rasp.Comparison.NEQ):
        code: dict = {}
        for v in everything:
            code.setdefault(v, len(code))
    else:
        # Equal values (1 and 1.0) share one entry of the set, hence one rank.
        code = {v: i for i, v in enumerate(sorted(set(everything)))}
    k = np.fromiter((code[v] for v in keys), dtype=np.int64, count=len(keys))
    q = np.fromiter((code[v] for v in queries), dtype=np.int64, count=len(queries))
    if comparison is rasp.Comparison.EQ:
        return q[:, None] == k[None, :]
    if comparison is rasp.Comparison.NEQ:
        return q[:, None] != k[None, :]
    # The predicate is called as predicate(key, query): LT selects key < query.
    return _ORDER[comparison](k[None, :], q[:, None])


def predicate_table(
    predicate: Callable[[Any, Any], Any], keys: Sequence[Any], queries: Sequence[Any]
) -> np.ndarray:
    """`table[i, j] = bool(predicate(keys[j], queries[i]))`, shape [Q, K].

    Args:
      predicate: a Select predicate, called as `predicate(key, query)`.
      keys: the key values, one per key direction.
      queries: the query values, one per query direction.

    Returns:
      A boolean array [len(queries), len(keys)].
    """
    if isinstance(predicate, rasp.Comparison):
        table = _comparison_table(predicate, keys, queries)
        if table is not None:
            return table
    try:
        table = np.array([[bool(predicate(k, q)) for k in keys] for q in queries], dtype=bool)
    except Exception as e:  # noqa: BLE001 - the user's predicate: say on which values
        raise PredicateError(predicate, keys, queries, e) from e
    return table.reshape(len(queries), len(keys))


class PredicateError(errors.TracrUserError):
    """A Select predicate raised on values its keys and queries can take."""

    def __init__(
        self, predicate: Any, keys: Sequence[Any], queries: Sequence[Any], error: Exception
    ):
        key, query = next(
            ((k, q) for q in queries for k in keys if _raises(predicate, k, q)), ("?", "?")
        )
        self.reason = (
            f"its predicate {predicate!r} raised {type(error).__name__} ({error}) on key "
            f"{key!r}, query {query!r}: the keys and queries can take these values together "
            "(mixed types in the vocab?). Make the predicate handle every pair, or keep the "
            "types apart."
        )
        super().__init__(self.reason)


def _raises(predicate: Callable[[Any, Any], Any], key: Any, query: Any) -> bool:
    try:
        bool(predicate(key, query))
    except Exception:  # noqa: BLE001
        return True
    return False


class PredicateAttnFn:
    """A RASP predicate(key, query) as the attn_fn(query_dir, key_dir) of a head.

    Called on one pair it gives `bool(predicate(key.value, query.value))`;
    `table` gives all pairs at once (see `categorical_attn`).
    """

    def __init__(self, predicate: Callable[[Any, Any], Any]):
        self.predicate = predicate

    def __call__(self, query: bases.BasisDirection, key: bases.BasisDirection) -> bool:
        return bool(self.predicate(key.value, query.value))

    def table(
        self,
        queries: Sequence[bases.BasisDirection],
        keys: Sequence[bases.BasisDirection],
    ) -> np.ndarray:
        """[Q, K] booleans: whether each query direction selects each key direction."""
        return predicate_table(self.predicate, [k.value for k in keys], [q.value for q in queries])
