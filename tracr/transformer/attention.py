"""Multi-head attention (Haiku) that also returns its logits.

Standard scaled dot-product attention: logits are divided by sqrt(key_size),
so compiled weights fold that factor into the query projection. Shapes:
B batch, T query length, S key length, H heads, K key size, V value size,
D model size.
"""

from __future__ import annotations

from typing import Optional

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

# Logit given to masked-out keys: finite so that rows that are fully masked
# (e.g. padding queries) stay NaN-free.
MASKED_LOGIT = -1e30


@chex.dataclass
class AttentionOutput:
    out: jax.Array  # [B, T, D]
    logits: jax.Array  # [B, H, T, S]


class MultiHeadAttention(hk.Module):
    """Multi-headed attention with parameters query/key/value/linear."""

    def __init__(
        self,
        num_heads: int,
        key_size: int,
        w_init_scale: Optional[float] = None,
        *,
        w_init: Optional[hk.initializers.Initializer] = None,
        value_size: Optional[int] = None,
        model_size: Optional[int] = None,
        name: Optional[str] = None,
    ):
        super().__init__(name=name)
        if num_heads < 1 or key_size < 1:
            raise ValueError(
                f"num_heads and key_size must be >= 1, got {num_heads} and {key_size}."
            )
        self.num_heads = num_heads
        self.key_size = key_size
        self.value_size = value_size or key_size
        self.model_size = model_size or key_size * num_heads
        if w_init is None:
            scale = 1.0 if w_init_scale is None else w_init_scale
            w_init = hk.initializers.VarianceScaling(scale)
        self.w_init = w_init

    def __call__(
        self,
        query: jnp.ndarray,  # [B, T, D]
        key: jnp.ndarray,  # [B, S, D]
        value: jnp.ndarray,  # [B, S, D]
        mask: Optional[jnp.ndarray] = None,  # [B, H or 1, T, S]
    ) -> AttentionOutput:
        *leading, t, _ = query.shape

        # Linear layers are created inline (not in a helper method) so that their
        # parameters are named attn/query, attn/key, attn/value.
        def heads(x, head_size, name):
            y = hk.Linear(self.num_heads * head_size, w_init=self.w_init, name=name)(x)
            return y.reshape((*x.shape[:-1], self.num_heads, head_size))

        query_heads = heads(query, self.key_size, "query")  # [B, T, H, K]
        key_heads = heads(key, self.key_size, "key")  # [B, S, H, K]
        value_heads = heads(value, self.value_size, "value")  # [B, S, H, V]
        logits = jnp.einsum("...thk,...shk->...hts", query_heads, key_heads)
        logits = logits / np.sqrt(self.key_size).astype(key.dtype)
        if mask is not None:
            logits = jnp.where(mask, logits, MASKED_LOGIT)
        weights = jax.nn.softmax(logits)
        attn = jnp.einsum("...hts,...shd->...thd", weights, value_heads)
        attn = jnp.reshape(attn, (*leading, t, -1))
        out = hk.Linear(self.model_size, w_init=self.w_init, name="linear")(attn)
        return AttentionOutput(out=out, logits=logits)
