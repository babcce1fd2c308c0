"""The codec's array lookups (`_string_ids`, `_int_ids`) against its dict lookup.

`Codec.encode` reads all-string and small-int batches as one array; any
other batch, or one those cannot decide, goes through one dict lookup per
token. Both must give the same ids, NO_VALUE for unknown tokens, for every
batch: these tables hold the tokens a user may pass by mistake next to the
ones the vocabulary holds.
"""

import enum
import itertools
import random

import numpy as np
import pytest

from tracr.transformer import inputs

BOS, PAD = "compiler_bos", "compiler_pad"


class _Index:
    """Not equal to 2, but `bytes` reads it as 2."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value


class _Two(enum.IntEnum):
    TWO = 2


# (vocabulary without BOS and PAD, the BOS token, stray tokens to mix in)
VOCABULARIES = {
    "chars": (("a", "b", "c"), BOS, ("d", "", "ab", "\x00", "\x01", "A", "😀", "\ud800", 1, None)),
    "chars_and_words": (
        ("(", ")", "x", "yes", ""),
        BOS,
        ("no", "yes ", "y", "\x00", BOS + "x", "b", 0),
    ),
    "separator_in_vocab": (("\x00", "\x01", "a"), BOS, ("\x02", "a\x00", "\x00a", "")),
    "astral_chars": (("😀", "a"), BOS, ("😁", "b", "a😀")),
    "small_ints": ((1, 2, 3), BOS, (0, 4, 255, 256, -1, True, False, 1.0, 2.5, np.int64(2), "1")),
    "ints_past_a_byte": ((0, 7, 300), BOS, (256, 299, 1, True, False, -300)),
    "wide_ints": (
        (-5, 0, 4000, 2.0),
        BOS,
        (
            2**31,
            2**31 - 1,
            -(2**31),
            2**40,
            -5.0,
            4001,
            4002,
            -6,
            -7,
            2,
            True,
            np.int32(4000),
            1e300,
        ),
    ),
    "ints_too_wide_for_a_table": ((0, 10**6), BOS, (1, 10**6 + 1)),
    "bools": ((True, False), BOS, (1, 0, 1.0, 2, np.True_, "True")),
    "ints_and_bools": ((0, 1, True), BOS, (False, 2, 0.0, 1.0)),
    "floats": ((0.5, 1.0, 2.0), BOS, (1, 2, 0, True, 0.25)),
    "int_bos": ((1, 2), 0, (3, True, "a")),
    "int_like_objects": ((1, 2, 3), BOS, (_Index(2), _Two.TWO, np.uint8(3), np.True_)),
}


def _codec(name):
    vocab, bos, _ = VOCABULARIES[name]
    tokens = tuple(vocab) + (bos, PAD)
    return inputs.Codec(tokens=tokens, bos_token=bos, pad_token=PAD, max_len=8, output_values=None)


def _batches(name, seed):
    """Batches of the vocabulary's tokens with strays mixed in at some rate."""
    vocab, bos, strays = VOCABULARIES[name]
    rng = random.Random(seed)
    for rate, ragged in itertools.product((0.0, 0.02, 0.3), (False, True)):
        for _ in range(6):
            width = rng.randint(1, 8)
            batch = []
            for _ in range(rng.randint(1, 40)):
                n = rng.randint(1, width) if ragged else width
                seq = [bos] + [
                    rng.choice(strays) if rng.random() < rate else rng.choice(vocab)
                    for _ in range(n - 1)
                ]
                if ragged and rng.random() < 0.05:
                    seq = []  # an empty sequence (encode rejects it; the ids must agree)
                batch.append(seq)
            yield batch


@pytest.mark.parametrize("name", sorted(VOCABULARIES))
def test_array_lookups_give_the_dict_lookups_ids(name):
    codec = _codec(name)
    checked = 0
    for batch in _batches(name, seed=len(name)):
        lengths = np.array([len(s) for s in batch])
        starts = inputs._sequence_starts(lengths)
        flat = [t for s in batch for t in s]
        want = codec._object_ids(flat)
        assert codec._lookup(batch, lengths, starts).tolist() == want.tolist()
        for path, got in (
            ("strings", codec._string_ids(batch, starts)),
            ("small ints", codec._int_ids(list(flat), lengths, starts)),
        ):
            if got is not None:
                assert got.tolist() == want.tolist(), path
                checked += 1
    array_path = ("chars", "chars_and_words", "separator_in_vocab", "small_ints", "int_bos")
    if name in array_path + ("ints_past_a_byte", "wide_ints"):
        assert checked > 0  # the array path really ran on these


def test_the_dict_ids_are_the_typed_ids():
    """The reference itself: True is not the token 1, 1.0 is, unknown is NO_VALUE."""
    codec = _codec("small_ints")
    ids = {t: i for i, t in enumerate(codec.tokens)}
    got = codec._object_ids([BOS, 1, True, 1.0, np.int64(3), 4, "1", [1]])
    nv = inputs.NO_VALUE
    assert got.tolist() == [ids[BOS], ids[1], nv, ids[1], ids[3], nv, nv, nv]


@pytest.mark.parametrize("name", ["chars", "small_ints"])
def test_encode_errors_are_the_same_on_the_array_path(name):
    """A stray token deep in a batch that takes the array path is named as
    the dict path names it."""
    codec = _codec(name)
    vocab, bos, strays = VOCABULARIES[name]
    good = [[bos] + [vocab[i % len(vocab)] for i in range(5)] for _ in range(30)]
    for stray in strays:
        batch = [list(s) for s in good]
        batch[17][3] = stray
        try:
            codec.encode(batch)
        except ValueError as e:
            message = str(e)
        else:
            message = None  # an accepted token (1.0 for 1): the ids must agree
            encoded = codec.encode(batch).ids
            assert encoded[17, 3] == codec._object_ids([stray])[0]
        if codec._object_ids([stray])[0] == inputs.NO_VALUE:
            assert message and "sequence 17, position 3" in message, (stray, message)


def test_encode_pads_ragged_batches_from_the_array_path():
    codec = _codec("chars")
    encoded = codec.encode([[BOS, "a", "b"], [BOS], [BOS, "c"]])
    a, b, c = (codec.tokens.index(t) for t in "abc")
    bos, pad = codec.bos_id, codec.pad_id
    assert encoded.ids.tolist() == [[bos, a, b], [bos, pad, pad], [bos, c, pad]]
    assert encoded.lengths.tolist() == [3, 1, 2]


def test_the_string_path_leaves_empty_sequences_and_separators_to_the_dict():
    """An empty sequence or a token holding the separator would shift every
    later id; the string path must see it and decline the batch."""
    codec = _codec("chars")
    separator = chr(codec._char_table[0])
    good = [[BOS, "a", "b"], [BOS, "c"]]
    for bad in (
        [[BOS, "a"], [], [BOS, "b"]],
        [[BOS, "a"], [BOS, "b"], []],
        [[BOS, "a" + separator + "b"], [BOS, "c"]],
    ):
        lengths = np.array([len(s) for s in bad])
        starts = inputs._sequence_starts(lengths)
        assert codec._string_ids(bad, starts) is None
        flat = [t for s in bad for t in s]
        assert codec._lookup(bad, lengths, starts).tolist() == codec._object_ids(flat).tolist()
    lengths = np.array([3, 2])
    ids = codec._string_ids(good, inputs._sequence_starts(lengths))
    assert ids.tolist() == [
        codec.bos_id,
        *(codec.tokens.index(t) for t in "ab"),
        codec.bos_id,
        codec.tokens.index("c"),
    ]


def test_the_int_path_reads_every_int32_value():
    """Ints on both sides of the vocabulary's range, at the int32 limits, and
    an integral float in the vocabulary (2.0 is the token 2) take the array
    path and get the dict path's ids."""
    codec = _codec("wide_ints")
    tokens = [-(2**31), -7, -6, -5, 0, 2, 3, 3999, 4000, 4001, 4002, 2**31 - 1]
    batch = [[BOS] + tokens, [BOS] + tokens[::-1][:5]]
    lengths = np.array([len(s) for s in batch])
    starts = inputs._sequence_starts(lengths)
    got = codec._int_ids([t for s in batch for t in s], lengths, starts)
    want = codec._object_ids([t for s in batch for t in s])
    assert got is not None and got.tolist() == want.tolist()
    assert sum(i != inputs.NO_VALUE for i in want.tolist()) == 2 + 4 + 1  # BOS, -5, 0, 2, 4000
    for stray in (True, 2**31, np.int64(2), 2.0, _Two.TWO):  # not 32-bit Python ints
        assert codec._int_ids([BOS, 0, stray], np.array([3]), np.array([0])) is None


def test_the_int32_limits_in_the_vocabulary_take_the_array_path_exactly():
    """-2**31 is a 32-bit int for marshal; a table that left it out would call
    the vocabulary's own token unknown."""
    low = -(2**31)
    tokens = (low, low + 5, BOS, PAD)
    codec = inputs.Codec(tokens=tokens, bos_token=BOS, pad_token=PAD, max_len=8, output_values=None)
    batch = [[BOS, low, low + 5, low + 1]]
    got = codec._int_ids(batch[0], np.array([4]), np.array([0]))
    assert got is not None
    assert got.tolist() == codec._object_ids(batch[0]).tolist() == [2, 0, 1, inputs.NO_VALUE]
    assert codec.encode([batch[0][:3]]).ids.tolist() == [[2, 0, 1]]
