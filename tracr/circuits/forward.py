"""A pure-JAX forward pass of a compiled model, one term per circuit node.

Circuits need what the Haiku model hides: each head's own contribution to the
residual stream (TransformerLens' `hook_result`), each sublayer's input, and
the freedom to replace one node's contribution by another value. This module
reads the padded parameters once, by `spec.param_name`, into `Weights`, and
runs them as plain functions of arrays::

    weights = forward.weights_of(model)
    trace = forward.run(weights, token_ids)            # per-node contributions
    trace.out["0.1"]                                   # [B, T, D]: head 0.1's output
    trace.out["embed.position"]                        # the position embedding's share

The sum is the Haiku model's: the residual before a sublayer is the
embedding plus every earlier node's contribution plus the attention output
biases (which, as in TransformerLens' `hook_result`, belong to no head).
Layer norm is not supported (compiled models have none).

Glossary of shape letters: B batch, T sequence length (BOS included), D
residual width, K key size, M MLP hidden width, O output width.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tracr.transformer import assembled, attention
from tracr.transformer import spec as spec_lib

Array = jax.Array

EMBED = "embed"
UNEMBED = "unembed"
HEAD_SLOTS = ("q", "k", "v")  # the inputs of a head
IN = "in"  # the one input of an MLP or of the unembedding
# The embedding's two terms (TransformerLens' `hook_embed`, with the constant
# `one` direction, and `hook_pos_embed`): `Trace.out[embed_part(p)]` holds each.
EMBED_PARTS = ("token", "position")


def embed_part(part: str) -> str:
    """The `Trace.out` key of embedding part `part` (one of `EMBED_PARTS`)."""
    if part not in EMBED_PARTS:
        raise ValueError(f"embedding part must be one of {EMBED_PARTS}, got {part!r}.")
    return f"{EMBED}.{part}"


def mlp_name(layer: int) -> str:
    """The node name of layer `layer`'s MLP, as `ModelSpec.nodes_computing` spells it."""
    return f"mlp {layer}"


@dataclasses.dataclass(frozen=True)
class Weights:
    """The parameters of one compiled model, per node (a JAX pytree of arrays).

    `heads[name]` holds `(wq [D, K], bq [K], wk, bk, wv, bv, wo [K, D])`,
    `mlps[name]` holds `(w1 [D, M], b1 [M], w2 [M, D], b2 [D])` restricted to
    the layer's hidden units, `attn_bias[layer]` the output bias [D].
    """

    token_embed: Array  # [V, D]
    pos_embed: Array  # [T_max, D]
    heads: Dict[str, Tuple[Array, ...]]
    mlps: Dict[str, Tuple[Array, ...]]
    attn_bias: Tuple[Array, ...]
    unembed: Array  # [D, O]
    spec: spec_lib.ModelSpec = dataclasses.field(metadata={"static": True})

    @property
    def order(self) -> Tuple[str, ...]:
        """Node names in the order they run: embed, heads and MLP of each layer, unembed."""
        names = [EMBED]
        for layer in self.spec.layers:
            names += [h.name for h in layer.heads]
            if layer.mlp is not None:
                names.append(mlp_name(layer.index))
        return (*names, UNEMBED)


jax.tree_util.register_dataclass(
    Weights,
    data_fields=["token_embed", "pos_embed", "heads", "mlps", "attn_bias", "unembed"],
    meta_fields=["spec"],
)


def weights_of(model: assembled.AssembledTransformerModel, *, numpy: bool = False) -> Weights:
    """Splits a compiled model's padded parameters into per-node weights.

    With `numpy=True` the arrays are numpy arrays, and every function here
    then runs in numpy: no jit compilation per shape, which is what many
    small ablations on small models want. Otherwise they are JAX arrays (for
    `jax.grad`, `jit`).

    Raises:
      ValueError: `model` is not a compiled model (e.g. a compression's
        `CompressedModel`: pass its `.model`, the compiled model it runs), has
        no `spec`, or uses layer norm.
    """
    if not hasattr(model, "spec"):
        inner = getattr(model, "model", None)
        hint = (
            f" For a {type(model).__name__}, pass its `.model` (the compiled model it "
            "compresses): the circuit is that model's, read off its uncompressed weights."
            if hasattr(inner, "spec")
            else ""
        )
        raise ValueError(
            "circuits need a compiled model (AssembledTransformerModel, from "
            f"compiling.compile_rasp_to_model or tracr.io.saving.load_model), got "
            f"{type(model).__name__}.{hint}"
        )
    model_spec = model.spec
    if model_spec is None:
        raise ValueError(
            "circuits need model.spec; compile the model with this version of tracr or "
            "load it with tracr.io.saving.load_model."
        )
    if model_spec.layer_norm:
        raise ValueError("circuits need a model without layer norm (compiled models have none).")
    params = model.params
    k = model_spec.key_size
    asarray = np.asarray if numpy else jnp.asarray

    def get(layer: int, sublayer: str, linear: str, key: str) -> np.ndarray:
        return np.asarray(params[spec_lib.param_name(layer, sublayer, linear)][key], np.float32)

    heads, mlps, attn_bias = {}, {}, []
    for layer in model_spec.layers:
        li = layer.index
        if li < model.model_config.num_layers:
            attn_bias.append(asarray(get(li, "attn", "linear", "b")))
        for h in layer.heads:
            cols = slice(h.head * k, (h.head + 1) * k)
            heads[h.name] = tuple(
                asarray(x)
                for x in (
                    get(li, "attn", "query", "w")[:, cols],
                    get(li, "attn", "query", "b")[cols],
                    get(li, "attn", "key", "w")[:, cols],
                    get(li, "attn", "key", "b")[cols],
                    get(li, "attn", "value", "w")[:, cols],
                    get(li, "attn", "value", "b")[cols],
                    get(li, "attn", "linear", "w")[cols, :],
                )
            )
        if layer.mlp is not None:
            hidden = [i for part in layer.mlp.parts for i in part.hidden]
            mlps[mlp_name(li)] = tuple(
                asarray(x)
                for x in (
                    get(li, "mlp", "linear_1", "w")[:, hidden],
                    get(li, "mlp", "linear_1", "b")[hidden],
                    get(li, "mlp", "linear_2", "w")[hidden, :],
                    get(li, "mlp", "linear_2", "b"),
                )
            )
    return Weights(
        token_embed=asarray(np.asarray(params[spec_lib.TOKEN_EMBED]["embeddings"], np.float32)),
        pos_embed=asarray(np.asarray(params[spec_lib.POS_EMBED]["embeddings"], np.float32)),
        heads=heads,
        mlps=mlps,
        attn_bias=tuple(attn_bias),
        unembed=asarray(assembled.unembed_matrix_from_spec(model_spec)),
        spec=model_spec,
    )


def array_module(*arrays):
    """numpy when every array is a numpy array, else jax.numpy."""
    return np if all(isinstance(a, np.ndarray) for a in arrays) else jnp


def attention_mask(weights: Weights, token_ids: Array) -> Array:
    """[B, T] ids -> [B, 1, T, T] bool: PAD keys masked out, and later keys when causal."""
    xp = array_module(weights.token_embed, token_ids)
    pad = weights.spec.input.pad_id
    t = token_ids.shape[-1]
    valid = xp.ones_like(token_ids, dtype=bool) if pad is None else token_ids != pad
    mask = xp.broadcast_to(valid[:, None, None, :], (token_ids.shape[0], 1, t, t))
    if weights.spec.causal:
        mask = mask & xp.tril(xp.ones((t, t), dtype=bool))
    return mask


def head(w: Tuple[Array, ...], xq: Array, xk: Array, xv: Array, mask: Array) -> Array:
    """One head's contribution [..., T, D] from its query, key and value inputs [..., T, D].

    The arithmetic of `attention.MultiHeadAttention` for one head; `mask` is
    [..., 1, T, T].
    """
    wq, bq, wk, bk, wv, bv, wo = w
    xp = array_module(xq, xk, xv, wq)
    q, k, v = xq @ wq + bq, xk @ wk + bk, xv @ wv + bv
    logits = xp.einsum("...tk,...sk->...ts", q, k) / np.sqrt(wq.shape[1]).astype(np.float32)
    logits = xp.where(mask[..., 0, :, :], logits, attention.MASKED_LOGIT)
    e = xp.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)) @ v @ wo


def mlp(w: Tuple[Array, ...], x: Array) -> Array:
    """One MLP sublayer's contribution [..., T, D] from its input [..., T, D] (ReLU)."""
    w1, b1, w2, b2 = w
    return array_module(x, w1).maximum(x @ w1 + b1, 0) @ w2 + b2


def embed_terms(weights: Weights, token_ids: Array) -> Tuple[Array, Array]:
    """[B, T] ids -> the token and the position embedding, each [B, T, D]."""
    xp = array_module(weights.token_embed, token_ids)
    token = weights.token_embed[token_ids]
    return token, xp.broadcast_to(weights.pos_embed[: token_ids.shape[-1]], token.shape)


def embed(weights: Weights, token_ids: Array) -> Array:
    """[B, T] ids -> [B, T, D]: token plus position embedding."""
    return weights.token_embed[token_ids] + weights.pos_embed[: token_ids.shape[-1]]


@dataclasses.dataclass(frozen=True)
class Trace:
    """One run: every node's input residual and output contribution.

    `inputs[name]` is the residual the node reads [B, T, D] (for a head: its
    query, key and value input alike); `out[name]` what it adds [B, T, D]
    (`out["unembed"]` is the output magnitudes [B, T, O]), and
    `out[embed_part(p)]` each term of `out["embed"]` (see `EMBED_PARTS`).
    """

    inputs: Dict[str, Array]
    out: Dict[str, Array]
    mask: Array  # [B, 1, T, T]


def run(
    weights: Weights,
    token_ids: Array,
    replace: Optional[Mapping[str, Array]] = None,
    add: Optional[Mapping[Tuple[str, str], Array]] = None,
    cut: Optional[Mapping[Tuple[str, str], Sequence[str]]] = None,
) -> Trace:
    """Runs the model on [B, T] ids, node by node.

    Args:
      weights: from `weights_of`.
      token_ids: [B, T] ids (PAD-padded; BOS first).
      replace: node name -> contribution [B, T, D] that every later node reads
        instead of the node's own (activation patching of a node).
      add: (node name, input slot) -> [B, T, D] added to what that input
        reads (a point to differentiate at, for attribution patching).
      cut: (node name, input slot) -> parents whose contributions in this very
        run that input does not read (zero ablation of edges; cuts compose: a
        parent changed by an earlier cut is removed as changed). A parent may
        be an embedding part (`embed_part`).
    """
    replace = replace or {}
    add = add or {}
    cut = cut or {}
    mask = attention_mask(weights, token_ids)
    inputs, out = {}, {}
    token, position = embed_terms(weights, token_ids)
    residual = token + position
    out[EMBED] = residual
    out[embed_part("token")], out[embed_part("position")] = token, position
    if EMBED in replace:
        residual = replace[EMBED]

    def read(name: str, slot: str) -> Array:
        inputs[name] = residual
        parents = cut.get((name, slot))
        x = residual - sum(out[p] for p in parents) if parents else residual
        return x + add[(name, slot)] if (name, slot) in add else x

    for layer in weights.spec.layers:
        written = []
        for h in layer.heads:
            xq, xk, xv = (read(h.name, slot) for slot in HEAD_SLOTS)
            out[h.name] = head(weights.heads[h.name], xq, xk, xv, mask)
            written.append(replace.get(h.name, out[h.name]))
        if layer.index < len(weights.attn_bias):
            residual = residual + weights.attn_bias[layer.index] + sum(written, 0.0)
        if layer.mlp is not None:
            name = mlp_name(layer.index)
            out[name] = mlp(weights.mlps[name], read(name, IN))
            residual = residual + replace.get(name, out[name])
    out[UNEMBED] = read(UNEMBED, IN) @ weights.unembed
    return Trace(inputs=inputs, out=out, mask=mask)
