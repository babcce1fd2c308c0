"""Named cases of library programs: one shared table for tests and benchmarks.

Each case says how to build the program for a given max_seq_len, which
vocabulary to compile it with, and whether it is meant to run causally.
Adding a program to every end-to-end test and benchmark is one line here.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, FrozenSet, Tuple

from tracr.compiler import lib
from tracr.rasp import rasp


@dataclasses.dataclass(frozen=True)
class LibraryCase:
    name: str
    make_program: Callable[[int], rasp.SOp]  # max_seq_len -> program
    vocab: FrozenSet[rasp.Value]
    supports_causal: bool = False

    def program(self, max_seq_len: int) -> rasp.SOp:
        return self.make_program(max_seq_len)


def _frac_prevs(max_seq_len: int) -> rasp.SOp:
    del max_seq_len
    return lib.make_frac_prevs(rasp.numerical(rasp.Map(lambda x: x == "x", rasp.tokens)))


LIBRARY_CASES: Tuple[LibraryCase, ...] = (
    LibraryCase("length", lambda n: lib.make_length(), frozenset({"a", "b", "c"}), True),
    LibraryCase("reverse", lambda n: lib.make_reverse(rasp.tokens), frozenset({"a", "b", "c"})),
    LibraryCase("hist", lambda n: lib.make_hist(), frozenset({"a", "b", "c"}), True),
    LibraryCase(
        "sort_unique",
        lambda n: lib.make_sort_unique(rasp.tokens, rasp.tokens),
        frozenset({1, 2, 3}),
    ),
    LibraryCase(
        "sort",
        lambda n: lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=n, min_key=1),
        frozenset({1, 2, 3}),
    ),
    LibraryCase("sort_freq", lambda n: lib.make_sort_freq(n), frozenset({"a", "b", "c"})),
    LibraryCase("frac_prevs", _frac_prevs, frozenset({"x", "y"}), True),
    LibraryCase(
        "pair_balance",
        lambda n: lib.make_pair_balance(rasp.tokens, "(", ")"),
        frozenset({"(", ")"}),
        True,
    ),
    LibraryCase(
        "shuffle_dyck",
        lambda n: lib.make_shuffle_dyck(["()", "{}"]),
        frozenset({"(", ")", "{", "}"}),
        True,
    ),
    LibraryCase(
        "shuffle_dyck2", lambda n: lib.make_shuffle_dyck2(), frozenset({"(", ")", "{", "}"}), True
    ),
    LibraryCase(
        "shift_by", lambda n: lib.shift_by(1, rasp.tokens), frozenset({"a", "b", "c"}), True
    ),
    LibraryCase(
        "detect_pattern",
        lambda n: lib.detect_pattern(rasp.tokens, "ab"),
        frozenset({"a", "b", "c"}),
        True,
    ),
    LibraryCase(
        "count_less_freq", lambda n: lib.make_count_less_freq(2), frozenset({"a", "b", "c"})
    ),
    LibraryCase(
        "count", lambda n: lib.make_count(rasp.tokens, "a"), frozenset({"a", "b", "c"}), True
    ),
    LibraryCase(
        "nary_sequencemap",
        lambda n: lib.make_nary_sequencemap(
            lambda x, y, z: f"{x}{y}{z}", rasp.tokens, rasp.tokens, rasp.indices
        ),
        frozenset({"a", "b"}),
        True,
    ),
)

CASES_BY_NAME = {case.name: case for case in LIBRARY_CASES}
