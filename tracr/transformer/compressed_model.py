"""The transformer stack with its residual stream compressed by a matrix `w_emb`.

Compiled residual streams are sparse: every value of every categorical
variable owns a dimension. Section 5 of the Tracr paper keeps the residual in
a smaller space of width d (`embedding_size`) instead: a matrix
`w_emb` [d, D] maps it back out whenever a sublayer reads, and its transpose
maps every sublayer's output back in,

    x_D = x_d @ w_emb            (read: decompress)
    x_d = x_D @ w_emb.T          (write: compress)

so the layers keep the compiled weights of the uncompressed model unchanged
and only `w_emb` is new. With orthonormal rows spanning every residual state
the model computes exactly what the uncompressed one does; with fewer rows it
is an approximation that `w_emb` can be trained for (see tracr.compression).

Example::

    def f(emb, mask):
        return CompressedTransformer(config, name="transformer")(
            emb, mask, embedding_size=8, use_dropout=False)
    out = hk.without_apply_rng(hk.transform(f)).apply(
        {**compiled_params, "transformer": {"w_emb": w}}, emb, mask)

Parameters are named as in `model.Transformer`
(`transformer/layer_i/attn/{query,key,value,linear}`,
`transformer/layer_i/mlp/{linear_1,linear_2}`) plus `transformer/w_emb`, so a
compiled model's params run here unchanged. With `config.layer_norm` the layer
norms (Tracr's `layer_i/layer_norm`, `layer_i/layer_norm_1`, `layer_norm`) act
on the stream as stored, so their parameters have the compressed width d, as
in Tracr.

Glossary of shape letters: B batch, T sequence length, D uncompressed
residual width, d compressed width (`embedding_size`), H heads.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from tracr.transformer import model

W_EMB = "w_emb"  # parameter name of the compression matrix inside the module


@dataclasses.dataclass
class CompressedTransformer(hk.Module):
    """`model.Transformer` whose residual stream lives in a d-dimensional space."""

    config: model.TransformerConfig
    name: Optional[str] = None

    def __post_init__(self):
        super().__init__(name=self.name)

    def __call__(
        self,
        embeddings: jax.Array,  # [B, T, D]
        mask: jax.Array,  # [B, T]
        *,
        use_dropout: bool = True,
        embedding_size: Optional[int] = None,
        unembed_at_every_layer: bool = False,
    ) -> model.TransformerOutput:
        """Runs the stack with the residual compressed to `embedding_size`.

        Args:
          embeddings: token plus position embeddings in the uncompressed space.
          mask: 1 for real positions, 0 for padding (masked out as keys).
          use_dropout: apply `config.dropout_rate` (compiled models have 0).
          embedding_size: d, the compressed width; None runs uncompressed (no
            `w_emb` parameter), which is `model.Transformer` exactly.
          unembed_at_every_layer: record `residuals` and `layer_outputs`
            decompressed to [B, T, D] (x_d @ w_emb) instead of [B, T, d].

        Returns:
          The recorded states; `output` is always decompressed to [B, T, D] so
          that the compiled unembedding applies to it, and `input_embeddings`
          are the given (uncompressed) embeddings.

        Raises:
          ValueError: embeddings not [B, T, D], mask not [B, T], or a
            non-positive embedding_size.
        """
        config = self.config
        if embeddings.ndim != 3:
            raise ValueError(
                f"embeddings must be [B, T, D], got shape {embeddings.shape}; add a batch "
                "axis with embeddings[None] for a single sequence."
            )
        if mask.shape != embeddings.shape[:2]:
            raise ValueError(
                f"mask must be [B, T] = {embeddings.shape[:2]} to match the embeddings, "
                f"got shape {mask.shape}."
            )
        model_size = embeddings.shape[-1]
        read, write = _residual_maps(model_size, embedding_size)
        record = read if unembed_at_every_layer else (lambda x: x)

        return model.residual_stack(
            config,
            embeddings,
            mask,
            use_dropout=use_dropout,
            read=read,
            write=write,
            record=record,
        )


def _residual_maps(
    model_size: int, embedding_size: Optional[int]
) -> tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array], jax.Array]]:
    """(read, write): decompress [.., d] -> [.., D] and compress [.., D] -> [.., d]."""
    if embedding_size is None:
        return (lambda x: x), (lambda x: x)
    if isinstance(embedding_size, bool) or not isinstance(embedding_size, (int, np.integer)):
        raise ValueError(f"embedding_size must be a positive int or None, got {embedding_size!r}.")
    if embedding_size < 1:
        raise ValueError(
            f"embedding_size must be >= 1, got {embedding_size}; pass None to run uncompressed."
        )
    # Normal with variance 1/d makes E[w^T w] = I, the identity on average.
    w_emb = hk.get_parameter(
        W_EMB,
        (int(embedding_size), model_size),
        init=hk.initializers.RandomNormal(stddev=embedding_size**-0.5),
    )  # [d, D]
    return (lambda x: x @ w_emb), (lambda x: x @ jnp.transpose(w_emb))
