"""Edge ablation on the real model: what replacing A's contribution to B's input does to B.

For pairs (A, B.slot) with A earlier than B, A's contribution is removed from
B's input and replaced, on every input of a domain,

- by zero (zero ablation), and
- by A's contribution on another input of the same length (resample
  ablation; the other input is a seeded derangement within each length),

and B's output is compared with the clean one at every real (non-PAD)
position. Only that input changes: the other inputs of a head stay clean.
`graph.circuit` uses this to drop wired edges that have no effect on the
domain; `verify` uses it on every pair.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tracr.circuits import domain as domain_lib
from tracr.circuits import forward

ABLATIONS = ("zero", "resample")

Pair = Tuple[str, str, str]  # (parent, child, slot)


@dataclasses.dataclass(frozen=True)
class Effect:
    """`changed[a]`: inputs on which ablation `ABLATIONS[a]` changed the child's
    output by more than the tolerance; `max_effect`: the largest change."""

    changed: Tuple[int, ...]
    max_effect: float

    @property
    def any(self) -> bool:
        return any(self.changed)


def resample_partner(inputs: Sequence[Sequence], seed: int = 0) -> np.ndarray:
    """[B] index of another input of the same length for each input (itself if alone)."""
    rng = random.Random(seed)
    by_length: Dict[int, List[int]] = {}
    for b, x in enumerate(inputs):
        by_length.setdefault(len(x), []).append(b)
    partner = np.arange(len(inputs))
    for group in by_length.values():
        order = list(group)
        rng.shuffle(order)
        for i, b in enumerate(order):
            partner[b] = order[(i + 1) % len(order)]
    return partner


def _kind(child: str) -> str:
    if child == forward.UNEMBED:
        return "unembed"
    return "mlp" if child.startswith("mlp ") else "head"


def child_output(
    weights: forward.Weights, child: str, slot: str, x: jax.Array, trace: forward.Trace
) -> jax.Array:
    """Node `child`'s output [P, B, T, *] when input `slot` reads `x` [P, B, T, D]."""
    kind = _kind(child)
    if kind == "head":
        xs = {s: x if s == slot else trace.inputs[child] for s in forward.HEAD_SLOTS}
        return forward.head(weights.heads[child], xs["q"], xs["k"], xs["v"], trace.mask)
    if kind == "mlp":
        return forward.mlp(weights.mlps[child], x)
    return x @ weights.unembed


def effects(
    weights: forward.Weights,
    domain: domain_lib.Domain,
    pairs: Sequence[Pair],
    *,
    atol: float = 1e-4,
    seed: int = 0,
) -> Dict[Pair, Effect]:
    """The effect of zero and resample ablation of each pair on `domain`.

    Runs in numpy or JAX as `weights` (see `forward.weights_of`).
    """
    ids = domain_lib.encode(weights.spec, domain.inputs)
    real = domain_lib.real_positions(weights.spec, ids)
    if not isinstance(weights.token_embed, np.ndarray):
        ids = jnp.asarray(ids)
    trace = forward.run(weights, ids)
    partner = resample_partner(domain.inputs, seed)
    grouped: Dict[Tuple[str, str], List[str]] = {}
    for parent, child, slot in pairs:
        grouped.setdefault((child, slot), []).append(parent)
    result: Dict[Pair, Effect] = {}
    for (child, slot), parents in grouped.items():
        contributions = np.stack([np.asarray(trace.out[p]) for p in parents])  # [P, B, T, D]
        base = trace.inputs[child]
        changed, largest = [], []
        for ablation in ABLATIONS:
            replacement = 0.0 if ablation == "zero" else contributions[:, partner]
            x = base - contributions + replacement
            x = np.concatenate([np.asarray(base)[None], x])  # clean output in the same call
            y = np.asarray(child_output(weights, child, slot, x, trace))
            diff = np.abs(y[1:] - y[:1])  # [P, B, T, F]
            diff = np.max(np.where(real[None, :, :, None], diff, 0.0), axis=(2, 3))
            changed.append(np.sum(diff > atol, axis=1))
            largest.append(np.max(diff, axis=1))
        for i, parent in enumerate(parents):
            result[(parent, child, slot)] = Effect(
                changed=tuple(int(c[i]) for c in changed),
                max_effect=float(max(e[i] for e in largest)),
            )
    return result
