"""The inputs a circuit is checked on: every input of a small domain, or a seeded sample.

An input is a token sequence without BOS, over the model's vocabulary (BOS
and PAD excluded), of length 1..max_seq_len. `encode` pads a list of them
with PAD into one [B, T] id array (T = the longest + 1 for BOS), which the
masked attention makes equivalent to running each alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from tracr.transformer import inputs as inputs_lib
from tracr.transformer import spec as spec_lib


@dataclasses.dataclass(frozen=True)
class Domain:
    """Inputs (without BOS) and whether they are all the inputs up to max_seq_len."""

    inputs: Tuple[Tuple[Any, ...], ...]
    exhaustive: bool

    def __len__(self) -> int:
        return len(self.inputs)


def vocabulary(model_spec: spec_lib.ModelSpec) -> List[Any]:
    """The input tokens, in id order, without BOS and PAD."""
    inp = model_spec.input
    return [t for i, t in enumerate(inp.tokens) if i not in (inp.bos_id, inp.pad_id)]


def make_domain(
    model_spec: spec_lib.ModelSpec,
    *,
    max_seq_len: Optional[int] = None,
    max_exhaustive: int = 2_000,
    num_samples: int = 300,
    seed: int = 0,
) -> Domain:
    """All inputs up to `max_seq_len` (default: the model's) if there are at most
    `max_exhaustive`, else `num_samples` distinct seeded samples (lengths uniform).

    Raises:
      ValueError: max_seq_len is not in 1..the model's max_seq_len.
    """
    longest = model_spec.max_seq_len
    n = longest if max_seq_len is None else max_seq_len
    if not 1 <= n <= longest:
        raise ValueError(f"max_seq_len must be in 1..{longest} (the model's), got {n}.")
    vocab = vocabulary(model_spec)
    total = sum(len(vocab) ** k for k in range(1, n + 1))
    if total <= max_exhaustive:
        return Domain(tuple(inputs_lib.sequences(vocab, n)), True)
    # Distinct draws from the shared seeded sampler (the same stream as before).
    seen, inputs = set(), []
    wanted = min(num_samples, total)
    for x in inputs_lib.sequences(vocab, n, sample=1000 * wanted, seed=seed):
        key = tuple(vocab.index(t) for t in x)
        if key not in seen:
            seen.add(key)
            inputs.append(x)
            if len(inputs) == wanted:
                break
    return Domain(tuple(inputs), False)


def encode(model_spec: spec_lib.ModelSpec, inputs: Sequence[Sequence[Any]]) -> np.ndarray:
    """[B, T] int32 ids: BOS, the tokens, then PAD up to the longest input.

    Raises:
      ValueError: a token is not in the vocabulary, or the model has no BOS/PAD.
    """
    inp = model_spec.input
    if inp.bos_id is None or inp.pad_id is None:
        raise ValueError("circuits need a model compiled with a BOS and a PAD token.")
    width = 1 + max((len(x) for x in inputs), default=0)
    ids = np.full((len(inputs), width), inp.pad_id, dtype=np.int32)
    ids[:, 0] = inp.bos_id
    for b, x in enumerate(inputs):
        ids[b, 1 : 1 + len(x)] = [inp.token_id(t) for t in x]
    return ids


def real_positions(model_spec: spec_lib.ModelSpec, ids: np.ndarray) -> np.ndarray:
    """[B, T] bool: positions holding a token (BOS included), not PAD."""
    return np.asarray(ids) != model_spec.input.pad_id
