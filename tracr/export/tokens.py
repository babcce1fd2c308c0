"""Tokens in, decoded values out: the compiled model's codec, for torch exports.

Both torch exports (the plain module and the TransformerLens model) take the
same inputs as `model.apply` (a list starting with the BOS token) and decode
their logits exactly as `apply` does, through the one codec of
`tracr.transformer.inputs`: categorical outputs by argmax over the output
values, None where no output score reaches `spec.ACTIVE_THRESHOLD`;
numerical outputs as logit 0. Batches are padded with PAD, which the
attention mask hides.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Sequence, Tuple

import numpy as np

from tracr.transformer import assembled, inputs
from tracr.transformer import spec as spec_lib


def require_spec(model: assembled.AssembledTransformerModel) -> spec_lib.ModelSpec:
    """`model.spec`, or an error saying where models with a spec come from."""
    if getattr(model, "spec", None) is None:
        raise ValueError(
            "model.spec is None; export a model built by compiling.compile_rasp_to_model "
            "or loaded by tracr.io.load_model."
        )
    if model.spec.layer_norm:
        raise ValueError("model.spec.layer_norm is True; compiled models have no layer norm.")
    return model.spec


@dataclasses.dataclass(frozen=True)
class TokenCodec:
    """Encodes inputs to ids and decodes logits (numpy or torch), as `model.apply` does.

    Encoding is `inputs.Codec.encode` itself, so a bad input or batch raises
    the same exception, with the same message, as `model.apply` /
    `model.apply_batch` (tests/export/test_bad_inputs.py)."""

    codec: inputs.Codec
    categorical: bool

    @classmethod
    def from_spec(cls, spec: spec_lib.ModelSpec) -> "TokenCodec":
        if spec.input.pad_id is None:
            raise ValueError("model.spec.input has no PAD token; compiled models always have one.")
        return cls(inputs.Codec.from_spec(spec), spec.output.categorical)

    @property
    def pad_id(self) -> int:
        return self.codec.pad_id

    def encode(self, tokens: Sequence[Any]) -> List[int]:
        """Ids of one input that starts with BOS.

        Raises:
          TypeError, ValueError: as `model.apply` (the same `inputs.Codec`
            check, the same messages): `tokens` is not a list or tuple, or is
            empty, lacks BOS, holds BOS or PAD after position 0, an unknown
            token, or more than max_seq_len + 1 tokens.
        """
        return self.codec.encode([tokens]).ids[0].tolist()

    def encode_batch(self, batch: Sequence[Sequence[Any]]) -> Tuple[np.ndarray, List[int]]:
        """[B, T] int64 ids, right-padded with PAD, and the length of each input.

        An empty batch gives ids of shape [0, 0] and no lengths (`apply_batch([])`
        returns []).

        Raises:
          TypeError, ValueError: as `model.apply_batch`: `batch` is not a
            list or tuple of lists or tuples, or a sequence is
            bad as in `encode` (the message names the sequence).
        """
        encoded = self.codec.encode(batch)
        return encoded.ids.astype(np.int64), encoded.lengths.tolist()

    def keep_mask(self, token_ids):
        """True where a position may be attended to (every position but PAD)."""
        return token_ids != self.pad_id

    def decode(self, logits) -> List[Any]:
        """Decoded values of one sequence of logits [T, O]; position 0 is the BOS token."""
        logits = np.asarray(logits.detach().float().cpu() if hasattr(logits, "detach") else logits)
        raw = inputs.categorical_ids(logits) if self.categorical else logits[..., 0]
        return self.codec.decode(raw[None], np.array([len(raw)]))[0]
