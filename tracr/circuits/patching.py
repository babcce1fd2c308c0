"""Patching data: clean/corrupted input pairs on which patching a node is visible.

`patching_pairs(model, node, n, seed)` draws pairs of inputs of the same
length from the model's domain such that

- the node's value (its contribution to the residual stream) differs
  between them,
- the model's output differs between them, and
- running the clean input with the node's value taken from the corrupted
  one changes the output,

so an activation-patching experiment on the node has something to see.
"""

from __future__ import annotations

import random
from typing import Any, List, Optional, Tuple

import numpy as np

from tracr.circuits import domain as domain_lib
from tracr.circuits import forward
from tracr.transformer import assembled

_BATCH = 256


def patching_pairs(
    model: assembled.AssembledTransformerModel,
    node: str,
    n: int,
    seed: int = 0,
    *,
    domain: Optional[domain_lib.Domain] = None,
    atol: float = 1e-4,
    max_tries: int = 20_000,
) -> List[Tuple[Tuple[Any, ...], Tuple[Any, ...]]]:
    """Up to `n` (clean, corrupted) pairs of BOS-prefixed inputs for patching `node`.

    Fewer are returned when the domain (or `max_tries` seeded candidates)
    holds fewer.

    Raises:
      ValueError: `node` is not a node of the model (`embed`, `L.H`, `mlp L`).
    """
    weights = forward.weights_of(model, numpy=True)
    if node not in weights.order or node == forward.UNEMBED:
        raise ValueError(f"node must be one of {list(weights.order[:-1])}, got {node!r}.")
    if domain is None:
        domain = domain_lib.make_domain(weights.spec, seed=seed)
    rng = random.Random(seed)
    by_length = {}
    for x in domain.inputs:
        by_length.setdefault(len(x), []).append(x)
    groups = [g for g in by_length.values() if len(g) > 1]
    candidates = []
    for _ in range(max_tries if groups else 0):
        group = rng.choice(groups)
        a, b = rng.sample(range(len(group)), 2)
        candidates.append((group[a], group[b]))
    candidates = list(dict.fromkeys(candidates))
    bos = weights.spec.input.bos_token
    found: List[Tuple[Tuple[Any, ...], Tuple[Any, ...]]] = []
    for start in range(0, len(candidates), _BATCH):
        chunk = candidates[start : start + _BATCH]
        for length in sorted({len(c) for c, _ in chunk}):
            same = [p for p in chunk if len(p[0]) == length]
            clean_ids = domain_lib.encode(weights.spec, [c for c, _ in same])
            corrupt_ids = domain_lib.encode(weights.spec, [k for _, k in same])
            clean = forward.run(weights, clean_ids)
            corrupt = forward.run(weights, corrupt_ids)
            patched = forward.run(weights, clean_ids, replace={node: corrupt.out[node]})

            def differs(x, y):
                return np.max(np.abs(x - y), axis=(1, 2)) > atol

            keep = (
                differs(clean.out[node], corrupt.out[node])
                & differs(clean.out[forward.UNEMBED], corrupt.out[forward.UNEMBED])
                & differs(clean.out[forward.UNEMBED], patched.out[forward.UNEMBED])
            )
            found += [((bos, *c), (bos, *k)) for (c, k), ok in zip(same, keep) if ok]
        if len(found) >= n:
            break
    return found[:n]
