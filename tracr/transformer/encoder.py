"""Encoders between user-facing values and the integer/float ids a model consumes.

A compiled model reads token ids and writes either ids (categorical output,
decoded through the output space's basis) or raw magnitudes (numerical
output). Encoders own the checks a user trips over first: unknown tokens,
missing BOS, sequences longer than the model was compiled for.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, List, Optional, Sequence

from tracr.craft import bases
from tracr.transformer import inputs


class Encoder(abc.ABC):
    """Maps between user values and model inputs/outputs."""

    @abc.abstractmethod
    def encode(self, inputs: List[Any]) -> List[Any]:
        """Encodes a sequence of values."""

    @abc.abstractmethod
    def decode(self, encodings: List[Any]) -> List[Any]:
        """Decodes a sequence of encodings."""

    @property
    def pad_token(self) -> Optional[str]:
        return None

    @property
    def bos_token(self) -> Optional[str]:
        return None

    @property
    def pad_encoding(self) -> Optional[int]:
        return None

    @property
    def bos_encoding(self) -> Optional[int]:
        return None


class NumericalEncoder(Encoder):
    """Identity encoder for numerical values (outputs are magnitudes)."""

    def encode(self, inputs: List[float]) -> List[float]:
        return list(inputs)

    def decode(self, encodings: List[float]) -> List[float]:
        return list(encodings)


class CategoricalEncoder(Encoder):
    """Maps values to the index of their basis direction, and back."""

    def __init__(
        self,
        basis: Sequence[bases.BasisDirection],
        enforce_bos: bool = False,
        bos_token: Optional[str] = None,
        pad_token: Optional[str] = None,
        max_seq_len: Optional[int] = None,
    ):
        if enforce_bos and bos_token is None:
            raise ValueError("enforce_bos=True needs a bos_token.")
        self._basis = list(basis)
        self.encoding_map = {d.value: i for i, d in enumerate(self._basis)}
        self.decoding_map = {i: d.value for i, d in enumerate(self._basis)}
        self._enforce_bos = enforce_bos
        self._bos_token = bos_token
        self._pad_token = pad_token
        self._max_seq_len = max_seq_len
        for kind, name, token in (("BOS", "bos_token", bos_token), ("PAD", "pad_token", pad_token)):
            if token is not None and token not in self.encoding_map:
                raise ValueError(
                    f"{kind} token missing in encoding. ({name}={token!r} is not in the "
                    f"encoder's basis; add its direction to the basis.)"
                )

    def encode(self, inputs: List[bases.Value]) -> List[int]:
        """Encodes a token sequence, checking BOS, length and vocabulary.

        With a BOS token enforced this is `tracr.transformer.inputs.Codec.encode`
        on one sequence, the checks every batch path runs.

        Raises:
          ValueError: the first token is not BOS (when enforced), BOS or PAD
            appear after position 0, the sequence is longer than max_seq_len
            (BOS included), or a token is unknown.
        """
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"Expected a list of tokens, got {type(inputs).__name__}: {inputs!r}.")
        if self._enforce_bos:
            return self.codec.encode([inputs]).ids[0].tolist()
        if self._max_seq_len is not None and len(inputs) > self._max_seq_len:
            raise ValueError(
                f"Input has {len(inputs)} tokens (BOS included) but the model was compiled for at "
                f"most {self._max_seq_len} (max_seq_len={self._max_seq_len - 1} plus BOS)."
            )
        unknown = [x for x in inputs if x not in self.encoding_map or _is_bool_mismatch(x, self)]
        if unknown:
            known = sorted((str(v) for v in self.encoding_map), key=str)
            raise ValueError(
                f"Inputs {set(unknown)} not found in encoding. Unknown tokens {unknown!r}; "
                f"the vocabulary is {known}."
            )
        return [self.encoding_map[x] for x in inputs]

    @functools.cached_property
    def codec(self) -> "inputs.Codec":
        """The vectorised encoder of this vocabulary (inputs only: outputs decode as floats)."""
        return inputs.Codec(
            tokens=tuple(self.decoding_map[i] for i in range(len(self._basis))),
            bos_token=self._bos_token,
            pad_token=self._pad_token,
            max_len=self._max_seq_len if self._max_seq_len is not None else 1 << 30,
            output_values=None,
        )

    @property
    def max_seq_len(self) -> Optional[int]:
        """The longest input, BOS included (None: unlimited)."""
        return self._max_seq_len

    def decode(self, encodings: List[int]) -> List[bases.Value]:
        """Decodes ids back to values."""
        try:
            return [self.decoding_map[int(x)] for x in encodings]
        except KeyError as e:
            raise ValueError(
                f"Inputs {{{e.args[0]}}} not found in decoding map. Cannot decode id "
                f"{e.args[0]}: valid ids are 0..{len(self._basis) - 1}."
            ) from None

    @property
    def vocab_size(self) -> int:
        return len(self._basis)

    @property
    def bos_token(self) -> Optional[str]:
        return self._bos_token

    @property
    def pad_token(self) -> Optional[str]:
        return self._pad_token

    @property
    def bos_encoding(self) -> Optional[int]:
        return None if self._bos_token is None else self.encoding_map[self._bos_token]

    @property
    def pad_encoding(self) -> Optional[int]:
        return None if self._pad_token is None else self.encoding_map[self._pad_token]


def _is_bool_mismatch(x: Any, encoder: CategoricalEncoder) -> bool:
    """True for a token that only matches by Python's 1 == True equality."""
    if x not in encoder.encoding_map:
        return False
    stored = encoder.decoding_map[encoder.encoding_map[x]]
    return isinstance(x, bool) != isinstance(stored, bool)
