"""Run a compiled model with its residual stream compressed by a given W.

A compiled `AssembledTransformerModel` keeps a residual of width D. Given a
matrix `w` [d, D], `CompressedModel(model, w)` runs the same compiled layers on
a residual of width d through `transformer.compressed_model`: every sublayer
reads `x_d @ w` and writes `out_D @ w.T`. It offers what the assembled model
offers (`params`, `forward`, `apply`, the encoders), so code written for one,
such as `compiler.equivalence.find_mismatches`, runs the other::

    w = exact.exact_compression(model).w              # [d, D]
    small = CompressedModel(model, w)
    small.apply(["compiler_bos", 1, 2, 3]).decoded     # same as model.apply
    small.params["transformer"]["w_emb"]               # w, beside the layers

With `folded=True` the matrix is multiplied into the weights once
(`fold_params`): the result is a plain `model.Transformer` of width d, which
computes the same function with fewer parameters and no extra matmuls.

Shapes: B batch, T positions (BOS included), D uncompressed width, d
compressed width, O output width, V token vocabulary (BOS and PAD included).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, Optional, Sequence, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from tracr.transformer import assembled, compressed_model, encoder, model
from tracr.transformer import spec as spec_lib

# Forward returning (states, logits); logits are [B, T, O] before argmax.
LogitsForward = Callable[[hk.Params, jax.Array], Tuple[model.TransformerOutput, jax.Array]]


@dataclasses.dataclass(frozen=True, eq=False)
class ModelInterface:
    """What a forward pass needs to know about a compiled model, besides its layers.

    Attributes:
      unembed: [D, O] projection from the residual to the output space.
      categorical: decode by argmax (True) or read output column 0 (False).
      pad_id: token id of PAD (masked out of attention), if any.
      bos_id: token id of BOS, if any.
      vocab_size: V, rows of the token embedding.
      max_seq_len: the longest input without BOS.
      vocab: the input tokens, BOS and PAD excluded.
    """

    unembed: np.ndarray
    categorical: bool
    pad_id: Optional[int]
    bos_id: Optional[int]
    vocab_size: int
    max_seq_len: int
    vocab: Tuple[Any, ...]

    @property
    def residual_size(self) -> int:
        return self.unembed.shape[0]


def model_interface(compiled: assembled.AssembledTransformerModel) -> ModelInterface:
    """Reads the unembedding, output kind, special tokens and domain from `compiled.spec`.

    The spec is the compiler's own description of the model; reading it (rather
    than running the Haiku unembedding on an identity matrix) keeps this module
    free of guesses about how the model was built.

    Raises:
      ValueError: the model carries no spec (build it with the compiler or `tracr.io`),
        or uses layer norm.
    """
    model_spec = getattr(compiled, "spec", None)
    if model_spec is None:
        raise ValueError(
            "compiled has no spec: compression reads the model's structure from "
            "`model.spec`; compile the program with tracr.compiler or load it with tracr.io."
        )
    if compiled.model_config.layer_norm:
        raise ValueError(
            "compression needs a model without layer norm (model_config.layer_norm=False, as "
            "every compiled model has): a layer norm over the d-wide stream is not the one "
            "over D the model's weights expect."
        )
    stored = getattr(compiled, "unembed_matrix", None)
    if stored is None:
        stored = assembled.unembed_matrix_from_spec(model_spec)
    inp = model_spec.input
    special = (inp.bos_token, inp.pad_token)
    vocab = tuple(sorted((t for t in inp.tokens if t not in special), key=repr))
    return ModelInterface(
        unembed=np.asarray(stored, dtype=np.float32),
        categorical=model_spec.output.categorical,
        pad_id=inp.pad_id,
        bos_id=inp.bos_id,
        vocab_size=int(compiled.params[spec_lib.TOKEN_EMBED]["embeddings"].shape[0]),
        max_seq_len=int(compiled.params[spec_lib.POS_EMBED]["embeddings"].shape[0]) - 1,
        vocab=vocab,
    )


def check_w(compiled: assembled.AssembledTransformerModel, w: Any) -> np.ndarray:
    """`w` as a float32 [d, D] array, or a ValueError that says what is wrong."""
    with np.errstate(over="ignore"):  # a value beyond float32 is refused below
        w = np.asarray(w, dtype=np.float32)
    residual_size = len(compiled.residual_labels)
    if w.ndim != 2 or w.shape[1] != residual_size or w.shape[0] < 1:
        raise ValueError(
            f"w must be [d, D] with D = {residual_size} (the model's residual width) and "
            f"d >= 1, got shape {w.shape}; pass e.g. exact_compression(model).w."
        )
    if not np.all(np.isfinite(w)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(w))[0])
        raise ValueError(
            f"w holds a non-finite value ({w[bad]} at {bad}) in float32; a compressed model "
            "needs a finite w (one trained with too high a learning rate can diverge)."
        )
    return w


def compressed_params(compiled: assembled.AssembledTransformerModel, w: Any) -> hk.Params:
    """The compiled params plus `transformer/w_emb` = w [d, D], for CompressedTransformer."""
    w = check_w(compiled, w)
    params = dict(compiled.params)
    params["transformer"] = {compressed_model.W_EMB: jnp.asarray(w)}
    return params


def fold_params(compiled: assembled.AssembledTransformerModel, w: Any) -> hk.Params:
    """Multiplies w into the weights: params of a plain width-d transformer.

    Reading `x_d @ w` and then a linear map A [D, k] is one linear map
    `w @ A` [d, k]; a linear map B [k, D] followed by writing through w.T is
    `B @ w.T` [k, d]; embeddings E [V, D] become `E @ w.T`. With no layer norm
    (compiled models have none) the folded model computes exactly what the
    compressed one does.

    Raises:
      ValueError: w is not [d, D], or the model uses layer norm.
    """
    w = check_w(compiled, w)
    if compiled.model_config.layer_norm:
        raise ValueError(
            "fold_params needs a model without layer norm (model_config.layer_norm=False): "
            "a layer norm between read and weights does not commute with w."
        )
    folded: dict = {}
    for module, values in compiled.params.items():
        values = {k: np.asarray(v, dtype=np.float32) for k, v in values.items()}
        if module in ("token_embed", "pos_embed"):
            folded[module] = {"embeddings": values["embeddings"] @ w.T}
        elif module.endswith(("attn/query", "attn/key", "attn/value", "mlp/linear_1")):
            folded[module] = {"w": w @ values["w"], "b": values["b"]}  # reads the residual
        elif module.endswith(("attn/linear", "mlp/linear_2")):
            folded[module] = {"w": values["w"] @ w.T, "b": values["b"] @ w.T}  # writes it
        else:
            raise ValueError(
                f"fold_params does not know how parameter group {module!r} touches the "
                "residual; expected token_embed, pos_embed and transformer/layer_i/... linears."
            )
    return jax.tree_util.tree_map(jnp.asarray, folded)


def make_logits_forward(
    config: model.TransformerConfig,
    interface: ModelInterface,
    *,
    width: int,
    unembed: np.ndarray,
    embedding_size: Optional[int] = None,
    unembed_at_every_layer: bool = True,
) -> LogitsForward:
    """A jitted `(params, token_ids [B, T]) -> (TransformerOutput, logits [B, T, O])`.

    Args:
      config: the compiled model's configuration.
      interface: from `model_interface`.
      width: the width of the embeddings (D, or d for folded params).
      unembed: [width, O] output projection.
      embedding_size: run CompressedTransformer with this d (None: plain).
      unembed_at_every_layer: see CompressedTransformer.
    """
    unembed = jnp.asarray(unembed, dtype=jnp.float32)

    def forward(token_ids: jax.Array):
        token_embed = hk.Embed(interface.vocab_size, width, name="token_embed")
        pos_embed = hk.Embed(interface.max_seq_len + 1, width, name="pos_embed")
        embeddings = token_embed(token_ids) + pos_embed(jnp.arange(token_ids.shape[-1]))
        if interface.pad_id is None:
            mask = jnp.ones_like(token_ids)
        else:
            mask = token_ids != interface.pad_id
        if embedding_size is None:
            out = model.Transformer(config, name="transformer")(embeddings, mask, use_dropout=False)
        else:
            out = compressed_model.CompressedTransformer(config, name="transformer")(
                embeddings,
                mask,
                use_dropout=False,
                embedding_size=embedding_size,
                unembed_at_every_layer=unembed_at_every_layer,
            )
        return out, out.output @ unembed

    return jax.jit(hk.without_apply_rng(hk.transform(forward)).apply)


def decode_logits(logits: jax.Array, categorical: bool) -> jax.Array:
    """[B, T, O] logits -> [B, T] output ids (argmax) or values (column 0)."""
    return jnp.argmax(logits, axis=-1) if categorical else logits[..., 0]


def encode_padded(
    compiled: assembled.AssembledTransformerModel,
    inputs: Sequence[Sequence[Any]],
    length: Optional[int] = None,
) -> np.ndarray:
    """Token ids [N, T] with BOS prepended and PAD after each input.

    Args:
      compiled: gives the encoder and the PAD token.
      inputs: sequences of vocabulary tokens, without BOS.
      length: T; by default max_seq_len + 1 so every batch has one shape.
    """
    input_encoder = compiled.input_encoder
    bos = input_encoder.bos_token
    if length is None:
        length = int(compiled.params["pos_embed"]["embeddings"].shape[0])
    rows = []
    for x in inputs:
        ids = input_encoder.encode([bos, *x])
        if len(ids) > length:
            raise ValueError(f"input {list(x)!r} is longer than length={length} - 1; raise length.")
        rows.append(ids + [input_encoder.pad_encoding] * (length - len(ids)))
    return np.asarray(rows, dtype=np.int32).reshape(len(rows), length)


@dataclasses.dataclass(frozen=True, eq=False)
class CompressedModel:
    """A compiled model run with its residual compressed by `w` [d, D].

    Attributes:
      model: the uncompressed compiled model.
      w: [d, D] compression; rows need not be orthonormal.
      unembed_at_every_layer: record residuals decompressed to D (True) or
        compressed to d (False).
      folded: multiply w into the weights once (`fold_params`) and run a plain
        width-d transformer; same outputs, fewer FLOPs.
    """

    model: assembled.AssembledTransformerModel
    w: np.ndarray
    unembed_at_every_layer: bool = True
    folded: bool = False
    interface: ModelInterface = dataclasses.field(init=False, repr=False)
    params: hk.Params = dataclasses.field(init=False, repr=False)
    _logits_forward: LogitsForward = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        w = check_w(self.model, self.w)
        interface = model_interface(self.model)
        config = self.model.model_config
        if self.folded:
            params = fold_params(self.model, w)
            forward = make_logits_forward(
                config, interface, width=w.shape[0], unembed=w @ interface.unembed
            )
        else:
            params = compressed_params(self.model, w)
            forward = make_logits_forward(
                config,
                interface,
                width=w.shape[1],
                unembed=interface.unembed,
                embedding_size=w.shape[0],
                unembed_at_every_layer=self.unembed_at_every_layer,
            )
        # Frozen dataclass: derived fields are set once, here.
        object.__setattr__(self, "w", w)
        object.__setattr__(self, "interface", interface)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "_logits_forward", forward)

    @property
    def embedding_size(self) -> int:
        """d, the compressed residual width."""
        return self.w.shape[0]

    @property
    def residual_size(self) -> int:
        """D, the uncompressed residual width."""
        return self.w.shape[1]

    @property
    def input_encoder(self) -> Optional[encoder.Encoder]:
        return self.model.input_encoder

    @property
    def output_encoder(self) -> Optional[encoder.Encoder]:
        return self.model.output_encoder

    @property
    def model_config(self) -> model.TransformerConfig:
        return self.model.model_config

    @property
    def residual_labels(self) -> List[str]:
        return self.model.residual_labels

    def logits(
        self, params: hk.Params, token_ids: jax.Array
    ) -> Tuple[model.TransformerOutput, jax.Array]:
        """(states, output logits [B, T, O]) on token ids [B, T]."""
        out, logits = self._logits_forward(params, token_ids)
        if self.folded:
            # As CompressedTransformer: output and input embeddings always in the
            # D-wide space, the recorded states only with unembed_at_every_layer.
            w = jnp.asarray(self.w)
            every = self.unembed_at_every_layer
            out = model.TransformerOutput(
                layer_outputs=[x @ w for x in out.layer_outputs] if every else out.layer_outputs,
                residuals=[x @ w for x in out.residuals] if every else out.residuals,
                attn_logits=out.attn_logits,
                output=out.output @ w,
                input_embeddings=out.input_embeddings @ w,
            )
        return out, logits

    def forward(
        self, params: hk.Params, token_ids: jax.Array
    ) -> model.CompiledTransformerModelOutput:
        """Like AssembledTransformerModel.forward: token ids [B, T] -> outputs."""
        out, logits = self.logits(params, token_ids)
        return model.CompiledTransformerModelOutput(
            transformer_output=out,
            unembedded_output=decode_logits(logits, self.interface.categorical),
        )

    def apply(self, tokens: List[Any]) -> assembled.AssembledTransformerModelOutput:
        """Like AssembledTransformerModel.apply, on one input starting with BOS.

        Raises:
          ValueError: missing BOS, unknown token or sequence too long.
        """
        return assembled.apply_one(
            self.forward,
            self.params,
            self.model.input_encoder,
            self.model.output_encoder,
            tokens,
            unembed=self.model.unembed_matrix,  # inactive positions decode None, as `apply`
        )


def compressed_forward(
    compiled: assembled.AssembledTransformerModel,
    w: Any,
    *,
    unembed_at_every_layer: bool = True,
    folded: bool = False,
) -> Tuple[Callable[[hk.Params, jax.Array], model.CompiledTransformerModelOutput], hk.Params]:
    """(forward, params) running `compiled` with its residual compressed by w.

    `forward(params, token_ids)` has AssembledTransformerModel.forward's shape;
    `params` includes `transformer/w_emb` (or the folded weights).
    """
    compressed = CompressedModel(
        compiled, w, unembed_at_every_layer=unembed_at_every_layer, folded=folded
    )
    return compressed.forward, compressed.params
