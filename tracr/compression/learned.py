"""Learned compression: train W so a narrower residual still computes the program.

Section 5 of the Tracr paper trains the compression matrix `w` [d, D] of a
compiled model by gradient descent, with the compiled layers frozen, on

    loss = output_weight * L_out + layer_weight * mean_l MSE(r_l(w), r_l)

where r_l is the residual after sublayer l (decompressed to D in the
compressed model, as is in the original), and L_out is the cross-entropy of
the compressed model's output logits (the unembedded residual before the
argmax) against the original model's output for categorical programs, or the
squared error of the output value for numerical ones::

    train, held_out = split_inputs(inputs, seed=0)
    result = learn_compression(model, train, held_out, embedding_size=6)
    result.report.token_accuracy, result.report.layer_errors

Only positions that carry an output are scored: BOS, padding and positions
where the original model writes no output value (all categorical output
logits below 0.5, where RASP gives None) are left out. A numerical output
counts as correct when it is within `numerical_tolerance` of the original's;
by default that is half the smallest gap between the distinct values the
original model outputs on the inputs, i.e. the output decodes to the right
value when rounded to the nearest value the program produces.

The training step and evaluation are jit-compiled functions of arrays, so
they run unchanged on an accelerator; with several devices the batch is
sharded across them (`jax.sharding`) and `w` is replicated. optax and tqdm
(the `train` extra) are imported when training starts.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from tracr.compression import exact, running
from tracr.transformer import assembled, compressed_model
from tracr.transformer import inputs as inputs_lib

INITS = ("exact", "random")
# Original categorical logits are ~1 where the program has a value, 0 where not.
_HAS_OUTPUT_THRESHOLD = 0.5
_CHUNK = 50  # training steps per jit-compiled call
_FALLBACK_TOLERANCE = 1e-2


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters of learned compression.

    Attributes:
      embedding_size: d, the compressed residual width.
      steps: optimiser steps (0: evaluate the initial w as it is).
      batch_size: inputs per step (rounded up to a multiple of the devices).
      learning_rate: Adam's learning rate (cosine-decayed to 10% over steps).
      output_weight: weight of the output loss.
      layer_weight: weight of the mean per-sublayer residual MSE; None: 10
        for categorical outputs, 1 for numerical ones. The cross-entropy of
        a compiled model's 0/1 logits never reaches 0 and keeps pushing the
        output directions apart, so categorical programs need the residual
        term weighted up to stay exact; a numerical output's squared error
        is small and needs the output term to count.
      init: "exact" (the d leading directions of the exact basis of the
        training inputs) or "random" (normal, variance 1/d).
      seed: seeds the random init and the batch order.
      progress: show a tqdm progress bar.
      numerical_tolerance: a numerical output counts as correct when within
        this of the original model's; None: half the smallest gap between
        distinct original outputs (see `output_tolerance`).
    """

    embedding_size: int
    steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 1e-3
    output_weight: float = 1.0
    layer_weight: Optional[float] = None
    init: str = "exact"
    seed: int = 0
    progress: bool = True
    numerical_tolerance: Optional[float] = None

    def __post_init__(self):
        for name, least in (("embedding_size", 1), ("steps", 0), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}.")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}.")
        if self.numerical_tolerance is not None and not self.numerical_tolerance > 0:
            raise ValueError(
                f"numerical_tolerance must be > 0 or None, got {self.numerical_tolerance!r}."
            )
        if self.output_weight < 0 or (self.layer_weight is not None and self.layer_weight < 0):
            raise ValueError(
                f"output_weight and layer_weight must be >= 0, got {self.output_weight} "
                f"and {self.layer_weight}."
            )


@dataclasses.dataclass(frozen=True)
class CompressionReport:
    """How closely a compressed model follows the original on some inputs.

    Attributes:
      embedding_size: d.
      residual_size: D.
      token_accuracy: fraction of output positions (every real position but
        BOS) whose output equals the original model's: decoded as `apply`
        decodes for categorical outputs (None where no score reaches 0.5, so an
        output left empty or filled where the original has none is wrong),
        within `numerical_tolerance` for numerical ones.
      num_positions: the output positions compared.
      output_loss: mean output loss (cross-entropy or squared error).
      layer_names: `layer_i/attn`, `layer_i/mlp` for each sublayer.
      layer_errors: MSE between the decompressed and original residual after
        each sublayer, over real positions and the D dimensions.
      numerical_tolerance: the tolerance used (None for categorical outputs).
    """

    embedding_size: int
    residual_size: int
    token_accuracy: float
    num_positions: int
    output_loss: float
    layer_names: Tuple[str, ...]
    layer_errors: Tuple[float, ...]
    numerical_tolerance: Optional[float] = None


@dataclasses.dataclass(frozen=True, eq=False)
class LearnedCompression:
    """The result of `learn_compression`.

    Attributes:
      w: [d, D] learned compression.
      config: the hyperparameters used.
      losses: [steps] training loss at each step.
      report: evaluation on the held-out inputs (on the training inputs when
        none were given).
      train_seconds: wall time of the optimisation loop, compilation included.
    """

    w: np.ndarray
    config: TrainingConfig
    losses: np.ndarray
    report: CompressionReport
    train_seconds: float


def split_inputs(
    inputs: Sequence[Sequence[Any]], held_out_fraction: float = 0.25, seed: int = 0
) -> Tuple[List[tuple], List[tuple]]:
    """(train, held_out): a seeded random split of distinct inputs.

    Raises:
      ValueError: held_out_fraction outside (0, 1), or too few inputs for both.
    """
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}.")
    unique = sorted({tuple(x) for x in inputs}, key=repr)
    random.Random(seed).shuffle(unique)
    num_held_out = int(round(len(unique) * held_out_fraction))
    if num_held_out < 1 or num_held_out >= len(unique):
        raise ValueError(
            f"cannot split {len(unique)} distinct inputs with held_out_fraction="
            f"{held_out_fraction}: both parts need at least one; give more inputs."
        )
    return unique[num_held_out:], unique[:num_held_out]


def sublayer_names(num_layers: int) -> Tuple[str, ...]:
    """`layer_0/attn`, `layer_0/mlp`, ...: the residuals the layer loss compares."""
    return tuple(f"layer_{i}/{s}" for i in range(num_layers) for s in ("attn", "mlp"))


def _make_terms(
    compiled: assembled.AssembledTransformerModel,
    interface: running.ModelInterface,
    width: int,
) -> Callable[..., dict]:
    """The per-batch quantities both training and evaluation need.

    Returns `terms(w, row_mask, params, token_ids, tolerance)` -> dict of sums over the
    batch: `output_loss`, `correct`, `scored`, `layer_sq` [2L] (squared error
    summed over real positions, averaged over D) and `real` (real positions).
    `w` is [width, D]; rows where `row_mask` is 0 are held at zero, which is a
    compressed residual of width sum(row_mask) (a zero row neither carries nor
    receives anything), so one compilation serves every embedding size.
    """
    config = compiled.model_config
    reference = running.make_logits_forward(
        config, interface, width=interface.residual_size, unembed=interface.unembed
    )
    compressed = running.make_logits_forward(
        config,
        interface,
        width=interface.residual_size,
        unembed=interface.unembed,
        embedding_size=width,
        unembed_at_every_layer=True,
    )
    categorical = interface.categorical
    pad_id = interface.pad_id

    def terms(
        w: jax.Array,
        row_mask: jax.Array,
        params: hk.Params,
        token_ids: jax.Array,
        tolerance: jax.Array,
    ) -> dict:
        ref_states, ref_logits = jax.lax.stop_gradient(reference(params, token_ids))
        full_params = {**params, "transformer": {compressed_model.W_EMB: w * row_mask[:, None]}}
        states, logits = compressed(full_params, token_ids)
        real = (token_ids != pad_id).astype(jnp.float32)  # [B, T]
        scored = real.at[:, 0].set(0.0)  # BOS carries no output
        compared = scored  # every output position: where accuracy is counted
        if categorical:
            scored = scored * (jnp.max(ref_logits, axis=-1) > _HAS_OUTPUT_THRESHOLD)
            target = jnp.argmax(ref_logits, axis=-1)
            log_probs = jax.nn.log_softmax(logits, axis=-1)
            loss = -jnp.take_along_axis(log_probs, target[..., None], axis=-1)[..., 0]
            # As `apply` decodes: the argmax, or None where no score reaches the
            # threshold; so a position left empty, or filled where the original
            # is None, is wrong.
            correct = inputs_lib.categorical_ids(logits) == inputs_lib.categorical_ids(ref_logits)
        else:
            error = logits[..., 0] - ref_logits[..., 0]
            loss = jnp.square(error)
            correct = jnp.abs(error) <= tolerance
        layer_sq = jnp.stack(
            [
                jnp.sum(jnp.mean(jnp.square(a - b), axis=-1) * real)
                for a, b in zip(states.residuals, ref_states.residuals)
            ]
        )
        return {
            "output_loss": jnp.sum(loss * scored),
            "correct": jnp.sum(correct * compared),
            "compared": jnp.sum(compared),
            "scored": jnp.sum(scored),
            "layer_sq": layer_sq,
            "real": jnp.sum(real),
        }

    return terms


class _Sharding:
    """Places batches sharded over all devices and everything else replicated."""

    def __init__(self):
        devices = jax.devices()
        self.num_devices = len(devices)
        if self.num_devices > 1:
            mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
            spec = jax.sharding.PartitionSpec
            self._batch = jax.sharding.NamedSharding(mesh, spec("batch"))
            self._replicated = jax.sharding.NamedSharding(mesh, spec())

    def round_batch(self, batch_size: int) -> int:
        return -(-batch_size // self.num_devices) * self.num_devices

    def batch(self, x: np.ndarray) -> jax.Array:
        if self.num_devices > 1:
            return jax.device_put(x, self._batch)
        return jnp.asarray(x)

    def constrain_batch(self, x: jax.Array) -> jax.Array:
        """Inside jit: lay a batch out across the devices."""
        if self.num_devices > 1:
            return jax.lax.with_sharding_constraint(x, self._batch)
        return x

    def replicate(self, tree: Any) -> Any:
        if self.num_devices > 1:
            return jax.device_put(tree, self._replicated)
        return jax.tree_util.tree_map(jnp.asarray, tree)


def _cosine_learning_rate(base: float, step: int, steps: int, floor: float = 0.1) -> float:
    """Cosine decay from `base` to `floor * base` over `steps`."""
    progress = step / max(steps - 1, 1)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class CompressionTrainer:
    """Jit-compiled training and evaluation of `w` for one compiled model.

    The training step and the evaluation are compiled once per trainer and
    reused for every embedding size up to `max_embedding_size` (rows past d
    are masked to zero), so searching over d costs one compilation.

    Args:
      compiled: the compiled model; its layers stay frozen.
      batch_size: inputs per training step (rounded up to the device count).
      output_weight, layer_weight: weights of the two loss terms.
      numerical_tolerance: see TrainingConfig (None: from the outputs).
      max_embedding_size: the largest d to train (default D).

    Raises:
      ValueError: the model has no PAD token, or bad arguments.
    """

    def __init__(
        self,
        compiled: assembled.AssembledTransformerModel,
        *,
        batch_size: int = 128,
        output_weight: float = 1.0,
        layer_weight: Optional[float] = None,
        numerical_tolerance: Optional[float] = None,
        max_embedding_size: Optional[int] = None,
    ):
        import optax

        self.compiled = compiled
        self.interface = running.model_interface(compiled)
        if self.interface.pad_id is None:
            raise ValueError(
                "learned compression pads batches, but the model has no PAD token; compile "
                "it with compiling.compile_rasp_to_model, which adds one."
            )
        residual_size = self.interface.residual_size
        self.width = max(residual_size, max_embedding_size or residual_size)
        # Validates the shared hyperparameters in one place.
        self._defaults = TrainingConfig(
            embedding_size=1,
            batch_size=batch_size,
            output_weight=output_weight,
            layer_weight=layer_weight,
            numerical_tolerance=numerical_tolerance,
        )
        self._sharding = _Sharding()
        self.batch_size = self._sharding.round_batch(batch_size)
        self._params = self._sharding.replicate(compiled.params)
        self._exact_cache: dict = {}

        self.numerical_tolerance = numerical_tolerance
        if layer_weight is None:
            layer_weight = 10.0 if self.interface.categorical else 1.0
        self.layer_weight = layer_weight
        terms = _make_terms(compiled, self.interface, self.width)
        self._terms = jax.jit(terms)
        adam = optax.scale_by_adam()
        self._adam = adam

        def loss_fn(w, row_mask, params, token_ids):
            sums = terms(w, row_mask, params, token_ids, 0.0)
            output_loss = sums["output_loss"] / jnp.maximum(sums["scored"], 1.0)
            layer_loss = jnp.mean(sums["layer_sq"]) / jnp.maximum(sums["real"], 1.0)
            return output_weight * output_loss + layer_weight * layer_loss

        batch = self.batch_size
        constrain = self._sharding.constrain_batch

        def train_chunk(w, opt_state, row_mask, params, data, key, learning_rates):
            """len(learning_rates) steps in one call; a rate of 0 marks a no-op step."""

            def body(carry, xs):
                w, opt_state = carry
                step_key, learning_rate = xs
                rows = jax.random.randint(step_key, (batch,), 0, data.shape[0])
                token_ids = constrain(data[rows])
                loss, grad = jax.value_and_grad(loss_fn)(w, row_mask, params, token_ids)
                updates, new_state = adam.update(grad, opt_state, w)
                active = learning_rate > 0
                w = jnp.where(active, w - learning_rate * updates * row_mask[:, None], w)
                opt_state = jax.tree_util.tree_map(
                    lambda new, old: jnp.where(active, new, old), new_state, opt_state
                )
                return (w, opt_state), loss

            keys = jax.random.split(key, learning_rates.shape[0])
            (w, opt_state), losses = jax.lax.scan(body, (w, opt_state), (keys, learning_rates))
            return w, opt_state, losses

        self._train_chunk = jax.jit(train_chunk)

    def _padded(self, w: np.ndarray) -> Tuple[jax.Array, jax.Array]:
        """[d, D] -> ([width, D] with zero rows past d, row mask [width])."""
        d = w.shape[0]
        if d > self.width:
            raise ValueError(
                f"embedding size {d} is above this trainer's max_embedding_size {self.width}; "
                "build the trainer with a larger max_embedding_size."
            )
        full = np.zeros((self.width, w.shape[1]), np.float32)
        full[:d] = w
        mask = (np.arange(self.width) < d).astype(np.float32)
        return self._sharding.replicate(jnp.asarray(full)), self._sharding.replicate(
            jnp.asarray(mask)
        )

    def exact_basis(self, inputs: Sequence[tuple]) -> exact.ExactCompression:
        """The exact basis of `inputs` (cached for the last input set)."""
        key = tuple(inputs)
        if key not in self._exact_cache:
            self._exact_cache = {key: exact.exact_compression(self.compiled, list(inputs))}
        return self._exact_cache[key]

    def initial_w(self, train_inputs: Sequence[tuple], embedding_size: int, init: str, seed: int):
        """The starting [d, D] matrix for `init` ("exact" or "random")."""
        residual_size = self.interface.residual_size
        if init == "exact":
            basis = self.exact_basis(train_inputs).basis
            if embedding_size <= residual_size:
                return basis[:embedding_size]
            extra = np.zeros((embedding_size - residual_size, residual_size), np.float32)
            return np.concatenate([basis, extra])
        if init == "random":
            rng = np.random.default_rng(seed)
            w = rng.standard_normal((embedding_size, residual_size)) / np.sqrt(embedding_size)
            return w.astype(np.float32)
        raise ValueError(f"init must be one of {INITS}, got {init!r}.")

    def output_tolerance(self, inputs: Sequence[Sequence[Any]]) -> Optional[float]:
        """The numerical tolerance for scoring `inputs` (None for categorical outputs).

        The tolerance given to the trainer, or else half the smallest gap
        between distinct values the original model outputs on `inputs`, so
        that "correct" means "rounds to the right output value" (1e-2 when
        the model outputs fewer than two distinct values).
        """
        if self.interface.categorical:
            return None
        if self.numerical_tolerance is not None:
            return float(self.numerical_tolerance)
        values = set()
        for out, valid in exact.run_padded(self.compiled, [tuple(x) for x in inputs]):
            outputs = np.asarray(out.unembedded_output)[:, 1:][valid[:, 1:]]
            values.update(np.round(outputs.astype(np.float64), 6).tolist())
        if len(values) < 2:
            return _FALLBACK_TOLERANCE
        return float(np.min(np.diff(np.sort(list(values))))) / 2

    def evaluate(
        self,
        w: Any,
        inputs: Sequence[Sequence[Any]],
        numerical_tolerance: Optional[float] = None,
    ) -> CompressionReport:
        """Token accuracy and per-sublayer residual error of `w` [d, D] on `inputs`.

        Args:
          w: [d, D] compression.
          inputs: token sequences without BOS.
          numerical_tolerance: overrides `output_tolerance(inputs)`.

        Raises:
          ValueError: w is not [d, D], or inputs is empty.
        """
        w = running.check_w(self.compiled, w)
        inputs = [tuple(x) for x in inputs]
        if not inputs:
            raise ValueError("inputs is empty: give at least one input sequence (without BOS).")
        tolerance = numerical_tolerance
        if tolerance is None:
            tolerance = self.output_tolerance(inputs)
        w_full, row_mask = self._padded(w)
        ids = running.encode_padded(self.compiled, inputs)
        batch_size = self._sharding.round_batch(min(1024, len(ids)))
        # Filler rows are all PAD: no real position, so they add nothing.
        filler = np.full((-len(ids) % batch_size, ids.shape[1]), self.interface.pad_id, np.int32)
        ids = np.concatenate([ids, filler])
        totals = None
        for start in range(0, len(ids), batch_size):
            batch = self._sharding.batch(ids[start : start + batch_size])
            sums = self._terms(w_full, row_mask, self._params, batch, tolerance or 0.0)
            sums = jax.device_get(sums)
            totals = sums if totals is None else jax.tree_util.tree_map(np.add, totals, sums)
        scored = float(totals["scored"])
        compared = float(totals["compared"])
        real = max(float(totals["real"]), 1.0)
        return CompressionReport(
            embedding_size=w.shape[0],
            residual_size=w.shape[1],
            token_accuracy=float(totals["correct"]) / compared if compared else 1.0,
            num_positions=int(compared),
            output_loss=float(totals["output_loss"]) / scored if scored else 0.0,
            layer_names=sublayer_names(self.compiled.model_config.num_layers),
            layer_errors=tuple(float(x) / real for x in np.asarray(totals["layer_sq"])),
            numerical_tolerance=tolerance,
        )

    def train(
        self,
        train_inputs: Sequence[Sequence[Any]],
        held_out_inputs: Optional[Sequence[Sequence[Any]]] = None,
        *,
        embedding_size: int,
        steps: int = 2000,
        learning_rate: float = 1e-3,
        init: str = "exact",
        seed: int = 0,
        progress: bool = True,
        w_init: Optional[np.ndarray] = None,
    ) -> LearnedCompression:
        """Trains w [embedding_size, D]; see `learn_compression` for the arguments."""
        from tqdm.auto import tqdm

        config = dataclasses.replace(
            self._defaults,
            embedding_size=embedding_size,
            steps=steps,
            learning_rate=learning_rate,
            init=init,
            seed=seed,
            progress=progress,
            numerical_tolerance=self.numerical_tolerance,
            layer_weight=self.layer_weight,
        )
        train_inputs = [tuple(x) for x in train_inputs]
        if not train_inputs:
            raise ValueError("train_inputs is empty: give at least one input sequence.")
        held_out = train_inputs if held_out_inputs is None else [tuple(x) for x in held_out_inputs]
        if w_init is None:
            w0 = self.initial_w(train_inputs, embedding_size, init, seed)
        else:
            w0 = running.check_w(self.compiled, w_init)
            if w0.shape[0] != embedding_size:
                raise ValueError(
                    f"w_init has {w0.shape[0]} rows but embedding_size={embedding_size}; "
                    "make them agree."
                )
        w, row_mask = self._padded(w0)
        opt_state = self._sharding.replicate(self._adam.init(w))
        data = self._sharding.replicate(
            jnp.asarray(running.encode_padded(self.compiled, train_inputs))
        )
        key = jax.random.PRNGKey(seed)
        schedule = np.array(
            [_cosine_learning_rate(learning_rate, i, steps) for i in range(steps)], np.float32
        )
        # Steps run in jit-compiled chunks of _CHUNK (fewer host round trips);
        # the last chunk is padded with zero rates, which are no-op steps.
        schedule = np.concatenate([schedule, np.zeros(-steps % _CHUNK, np.float32)])
        losses = []
        start = time.perf_counter()
        with tqdm(total=steps, disable=not progress, desc=f"compress d={embedding_size}") as bar:
            for first in range(0, steps, _CHUNK):
                key, chunk_key = jax.random.split(key)
                w, opt_state, chunk_losses = self._train_chunk(
                    w,
                    opt_state,
                    row_mask,
                    self._params,
                    data,
                    chunk_key,
                    jnp.asarray(schedule[first : first + _CHUNK]),
                )
                losses.append(chunk_losses)
                if progress:
                    bar.update(min(_CHUNK, steps - first))
                    bar.set_postfix(loss=f"{float(chunk_losses[-1]):.4g}")
        losses = np.concatenate([np.zeros(0, np.float32), *jax.device_get(losses)])
        losses = losses[:steps].astype(np.float32)
        train_seconds = time.perf_counter() - start
        w_final = np.asarray(w, dtype=np.float32)[:embedding_size]
        return LearnedCompression(
            w=w_final,
            config=config,
            losses=losses,
            # Both sets define the output values, so both parts score alike.
            report=self.evaluate(w_final, held_out, self.output_tolerance(train_inputs + held_out)),
            train_seconds=train_seconds,
        )


def evaluate_compression(
    compiled: assembled.AssembledTransformerModel,
    w: Any,
    inputs: Sequence[Sequence[Any]],
    *,
    numerical_tolerance: Optional[float] = None,
) -> CompressionReport:
    """Token accuracy and per-sublayer residual error of `w` [d, D] on `inputs`.

    `numerical_tolerance` None: see `CompressionTrainer.output_tolerance`.

    Raises:
      ValueError: w is not [d, D], or inputs is empty.
    """
    w = running.check_w(compiled, w)
    trainer = CompressionTrainer(
        compiled, numerical_tolerance=numerical_tolerance, max_embedding_size=w.shape[0]
    )
    return trainer.evaluate(w, inputs)


def learn_compression(
    compiled: assembled.AssembledTransformerModel,
    train_inputs: Sequence[Sequence[Any]],
    held_out_inputs: Optional[Sequence[Sequence[Any]]] = None,
    config: Optional[TrainingConfig] = None,
    *,
    w_init: Optional[np.ndarray] = None,
    **config_kwargs: Any,
) -> LearnedCompression:
    """Trains w [d, D] with the compiled layers frozen.

    Args:
      compiled: the compiled model to compress.
      train_inputs: token sequences (without BOS) the batches are drawn from.
      held_out_inputs: inputs the final report is computed on (default: the
        training inputs).
      config: hyperparameters; or give its fields as keyword arguments, e.g.
        `learn_compression(model, train, held_out, embedding_size=6)`.
      w_init: a [d, D] starting matrix, overriding `config.init`.

    Returns:
      The learned matrix, its loss curve and held-out report.

    Raises:
      ValueError: no training inputs, bad hyperparameters or w_init shape.
      ImportError: optax or tqdm missing (install the `train` extra).
    """
    if config is None:
        config = TrainingConfig(**config_kwargs)
    elif config_kwargs:
        config = dataclasses.replace(config, **config_kwargs)
    trainer = CompressionTrainer(
        compiled,
        batch_size=config.batch_size,
        output_weight=config.output_weight,
        layer_weight=config.layer_weight,
        numerical_tolerance=config.numerical_tolerance,
        max_embedding_size=config.embedding_size,
    )
    return trainer.train(
        train_inputs,
        held_out_inputs,
        embedding_size=config.embedding_size,
        steps=config.steps,
        learning_rate=config.learning_rate,
        init=config.init,
        seed=config.seed,
        progress=config.progress,
        w_init=w_init,
    )
