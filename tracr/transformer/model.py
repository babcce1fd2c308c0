"""The decoder-only transformer that compiled programs run on (Haiku).

Glossary of shape letters: B batch, T sequence length (BOS included),
D residual width, H heads, V vocabulary size, O output width.

The model has no layer norm by default and uses ReLU in compiled models;
each layer is an attention sublayer followed by an MLP sublayer, both added
to the residual stream. `TransformerOutput` records the residual stream after
every sublayer, which is what interpretability users read.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional

import chex
import haiku as hk
import jax
import jax.numpy as jnp

from tracr.transformer import attention

CallableHaikuModule = Callable[..., jax.Array]


@chex.dataclass
class TransformerOutput:
    layer_outputs: List[jax.Array]  # each [B, T, D]: one per sublayer
    residuals: List[jax.Array]  # each [B, T, D]: residual after each sublayer
    attn_logits: List[jax.Array]  # each [B, H, T, T]
    output: jax.Array  # [B, T, D]
    input_embeddings: jax.Array  # [B, T, D]


@dataclasses.dataclass
class TransformerConfig:
    num_heads: int
    num_layers: int
    key_size: int
    mlp_hidden_size: int
    dropout_rate: float
    activation_function: Callable[[jax.Array], jax.Array] = jax.nn.gelu
    layer_norm: bool = True
    causal: bool = False


def attention_mask(mask: jax.Array, causal: bool) -> jax.Array:
    """[B, T] validity mask -> [B, 1, T, T] attention mask (keys masked, causal)."""
    seq_len = mask.shape[-1]
    attn_mask = mask[..., None, None, :].astype(bool)
    attn_mask = jnp.broadcast_to(attn_mask, (*mask.shape[:-1], 1, seq_len, seq_len))
    if causal:
        causal_mask = jnp.tril(jnp.ones((seq_len, seq_len), dtype=bool))
        attn_mask = attn_mask & causal_mask
    return attn_mask


@dataclasses.dataclass
class Transformer(hk.Module):
    """A stack of attention + MLP layers on a residual stream."""

    config: TransformerConfig
    name: Optional[str] = None

    def __post_init__(self):
        super().__init__(name=self.name)

    def __call__(
        self,
        embeddings: jax.Array,  # [B, T, D]
        mask: jax.Array,  # [B, T]
        *,
        use_dropout: bool = True,
    ) -> TransformerOutput:
        return residual_stack(self.config, embeddings, mask, use_dropout=use_dropout)


def _identity(x: jax.Array) -> jax.Array:
    return x


def residual_stack(
    config: TransformerConfig,
    embeddings: jax.Array,  # [B, T, D]
    mask: jax.Array,  # [B, T]
    *,
    use_dropout: bool,
    read: Callable[[jax.Array], jax.Array] = _identity,
    write: Callable[[jax.Array], jax.Array] = _identity,
    record: Callable[[jax.Array], jax.Array] = _identity,
) -> TransformerOutput:
    """The layers of `Transformer`, called inside a Haiku module named `transformer`.

    The residual stream is stored as `write(x)` and read back as `read(r)`
    (both the identity here; `compressed_model.CompressedTransformer` passes
    its compression matrix), and recorded states as `record(r)`. Parameters
    are `layer_i/attn/{query,key,value,linear}` and `layer_i/mlp/{linear_1,linear_2}`,
    and with `config.layer_norm` Tracr's `layer_i/layer_norm` (before attention),
    `layer_i/layer_norm_1` (before the MLP) and a final `layer_norm`.
    """
    model_size = embeddings.shape[-1]
    attn_mask = attention_mask(mask, config.causal)
    initializer = hk.initializers.VarianceScaling(2 / config.num_layers)
    dropout_rate = config.dropout_rate if use_dropout else 0.0

    def layer_norm(x: jax.Array) -> jax.Array:
        # Applied to the stream as stored (compressed in CompressedTransformer),
        # as in Tracr, so its scale and offset have the stream's width.
        if config.layer_norm:
            return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x)
        return x

    def dropout(x: jax.Array) -> jax.Array:
        if dropout_rate > 0:
            return hk.dropout(hk.next_rng_key(), dropout_rate, x)
        return x

    residual = write(embeddings)
    layer_outputs, residuals, attn_logits = [], [], []
    for layer in range(config.num_layers):
        with hk.experimental.name_scope(f"layer_{layer}"):
            attn_in = read(layer_norm(residual))  # [B, T, D]
            attn_out = attention.MultiHeadAttention(
                num_heads=config.num_heads,
                key_size=config.key_size,
                model_size=model_size,
                w_init=initializer,
                name="attn",
            )(attn_in, attn_in, attn_in, mask=attn_mask)
            out = write(dropout(attn_out.out))
            residual = residual + out
            layer_outputs.append(record(out))
            residuals.append(record(residual))
            attn_logits.append(attn_out.logits)

            mlp_in = read(layer_norm(residual))  # outside the mlp scope: layer_norm_1
            with hk.experimental.name_scope("mlp"):
                hidden = hk.Linear(config.mlp_hidden_size, w_init=initializer, name="linear_1")(
                    mlp_in
                )
                hidden = config.activation_function(hidden)
                out = hk.Linear(model_size, w_init=initializer, name="linear_2")(hidden)
            out = write(dropout(out))
            residual = residual + out
            layer_outputs.append(record(out))
            residuals.append(record(residual))

    return TransformerOutput(
        layer_outputs=layer_outputs,
        residuals=residuals,
        attn_logits=attn_logits,
        output=read(layer_norm(residual)),
        input_embeddings=embeddings,
    )


@chex.dataclass
class CompiledTransformerModelOutput:
    transformer_output: TransformerOutput
    unembedded_output: jax.Array  # [B, T] (argmax ids) or [B, T, O]


@dataclasses.dataclass
class CompiledTransformerModel(hk.Module):
    """Embedding + transformer + unembedding, as a compiled program runs."""

    transformer: Transformer
    token_embed: CallableHaikuModule
    position_embed: CallableHaikuModule
    unembed: CallableHaikuModule
    use_unembed_argmax: bool
    pad_token: Optional[int] = None

    def __post_init__(self):
        super().__init__(name=None)

    def embed(self, tokens: jax.Array) -> jax.Array:
        """[B, T] token ids -> [B, T, D] token plus position embeddings."""
        token_embeddings = self.token_embed(tokens)
        positions = jnp.arange(tokens.shape[-1])
        return token_embeddings + self.position_embed(positions)

    def __call__(
        self, tokens: jax.Array, use_dropout: bool = True
    ) -> CompiledTransformerModelOutput:
        if self.pad_token is None:
            input_mask = jnp.ones_like(tokens)
        else:
            input_mask = tokens != self.pad_token
        embeddings = self.embed(tokens)
        output = self.transformer(embeddings, input_mask, use_dropout=use_dropout)
        return CompiledTransformerModelOutput(
            transformer_output=output,
            unembedded_output=self.unembed(
                output.output, use_unembed_argmax=self.use_unembed_argmax
            ),
        )
