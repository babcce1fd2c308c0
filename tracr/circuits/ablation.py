"""Edge ablation on the real model: what replacing A's contribution to B's input does to B.

For pairs (A, B.slot) with A earlier than B, A's contribution is removed from
B's input and replaced, on every input of a domain,

- by zero (zero ablation), and
- by A's contribution on another input of the same length (resample
  ablation; the other input is a seeded derangement within each length),

and B's output is compared with the clean one at every real position after
BOS (neither PAD nor BOS). Only that input changes: the other inputs of a head
stay clean. A may also be one term of the embedding, `forward.embed_part`
(`embed.token` or `embed.position`): then only that term is replaced.

Decoding never reads the BOS position, so a change of B's output there
matters only if it travels on: later heads may attend to BOS and carry it to
other positions. A pair whose only local effect is at BOS is therefore also
ablated end to end (B's input changed as above, every later node run on what
follows), and counts only if the model's output changes at a position after
BOS. A pair *matters* if it does one of the two; an edge is in the circuit
iff it matters.

`graph.circuit` uses this to drop wired edges that have no effect on the
domain, and to find which embedding parts of an edge from `embed` matter;
`verify` uses it on every pair and part.
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
    """What ablating one pair did, per ablation `ABLATIONS[a]`.

    Attributes:
      changed: `changed[a]`, the inputs on which the child's output changed by
        more than the tolerance at some position after BOS.
      max_effect: the largest such change.
      bos_changed: the inputs on which the child's output changed at BOS.
      output_changed: for a pair whose local effect is at BOS only, the inputs
        on which the model's output (the unembedding's) changed at some
        position after BOS when the ablation ran end to end; zeros otherwise.
    """

    changed: Tuple[int, ...]
    max_effect: float
    bos_changed: Tuple[int, ...] = ()
    output_changed: Tuple[int, ...] = ()

    @property
    def any(self) -> bool:
        """Whether the pair matters for the model's outputs (see the module docstring)."""
        return any(self.changed) or any(self.output_changed)

    @property
    def through_bos(self) -> bool:
        """Whether it matters only through a change at BOS that later nodes carry on."""
        return not any(self.changed) and any(self.output_changed)


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
    after_bos = real.copy()
    after_bos[:, 0] = False
    at_bos = real & ~after_bos
    numpy = isinstance(weights.token_embed, np.ndarray)
    if not numpy:
        ids = jnp.asarray(ids)
    trace = forward.run(weights, ids)
    clean_output = np.asarray(trace.out[forward.UNEMBED])
    partner = resample_partner(domain.inputs, seed)
    grouped: Dict[Tuple[str, str], List[str]] = {}
    for parent, child, slot in pairs:
        grouped.setdefault((child, slot), []).append(parent)

    def count(diff: np.ndarray, where: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """[P, B, T, F] -> per pair: inputs changed beyond atol at `where`, largest change."""
        diff = np.max(np.where(where[None, :, :, None], diff, 0.0), axis=(2, 3))
        return np.sum(diff > atol, axis=1), np.max(diff, axis=1)

    result: Dict[Pair, Effect] = {}
    for (child, slot), parents in grouped.items():
        contributions = np.stack([np.asarray(trace.out[p]) for p in parents])  # [P, B, T, D]
        base = np.asarray(trace.inputs[child])
        changed, largest, bos, deltas = [], [], [], []
        for ablation in ABLATIONS:
            replacement = 0.0 if ablation == "zero" else contributions[:, partner]
            delta = replacement - contributions
            x = np.concatenate([base[None], base + delta])  # clean output in the same call
            y = np.asarray(child_output(weights, child, slot, x, trace))
            diff = np.abs(y[1:] - y[:1])  # [P, B, T, F]
            n, m = count(diff, after_bos)
            changed.append(n)
            largest.append(m)
            bos.append(count(diff, at_bos)[0])
            deltas.append(delta)
        for i, parent in enumerate(parents):
            through = [0] * len(ABLATIONS)
            if not any(c[i] for c in changed) and child != forward.UNEMBED:
                for a, delta in enumerate(deltas):
                    if bos[a][i]:
                        through[a] = _output_changes(
                            weights, ids, (child, slot), delta[i], clean_output, after_bos, atol
                        )
            result[(parent, child, slot)] = Effect(
                changed=tuple(int(c[i]) for c in changed),
                max_effect=float(max(e[i] for e in largest)),
                bos_changed=tuple(int(b[i]) for b in bos),
                output_changed=tuple(through),
            )
    return result


def _output_changes(weights, ids, key, delta, clean_output, where, atol) -> int:
    """Inputs on which adding `delta` to input `key` changes the model's output at `where`."""
    if not isinstance(weights.token_embed, np.ndarray):
        delta = jnp.asarray(delta)
    out = np.asarray(forward.run(weights, ids, add={key: delta}).out[forward.UNEMBED])
    diff = np.where(where[:, :, None], np.abs(out - clean_output), 0.0)
    return int(np.sum(np.max(diff, axis=(1, 2)) > atol))


def output_without(
    weights: forward.Weights, token_ids: np.ndarray, pairs: Sequence[Pair]
) -> np.ndarray:
    """The model's output [B, T, O] with every pair in `pairs` zero-ablated at once.

    Each child input reads the residual less what its listed parents write in
    this very run (so ablations compose: a parent changed by an earlier cut
    is removed as changed).
    """
    cut: Dict[Tuple[str, str], List[str]] = {}
    for parent, child, slot in pairs:
        cut.setdefault((child, slot), []).append(parent)
    return forward.run(weights, token_ids, cut=cut).out[forward.UNEMBED]
