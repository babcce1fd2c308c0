"""Check a compiled model against the RASP evaluator, the compiler's oracle.

`find_mismatches` runs the model on many inputs (grouped by length, one
jit-compiled batch per length) and compares each decoded position with
the RASP evaluator (causal for causal models; run as dynamic validation, so
that what the model can't reproduce, such as a categorical Aggregate averaging
several values, is None). Positions where that gives None are not compared:
the model has no 'no value'.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from tracr.compiler import assemble, validating
from tracr.rasp import rasp
from tracr.transformer import inputs as inputs_lib

NUMERICAL_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class Mismatch:
    inputs: tuple
    position: int
    expected: Any
    got: Any


def all_inputs(vocab: Iterable[Any], max_seq_len: int, min_len: int = 1) -> Iterator[tuple]:
    """Every sequence over vocab of length min_len..max_seq_len (sorted vocab)."""
    return inputs_lib.sequences(sorted(vocab, key=repr), max_seq_len, min_len=min_len)


def sample_inputs(
    vocab: Iterable[Any], max_seq_len: int, num: int, seed: int = 0, min_len: int = 1
) -> List[tuple]:
    """`num` random sequences with uniformly random lengths (seeded)."""
    tokens = sorted(vocab, key=repr)
    return list(inputs_lib.sequences(tokens, max_seq_len, min_len=min_len, sample=num, seed=seed))


def decode_batch(
    model: assemble.AssembledTransformerModel, inputs: Sequence[Sequence[Any]]
) -> List[List[Any]]:
    """Decoded outputs (BOS position dropped) for inputs (BOS not included).

    Runs `model.forward` through `tracr.transformer.inputs.run_batch`, the
    path `apply` takes; categorical positions that no output direction
    reaches decode as None where the model has an `unembed_matrix`.
    """
    enc = model.input_encoder
    max_len = getattr(enc, "max_seq_len", None) or 1 + max(map(len, inputs), default=0)
    codec = inputs_lib.Codec.from_encoders(enc, model.output_encoder, max_len)
    unembed = getattr(model, "unembed_matrix", None)

    def forward(ids: np.ndarray) -> np.ndarray:
        out = model.forward(model.params, jnp.asarray(ids))
        residual = out.transformer_output.output
        if codec.output_values is None or unembed is None or residual.shape[-1] != len(unembed):
            return np.asarray(out.unembedded_output)
        return inputs_lib.categorical_ids(np.asarray(residual, dtype=np.float32) @ unembed)

    rows = inputs_lib.run_batch(codec, forward, [[enc.bos_token, *x] for x in inputs])
    return [row[1:] for row in rows]


def _values_equal(expected: Any, got: Any, numerical: bool) -> bool:
    if numerical:
        return math.isclose(float(expected), float(got), abs_tol=NUMERICAL_TOLERANCE)
    return expected == got


def find_mismatches(
    model: assemble.AssembledTransformerModel,
    program: rasp.SOp,
    inputs: Iterable[Sequence[Any]],
    causal: bool = False,
    max_batch: int = 4096,
) -> List[Mismatch]:
    """Every (input, position) where the model disagrees with the evaluator."""
    evaluator = (
        validating.CausalDynamicValidationEvaluator
        if causal
        else validating.DynamicValidationEvaluator
    )
    numerical = rasp.is_numerical(program)
    by_length: Dict[int, List[tuple]] = {}
    for x in inputs:
        by_length.setdefault(len(x), []).append(tuple(x))
    mismatches: List[Mismatch] = []
    for length in sorted(by_length):
        group = by_length[length]
        for start in range(0, len(group), max_batch):
            chunk = group[start : start + max_batch]
            for x, got in zip(chunk, decode_batch(model, chunk)):
                # None (not compared) where the model can't reproduce the evaluator,
                # e.g. a categorical Aggregate that averages several values.
                expected = evaluator().evaluate(program, list(x))
                for pos, (e, g) in enumerate(zip(expected, got)):
                    if e is not None and not _values_equal(e, g, numerical):
                        mismatches.append(Mismatch(x, pos, e, g))
    return mismatches


def first_mismatches(mismatches: List[Mismatch], limit: int = 5) -> Optional[str]:
    """A readable summary of the first few mismatches (None when there are none)."""
    if not mismatches:
        return None
    lines = [f"{len(mismatches)} mismatching positions, e.g.:"]
    for m in mismatches[:limit]:
        lines.append(
            f"  input={list(m.inputs)} position={m.position} expected={m.expected!r} got={m.got!r}"
        )
    return "\n".join(lines)
