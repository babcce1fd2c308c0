"""The hybrid forward pass: a pure function of a params pytree and token ids.

    fwd = forward_fn(hspec)
    params = init_params(hspec, compiled_model.params, seed=0)
    out = jax.jit(fwd)(params, token_ids)     # out.logits [B, T, C]

Parameters are one dict, as Haiku writes them. The compiled ones keep the
compiled model's names (`token_embed`, `pos_embed`, `transformer/layer_i/...`,
see `spec.param_name`) and values; the learned ones live under `hybrid/`
(`hybrid/token_embed`, `hybrid/layer_i/attn/query`, ..., `hybrid/readout`).
`is_learned(name)` is the one test that splits them (training freezes the rest).

Each layer runs, in order: the compiled attention sublayer and the learned
heads side by side (both read the residual as it stands), then the compiled
MLP and the learned MLP side by side. Compiled sublayers read and write only
the compiled stream, with the compiled model's own modules and arithmetic, so
the compiled stream equals the compiled model's residual stream at every
sublayer. Learned sublayers read `concat(compiled[read_indices], learned)` and
write only the learned stream.

Shapes: B batch, T positions (BOS included), D compiled width, L learned
width (`d_learned`), C classes.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from tracr.hybrid.config import HybridSpec
from tracr.transformer import assembled, attention, model
from tracr.transformer import spec as spec_lib

LEARNED = "hybrid"  # top-level name scope of every learned parameter
READOUT = "readout"

Params = Dict[str, Dict[str, jax.Array]]


@chex.dataclass
class HybridOutput:
    logits: jax.Array  # [B, T, C]
    compiled_residuals: List[jax.Array]  # each [B, T, D]: after each sublayer
    learned_residuals: List[jax.Array]  # each [B, T, L]: after each sublayer


def is_learned(module: str) -> bool:
    """True for the parameter groups training may change (`hybrid/...`)."""
    return module == LEARNED or module.startswith(LEARNED + "/")


def _layer_modules(num_heads: int, key_size: int, mlp_hidden_size: int, width: int, w_init):
    """(attention or None, (linear_1, linear_2) or None) of one layer, in the current scope."""
    attn = None
    if num_heads:
        attn = attention.MultiHeadAttention(
            num_heads=num_heads, key_size=key_size, model_size=width, w_init=w_init, name="attn"
        )
    mlp = None
    if mlp_hidden_size:
        with hk.experimental.name_scope("mlp"):
            mlp = (
                hk.Linear(mlp_hidden_size, w_init=w_init, name="linear_1"),
                hk.Linear(width, w_init=w_init, name="linear_2"),
            )
    return attn, mlp


def _build_modules(hspec: HybridSpec):
    """Every Haiku module, built once up front so each name scope is entered once.

    (Haiku renames a scope entered twice, `hybrid_1/...`; modules keep the
    name they were built with wherever they are called.)
    """
    compiled = hspec.compiled
    vocab, max_len = compiled.input.vocab_size, hspec.max_len
    d_c, d_l = hspec.d_compiled, hspec.d_learned
    init = hk.initializers.VarianceScaling(2 / hspec.num_layers)
    compiled_layers, learned_layers = [], []
    embed_c = None
    if d_c:
        # The compiled model's own module names (spec.param_name); values come from it.
        embed_c = (
            hk.Embed(vocab, d_c, name=spec_lib.TOKEN_EMBED),
            hk.Embed(max_len, d_c, name=spec_lib.POS_EMBED),
        )
        with hk.experimental.name_scope("transformer"):
            for layer in range(hspec.compiled_layers):
                with hk.experimental.name_scope(f"layer_{layer}"):
                    compiled_layers.append(
                        _layer_modules(
                            compiled.num_heads,
                            compiled.key_size,
                            compiled.mlp_hidden_size,
                            d_c,
                            None,
                        )
                    )
    with hk.experimental.name_scope(LEARNED):
        embed_l = (
            hk.Embed(vocab, d_l, name="token_embed"),
            hk.Embed(max_len, d_l, name="pos_embed") if hspec.learned_positions else None,
        )
        for layer in range(hspec.num_layers):
            with hk.experimental.name_scope(f"layer_{layer}"):
                learned_layers.append(
                    _layer_modules(
                        hspec.num_heads, hspec.key_size, hspec.mlp_hidden_size, d_l, init
                    )
                )
        readout = hk.Linear(hspec.num_classes, name=READOUT)
    return embed_c, compiled_layers, embed_l, learned_layers, readout


def _forward(hspec: HybridSpec, token_ids: jax.Array) -> HybridOutput:
    compiled = hspec.compiled
    embed_c, compiled_layers, embed_l, learned_layers, readout = _build_modules(hspec)
    pad_id = compiled.input.pad_id
    mask = jnp.ones_like(token_ids) if pad_id is None else token_ids != pad_id
    attn_mask = model.attention_mask(mask, compiled.causal)
    positions = jnp.arange(token_ids.shape[-1])
    reads = np.asarray(hspec.read_indices, dtype=np.int32)
    activation = assembled.config_from_spec(compiled).activation_function

    def embed(modules):
        token, pos = modules
        if pos is None:
            return token(token_ids)
        return token(token_ids) + pos(positions)  # as CompiledTransformerModel.embed

    def apply(sublayer, modules, activation_fn, x):
        if sublayer == "attn":
            return modules(x, x, x, mask=attn_mask).out
        return modules[1](activation_fn(modules[0](x)))

    x_c = embed(embed_c) if embed_c else jnp.zeros((*token_ids.shape, 0), jnp.float32)
    x_l = embed(embed_l)
    compiled_res, learned_res = [], []
    for layer, learned_modules in enumerate(learned_layers):
        compiled_modules = compiled_layers[layer] if layer < len(compiled_layers) else (None, None)
        for k, sublayer in enumerate(("attn", "mlp")):
            x_in = jnp.concatenate([x_c[..., reads], x_l], axis=-1)
            if compiled_modules[k] is not None:
                x_c = x_c + apply(sublayer, compiled_modules[k], activation, x_c)
            if learned_modules[k] is not None:
                x_l = x_l + apply(sublayer, learned_modules[k], jax.nn.relu, x_in)
            compiled_res.append(x_c)
            learned_res.append(x_l)
    logits = readout(jnp.concatenate([x_c[..., reads], x_l], axis=-1))
    return HybridOutput(
        logits=logits, compiled_residuals=compiled_res, learned_residuals=learned_res
    )


def _transformed(hspec: HybridSpec) -> hk.Transformed:
    return hk.without_apply_rng(hk.transform(lambda ids: _forward(hspec, ids)))


def forward_fn(hspec: HybridSpec) -> Callable[[Params, jax.Array], HybridOutput]:
    """`fn(params, token_ids [B, T]) -> HybridOutput`: pure, jit-able, differentiable."""
    return _transformed(hspec).apply


def random_params(hspec: HybridSpec, seed: int = 0) -> Params:
    """Every group drawn at random from `seed`, the compiled ones too (their shapes)."""
    dummy = jnp.zeros((1, hspec.max_len), dtype=jnp.int32)
    return _transformed(hspec).init(jax.random.PRNGKey(seed), dummy)


def init_params(
    hspec: HybridSpec, compiled_params: Mapping[str, Mapping[str, jax.Array]], *, seed: int
) -> Params:
    """Learned parameters drawn from `seed`, compiled ones copied from `compiled_params`.

    Raises:
      ValueError: `compiled_params` lacks a group the hybrid needs, or a shape differs.
    """
    params = random_params(hspec, seed)
    out: Params = {}
    for module, values in params.items():
        if is_learned(module):
            out[module] = dict(values)
            continue
        if module not in compiled_params:
            raise ValueError(
                f"compiled_params has no {module!r}; pass the compiled model's `params` "
                "(the model whose spec is hspec.compiled)."
            )
        out[module] = {}
        for key, value in values.items():
            given = jnp.asarray(compiled_params[module][key], dtype=jnp.float32)
            if given.shape != value.shape:
                raise ValueError(
                    f"compiled_params[{module!r}][{key!r}] has shape {given.shape}; the spec "
                    f"says {value.shape}. Pass the params of the model hspec.compiled describes."
                )
            out[module][key] = given
    return out


def split(params: Params):
    """(learned, compiled) parameter groups, each a dict."""
    learned = {k: v for k, v in params.items() if is_learned(k)}
    return learned, {k: v for k, v in params.items() if not is_learned(k)}


def count(params: Mapping[str, Mapping[str, jax.Array]]) -> int:
    """Number of scalars in a params dict."""
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))
