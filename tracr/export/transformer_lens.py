"""Export a compiled model to TransformerLens parameter names and shapes.

TransformerLens (`HookedTransformer`) stores a decoder-only transformer as a
flat state dict; this module writes a compiled model's weights in exactly
those names and shapes, as numpy arrays, without depending on
TransformerLens::

    from tracr.export import to_transformer_lens
    exported = to_transformer_lens(model)
    exported.state_dict["blocks.0.attn.W_Q"].shape   # (n_heads, d_model, d_head)
    exported.config["d_model"]

    # With the `torch` extra, a live TransformerLens model in one call:
    # from tracr.export import to_transformer_lens_model

Names (L layers, H heads, D = d_model, K = d_head, M = d_mlp, V = d_vocab,
O = d_vocab_out, N = n_ctx):

    embed.W_E [V, D]                pos_embed.W_pos [N, D]
    blocks.{i}.attn.W_Q/W_K/W_V [H, D, K]   b_Q/b_K/b_V [H, K]
    blocks.{i}.attn.W_O [H, K, D]           b_O [D]
    blocks.{i}.mlp.W_in [D, M]  b_in [M]    W_out [M, D]  b_out [D]
    unembed.W_U [D, O]          unembed.b_U [O]

Conventions that make the two models agree:
- Scaling: both divide attention scores by sqrt(d_head) (TransformerLens'
  `use_attn_scale=True`, `attn_scale = sqrt(d_head)`); the compiler already
  folds the inverse into W_Q, so no weight is rescaled here.
- No layer norm (`normalization_type=None`), the spec's activation (ReLU),
  `use_attn_result`, `use_split_qkv_input` and `use_hook_mlp_in` on (as ACDC
  and InterpBench set them), learned absolute positions
  (`positional_embedding_type="standard"`); position 0 holds BOS.
- Masking: a non-causal model exports `attention_dir="bidirectional"`. Our
  model also hides PAD keys from attention: pass TransformerLens an
  `attention_mask` of `tokens != pad_token_id` when a batch is padded.
- Output: categorical programs decode by argmax over the logits
  (`output_values[argmax]`), None where no logit reaches
  `spec.ACTIVE_THRESHOLD` (as `apply`); numerical programs read `logits[..., 0]`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np

from tracr.export import tokens as tokens_lib
from tracr.transformer import assembled
from tracr.transformer import spec as spec_lib


@dataclasses.dataclass(frozen=True)
class TransformerLensExport:
    """Weights in TransformerLens names, its config, and how to decode.

    Attributes:
      state_dict: parameter name -> float32 numpy array (see module docstring).
      config: keyword arguments for TransformerLens' `HookedTransformerConfig`.
      tokens: the token of each input id (`W_E` row), BOS and PAD included.
      bos_token_id, pad_token_id: ids of BOS (always at position 0) and PAD.
      output_values: the value of each output logit for categorical programs;
        None for numerical ones (the value is `logits[..., 0]`).
      residual_labels: the name of each of the d_model residual dimensions.
    """

    state_dict: Dict[str, np.ndarray]
    config: Dict[str, Any]
    tokens: Tuple[Any, ...]
    bos_token_id: Optional[int]
    pad_token_id: Optional[int]
    output_values: Optional[Tuple[Any, ...]]
    residual_labels: Tuple[str, ...]


def _array(params: Dict[str, Dict[str, Any]], module: str, name: str) -> np.ndarray:
    try:
        return np.asarray(params[module][name], dtype=np.float32)
    except KeyError:
        raise ValueError(
            f"model.params has no {module}/{name}; only models in the Tracr parameter layout "
            "(from compiling.compile_rasp_to_model or tracr.io.load_model) can be exported."
        ) from None


# Hooks that ACDC and InterpBench turn on: per-head results, per-head q/k/v inputs
# and the MLP input.
HOOK_FLAGS = ("use_attn_result", "use_split_qkv_input", "use_hook_mlp_in")


def transformer_lens_config(model_spec: spec_lib.ModelSpec) -> Dict[str, Any]:
    """`HookedTransformerConfig` / `TransformerBridgeConfig` arguments for a spec."""
    if model_spec.layer_norm:
        raise ValueError(
            "model.spec.layer_norm is True; compiled models have no layer norm and the "
            "export writes none. Export a model from compiling.compile_rasp_to_model."
        )
    return {
        "n_layers": int(assembled.config_from_spec(model_spec).num_layers),
        "d_model": int(model_spec.d_model),
        "d_head": int(model_spec.key_size),
        "n_heads": int(model_spec.num_heads),
        "d_mlp": int(model_spec.mlp_hidden_size),
        "d_vocab": int(model_spec.input.vocab_size),
        "d_vocab_out": int(model_spec.output.width),
        "n_ctx": int(model_spec.max_seq_len + 1),
        "act_fn": model_spec.activation,
        "normalization_type": None,
        "attention_dir": "causal" if model_spec.causal else "bidirectional",
        "attn_only": False,
        "positional_embedding_type": "standard",
        "use_attn_scale": True,
        "attn_scale": math.sqrt(model_spec.key_size),
        "default_prepend_bos": False,
        **{flag: True for flag in HOOK_FLAGS},
    }


def to_transformer_lens(model: assembled.AssembledTransformerModel) -> TransformerLensExport:
    """Converts a compiled model's weights to TransformerLens' layout.

    Args:
      model: a compiled (or loaded) model; its `spec` says how it is laid out.

    Returns:
      The state dict, the config and the decoding information.

    Raises:
      ValueError: the model has no spec, or has layer norm.
    """
    model_spec = tokens_lib.require_spec(model)
    config = transformer_lens_config(model_spec)
    params = model.params
    h, k, d_model = model_spec.num_heads, model_spec.key_size, model_spec.d_model
    state: Dict[str, np.ndarray] = {
        "embed.W_E": _array(params, spec_lib.TOKEN_EMBED, "embeddings"),
        "pos_embed.W_pos": _array(params, spec_lib.POS_EMBED, "embeddings"),
    }
    for layer in range(config["n_layers"]):
        block = f"blocks.{layer}"
        for ours, theirs in (("query", "Q"), ("key", "K"), ("value", "V")):
            module = spec_lib.param_name(layer, "attn", ours)
            w = _array(params, module, "w").reshape(d_model, h, k)  # [D, H, K]
            state[f"{block}.attn.W_{theirs}"] = np.ascontiguousarray(w.transpose(1, 0, 2))
            state[f"{block}.attn.b_{theirs}"] = _array(params, module, "b").reshape(h, k)
        module = spec_lib.param_name(layer, "attn", "linear")
        state[f"{block}.attn.W_O"] = _array(params, module, "w").reshape(h, k, d_model)
        state[f"{block}.attn.b_O"] = _array(params, module, "b")
        module = spec_lib.param_name(layer, "mlp", "linear_1")
        state[f"{block}.mlp.W_in"] = _array(params, module, "w")
        state[f"{block}.mlp.b_in"] = _array(params, module, "b")
        module = spec_lib.param_name(layer, "mlp", "linear_2")
        state[f"{block}.mlp.W_out"] = _array(params, module, "w")
        state[f"{block}.mlp.b_out"] = _array(params, module, "b")
    state["unembed.W_U"] = assembled.unembed_matrix_from_spec(model_spec)
    state["unembed.b_U"] = np.zeros(model_spec.output.width, dtype=np.float32)
    inp, out = model_spec.input, model_spec.output
    return TransformerLensExport(
        state_dict=state,
        config=config,
        tokens=tuple(inp.tokens),
        bos_token_id=inp.bos_id,
        pad_token_id=inp.pad_id,
        output_values=tuple(out.values) if out.categorical else None,
        residual_labels=tuple(model_spec.residual_labels),
    )


NPZ_FILE = "transformer_lens.npz"
JSON_FILE = "transformer_lens.json"


def write_transformer_lens(
    model: assembled.AssembledTransformerModel, directory: Any
) -> TransformerLensExport:
    """Writes `to_transformer_lens(model)` to `directory` (made if missing).

    Files: transformer_lens.npz (the state dict) and transformer_lens.json
    (config, tokens, BOS/pad ids, output values, residual labels).

    Returns:
      The export that was written.
    """
    import json
    import pathlib

    from tracr.io import saving

    exported = to_transformer_lens(model)
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / NPZ_FILE, **exported.state_dict)
    info = {
        "config": exported.config,
        "tokens": [saving.encode_value(t) for t in exported.tokens],
        "bos_token_id": exported.bos_token_id,
        "pad_token_id": exported.pad_token_id,
        "output_values": None
        if exported.output_values is None
        else [saving.encode_value(v) for v in exported.output_values],
        "residual_labels": list(exported.residual_labels),
    }
    (directory / JSON_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return exported
