"""One path from token lists to model inputs and back, and one enumerator of inputs.

Every caller that runs a compiled model on user tokens (`apply`,
`apply_batch`, equivalence checks, certificates, the fuzz checker, the CLI)
goes through the same three steps::

    codec = inputs.Codec.from_spec(model.spec)
    batch = codec.encode([["BOS", "a", "b"], ["BOS", "c"]])   # ids [B, T], lengths [B]
    out = forward(batch.ids)                                  # [B, T] ids or values
    codec.decode(out, batch.lengths)                          # [["BOS", x, y], ["BOS", z]]

`forward` is any function of padded ids `[B, T]` that returns `[B, T]`:
output ids for a categorical program, with `NO_VALUE` (-1) where no output
direction reaches `spec.ACTIVE_THRESHOLD` (decoded as None, as RASP gives
None there), or floats for a numerical one. `run_batch` does all three.

Encoding and decoding are vectorised: a batch of strings is read as the code
points of one joined string and a batch of ints as the fields of one
`marshal` record, each indexed into a numpy table; any other batch takes one dict lookup per
token at C speed. Numpy checks then run on the whole batch; decoding is one
lookup-table index per batch. `enumerate_inputs` lists every
BOS-prefixed input of a model's domain up to a length, or a seeded sample.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import marshal
import math
import operator
import random
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from tracr.transformer import spec as spec_lib

Value = Any
# The widest range of vocabulary ints read through one table (`Codec._int_ids`).
INT_TABLE_SPAN = 1 << 16
# A marshal (version 2) int record: the type byte "i", then 4 bytes little-endian.
_MARSHAL_INT = np.dtype([("code", "u1"), ("value", "<i4")])

NO_VALUE = -1  # an output id that decodes as None (no output direction is active)


@dataclasses.dataclass(frozen=True)
class Encoded:
    """A batch of encoded sequences: ids padded with PAD, and each real length."""

    ids: np.ndarray  # int32 [B, T]; PAD after each sequence's end
    lengths: np.ndarray  # int64 [B], BOS included

    @property
    def mask(self) -> np.ndarray:
        """bool [B, T]: True at real positions."""
        return np.arange(self.ids.shape[1])[None, :] < self.lengths[:, None]


@dataclasses.dataclass(frozen=True, eq=False)
class Codec:
    """Token lists <-> padded id arrays for one model's vocabulary and output.

    Args (fields):
      tokens: the vocabulary in id order (BOS and PAD included).
      bos_token, pad_token: the special tokens (both needed to run batches).
      max_len: the longest input, BOS included.
      output_values: the value of each categorical output id; None for a
        numerical output (decoded as floats).
    """

    tokens: Tuple[Value, ...]
    bos_token: Value
    pad_token: Optional[Value]
    max_len: int
    output_values: Optional[Tuple[Value, ...]]

    def __post_init__(self):
        if self.bos_token is None:
            raise ValueError("Codec needs a bos_token: compiled inputs start with BOS.")
        for name in ("bos_token", "pad_token"):
            token = getattr(self, name)
            if token is not None and _typed(token) not in self._ids:
                raise ValueError(f"{name}={token!r} is not in tokens {list(self.tokens)}.")
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1 (BOS included), got {self.max_len}.")

    @classmethod
    def from_spec(cls, model_spec: spec_lib.ModelSpec) -> "Codec":
        """The codec of a compiled model, read from its spec."""
        out = model_spec.output
        return cls(
            tokens=tuple(model_spec.input.tokens),
            bos_token=model_spec.input.bos_token,
            pad_token=model_spec.input.pad_token,
            max_len=model_spec.max_seq_len + 1,
            output_values=tuple(out.values) if out.categorical else None,
        )

    @classmethod
    def from_encoders(cls, input_encoder: Any, output_encoder: Any, max_len: int) -> "Codec":
        """The codec of a model's `input_encoder`/`output_encoder` pair.

        The input encoder is a `CategoricalEncoder`; an output encoder with a
        `decoding_map` is categorical, any other (or None) numerical.
        """
        in_map = input_encoder.decoding_map
        out_map = getattr(output_encoder, "decoding_map", None)
        return cls(
            tokens=tuple(in_map[i] for i in range(len(in_map))),
            bos_token=input_encoder.bos_token,
            pad_token=input_encoder.pad_token,
            max_len=max_len,
            output_values=None
            if out_map is None
            else tuple(out_map[i] for i in range(len(out_map))),
        )

    # -- lookup tables (built once per codec) --------------------------------

    @functools.cached_property
    def _ids(self) -> Dict[Tuple[bool, Value], int]:
        """Typed key -> id: Python's True == 1 must not make True a token id of 1."""
        return {_typed(t): i for i, t in enumerate(self.tokens)}

    @functools.cached_property
    def _plain_ids(self) -> Dict[Value, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    @functools.cached_property
    def _confusable(self) -> Tuple[bool, bool]:
        """(the vocabulary holds a bool, it holds a number equal to 0 or 1 that is not
        a bool): which batch tokens a plain dict lookup could confuse (True == 1)."""
        has_bool = any(isinstance(t, (bool, np.bool_)) for t in self.tokens)
        has_01 = any(_is_number(t) and t in (0, 1) for t in self.tokens)
        return has_bool, has_01

    @property
    def bos_id(self) -> int:
        return self._ids[_typed(self.bos_token)]

    @property
    def pad_id(self) -> Optional[int]:
        return None if self.pad_token is None else self._ids[_typed(self.pad_token)]

    @functools.cached_property
    def _output_table(self) -> Optional[np.ndarray]:
        """Object array: output id -> value; index -1 (NO_VALUE) is None, -2 the BOS token."""
        if self.output_values is None:
            return None
        table = np.empty(len(self.output_values) + 2, dtype=object)
        table[: len(self.output_values)] = self.output_values
        table[-2], table[-1] = self.bos_token, None
        return table

    # -- encoding ----------------------------------------------------------

    def encode(self, batch: Sequence[Sequence[Value]], pad_to: Optional[int] = None) -> Encoded:
        """Token lists -> `Encoded` ids `[B, T]` (T the longest, or `pad_to`).

        Raises:
          TypeError: batch is not a list of token lists.
          ValueError: a sequence is empty, does not start with BOS, holds BOS
            or PAD after position 0, holds an unknown token, or is longer
            than `max_len`; the message names the sequence and the position.
        """
        check_batch(batch)
        if not all(map(isinstance, batch, itertools.repeat((list, tuple)))):
            i, s = next((i, s) for i, s in enumerate(batch) if not isinstance(s, (list, tuple)))
            raise TypeError(
                f"{_where(i, None, len(batch))}: expected a list of tokens, got "
                f"{type(s).__name__}: {s!r}."
            )
        lengths = np.fromiter(map(len, batch), dtype=np.int64, count=len(batch))
        width = int(lengths.max()) if len(batch) else 0
        width = max(width, pad_to or 0)
        starts = _sequence_starts(lengths)
        flat = self._lookup(batch, lengths, starts)
        self._check(batch, flat, lengths, starts)
        pad = self.pad_id if self.pad_id is not None else self.bos_id
        if pad_to is None and self.pad_id is None and np.any(lengths != width):
            raise ValueError(
                "Sequences of different lengths need a PAD token to run together; this model "
                "has none. Run equal-length batches."
            )
        if len(flat) == len(batch) * width:  # no padding
            return Encoded(ids=flat.astype(np.int32).reshape(len(batch), width), lengths=lengths)
        ids = np.full((len(batch), width), pad, dtype=np.int32)
        ids[np.arange(width)[None, :] < lengths[:, None]] = flat
        return Encoded(ids=ids, lengths=lengths)

    def _lookup(
        self, batch: Sequence[Sequence[Value]], lengths: np.ndarray, starts: np.ndarray
    ) -> np.ndarray:
        """Flat ids of every token in order; NO_VALUE for unknown tokens.

        Batches of strings or of ints are looked up as one array
        (`_string_ids`, `_int_ids`); anything else, or anything those
        cannot decide, by one dict lookup per token (`_object_ids`). All three
        give the same ids (tests/transformer/test_vector_lookup.py).
        """
        ids = self._string_ids(batch, starts)
        if ids is not None:
            return ids
        flat = list(itertools.chain.from_iterable(batch))
        ids = self._int_ids(flat, lengths, starts)
        return self._object_ids(flat) if ids is None else ids

    def _object_ids(self, tokens: List[Value]) -> np.ndarray:
        """One dict lookup per token (typed where True == 1 could confuse ids)."""
        typed = _needs_typed_lookup(self._confusable, [tokens])
        get = self._ids.get if typed else self._plain_ids.get
        stream = map(_typed, tokens) if typed else tokens
        try:  # dict.get(token, NO_VALUE) for every token, at C speed
            return np.fromiter(map(get, stream, itertools.repeat(NO_VALUE)), np.int64, len(tokens))
        except TypeError:  # an unhashable token: unknown
            stream = map(_typed, tokens) if typed else tokens
            return np.fromiter(map(_safe_get(get), stream), np.int64, len(tokens))

    @functools.cached_property
    def _char_table(self) -> Optional[Tuple[int, np.ndarray]]:
        """(a separator code point that no string token holds, code point -> id of
        each one-character token); None without one-character tokens or past
        U+FFFF, where the dict serves better."""
        strings = [(i, t) for i, t in enumerate(self.tokens) if isinstance(t, str)]
        used = {c for _, t in strings for c in map(ord, t)}
        separator = next(c for c in range(len(used) + 1) if c not in used)
        chars = {ord(t): i for i, t in strings if len(t) == 1}
        if not chars or max(chars) > 0xFFFF:
            return None
        table = np.full(max(chars) + 2, NO_VALUE, np.int64)  # last: no token
        for code, i in chars.items():
            table[code] = i
        return separator, table

    def _string_ids(
        self, batch: Sequence[Sequence[Value]], starts: np.ndarray
    ) -> Optional[np.ndarray]:
        """Flat ids of an all-string batch, or None if it is not one.

        The tokens are joined into one string, each followed by a separator
        that no vocabulary token holds (each sequence joined, then the
        sequences: no flat list of tokens is built), and its code points read
        as one array: a one-character token is its code point, looked up in a
        table. Longer tokens (BOS, PAD, words) go through the dict, or, when
        they are all the same token (BOS at each start), take its one id. A
        token holding the separator, or an empty sequence, leaves the whole
        batch to the dict.
        """
        read = self._char_table
        if not len(batch) or read is None:
            return None
        separator, table = read
        end = chr(separator)
        try:
            joined = end.join(map(end.join, batch)) + end
        except TypeError:  # not all strings
            return None
        points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), np.uint32)
        ends = np.flatnonzero(points == separator)
        if len(ends) != int(starts[-1]) + len(batch[-1]):
            return None  # a token holds the separator, or a sequence is empty
        begins = np.empty_like(ends)
        begins[0], begins[1:] = 0, ends[:-1] + 1
        single = ends - begins == 1
        ids = table[np.minimum(points[begins], len(table) - 1)]
        longer = np.flatnonzero(~single)
        if len(longer):
            if len(longer) == len(batch) and np.array_equal(longer, starts):
                words = list(map(operator.itemgetter(0), batch))  # the first tokens
            else:
                flat = list(itertools.chain.from_iterable(batch))
                words = list(map(flat.__getitem__, longer.tolist()))
            distinct = set(words)
            if len(distinct) == 1:
                ids[longer] = self._object_ids(list(distinct))[0]
            else:
                ids[longer] = self._object_ids(words)
        return ids

    @functools.cached_property
    def _int_table(self) -> Optional[Tuple[int, np.ndarray]]:
        """(lowest, table): int value v -> id of the vocabulary number equal to
        it (not bools) at table[v - lowest], the last entry no token; None
        without integral numbers, or when they span more than INT_TABLE_SPAN
        values (the dict serves those)."""
        numbers = {
            int(t): i
            for i, t in enumerate(self.tokens)
            if _is_number(t) and math.isfinite(t) and t == int(t) and -(2**31) <= t < 2**31
        }
        if not numbers or max(numbers) - min(numbers) > INT_TABLE_SPAN:
            return None
        lowest = min(numbers)
        table = np.full(max(numbers) - lowest + 2, NO_VALUE, np.int64)
        for value, i in numbers.items():
            table[value - lowest] = i
        return lowest, table

    def _int_ids(
        self, flat: List[Value], lengths: np.ndarray, starts: np.ndarray
    ) -> Optional[np.ndarray]:
        """Ids of a batch of Python ints after each first token, or None.

        The first tokens (BOS, usually a string) are looked up by dict. The
        rest are written by `marshal` (format version 2), which writes an int
        of 32 bits as the byte "i" and its 4 bytes, and anything else (a
        bool, a bigger int, a numpy int, a string) in another form: if the
        record is exactly n such 5-byte fields, every token is such an int (by
        induction from the first field), and the values are read as one array
        and indexed into a table. IntEnums and other types marshal cannot
        write raise, and leave the batch to the dict path, as does anything
        else that is not all ints.
        """
        read = self._int_table
        if not flat or read is None or not np.all(lengths > 0):
            return None  # an empty sequence: the dict path's check names it
        lowest, table = read
        firsts = list(map(flat.__getitem__, starts.tolist()))
        rest = flat.copy()
        if np.all(lengths == lengths[0]):
            rest[:: int(lengths[0])] = [0] * len(lengths)
        else:
            for start in starts.tolist():
                rest[start] = 0
        try:
            record = marshal.dumps(rest, 2)
        except ValueError:  # an object marshal cannot write
            return None
        header = 5  # "[" and the list's length
        if len(record) != header + _MARSHAL_INT.itemsize * len(rest):
            return None
        fields = np.frombuffer(record, _MARSHAL_INT, offset=header)
        if not np.all(fields["code"] == ord("i")):
            return None
        index = fields["value"].astype(np.int64) - lowest
        index[(index < 0) | (index >= len(table))] = len(table) - 1  # no token
        ids = table[index]
        ids[starts] = self._object_ids(firsts)
        return ids

    def _check(self, batch, flat: np.ndarray, lengths: np.ndarray, starts: np.ndarray) -> None:
        n = len(batch)
        if n == 0:
            return
        for i in np.flatnonzero(lengths == 0)[:1]:
            raise ValueError(
                f"First input token must be BOS token. Should be '{self.bos_token}', but "
                f"{_where(i, None, n)} is empty. Prepend {self.bos_token!r} to the input."
            )
        unknown = np.flatnonzero(flat == NO_VALUE)
        if len(unknown):
            seq = int(np.searchsorted(starts, unknown[0], side="right") - 1)
            pos = int(unknown[0] - starts[seq])
            bad = [t for t, j in zip(batch[seq], flat[starts[seq] :]) if j == NO_VALUE]
            known = sorted((str(t) for t in self.tokens), key=str)
            shown = "{" + ", ".join(dict.fromkeys(map(repr, bad))) + "}"  # tokens may not hash
            raise ValueError(
                f"Inputs {shown} not found in encoding. Unknown tokens {bad!r} "
                f"({_where(seq, pos, n)}); the vocabulary is {known}."
            )
        not_bos = np.flatnonzero(flat[starts] != self.bos_id) if n else []
        if len(not_bos):
            i = int(not_bos[0])
            raise ValueError(
                f"First input token must be BOS token. Should be '{self.bos_token}', but was "
                f"'{batch[i][0]}' ({_where(i, 0, n)}). Prepend {self.bos_token!r} to the input."
            )
        too_long = np.flatnonzero(lengths > self.max_len)
        if len(too_long):
            i = int(too_long[0])
            raise ValueError(
                f"{_where(i, None, n)} has {lengths[i]} tokens (BOS included) but the model was "
                f"compiled for at most {self.max_len} (max_seq_len={self.max_len - 1} plus BOS); "
                "shorten it or compile with a larger max_seq_len."
            )
        special = flat == self.bos_id
        if self.pad_id is not None:
            special |= flat == self.pad_id
        special[starts] = False
        if np.any(special):
            k = int(np.flatnonzero(special)[0])
            seq = int(np.searchsorted(starts, k, side="right") - 1)
            pos = k - int(starts[seq])
            name = "BOS" if flat[k] == self.bos_id else "PAD"
            raise ValueError(
                f"The {name} token {self.tokens[flat[k]]!r} is at {_where(seq, pos, n)}; "
                f"{name} may only {'start an input' if name == 'BOS' else 'be added by padding'}. "
                "Remove it from the input."
            )

    # -- decoding ----------------------------------------------------------

    def decode(self, outputs: Any, lengths: np.ndarray) -> List[List[Value]]:
        """Outputs `[B, T]` (ids, NO_VALUE for None; or floats) -> one list per
        sequence, trimmed to its length, the BOS token first."""
        outputs = np.asarray(outputs)
        lengths = np.asarray(lengths)
        if len(lengths) == 0:
            return []
        if self._output_table is not None:
            ids = outputs.astype(np.int64)  # NO_VALUE = -1 indexes the table's None
            ids[:, 0] = -2  # the BOS token
            rows = self._output_table[ids].tolist()
            bos = None
        else:
            rows = outputs.astype(np.float64).tolist()
            bos = self.bos_token
        width = outputs.shape[1]
        if np.all(lengths == width):
            out = rows
        else:
            out = [row[:n] for row, n in zip(rows, lengths.tolist())]
        if bos is not None:
            for row in out:
                row[0] = bos
        return out


def run_batch(
    codec: Codec,
    forward: Callable[[np.ndarray], Any],
    batch: Sequence[Sequence[Value]],
    pad_to: Optional[int] = None,
) -> List[List[Value]]:
    """encode -> `forward(ids [B, T]) -> [B, T]` -> decode, for any forward function."""
    encoded = codec.encode(batch, pad_to=pad_to)
    if not len(batch):
        return []
    return codec.decode(np.asarray(forward(encoded.ids)), encoded.lengths)


def categorical_ids(scores: Any, threshold: float = spec_lib.ACTIVE_THRESHOLD) -> Any:
    """Output scores `[..., O]` -> ids `[...]`: the argmax, or NO_VALUE where no
    score reaches `threshold` (works on numpy and jax arrays)."""
    xp = np if isinstance(scores, np.ndarray) else _jnp()
    if scores.shape[-1] == 0:
        return xp.full(scores.shape[:-1], NO_VALUE, xp.int32)
    best = xp.argmax(scores, axis=-1).astype(xp.int32)
    active = xp.max(scores, axis=-1) >= threshold
    return xp.where(active, best, NO_VALUE)


# --------------------------------------------------------------------------
# The input domain.


def domain_tokens(model_spec: spec_lib.ModelSpec) -> Tuple[Value, ...]:
    """The tokens a user may write after BOS (the vocabulary without BOS and PAD)."""
    special = {_typed(t) for t in (model_spec.input.bos_token, model_spec.input.pad_token)}
    return tuple(t for t in model_spec.input.tokens if _typed(t) not in special)


def sequences(
    tokens: Sequence[Value],
    max_len: int,
    *,
    min_len: int = 1,
    sample: Optional[int] = None,
    seed: int = 0,
) -> Iterator[Tuple[Value, ...]]:
    """Every sequence of `tokens` with length in [min_len, max_len], shortest first
    (in `tokens` order within a length), or `sample` seeded random ones
    (length uniform in the range, then tokens uniform)."""
    if min_len > max_len:
        return iter(())
    if sample is None:
        return itertools.chain.from_iterable(
            itertools.product(tokens, repeat=n) for n in range(min_len, max_len + 1)
        )
    if not tokens:
        raise ValueError("sample needs at least one token to draw from; tokens is empty.")
    rng = random.Random(seed)  # the stream tracr's equivalence checks have always drawn
    table = list(tokens)
    return (
        tuple(rng.choice(table) for _ in range(rng.randint(min_len, max_len)))
        for _ in range(sample)
    )


def enumerate_inputs(
    model_spec: spec_lib.ModelSpec,
    max_len: Optional[int] = None,
    sample: Optional[int] = None,
    seed: int = 0,
    *,
    min_len: int = 1,
) -> List[List[Value]]:
    """BOS-prefixed inputs of a compiled model's domain.

    Args:
      model_spec: the model (its vocabulary, BOS token and max_seq_len).
      max_len: longest input, BOS not counted (default: the model's max_seq_len).
      sample: None for every input up to `max_len`; else this many seeded
        random inputs.
      seed: the sample's seed.
      min_len: shortest input, BOS not counted.

    Raises:
      ValueError: max_len is larger than the model's max_seq_len.
    """
    limit = model_spec.max_seq_len
    max_len = limit if max_len is None else max_len
    if max_len > limit:
        raise ValueError(f"max_len={max_len} is larger than the model's max_seq_len={limit}.")
    bos = model_spec.input.bos_token
    found = sequences(domain_tokens(model_spec), max_len, min_len=min_len, sample=sample, seed=seed)
    return [[bos, *x] for x in found]


# --------------------------------------------------------------------------
# Helpers.


def check_batch(batch: Any) -> None:
    """Raises TypeError unless `batch` is a list (or tuple) of sequences."""
    if not isinstance(batch, (list, tuple)):
        raise TypeError(
            f"Expected a list of token lists, got {type(batch).__name__}: {batch!r}. "
            "Pass e.g. [[bos, 'a', 'b'], [bos, 'b']]."
        )


def _sequence_starts(lengths: np.ndarray) -> np.ndarray:
    """int64 [B]: where each sequence starts in the flat token stream."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def _typed(token: Value) -> Tuple[bool, Value]:
    return (isinstance(token, (bool, np.bool_)), token)


def _is_number(v: Value) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def _needs_typed_lookup(confusable: Tuple[bool, bool], batch: Sequence[Sequence[Value]]) -> bool:
    """True when a plain dict lookup could map a bool to a number's id or back
    (Python's True == 1): a bool in the batch and a 0/1 number in the vocabulary,
    or a number in the batch and a bool in the vocabulary. One pass over the
    token types, only for vocabularies where it can happen."""
    vocab_bool, vocab_01 = confusable
    if not (vocab_bool or vocab_01):
        return False
    types = set(map(type, itertools.chain.from_iterable(batch)))
    batch_bool = any(issubclass(t, (bool, np.bool_)) for t in types)
    batch_number = any(
        issubclass(t, (int, float, np.number)) and not issubclass(t, (bool, np.bool_))
        for t in types
    )
    return (vocab_01 and batch_bool) or (vocab_bool and batch_number)


def _safe_get(get: Callable[..., int]) -> Callable[[Any], int]:
    def lookup(token):
        try:
            return get(token, NO_VALUE)
        except TypeError:
            return NO_VALUE

    return lookup


def _where(seq: int, pos: Optional[int], n: int) -> str:
    at = "" if pos is None else f"position {pos}"
    if n == 1:
        return at or "Input"
    return f"sequence {seq}" + (f", {at}" if at else "") if at else f"Sequence {seq}"


def _jnp():
    import jax.numpy as jnp  # the codec itself needs no jax

    return jnp
