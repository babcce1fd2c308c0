"""A library of RASP programs from the Tracr and RASP papers.

Every program here compiles: categorical aggregates select at most one key,
numerical aggregates average 0/1 values, and counting uses ``SelectorWidth``.
Outputs carry conventional names ("reverse", "hist", "sort", ...)::

    from tracr.compiler import lib
    from tracr.rasp import rasp

    lib.make_reverse(rasp.tokens)(["a", "b", "c"])    # -> ["c", "b", "a"]
    lib.make_hist()(["a", "b", "a"])                   # -> [2, 1, 2]

Intermediate expressions get Tracr's names too, so compiled models have
readable residual labels (``opens_12:...``); expressions named alike, such as
the ``bools_open`` of each pair in ``make_shuffle_dyck``, keep apart by the
``unique_id`` in their labels.
"""

from __future__ import annotations

from typing import Any, Callable, List, Sequence

from tracr.rasp import rasp


def make_length() -> rasp.SOp:
    """The input length at every position, computed with a SelectorWidth.

    The ``rasp.length`` primitive can't be compiled; this can.

    Example:
      make_length()(["a", "b", "c"])   # -> [3, 3, 3]

    Returns:
      An SOp named "length".
    """
    all_true_selector = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE).named(
        "all_true_selector"
    )
    return rasp.SelectorWidth(all_true_selector).named("length")


length = make_length()


def make_reverse(sop: rasp.SOp) -> rasp.SOp:
    """Reverses a sequence.

    Position i reads position ``length - i - 1``.

    Example:
      make_reverse(rasp.tokens)(["a", "b", "c"])   # -> ["c", "b", "a"]

    Args:
      sop: the SOp to reverse.

    Returns:
      An SOp named "reverse".
    """
    opp_idx = (length - rasp.indices).named("opp_idx")
    opp_idx = (opp_idx - 1).named("opp_idx-1")
    reverse_selector = rasp.Select(rasp.indices, opp_idx, rasp.Comparison.EQ).named(
        "reverse_selector"
    )
    return rasp.Aggregate(reverse_selector, sop).named("reverse")


def make_hist() -> rasp.SOp:
    """How often each position's token occurs in the whole input.

    Example:
      make_hist()(["a", "b", "a", "c"])   # -> [2, 1, 2, 1]

    Returns:
      An SOp named "hist".
    """
    same_tok = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ).named("same_tok")
    return rasp.SelectorWidth(same_tok).named("hist")


def make_sort_unique(vals: rasp.SOp, keys: rasp.SOp) -> rasp.SOp:
    """Sorts ``vals`` by ``keys``, which must all be different.

    Each element moves to position "number of smaller keys".

    Example:
      make_sort_unique(rasp.tokens, rasp.tokens)([2, 4, 3, 1])   # -> [1, 2, 3, 4]

    Args:
      vals: the values to reorder.
      keys: the sort keys; with duplicate keys two elements target the same
        position and the categorical aggregate is not supported.

    Returns:
      An SOp named "sort".
    """
    smaller = rasp.Select(keys, keys, rasp.Comparison.LT).named("smaller")
    target_pos = rasp.SelectorWidth(smaller).named("target_pos")
    sel_new = rasp.Select(target_pos, rasp.indices, rasp.Comparison.EQ).named("sel_new")
    return rasp.Aggregate(sel_new, vals).named("sort")


def make_sort(vals: rasp.SOp, keys: rasp.SOp, *, max_seq_len: int, min_key: float) -> rasp.SOp:
    """Sorts ``vals`` by ``keys``, which may repeat; ties keep input order.

    The keys are made unique as ``key + min_key * i / max_seq_len`` and then
    sorted with ``make_sort_unique``; this preserves the order as long as
    ``min_key`` is at most the smallest gap between two different keys.

    Example:
      make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1)([2, 4, 2, 1])
      # -> [1, 2, 2, 4]

    Args:
      vals: the values to reorder.
      keys: the sort keys (numbers).
      max_seq_len: the longest input the program will see.
      min_key: the smallest gap between two different keys.

    Returns:
      An SOp named "sort".
    """
    if max_seq_len < 1:
        raise ValueError(f"make_sort's max_seq_len must be at least 1, got {max_seq_len}.")
    keys = rasp.SequenceMap(lambda x, i: x + min_key * i / max_seq_len, keys, rasp.indices).named(
        "keys"
    )
    return make_sort_unique(vals, keys)


def make_sort_freq(max_seq_len: int) -> rasp.SOp:
    """Sorts the tokens by decreasing frequency; ties keep input order.

    Example:
      make_sort_freq(5)(["a", "b", "b", "c", "c"])   # -> ["b", "b", "c", "c", "a"]

    Args:
      max_seq_len: the longest input the program will see.

    Returns:
      An SOp named "sort_freq".
    """
    hist = (-1 * make_hist()).named("neg_hist")
    return make_sort(rasp.tokens, hist, max_seq_len=max_seq_len, min_key=1).named("sort_freq")


def make_frac_prevs(bools: rasp.SOp) -> rasp.SOp:
    """The fraction of positions up to and including this one where ``bools`` is true.

    Example:
      make_frac_prevs(rasp.tokens == "x")(["x", "y", "x", "x"])
      # -> [1.0, 0.5, 0.666..., 0.75]

    Args:
      bools: an SOp with values 0/1 (or False/True); it is used numerically.

    Returns:
      A numerical SOp named "frac_prevs".
    """
    bools = rasp.numerical(bools)
    # Left with its default name: a program may call make_frac_prevs several times.
    prevs = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    return rasp.numerical(rasp.Aggregate(prevs, bools, default=0)).named("frac_prevs")


def make_pair_balance(sop: rasp.SOp, open_token: str, close_token: str) -> rasp.SOp:
    """The running balance of a bracket pair, as a fraction of the prefix length.

    ``frac_prevs(sop == open_token) - frac_prevs(sop == close_token)``: the
    prefix up to position i has more closing than opening brackets exactly
    where the balance is negative, and equally many where it is 0.

    Example:
      make_pair_balance(rasp.tokens, "(", ")")(["(", "(", ")", ")"])
      # -> [1.0, 1.0, 0.333..., 0.0]

    Args:
      sop: the SOp holding the brackets.
      open_token: the opening bracket.
      close_token: the closing bracket.

    Returns:
      A numerical SOp named "pair_balance".
    """
    bools_open = rasp.numerical(sop == open_token).named("bools_open")
    opens = rasp.numerical(make_frac_prevs(bools_open)).named("opens")
    bools_close = rasp.numerical(sop == close_token).named("bools_close")
    closes = rasp.numerical(make_frac_prevs(bools_close)).named("closes")
    pair_balance = rasp.numerical(rasp.LinearSequenceMap(opens, closes, 1, -1))
    return pair_balance.named("pair_balance")


def make_shuffle_dyck(pairs: List[str]) -> rasp.SOp:
    """Recognises shuffle-Dyck-k: every bracket type is balanced on its own.

    A sequence is accepted iff, for each pair, no prefix has more closing than
    opening brackets and the whole sequence has as many of each. The answer is
    the same at every position.

    Example:
      make_shuffle_dyck(["()", "{}"])(list("({)}"))   # -> [True, True, True, True]
      make_shuffle_dyck(["()", "{}"])(list("(}{)"))   # -> [False, False, False, False]

    Args:
      pairs: the bracket pairs, each a two-character string such as "()".

    Returns:
      A categorical SOp named "shuffle_dyck" with values True (balanced) and
      False.

    Raises:
      ValueError: if ``pairs`` is empty or a pair isn't two characters.
    """
    if not pairs:
        raise ValueError("make_shuffle_dyck needs at least one bracket pair, e.g. ['()'].")
    for pair in pairs:
        if not isinstance(pair, str) or len(pair) != 2:
            raise ValueError(
                f"make_shuffle_dyck takes pairs as two-character strings such as '()', "
                f"got {pair!r}."
            )

    balances = []
    for pair in pairs:
        open_token, close_token = pair
        balances.append(
            make_pair_balance(rasp.tokens, open_token=open_token, close_token=close_token)
        )

    # A negative balance anywhere means some prefix closes more than it opened.
    any_negative = balances[0] < 0
    for balance in balances[1:]:
        any_negative = any_negative | (balance < 0)
    any_negative = rasp.numerical(rasp.Map(lambda x: x, any_negative)).named("any_negative")

    select_all = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE).named("select_all")
    has_neg = rasp.numerical(rasp.Aggregate(select_all, any_negative, default=0)).named("has_neg")

    # Every balance must be back at 0 at the last position.
    all_zero = balances[0] == 0
    for balance in balances[1:]:
        all_zero = all_zero & (balance == 0)

    select_last = rasp.Select(rasp.indices, length - 1, rasp.Comparison.EQ).named("select_last")
    last_zero = rasp.Aggregate(select_last, all_zero).named("last_zero")

    not_has_neg = (~has_neg).named("not_has_neg")
    return (last_zero & not_has_neg).named("shuffle_dyck")


def make_shuffle_dyck2() -> rasp.SOp:
    """Shuffle-Dyck over the pairs "()" and "{}".

    Example:
      make_shuffle_dyck2()(list("({})"))   # -> [True, True, True, True]

    Returns:
      A categorical SOp named "shuffle_dyck2".
    """
    return make_shuffle_dyck(pairs=["()", "{}"]).named("shuffle_dyck2")


def shift_by(offset: int, /, sop: rasp.SOp) -> rasp.SOp:
    """Shifts a sequence right by ``offset`` positions; the first ones become None.

    Example:
      shift_by(1, rasp.tokens)(["a", "b", "c"])   # -> [None, "a", "b"]

    Args:
      offset: how far to shift.
      sop: the SOp to shift.

    Returns:
      An SOp named "shift_by(<offset>)".
    """
    select_off_by_offset = rasp.Select(
        rasp.indices, rasp.indices, lambda k, q: q == k + offset
    ).named(f"select_off_by_{offset}")
    out = rasp.Aggregate(select_off_by_offset, sop, default=None)
    return out.named(f"shift_by({offset})")


def detect_pattern(sop: rasp.SOp, pattern: Sequence[rasp.Value]) -> rasp.SOp:
    """Marks the positions where ``pattern`` ends.

    Position i is True iff ``sop[i - len(pattern) + 1 : i + 1] == pattern``;
    the first ``len(pattern) - 1`` positions are None (the pattern can't fit).

    Example:
      detect_pattern(rasp.tokens, "abc")(list("abcabc"))
      # -> [None, None, True, False, False, True]

    Args:
      sop: the SOp to search.
      pattern: the values to look for, in order.

    Returns:
      An SOp named "detect_pattern(<pattern>)".

    Raises:
      ValueError: if ``pattern`` is empty.
    """
    if len(pattern) < 1:
        raise ValueError(f"detect_pattern needs a non-empty pattern, got {pattern!r}.")

    # detectors[i] is true at position j iff the i-th element from the end of
    # the pattern is at position j - i.
    detectors = []
    for i, element in enumerate(reversed(pattern)):
        detector = sop == element
        if i != 0:
            detector = shift_by(i, detector)
        detectors.append(detector)

    pattern_detected = detectors.pop()
    while detectors:
        pattern_detected = pattern_detected & detectors.pop()
    return pattern_detected.named(f"detect_pattern({pattern})")


def make_count_less_freq(n: int) -> rasp.SOp:
    """How many positions hold a token that occurs at most ``n`` times.

    Example:
      make_count_less_freq(2)(["a", "a", "a", "b", "b", "c"])   # -> [3, 3, 3, 3, 3, 3]
      # ("b", "b" and "c" occur at most twice)

    Args:
      n: the largest frequency that counts.

    Returns:
      An SOp named "count_less_freq", the same at every position.
    """
    hist = make_hist().named("hist")
    select_less = rasp.Select(hist, hist, lambda x, y: x <= n).named("select_less")
    return rasp.SelectorWidth(select_less).named("count_less_freq")


def make_count(sop: rasp.SOp, token: rasp.Value) -> rasp.SOp:
    """How many times ``token`` occurs in ``sop``, at every position.

    Example:
      make_count(rasp.tokens, "a")(["a", "a", "b"])   # -> [2, 2, 2]

    Args:
      sop: the SOp to count in.
      token: the value to count.

    Returns:
      An SOp named "count_<token>".
    """
    return rasp.SelectorWidth(rasp.Select(sop, sop, lambda k, q: k == token)).named(
        f"count_{token}"
    )


def make_nary_sequencemap(f: Callable[..., Any], *sops: rasp.SOp) -> rasp.SOp:
    """``f`` applied elementwise to any number of SOps.

    Pairs the inputs into tuples with a chain of SequenceMaps, then applies
    ``f`` to each tuple with a Map.

    Example:
      make_nary_sequencemap(lambda x, y, z: x + y + z,
                            rasp.tokens, rasp.indices, rasp.tokens)([1, 2])
      # -> [2, 5]

    Args:
      f: a function of ``len(sops)`` arguments.
      *sops: the SOps, at least one.

    Returns:
      A categorical SOp.

    Raises:
      ValueError: if no SOp is given.
    """
    if not sops:
        raise ValueError("make_nary_sequencemap needs at least one SOp.")
    if len(sops) == 1:
        return rasp.Map(f, sops[0])
    # Tuples, not lists: values must be hashable to be compiled as one-hots.
    values = rasp.SequenceMap(lambda x, y: (x, y), sops[0], sops[1])
    for sop in sops[2:]:
        values = rasp.SequenceMap(lambda x, y: x + (y,), values, sop)
    return rasp.Map(lambda args: f(*args), values)
