"""Training a hybrid: optax, the compiled groups frozen, jit, batches over the mesh.

    params, history = training.train(hspec, params, sampler, steps=1000, seed=0)

`sampler(rng, batch_size) -> (token_ids [B, T], targets [B, T])` draws a batch
(numpy); targets are class ids, and -1 where a position carries no label
(padding, or every position but one for a sequence-level task). The loss is
the mean cross-entropy over labelled positions.

The optimizer is `optax.multi_transform`: Adam on the learned groups
(`model.is_learned`), `optax.set_to_zero` on the compiled ones, so the
compiled weights, and with them the compiled residual stream, stay what the
compiler wrote (a test checks them bit for bit). Each step is one jit-compiled
call; the batch is split over `batching.make_mesh()` and the parameters are
replicated, so the same code uses every local device.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from tracr.hybrid import model as model_lib
from tracr.hybrid.config import HybridSpec
from tracr.transformer import batching

Sampler = Callable[[np.random.Generator, int], Tuple[np.ndarray, np.ndarray]]
EvalFn = Callable[[model_lib.Params], float]

TRAINABLE, FROZEN = "trainable", "frozen"


@dataclasses.dataclass(frozen=True)
class History:
    """What training recorded: loss per step, and `eval_fn` every `eval_every` steps."""

    losses: Tuple[float, ...]
    eval_steps: Tuple[int, ...]
    eval_values: Tuple[float, ...]


def param_labels(params: model_lib.Params):
    """The `multi_transform` label of every leaf: trainable for `hybrid/...` groups."""
    return {
        module: jax.tree_util.tree_map(
            lambda _, m=module: TRAINABLE if model_lib.is_learned(m) else FROZEN, values
        )
        for module, values in params.items()
    }


def make_optimizer(params: model_lib.Params, learning_rate: float):
    """Adam on the learned groups; updates of the compiled groups set to zero."""
    import optax  # the `train` extra

    return optax.multi_transform(
        {TRAINABLE: optax.adam(learning_rate), FROZEN: optax.set_to_zero()},
        param_labels(params),
    )


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean cross-entropy of `logits` [..., C] over positions whose target is >= 0."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    labelled = targets >= 0
    picked = jnp.take_along_axis(logp, jnp.maximum(targets, 0)[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(labelled, picked, 0.0)) / jnp.maximum(jnp.sum(labelled), 1)


def loss_fn(forward, params, token_ids, targets) -> jax.Array:
    """The hybrid's training loss: `cross_entropy` of its readout."""
    return cross_entropy(forward(params, token_ids).logits, targets)


def predict(forward, params: model_lib.Params, token_ids) -> np.ndarray:
    """[B, T] predicted class ids (argmax of the readout).

    `forward` is `jax.jit(model.forward_fn(hspec))`, made once by the caller:
    jitting a fresh function on every call would compile it every time.
    """
    logits = forward(params, jnp.asarray(token_ids, dtype=jnp.int32)).logits
    return np.asarray(jnp.argmax(logits, axis=-1))


def train(
    hspec: HybridSpec,
    params: model_lib.Params,
    sampler: Sampler,
    *,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    eval_fn: Optional[EvalFn] = None,
    eval_every: int = 100,
    progress: bool = True,
) -> Tuple[model_lib.Params, History]:
    """Trains the learned groups of `params` on batches drawn from `sampler`.

    Args:
      hspec: the hybrid's structure.
      params: from `model.init_params` (or a previous `train`).
      sampler: draws `(token_ids, targets)`; see the module docstring.
      steps: optimizer steps.
      batch_size: sequences per step; a multiple of the number of devices.
      learning_rate: Adam's.
      seed: seeds the batches (the parameters were seeded at init).
      eval_fn: called on the params after every `eval_every` steps (and at the end).
      progress: show a tqdm progress bar.

    Returns:
      (trained params, History).

    Raises:
      ValueError: batch_size is not a positive multiple of the device count, or
        the sampler gives a label >= num_classes (the loss would be NaN).
    """
    import optax  # the `train` extra
    from tqdm import auto as tqdm

    mesh = batching.make_mesh()
    devices = mesh.devices.size
    if batch_size < 1 or batch_size % devices:
        raise ValueError(
            f"batch_size must be a positive multiple of the {devices} devices, got {batch_size}."
        )
    forward = model_lib.forward_fn(hspec)
    optimizer = make_optimizer(params, learning_rate)
    data = NamedSharding(mesh, PartitionSpec(batching.BATCH_AXIS, None))
    replicated = NamedSharding(mesh, PartitionSpec())

    def step(params, opt_state, token_ids, targets):
        loss, grads = jax.value_and_grad(lambda p: loss_fn(forward, p, token_ids, targets))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss

    step = jax.jit(
        step,
        in_shardings=(replicated, replicated, data, data),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=(1,),
    )
    params = jax.device_put(params, replicated)
    opt_state = jax.device_put(optimizer.init(params), replicated)
    rng = np.random.default_rng(seed)
    losses: List[jax.Array] = []
    eval_steps: List[int] = []
    eval_values: List[float] = []
    bar = tqdm.trange(steps, disable=not progress, desc="hybrid", leave=False)
    for i in bar:
        token_ids, targets = sampler(rng, batch_size)
        targets = np.asarray(targets, dtype=np.int32)
        if targets.size and targets.max() >= hspec.num_classes:
            raise ValueError(
                f"the sampler gave the label {int(targets.max())} at step {i}, but the hybrid "
                f"has num_classes={hspec.num_classes} (labels 0..{hspec.num_classes - 1}, or -1 "
                "for an unlabelled position); raise num_classes or fix the sampler."
            )
        params, opt_state, loss = step(
            params,
            opt_state,
            jax.device_put(np.asarray(token_ids, dtype=np.int32), data),
            jax.device_put(targets, data),
        )
        losses.append(loss)
        done = i + 1
        if eval_fn is not None and (done % eval_every == 0 or done == steps):
            eval_steps.append(done)
            eval_values.append(float(eval_fn(params)))
            bar.set_postfix(loss=f"{float(loss):.4f}", eval=f"{eval_values[-1]:.3f}")
    history = History(
        losses=tuple(float(x) for x in jax.device_get(losses)),
        eval_steps=tuple(eval_steps),
        eval_values=tuple(eval_values),
    )
    return params, history
