"""Pass 6: a layered craft model -> Haiku parameters and a runnable model.

Fixes one order of all residual directions, then writes every block's
matrices into the Tracr parameter layout (`transformer/layer_i/attn/...`,
`transformer/layer_i/mlp/...`, `token_embed`, `pos_embed`) by index
arithmetic: a block's spaces map to residual rows through one dict lookup
per direction, never through dense projection matrices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from tracr.craft import bases, transformers
from tracr.transformer import encoder, model

_ONE_DIRECTION = bases.BasisDirection("one")


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
    # max_batch -> (params, BatchRunner), built on the first apply_batch call.
    _batch_runners: Dict[int, Any] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def lean_weights(self, *, keep_residual: bool = False, dtype: Any = jnp.float32):
        """This model's weights for the lean pure forward pass `tracr.transformer.fast`.

        `fast.decode(model.lean_weights(), token_ids)` equals
        `model.forward(model.params, token_ids).unembedded_output` and can be
        jit-compiled, vmapped, differentiated (`fast.scores`) and sharded.

        Raises:
          ValueError: the model has no unembedding matrix.
        """
        from tracr.transformer import fast  # optional fast path, kept out of import time

        if self.unembed_matrix is None:
            raise ValueError(
                "This model has no unembed_matrix, which the lean forward pass needs; "
                "build it with assemble_craft_model or build_assembled_model."
            )
        ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
        out_dtype = jax.eval_shape(self.forward, self.params, ids).unembedded_output.dtype
        pad_id = None if self.input_encoder is None else self.input_encoder.pad_encoding
        return fast.lean_weights_from_params(
            self.params,
            self.model_config,
            self.unembed_matrix,
            categorical_output=jnp.issubdtype(out_dtype, jnp.integer),
            pad_id=pad_id,
            keep_residual=keep_residual,
            dtype=dtype,
        )

    def apply_batch(
        self, batch: Sequence[List[bases.Value]], *, max_batch: Optional[int] = None
    ) -> List[List[Any]]:
        """Runs the model on many inputs at once; the same `decoded` lists as `apply`.

        Sequences may have different lengths; each starts with the BOS token.
        They are padded with the PAD token (masked out of attention, so real
        positions are unaffected), run by one jit-compiled lean forward pass
        per chunk of at most `max_batch` (sharded over the batch axis when
        there are several devices), and trimmed back to their lengths.

        Raises:
          ValueError: as `apply`, for the first bad sequence.
        """
        from tracr.transformer import batching, fast  # optional fast path

        if self.input_encoder is None:
            raise ValueError("apply_batch needs the model's input_encoder (set by the compiler).")
        max_batch = batching.DEFAULT_MAX_BATCH if max_batch is None else max_batch
        params, runner = self._batch_runners.get(max_batch, (None, None))
        if params is not self.params:  # new params (or first call): new lean weights
            weights = self.lean_weights()
            runner = batching.BatchRunner(
                fast.decode,
                weights,
                self.input_encoder,
                self.output_encoder,
                max_len=weights.max_len,
                max_batch=max_batch,
            )
            self._batch_runners[max_batch] = (self.params, runner)
        return runner(batch)

    def apply(self, tokens: List[bases.Value]) -> AssembledTransformerModelOutput:
        """Runs the model on one input that starts with the BOS token.

        Raises:
          ValueError: missing BOS, unknown token or sequence too long.
        """
        return apply_one(self.forward, self.params, self.input_encoder, self.output_encoder, tokens)


def apply_one(
    forward: Callable[[Any, jax.Array], Any],
    params: Any,
    input_encoder: Optional[encoder.Encoder],
    output_encoder: Optional[encoder.Encoder],
    tokens: List[bases.Value],
) -> AssembledTransformerModelOutput:
    """`apply` of any model with this `forward` (assembled or compressed): encode
    one input, run it, decode the output and put the BOS token first.

    Raises:
      ValueError: missing BOS, unknown token or sequence too long.
    """
    token_ids = input_encoder.encode(tokens) if input_encoder is not None else list(tokens)
    out = forward(params, jnp.asarray([token_ids], dtype=jnp.int32))
    transformer_output = out.transformer_output
    unembedded = out.unembedded_output
    decoded = np.asarray(unembedded[0]).tolist()
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


def param_name(layer: int, sublayer: str, linear: str) -> str:
    """The one place where parameter paths are spelled (`transformer/layer_0/attn/query`)."""
    return f"transformer/layer_{layer}/{sublayer}/{linear}"


def _layered(
    blocks: Sequence[transformers.HalfLayerBlock],
) -> List[Tuple[list, Optional[transformers.MLP]]]:
    """Splits the alternating block list into (heads, mlp) per layer."""
    layers: List[Tuple[list, Optional[transformers.MLP]]] = []
    half = 0
    for block in blocks:
        is_attn = isinstance(block, (transformers.AttentionHead, transformers.MultiAttentionHead))
        if is_attn == (half % 2 == 1):
            half += 1  # an empty half-layer in between
        layer = half // 2
        while len(layers) <= layer:
            layers.append(([], None))
        heads, mlp = layers[layer]
        if is_attn:
            heads = (
                list(block.heads())
                if isinstance(block, transformers.MultiAttentionHead)
                else [block]
            )
            layers[layer] = (heads, mlp)
        else:
            layers[layer] = (heads, block)
        half += 1
    return layers


class _ResidualIndex:
    """Maps basis directions to residual rows."""

    def __init__(self, space: bases.VectorSpaceWithBasis):
        self.space = space
        self.index = {d: i for i, d in enumerate(space.basis)}

    def rows(self, space: bases.VectorSpaceWithBasis) -> np.ndarray:
        return np.array([self.index[d] for d in space.basis], dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class _Factor:
    """A [D, width] matrix that is zero outside `rows`.

    Its rows `rows` hold `block` ([len(rows), width]), or the identity (width =
    len(rows)) where `block` is None. Heads are written into the layer's
    parameter arrays from this, without a dense [D, width] copy per head.
    """

    rows: np.ndarray
    block: Optional[np.ndarray] = None

    @property
    def width(self) -> int:
        return len(self.rows) if self.block is None else self.block.shape[1]

    def write_into(self, target: np.ndarray, scale: float = 1.0) -> None:
        """Writes the factor times `scale` into target [D, >= width] (zeros elsewhere)."""
        if self.block is None:
            target[self.rows, np.arange(len(self.rows))] = scale
        else:
            target[self.rows, : self.width] = self.block if scale == 1.0 else self.block * scale


def _head_factors(head: transformers.AttentionHead, res: _ResidualIndex):
    """Factor W_QK = Wq Wk^T and W_OV = Wv Wo in residual coordinates.

    The smaller side of each bilinear/linear map is used as the head's inner
    dimension, so key/value size is min(|left|, |right|) and min(|in|, |out|).

    Returns:
      `_Factor`s for Wq, Wk, Wv [D, key] and for Wo transposed ([D, key]).
    """
    qk = head.w_qk
    left, right = res.rows(qk.left_space), res.rows(qk.right_space)
    if len(left) <= len(right):
        wq, wk = _Factor(left), _Factor(right, qk.matrix.T)
    else:
        wq, wk = _Factor(left, qk.matrix), _Factor(right)
    ov = head.w_ov
    vin, vout = res.rows(ov.input_space), res.rows(ov.output_space)
    if len(vin) <= len(vout):
        wv, wo_t = _Factor(vin), _Factor(vout, ov.matrix.T)
    else:
        wv, wo_t = _Factor(vin, ov.matrix), _Factor(vout)
    return wq, wk, wv, wo_t


def _make_residual_space(craft_model, tokens_space, indices_space, output_space):
    del tokens_space, indices_space  # only directions the blocks read or write are kept
    return bases.join_vector_spaces(
        craft_model.residual_space, output_space, bases.VectorSpaceWithBasis([_ONE_DIRECTION])
    )


def assemble_craft_model(
    craft_model: transformers.SeriesWithResiduals,
    tokens_space: bases.VectorSpaceWithBasis,
    indices_space: bases.VectorSpaceWithBasis,
    output_space: bases.VectorSpaceWithBasis,
    categorical_output: bool,
    causal: bool = False,
    *,
    bos_token: Optional[Any] = None,
    pad_token: Optional[Any] = None,
    residual_space: Optional[bases.VectorSpaceWithBasis] = None,
) -> AssembledTransformerModel:
    """Writes the craft model into Haiku parameters.

    Args:
      craft_model: half-layer blocks in order (see craft_graph_to_model).
      tokens_space: one direction per token id, in id order (BOS/PAD included).
      indices_space: one direction per position of the real tokens.
      output_space: the program output's directions (unembedding).
      categorical_output: decode by argmax (True) or read the magnitude.
      causal: build a causally-masked model.
      bos_token, pad_token: token values; PAD positions are masked from attention.
      residual_space: the residual order to use; by default the sorted join of
        every block's space, the output space and `one`.
    """
    if residual_space is None:
        residual_space = _make_residual_space(
            craft_model, tokens_space, indices_space, output_space
        )
    res = _ResidualIndex(residual_space)
    d_model = residual_space.num_dims
    layers = _layered(craft_model.blocks)
    if not layers:
        layers = [([], None)]

    head_factors = [[_head_factors(h, res) for h in heads] for heads, _ in layers]
    num_heads = max([len(h) for h in head_factors] + [1])
    key_size = max(
        [f[0].width for hs in head_factors for f in hs]
        + [f[2].width for hs in head_factors for f in hs]
        + [1]
    )
    mlp_hidden = max([mlp.fst.output_space.num_dims for _, mlp in layers if mlp is not None] + [1])

    # The layer arrays are float32 from the start (they are most of the model's
    # memory); every entry is computed in float64 and rounded once on writing,
    # as a float64 array cast to float32 would be.
    f32 = np.float32
    params: Dict[str, Dict[str, np.ndarray]] = {}
    for layer, ((_, mlp), factors) in enumerate(zip(layers, head_factors)):
        wq = np.zeros((d_model, num_heads, key_size), dtype=f32)
        wk = np.zeros_like(wq)
        wv = np.zeros_like(wq)
        wo = np.zeros((num_heads, key_size, d_model), dtype=f32)
        for h, (q, k, v, o) in enumerate(factors):
            # The attention divides logits by sqrt(key_size); fold the inverse in.
            q.write_into(wq[:, h, :], scale=np.sqrt(key_size))
            k.write_into(wk[:, h, :])
            v.write_into(wv[:, h, :])
            o.write_into(wo[h].T)
        for name, w in (("query", wq), ("key", wk), ("value", wv)):
            params[param_name(layer, "attn", name)] = {
                "w": w.reshape(d_model, num_heads * key_size),
                "b": np.zeros(num_heads * key_size, dtype=f32),
            }
        params[param_name(layer, "attn", "linear")] = {
            "w": wo.reshape(num_heads * key_size, d_model),
            "b": np.zeros(d_model, dtype=f32),
        }

        w1 = np.zeros((d_model, mlp_hidden), dtype=f32)
        w2 = np.zeros((mlp_hidden, d_model), dtype=f32)
        if mlp is not None:
            hidden = mlp.fst.output_space.num_dims
            w1[res.rows(mlp.fst.input_space), :hidden] = mlp.fst.matrix
            w2[np.ix_(np.arange(hidden), res.rows(mlp.snd.output_space))] = mlp.snd.matrix
        params[param_name(layer, "mlp", "linear_1")] = {
            "w": w1,
            "b": np.zeros(mlp_hidden, dtype=f32),
        }
        params[param_name(layer, "mlp", "linear_2")] = {"w": w2, "b": np.zeros(d_model, dtype=f32)}

    # Embeddings: a token writes its own direction (if the program reads it)
    # and the constant `one`; position p >= 1 writes indices:p-1 (BOS has none).
    token_matrix = np.zeros((tokens_space.num_dims, d_model))
    for i, direction in enumerate(tokens_space.basis):
        if direction in res.index:
            token_matrix[i, res.index[direction]] = 1.0
    if _ONE_DIRECTION in res.index:
        token_matrix[:, res.index[_ONE_DIRECTION]] = 1.0
    pos_matrix = np.zeros((indices_space.num_dims + 1, d_model))
    for i, direction in enumerate(indices_space.basis):
        if direction in res.index:
            pos_matrix[i + 1, res.index[direction]] = 1.0
    params["token_embed"] = {"embeddings": token_matrix}
    params["pos_embed"] = {"embeddings": pos_matrix}

    unembed_matrix = np.zeros((d_model, output_space.num_dims))
    unembed_matrix[res.rows(output_space), np.arange(output_space.num_dims)] = 1.0

    config = model.TransformerConfig(
        num_heads=num_heads,
        num_layers=len(layers),
        key_size=key_size,
        mlp_hidden_size=mlp_hidden,
        dropout_rate=0.0,
        activation_function=jax.nn.relu,
        layer_norm=False,
        causal=causal,
    )
    token_ids = {d.value: i for i, d in enumerate(tokens_space.basis)}
    pad_id = token_ids.get(pad_token) if pad_token is not None else None
    return build_assembled_model(
        params=params,
        config=config,
        residual_labels=[str(d) for d in residual_space.basis],
        unembed_matrix=unembed_matrix,
        categorical_output=categorical_output,
        pad_id=pad_id,
    )


def build_assembled_model(
    params: Dict[str, Dict[str, Any]],
    config: model.TransformerConfig,
    residual_labels: Sequence[str],
    unembed_matrix: np.ndarray,
    categorical_output: bool,
    pad_id: Optional[int] = None,
) -> AssembledTransformerModel:
    """Wraps parameters in the Tracr layout into a runnable model.

    Used by `assemble_craft_model` and by loaders that rebuild a saved model
    (tracr.io); the encoders are left for the caller to attach.

    Args:
      params: `token_embed/embeddings` [V, D], `pos_embed/embeddings` [T, D]
        and the `transformer/layer_i/...` linears (see `param_name`).
      config: the transformer configuration the params were written for.
      residual_labels: the name of each of the D residual dimensions.
      unembed_matrix: [D, O] projection from the residual to the output space.
      categorical_output: decode by argmax (True) or read column 0.
      pad_id: token id masked out of attention, if any.

    Returns:
      The model with `forward`, `get_compiled_model` and float32 `params`.
    """
    # Cast in numpy, then place: jnp.asarray(x, dtype=float32) on a float64
    # array compiles a conversion per distinct shape (~0.1 s each).
    params = jax.tree_util.tree_map(
        lambda x: jax.device_put(np.asarray(x, dtype=np.float32)), params
    )
    token_matrix = np.asarray(params["token_embed"]["embeddings"])
    pos_matrix = np.asarray(params["pos_embed"]["embeddings"])
    unembed_matrix = np.asarray(unembed_matrix, dtype=np.float32)

    def get_compiled_model() -> model.CompiledTransformerModel:
        transformer = model.Transformer(config, name="transformer")
        embed_modules = _make_embedding_modules(token_matrix, pos_matrix, unembed_matrix)
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

    return AssembledTransformerModel(
        forward=jax.jit(forward.apply),
        get_compiled_model=get_compiled_model,
        params=params,
        model_config=config,
        residual_labels=list(residual_labels),
        unembed_matrix=unembed_matrix,
    )


def _make_embedding_modules(token_matrix, pos_matrix, unembed_matrix) -> EmbeddingModules:
    token_embed = hk.Embed(embedding_matrix=token_matrix, name="token_embed")
    pos_embed = hk.Embed(embedding_matrix=pos_matrix, name="pos_embed")
    unembed_const = jnp.asarray(unembed_matrix, dtype=jnp.float32)

    def unembed(x: jax.Array, use_unembed_argmax: bool) -> jax.Array:
        out = x @ unembed_const  # [B, T, O]
        if use_unembed_argmax:
            return jnp.argmax(out, axis=-1)
        return out[..., 0]

    return EmbeddingModules(token_embed=token_embed, pos_embed=pos_embed, unembed=unembed)
