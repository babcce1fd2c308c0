"""Tokens in, decoded values out: the encoders of a compiled model, for torch exports.

Both torch exports (the plain module and the TransformerLens model) take the
same inputs as `model.apply` (a list starting with the BOS token) and decode
their logits exactly as `apply` does: categorical outputs by argmax over the
output values, numerical outputs as logit 0. Batches are padded with PAD,
which the attention mask hides.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Sequence, Tuple

import numpy as np

from tracr.transformer import assembled, encoder
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
    """Encodes inputs to ids and decodes logits, as `model.apply` does."""

    input_encoder: encoder.CategoricalEncoder
    output_encoder: encoder.Encoder
    categorical: bool
    pad_id: int

    @classmethod
    def from_spec(cls, spec: spec_lib.ModelSpec) -> "TokenCodec":
        input_encoder, output_encoder = assembled.encoders_from_spec(spec)
        if spec.input.pad_id is None:
            raise ValueError("model.spec.input has no PAD token; compiled models always have one.")
        return cls(input_encoder, output_encoder, spec.output.categorical, spec.input.pad_id)

    def encode(self, tokens: Sequence[Any]) -> List[int]:
        """Ids of one input that starts with BOS (errors as `model.apply`)."""
        return self.input_encoder.encode(list(tokens))

    def encode_batch(self, batch: Sequence[Sequence[Any]]) -> Tuple[np.ndarray, List[int]]:
        """[B, T] ids, right-padded with PAD, and the length of each input."""
        if not batch:
            raise ValueError("batch is empty; give at least one input.")
        rows = [self.encode(tokens) for tokens in batch]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        return ids, [len(r) for r in rows]

    def keep_mask(self, token_ids):
        """True where a position may be attended to (every position but PAD)."""
        return token_ids != self.pad_id

    def decode(self, logits) -> List[Any]:
        """Decoded values of one sequence of logits [T, O]; position 0 is the BOS token."""
        logits = np.asarray(logits.detach().float().cpu() if hasattr(logits, "detach") else logits)
        raw = logits.argmax(-1) if self.categorical else logits[..., 0]
        decoded = self.output_encoder.decode(raw.tolist())
        decoded[0] = self.input_encoder.bos_token
        return decoded
