"""Attribution patching at edge level, in JAX on the compiled model.

The linear estimate of what patching an edge A -> B.slot from a corrupted
input into a clean one does to a metric L (Syed et al., "Attribution
Patching Outperforms Automated Circuit Discovery")::

    score(A -> B.slot) = (c_A(corrupted) - c_A(clean)) . dL/d(input of B.slot) at clean

with c_A A's contribution to the residual stream. One forward and one
backward pass give every edge's score. L is the logit difference between
the clean and the corrupted answer (temperature-scaled logits, at positions
where the answers differ) for a categorical output, and the output moved
towards the corrupted value for a numerical one; both are linear in the
unembedding's input, so edges into the unembedding are scored exactly.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tracr.circuits import domain as domain_lib
from tracr.circuits import forward, metrics

Pair = Tuple[str, str, str]


class _Runs:
    """The clean and corrupted runs, and L per input [N] as a function of additions."""

    def __init__(self, model: Any, clean, corrupted, temperature: float):
        if len(clean) != len(corrupted) or any(len(a) != len(b) for a, b in zip(clean, corrupted)):
            raise ValueError("clean[i] and corrupted[i] must have the same length, for every i.")
        self.weights = w = forward.weights_of(model)
        self.ids = jnp.asarray(domain_lib.encode(w.spec, clean))
        self.clean = forward.run(w, self.ids)
        self.corrupt = forward.run(w, jnp.asarray(domain_lib.encode(w.spec, corrupted)))
        out = np.asarray(self.clean.out[forward.UNEMBED])
        self.active = jnp.asarray(metrics.active_positions(w.spec, np.asarray(self.ids), out))
        self.temperature = temperature

    def delta(self, parent: str) -> jax.Array:
        """[N, T, D] the parent's corrupted minus clean contribution."""
        return self.corrupt.out[parent] - self.clean.out[parent]

    def metric(self, add: Dict[Tuple[str, str], jax.Array]) -> jax.Array:
        z = forward.run(self.weights, self.ids, add=add).out[forward.UNEMBED]
        clean_out = self.clean.out[forward.UNEMBED]
        corrupt_out = self.corrupt.out[forward.UNEMBED]
        if self.weights.spec.output.categorical:
            z = z / self.temperature
            a_clean = jnp.argmax(clean_out, axis=-1)[..., None]
            a_corrupt = jnp.argmax(corrupt_out, axis=-1)[..., None]
            where = self.active & (a_clean[..., 0] != a_corrupt[..., 0])
            diff = jnp.take_along_axis(z, a_clean, -1) - jnp.take_along_axis(z, a_corrupt, -1)
            diff = diff[..., 0]
        else:
            where = self.active
            diff = ((clean_out - corrupt_out) * z).sum(axis=-1)
        return jnp.where(where, diff, 0.0).sum(axis=1) / jnp.maximum(where.sum(axis=1), 1)


def edge_scores(
    model: Any,
    clean: Sequence[Sequence[Any]],
    corrupted: Sequence[Sequence[Any]],
    pairs: Sequence[Pair],
    *,
    temperature: float = 1.0,
) -> Dict[Pair, np.ndarray]:
    """Per edge, the attribution score on each (clean, corrupted) input pair: [N] arrays.

    Args:
      model: a compiled model.
      clean, corrupted: inputs without BOS; `clean[i]` and `corrupted[i]`
        have the same length.
      pairs: the (parent, child, slot) edges to score.
      temperature: for categorical outputs (see `metrics.certified_temperature`).

    Raises:
      ValueError: a clean and a corrupted input differ in length.
    """
    runs = _Runs(model, clean, corrupted, temperature)
    inputs = sorted({(child, slot) for _, child, slot in pairs})
    zeros = {key: jnp.zeros_like(runs.clean.inputs[key[0]]) for key in inputs}
    grads = jax.grad(lambda add: runs.metric(add).sum())(zeros)
    return {
        (parent, child, slot): np.asarray(
            (runs.delta(parent) * grads[(child, slot)]).sum(axis=(1, 2))
        )
        for parent, child, slot in pairs
    }


def edge_patching(
    model: Any, clean, corrupted, pairs: Sequence[Pair], *, temperature: float = 1.0
) -> Dict[Pair, np.ndarray]:
    """Per edge, [N] the exact change of L when only its child's input reads the
    parent's corrupted contribution (activation patching of one edge, the rest of
    the model run on): what `edge_scores` estimates to first order."""
    runs = _Runs(model, clean, corrupted, temperature)
    base = runs.metric({})
    return {
        (parent, child, slot): np.asarray(runs.metric({(child, slot): runs.delta(parent)}) - base)
        for parent, child, slot in pairs
    }
