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
import itertools
import math
import random
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from tracr.compiler import assemble, validating
from tracr.rasp import rasp

NUMERICAL_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class Mismatch:
    inputs: tuple
    position: int
    expected: Any
    got: Any


def all_inputs(vocab: Iterable[Any], max_seq_len: int, min_len: int = 1) -> Iterator[tuple]:
    """Every sequence over vocab of length min_len..max_seq_len (sorted vocab)."""
    tokens = sorted(vocab, key=repr)
    for length in range(min_len, max_seq_len + 1):
        yield from itertools.product(tokens, repeat=length)


def sample_inputs(
    vocab: Iterable[Any], max_seq_len: int, num: int, seed: int = 0, min_len: int = 1
) -> List[tuple]:
    """`num` random sequences with uniformly random lengths (seeded)."""
    rng = random.Random(seed)
    tokens = sorted(vocab, key=repr)
    return [
        tuple(rng.choice(tokens) for _ in range(rng.randint(min_len, max_seq_len)))
        for _ in range(num)
    ]


def decode_batch(
    model: assemble.AssembledTransformerModel, inputs: Sequence[Sequence[Any]]
) -> List[List[Any]]:
    """Decoded outputs (BOS position dropped) for equal-length inputs."""
    bos = model.input_encoder.bos_token
    ids = np.array([model.input_encoder.encode([bos, *x]) for x in inputs], dtype=np.int32)
    out = model.forward(model.params, jnp.asarray(ids))
    unembedded = np.asarray(out.unembedded_output)
    return [model.output_encoder.decode(row.tolist())[1:] for row in unembedded]


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
