"""A compiled model that runs: parameters, its spec, encoders and `apply`.

This is the transformer floor's view of a compiled program. The compiler
(`tracr.compiler.assemble`) writes the parameters and the `ModelSpec`;
loaders (`tracr.io`) rebuild the same object from files. Everything here is
derived from those two, so a loaded model and a compiled one are the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from tracr.craft import bases
from tracr.transformer import encoder, inputs, model
from tracr.transformer import spec as spec_lib

_ACTIVATIONS: Dict[str, Callable[[jax.Array], jax.Array]] = {"relu": jax.nn.relu}


@chex.dataclass
class AssembledTransformerModelOutput:
    decoded: List[Any]  # one decoded value per position; position 0 is the BOS token
    unembedded: jax.Array  # [B, T]
    layer_outputs: List[jax.Array]  # each [B, T, D]
    residuals: List[jax.Array]  # each [B, T, D]
    attn_logits: List[jax.Array]  # each [B, H, T, T]
    transformer_output: jax.Array  # [B, T, D]
    input_embeddings: jax.Array  # [B, T, D]


class ModelForward(Protocol):
    def __call__(self, params: hk.Params, emb: jax.Array) -> model.CompiledTransformerModelOutput:
        """Runs the compiled model on token ids [B, T]."""


@dataclasses.dataclass
class EmbeddingModules:
    token_embed: model.CallableHaikuModule
    pos_embed: model.CallableHaikuModule
    unembed: model.CallableHaikuModule


@dataclasses.dataclass
class AssembledTransformerModel:
    """A compiled program: parameters, configuration, encoders and `apply`."""

    forward: ModelForward
    get_compiled_model: Callable[[], model.CompiledTransformerModel]
    params: hk.Params
    model_config: model.TransformerConfig
    residual_labels: List[str]
    input_encoder: Optional[encoder.Encoder] = None
    output_encoder: Optional[encoder.Encoder] = None
    unembed_matrix: Optional[np.ndarray] = None  # [D, O]: residual -> output space
    spec: Optional[spec_lib.ModelSpec] = None  # the compiler's description of this model
    # The RASP program (a rasp.SOp) this model was compiled from, or rebuilt from a saved
    # program.json; None when unknown. `tracr.io.save_model` writes it as program.json.
    program: Optional[Any] = dataclasses.field(default=None, repr=False, compare=False)
    # (max_batch, mesh) -> (content, BatchRunner), built on the first apply_batch call;
    # `content` is what the runner was built from (see `_content`).
    _batch_runners: Dict[int, Any] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def lean_weights(self, *, keep_residual: bool = False, dtype: Any = jnp.float32):
        """This model's weights for the lean pure forward pass `tracr.transformer.fast`.

        `fast.decode(model.lean_weights(), token_ids)` equals
        `model.forward(model.params, token_ids).unembedded_output` and can be
        jit-compiled, vmapped, differentiated (`fast.scores`) and sharded.
        The output (categorical or not, which residual rows it reads) and the
        PAD id come from `model.spec`.

        Raises:
          ValueError: the model has no spec.
        """
        from tracr.transformer import fast  # optional fast path, kept out of import time

        if self.spec is None:
            raise ValueError(
                "This model has no spec, which the lean forward pass needs; build it with "
                "assemble_craft_model or build_assembled_model."
            )
        return fast.lean_weights_from_spec(
            self.params, self.spec, self.model_config, keep_residual=keep_residual, dtype=dtype
        )

    def codec(self) -> inputs.Codec:
        """The encoder/decoder of token lists that `apply` and `apply_batch` share."""
        if self.input_encoder is None:
            raise ValueError("This model has no input_encoder (set by the compiler).")
        return inputs.Codec.from_encoders(
            self.input_encoder, self.output_encoder, _max_len(self.input_encoder, self.spec)
        )

    def _content(self) -> Tuple[Any, ...]:
        """Everything apply_batch's cached runner depends on.

        Objects are compared by identity (jax arrays are immutable, so a new
        array is a new object, and so is a read-only numpy array); writable
        numpy arrays can change in place, so they are compared by a digest of
        their bytes, and the tree structure by equality.
        """
        leaves, tree = jax.tree_util.tree_flatten(self.params)
        mutable = [
            x
            for x in leaves + [self.unembed_matrix]
            if isinstance(x, np.ndarray) and x.flags.writeable
        ]
        digests = tuple(
            hashlib.blake2b(np.ascontiguousarray(x).tobytes()).digest() for x in mutable
        )
        objects = (self.input_encoder, self.output_encoder, self.spec, self.model_config)
        return objects + tuple(leaves), (tree, digests)

    def apply_batch(
        self,
        batch: Sequence[List[bases.Value]],
        *,
        max_batch: Optional[int] = None,
        mesh: Optional[Any] = None,
    ) -> List[List[Any]]:
        """Runs the model on many inputs at once; the same `decoded` lists as `apply`.

        Sequences may have different lengths; each starts with the BOS token.
        They are encoded as one array (`tracr.transformer.inputs.Codec`),
        padded with the PAD token (masked out of attention, so real
        positions are unaffected), run by one jit-compiled lean forward pass
        per chunk of at most `max_batch` (sharded over the batch axis when
        there are several devices), and decoded back to their lengths.
        Categorical positions that no output direction reaches decode as
        None, as in `apply`. Editing `params`, the encoders or the spec
        rebuilds the lean weights on the next call.

        With `mesh` (`batching.make_mesh(model=k)`), the batch is split over
        its "batch" axis and the lean weights (heads' dimensions and MLP
        hidden units) over its "model" axis (`tracr.transformer.sharding`),
        for models bigger than one device.

        Raises:
          ValueError: as `apply`, for the first bad sequence.
        """
        from tracr.transformer import batching, fast, sharding  # optional fast path

        max_batch = batching.DEFAULT_MAX_BATCH if max_batch is None else max_batch
        batching.check_max_batch(max_batch)  # before the cache: 2.0 would find 2's runner
        content = self._content()
        key = (max_batch, mesh)
        cached, runner = self._batch_runners.get(key, (None, None))
        if not _same_content(cached, content):  # new content (or first call)
            weights = self.lean_weights()
            shardings = None if mesh is None else sharding.weight_shardings(weights, mesh)
            runner = batching.BatchRunner(
                fast.outputs,
                weights,
                codec=self.codec(),
                max_batch=max_batch,
                mesh=mesh,
                weight_sharding=shardings,
            )
            if any(not _same_content(c, content) for c, _ in self._batch_runners.values()):
                self._batch_runners.clear()  # runners of old content keep old weights alive
            self._batch_runners[key] = (content, runner)
        return runner(batch)

    def apply(self, tokens: List[bases.Value]) -> AssembledTransformerModelOutput:
        """Runs the model on one input that starts with the BOS token.

        Raises:
          ValueError: missing BOS, BOS or PAD after position 0, unknown token
            or sequence too long.
        """
        return apply_one(
            self.forward,
            self.params,
            self.input_encoder,
            self.output_encoder,
            tokens,
            unembed=self.unembed_matrix,
            max_len=_max_len(self.input_encoder, self.spec),
        )


def _max_len(input_encoder: Optional[encoder.Encoder], model_spec) -> int:
    """The longest input (BOS included), from the spec or the encoder."""
    if model_spec is not None:
        return model_spec.max_seq_len + 1
    limit = getattr(input_encoder, "max_seq_len", None)
    return limit if limit is not None else 1 << 30


def _same_content(a: Optional[Tuple[Any, ...]], b: Tuple[Any, ...]) -> bool:
    if a is None:
        return False
    (objects_a, values_a), (objects_b, values_b) = a, b
    return (
        len(objects_a) == len(objects_b)
        and all(x is y for x, y in zip(objects_a, objects_b))
        and values_a == values_b
    )


def apply_one(
    forward: Callable[[Any, jax.Array], Any],
    params: Any,
    input_encoder: Optional[encoder.Encoder],
    output_encoder: Optional[encoder.Encoder],
    tokens: List[bases.Value],
    *,
    unembed: Optional[np.ndarray] = None,
    max_len: Optional[int] = None,
) -> AssembledTransformerModelOutput:
    """`apply` of any model with this `forward` (assembled or compressed): encode
    one input, run it, decode the output and put the BOS token first.

    Encoding and decoding are `tracr.transformer.inputs.Codec`'s, as in
    `apply_batch`. With `unembed` ([D, O], the residual -> output scores
    matrix of `transformer_output.output`), a categorical position whose
    scores all stay below `spec.ACTIVE_THRESHOLD` decodes as None.

    Raises:
      ValueError: missing BOS, BOS or PAD after position 0, unknown token or
        sequence too long.
    """
    codec = None
    if (
        isinstance(input_encoder, encoder.CategoricalEncoder)
        and input_encoder.bos_token is not None
    ):
        limit = _max_len(input_encoder, None) if max_len is None else max_len
        codec = inputs.Codec.from_encoders(input_encoder, output_encoder, limit)
        token_ids = codec.encode([tokens]).ids
    elif input_encoder is not None:
        token_ids = np.asarray([input_encoder.encode(tokens)], dtype=np.int32)
    else:
        token_ids = np.asarray([list(tokens)], dtype=np.int32)
    out = forward(params, jnp.asarray(token_ids, dtype=jnp.int32))
    transformer_output = out.transformer_output
    unembedded = out.unembedded_output
    ids = np.asarray(unembedded)
    categorical = isinstance(output_encoder, encoder.CategoricalEncoder)
    if categorical and unembed is not None:
        scores = np.asarray(transformer_output.output, dtype=np.float32) @ unembed
        ids = inputs.categorical_ids(scores)
    if codec is not None and output_encoder is not None:
        decoded = codec.decode(ids, np.asarray([ids.shape[1]]))[0]
    else:
        decoded = ids[0].tolist()
        if output_encoder is not None:
            decoded = output_encoder.decode(decoded)
        if input_encoder is not None and input_encoder.bos_token is not None:
            decoded[0] = input_encoder.bos_token
    return AssembledTransformerModelOutput(
        decoded=decoded,
        unembedded=unembedded,
        layer_outputs=transformer_output.layer_outputs,
        residuals=transformer_output.residuals,
        attn_logits=transformer_output.attn_logits,
        transformer_output=transformer_output.output,
        input_embeddings=transformer_output.input_embeddings,
    )


def config_from_spec(model_spec: spec_lib.ModelSpec) -> model.TransformerConfig:
    """The Haiku configuration a spec's parameters were written for."""
    if model_spec.activation not in _ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {model_spec.activation!r}; expected one of {sorted(_ACTIVATIONS)}."
        )
    return model.TransformerConfig(
        num_heads=model_spec.num_heads,
        num_layers=max(model_spec.num_layers, 1),
        key_size=model_spec.key_size,
        mlp_hidden_size=model_spec.mlp_hidden_size,
        dropout_rate=0.0,
        activation_function=_ACTIVATIONS[model_spec.activation],
        layer_norm=model_spec.layer_norm,
        causal=model_spec.causal,
    )


def unembed_matrix_from_spec(model_spec: spec_lib.ModelSpec) -> np.ndarray:
    """[D, O]: column j selects residual row `output.reads[j]`."""
    from tracr.transformer import fast

    return fast.unembedding_from_spec(model_spec)


def encoders_from_spec(
    model_spec: spec_lib.ModelSpec,
) -> Tuple[encoder.CategoricalEncoder, encoder.Encoder]:
    """The input encoder (ids in `input.tokens` order) and the output decoder."""
    inp = model_spec.input
    input_encoder = encoder.CategoricalEncoder(
        basis=[bases.BasisDirection("tokens", t) for t in inp.tokens],
        enforce_bos=inp.bos_token is not None,
        bos_token=inp.bos_token,
        pad_token=inp.pad_token,
        max_seq_len=inp.max_seq_len + 1,
    )
    if model_spec.output.categorical:
        output_encoder: encoder.Encoder = encoder.CategoricalEncoder(
            basis=[
                bases.BasisDirection(model_spec.output.label, v) for v in model_spec.output.values
            ]
        )
    else:
        output_encoder = encoder.NumericalEncoder()
    return input_encoder, output_encoder


def build_assembled_model(
    params: Dict[str, Dict[str, Any]], model_spec: spec_lib.ModelSpec
) -> AssembledTransformerModel:
    """Wraps parameters in the Tracr layout, described by `model_spec`, into a runnable model.

    Used by `tracr.compiler.assemble` and by loaders that rebuild a saved model
    (tracr.io). Configuration, unembedding and encoders all come from the spec.

    Args:
      params: `token_embed/embeddings` [V, D], `pos_embed/embeddings` [T, D]
        and the `transformer/layer_i/...` linears (see `spec.param_name`).
      model_spec: the description the compiler wrote for these params.

    Returns:
      The model with `forward`, `get_compiled_model`, float32 `params`, encoders and `spec`.
    """
    config = config_from_spec(model_spec)
    categorical_output = model_spec.output.categorical
    pad_id = model_spec.input.pad_id
    params = place_params(params)
    token_matrix = np.asarray(params[spec_lib.TOKEN_EMBED]["embeddings"])
    pos_matrix = np.asarray(params[spec_lib.POS_EMBED]["embeddings"])
    unembed_matrix = unembed_matrix_from_spec(model_spec)

    def get_compiled_model() -> model.CompiledTransformerModel:
        transformer = model.Transformer(config, name="transformer")
        embed_modules = embedding_modules(token_matrix, pos_matrix, unembed_matrix)
        return model.CompiledTransformerModel(
            transformer=transformer,
            token_embed=embed_modules.token_embed,
            position_embed=embed_modules.pos_embed,
            unembed=embed_modules.unembed,
            use_unembed_argmax=categorical_output,
            pad_token=pad_id,
        )

    @hk.without_apply_rng
    @hk.transform
    def forward(token_ids: jax.Array) -> model.CompiledTransformerModelOutput:
        return get_compiled_model()(token_ids, use_dropout=False)

    input_encoder, output_encoder = encoders_from_spec(model_spec)
    return AssembledTransformerModel(
        forward=jax.jit(forward.apply),
        get_compiled_model=get_compiled_model,
        params=params,
        model_config=config,
        residual_labels=list(model_spec.residual_labels),
        input_encoder=input_encoder,
        output_encoder=output_encoder,
        unembed_matrix=unembed_matrix,
        spec=model_spec,
    )


# Params up to this many bytes are placed on the device when the model is
# built. Bigger ones stay read-only numpy arrays: the compiler writes them
# into zero-filled (calloc'd) memory, so the all-zero padding costs no RAM
# until something touches it, and the lean path (`lean_weights`, which is
# what `apply_batch` runs) reads only their non-zero blocks. `apply` (the
# Haiku model) moves them to the device on each call.
DEVICE_PARAMS_LIMIT = 1 << 30


def place_params(params: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """float32 params: on the device when small, read-only numpy when large."""
    # Cast in numpy, then place: jnp.asarray(x, dtype=float32) on a float64
    # array compiles a conversion per distinct shape (~0.1 s each).
    arrays = jax.tree_util.tree_map(lambda x: np.asarray(x, dtype=np.float32), params)
    total = sum(x.nbytes for x in jax.tree_util.tree_leaves(arrays))
    if total <= DEVICE_PARAMS_LIMIT:
        return jax.tree_util.tree_map(jax.device_put, arrays)

    def freeze(x: np.ndarray) -> np.ndarray:
        view = x.view()  # the caller's array stays writable; the model's view does not
        view.flags.writeable = False
        return view

    return jax.tree_util.tree_map(freeze, arrays)


def embedding_modules(token_matrix, pos_matrix, unembed_matrix) -> EmbeddingModules:
    """Haiku token/position embeddings from fixed matrices, and the unembedding."""
    token_embed = hk.Embed(embedding_matrix=token_matrix, name="token_embed")
    pos_embed = hk.Embed(embedding_matrix=pos_matrix, name="pos_embed")
    unembed_const = jnp.asarray(unembed_matrix, dtype=jnp.float32)

    def unembed(x: jax.Array, use_unembed_argmax: bool) -> jax.Array:
        out = x @ unembed_const  # [B, T, O]
        if use_unembed_argmax:
            return jnp.argmax(out, axis=-1)
        return out[..., 0]

    return EmbeddingModules(token_embed=token_embed, pos_embed=pos_embed, unembed=unembed)
