"""Tests for the library of RASP programs (tracr.compiler.lib)."""

import random

import pytest

from tracr.compiler import lib, validating
from tracr.rasp import rasp

tokens, indices = rasp.tokens, rasp.indices


def _all_exprs(program):
    seen, stack, out = set(), [program], []
    while stack:
        expr = stack.pop()
        if id(expr) in seen:
            continue
        seen.add(id(expr))
        out.append(expr)
        stack.extend(expr.children)
    return out


# ------------------------------------------------------------ docstring examples


def test_length():
    assert lib.make_length()(list("abc")) == [3, 3, 3]
    assert lib.make_length()([]) == []
    assert lib.length(["x"]) == [1]
    assert lib.make_length().name == "length"
    assert isinstance(lib.make_length(), rasp.SelectorWidth)
    assert lib.make_length() is not lib.make_length()


@pytest.mark.parametrize(
    "xs, expected",
    [(list("abc"), list("cba")), ([], []), (["a"], ["a"]), ([1, 2, 2, 3], [3, 2, 2, 1])],
)
def test_reverse(xs, expected):
    prog = lib.make_reverse(tokens)
    assert prog.name == "reverse"
    assert prog(xs) == expected


def test_reverse_of_a_derived_sop():
    assert lib.make_reverse(indices * 10)(list("abc")) == [20, 10, 0]


@pytest.mark.parametrize(
    "xs, expected",
    [(list("abac"), [2, 1, 2, 1]), (list("aaa"), [3, 3, 3]), ([], []), (["z"], [1])],
)
def test_hist(xs, expected):
    prog = lib.make_hist()
    assert prog.name == "hist"
    assert prog(xs) == expected


def test_sort_unique():
    prog = lib.make_sort_unique(tokens, tokens)
    assert prog.name == "sort"
    assert prog([2, 4, 3, 1]) == [1, 2, 3, 4]
    assert lib.make_sort_unique(indices, tokens)([30, 10, 20]) == [1, 2, 0]


@pytest.mark.parametrize(
    "xs, expected",
    [([2, 4, 2, 1], [1, 2, 2, 4]), ([3, 3, 3], [3, 3, 3]), ([5], [5]), ([], [])],
)
def test_sort(xs, expected):
    prog = lib.make_sort(tokens, tokens, max_seq_len=5, min_key=1)
    assert prog.name == "sort"
    assert prog(xs) == expected


def test_sort_is_stable():
    # Sort the indices by the tokens: ties keep input order.
    prog = lib.make_sort(indices, tokens, max_seq_len=6, min_key=1)
    assert prog([2, 1, 2, 1, 0, 2]) == [4, 1, 3, 0, 2, 5]


def test_sort_matches_python_on_random_inputs():
    rng = random.Random(0)
    prog = lib.make_sort(tokens, tokens, max_seq_len=8, min_key=1)
    for _ in range(20):
        xs = [rng.randrange(5) for _ in range(rng.randrange(1, 9))]
        assert prog(xs) == sorted(xs)


def test_sort_rejects_bad_max_seq_len():
    with pytest.raises(ValueError, match="max_seq_len"):
        lib.make_sort(tokens, tokens, max_seq_len=0, min_key=1)


def test_sort_freq():
    prog = lib.make_sort_freq(5)
    assert prog.name == "sort_freq"
    assert prog(list("abbcc")) == list("bbcca")
    assert prog(list("aab")) == list("aab")


def test_frac_prevs():
    prog = lib.make_frac_prevs(tokens == "x")
    assert prog.name == "frac_prevs"
    assert rasp.is_numerical(prog)
    assert prog(list("xyxx")) == pytest.approx([1.0, 0.5, 2 / 3, 0.75])
    assert prog([]) == []
    selector = prog.selector
    assert selector.keys is indices and selector.queries is indices
    assert selector.predicate is rasp.Comparison.LEQ


def test_pair_balance():
    prog = lib.make_pair_balance(tokens, "(", ")")
    assert prog.name == "pair_balance"
    assert rasp.is_numerical(prog)
    assert isinstance(prog, rasp.LinearSequenceMap)
    assert (prog.fst_fac, prog.snd_fac) == (1, -1)
    assert prog(list("(())")) == pytest.approx([1.0, 1.0, 1 / 3, 0.0])
    assert prog(list("())")) == pytest.approx([1.0, 0.0, -1 / 3])


def _is_shuffle_dyck(s, pairs):
    for open_token, close_token in pairs:
        depth = 0
        for c in s:
            depth += (c == open_token) - (c == close_token)
            if depth < 0:
                return False
        if depth != 0:
            return False
    return True


@pytest.mark.parametrize(
    "s",
    ["()", "(())", "()()", "(()", "())", ")(", "(", "({)}", "(}{)", "{}()", "({}", "x()", "((}{))"],
)
def test_shuffle_dyck(s):
    pairs = ["()", "{}"]
    prog = lib.make_shuffle_dyck(pairs)
    assert prog.name == "shuffle_dyck"
    assert prog(list(s)) == [_is_shuffle_dyck(s, pairs)] * len(s)


@pytest.mark.parametrize("s", ["()", "(()", "({})", "(}{)", "{"])
def test_shuffle_dyck_one_pair_and_dyck2(s):
    assert lib.make_shuffle_dyck(["()"])(list(s)) == [_is_shuffle_dyck(s, ["()"])] * len(s)
    prog = lib.make_shuffle_dyck2()
    assert prog.name == "shuffle_dyck2"
    assert prog(list(s)) == [_is_shuffle_dyck(s, ["()", "{}"])] * len(s)


@pytest.mark.parametrize("pairs", [[], ["("], ["(()"]])
def test_shuffle_dyck_rejects_bad_pairs(pairs):
    with pytest.raises(ValueError, match="pair"):
        lib.make_shuffle_dyck(pairs)


def test_shift_by():
    assert lib.shift_by(1, tokens)(list("abc")) == [None, "a", "b"]
    assert lib.shift_by(2, tokens)(list("abc")) == [None, None, "a"]
    assert lib.shift_by(1, tokens).name == "shift_by(1)"


def test_detect_pattern():
    prog = lib.detect_pattern(tokens, "abc")
    assert prog.name == "detect_pattern(abc)"
    assert prog(list("abcabc")) == [None, None, True, False, False, True]
    assert lib.detect_pattern(tokens, "a")(list("aba")) == [True, False, True]
    assert lib.detect_pattern(tokens, "aa")(list("aaab")) == [None, True, True, False]
    with pytest.raises(ValueError, match="non-empty"):
        lib.detect_pattern(tokens, "")


def test_count_less_freq():
    prog = lib.make_count_less_freq(2)
    assert prog.name == "count_less_freq"
    assert prog(list("aaabbc")) == [3] * 6
    assert prog(list("aacbbc")) == [6] * 6
    assert lib.make_count_less_freq(1)(list("aab")) == [1, 1, 1]


def test_count():
    prog = lib.make_count(tokens, "a")
    assert prog.name == "count_a"
    assert prog(list("aab")) == [2, 2, 2]
    assert prog(list("bbb")) == [0, 0, 0]


def test_nary_sequencemap():
    prog = lib.make_nary_sequencemap(lambda x, y, z: x + y + z, tokens, indices, tokens)
    assert prog([1, 2]) == [2, 5]
    assert lib.make_nary_sequencemap(lambda x, y: x * y, tokens, indices)([3, 3]) == [0, 3]
    assert lib.make_nary_sequencemap(lambda x: -x, tokens)([3]) == [-3]
    four = lib.make_nary_sequencemap(lambda *a: a, tokens, indices, tokens + 1, indices + 1)
    assert four([5]) == [(5, 0, 6, 1)]
    with pytest.raises(ValueError, match="at least one SOp"):
        lib.make_nary_sequencemap(lambda: 0)


# ------------------------------------------------- compilability of the library

_PROGRAMS = {
    # name: (program factory, sample inputs)
    "length": (lib.make_length, [list("abc")]),
    "reverse": (lambda: lib.make_reverse(tokens), [list("abcd")]),
    "hist": (lib.make_hist, [list("abac")]),
    "sort_unique": (lambda: lib.make_sort_unique(tokens, tokens), [[3, 1, 2]]),
    "sort": (lambda: lib.make_sort(tokens, tokens, max_seq_len=5, min_key=1), [[3, 1, 3, 2]]),
    "sort_freq": (lambda: lib.make_sort_freq(5), [list("abbcc")]),
    "frac_prevs": (lambda: lib.make_frac_prevs(tokens == "x"), [list("xyx")]),
    "pair_balance": (lambda: lib.make_pair_balance(tokens, "(", ")"), [list("(()))")]),
    "shuffle_dyck": (
        lambda: lib.make_shuffle_dyck(["()", "{}", "[]"]),
        [list("({[]})"), list("(]")],
    ),
    "shuffle_dyck_one_pair": (lambda: lib.make_shuffle_dyck(["()"]), [list("(()")]),
    "shuffle_dyck2": (lib.make_shuffle_dyck2, [list("({)}")]),
    "shift_by": (lambda: lib.shift_by(2, tokens), [list("abcd")]),
    "detect_pattern": (lambda: lib.detect_pattern(tokens, "abc"), [list("abcabc")]),
    "count_less_freq": (lambda: lib.make_count_less_freq(2), [list("aabc")]),
    "count": (lambda: lib.make_count(tokens, "a"), [list("aba")]),
    "nary": (
        lambda: lib.make_nary_sequencemap(lambda *a: sum(a), tokens, indices, tokens),
        [[1, 2]],
    ),
}


@pytest.mark.parametrize("name", sorted(_PROGRAMS))
def test_library_programs_are_supported(name):
    factory, inputs = _PROGRAMS[name]
    prog = factory()
    assert validating.static_validate(prog) == []
    for xs in inputs:
        assert validating.validate(prog, xs) == []


@pytest.mark.parametrize("name", sorted(_PROGRAMS))
def test_library_labels_are_unique(name):
    factory, _ = _PROGRAMS[name]
    labels = [e.label for e in _all_exprs(factory())]
    assert len(labels) == len(set(labels)), sorted(labels)


def test_library_avoids_the_length_primitive():
    for name, (factory, _) in _PROGRAMS.items():
        assert not any(isinstance(e, rasp.LengthType) for e in _all_exprs(factory())), name


def test_sort_with_duplicate_keys_needs_make_sort():
    # Two different values move to one position: no result, reported.
    problems = validating.validate(lib.make_sort_unique(indices, tokens), [1, 1, 2])
    assert len(problems) == 1 and problems[0].expr.name == "sort"
    # Equal values at one position are fine: RASP and the model give that value.
    assert validating.validate(lib.make_sort_unique(tokens, tokens), [1, 1, 2]) == []
    assert (
        validating.validate(lib.make_sort(tokens, tokens, max_seq_len=3, min_key=1), [1, 1, 2])
        == []
    )
