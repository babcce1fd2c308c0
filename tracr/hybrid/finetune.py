"""Fine-tuning compiled weights: gradient steps on the lean forward pass.

A compiled model's lean weights (`model.lean_weights()`) are a pytree of
arrays, and `fast.scores` is differentiable in them, so the compiled model is
an ordinary initialisation for optax::

    lean, losses = finetune.finetune(model.lean_weights(), token_ids, targets, steps=50)
    fast.decode(lean, token_ids)

Targets are output ids (categorical programs, cross-entropy on the scores)
or values (numerical programs, squared error), with -1 / NaN where a position
carries no target (BOS, padding). What moves: every dense array of the lean
weights (embedding table, dense projections, biases, scales). What stays: the
structure, including factors the lean builder stored as gathers (a selection
matrix is kept as indices), so fine-tuning adjusts the program's numbers, not
which directions it reads.
"""

from __future__ import annotations

from typing import List, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tracr.hybrid import training
from tracr.transformer import fast


def loss(weights: fast.LeanWeights, token_ids: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean loss over positions with a target (see the module docstring)."""
    out = fast.scores(weights, token_ids)
    if weights.categorical_output:
        return training.cross_entropy(out, targets)
    labelled = ~jnp.isnan(targets)
    err = jnp.where(labelled, out[..., 0] - jnp.nan_to_num(targets), 0.0)
    return jnp.sum(err**2) / jnp.maximum(jnp.sum(labelled), 1)


def finetune(
    weights: fast.LeanWeights,
    token_ids,
    targets,
    *,
    steps: int,
    learning_rate: float = 1e-3,
) -> Tuple[fast.LeanWeights, List[float]]:
    """Full-batch Adam steps on `loss`, starting from the compiled `weights`.

    Args:
      weights: lean weights (`model.lean_weights()`), the initialisation.
      token_ids: [N, T] int ids (BOS first, PAD after the end).
      targets: [N, T] output ids (-1: none) or float values (NaN: none).
      steps: optimizer steps.
      learning_rate: Adam's.

    Returns:
      (new lean weights, the loss before each step).

    Raises:
      ValueError: token_ids and targets differ in shape.
    """
    import optax  # the `train` extra

    token_ids = jnp.asarray(token_ids, dtype=jnp.int32)
    dtype = jnp.int32 if weights.categorical_output else jnp.float32
    targets = jnp.asarray(targets, dtype=dtype)
    if token_ids.shape != targets.shape:
        raise ValueError(
            f"token_ids {token_ids.shape} and targets {targets.shape} must have the same shape."
        )
    optimizer = optax.adam(learning_rate)

    @jax.jit
    def step(weights, opt_state):
        value, grads = jax.value_and_grad(loss)(weights, token_ids, targets)
        updates, opt_state = optimizer.update(grads, opt_state, weights)
        return optax.apply_updates(weights, updates), opt_state, value

    opt_state = optimizer.init(weights)
    losses = []
    for _ in range(steps):
        weights, opt_state, value = step(weights, opt_state)
        losses.append(value)
    return weights, [float(x) for x in np.asarray(jax.device_get(losses))]
