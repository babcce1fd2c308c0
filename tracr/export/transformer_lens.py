"""Export a compiled model to TransformerLens parameter names and shapes.

TransformerLens (`HookedTransformer`) stores a decoder-only transformer as a
flat state dict; this module writes a compiled model's weights in exactly
those names and shapes, as numpy arrays, without depending on
TransformerLens::

    from tracr.export import to_transformer_lens
    exported = to_transformer_lens(model)
    exported.state_dict["blocks.0.attn.W_Q"].shape   # (n_heads, d_model, d_head)
    exported.config["d_model"]

    # With TransformerLens installed:
    # cfg = HookedTransformerConfig(**exported.config)
    # tl_model = HookedTransformer(cfg)
    # tl_model.load_state_dict({k: torch.tensor(v) for k, v in
    #                           exported.state_dict.items()}, strict=False)

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
- No layer norm (`normalization_type=None`), ReLU MLPs, learned absolute
  positions (`positional_embedding_type="standard"`); position 0 holds BOS.
- Masking: a non-causal model exports `attention_dir="bidirectional"`. Our
  model also hides PAD keys from attention: pass TransformerLens an
  `attention_mask` of `tokens != pad_token_id` when a batch is padded.
- Output: categorical programs decode by argmax over the logits
  (`output_values[argmax]`); numerical programs read `logits[..., 0]`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np

from tracr.transformer import assembled, encoder
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


def to_transformer_lens(model: assembled.AssembledTransformerModel) -> TransformerLensExport:
    """Converts a compiled model's weights to TransformerLens' layout.

    Args:
      model: a compiled (or loaded) model with a categorical input encoder
        and an `unembed_matrix`.

    Returns:
      The state dict, the config and the decoding information.

    Raises:
      ValueError: the model has layer norm, no unembedding or no input encoder.
    """
    config = model.model_config
    if config.layer_norm:
        raise ValueError(
            "model_config.layer_norm is True; compiled models have no layer norm and the "
            "export writes none. Export a model from compiling.compile_rasp_to_model."
        )
    if model.unembed_matrix is None:
        raise ValueError(
            "model.unembed_matrix is None; export a model built by compile_rasp_to_model or "
            "tracr.io.load_model, which record the unembedding."
        )
    in_enc = model.input_encoder
    if not isinstance(in_enc, encoder.CategoricalEncoder):
        raise ValueError(
            f"model.input_encoder must be a CategoricalEncoder, got {type(in_enc).__name__}."
        )
    params = model.params
    h, k = config.num_heads, config.key_size
    w_e = _array(params, "token_embed", "embeddings")
    w_pos = _array(params, "pos_embed", "embeddings")
    d_model = w_e.shape[1]
    w_u = np.asarray(model.unembed_matrix, dtype=np.float32)

    state: Dict[str, np.ndarray] = {"embed.W_E": w_e, "pos_embed.W_pos": w_pos}
    for layer in range(config.num_layers):
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
    state["unembed.W_U"] = w_u
    state["unembed.b_U"] = np.zeros(w_u.shape[1], dtype=np.float32)

    tl_config = {
        "n_layers": int(config.num_layers),
        "d_model": int(d_model),
        "d_head": int(k),
        "n_heads": int(h),
        "d_mlp": int(config.mlp_hidden_size),
        "d_vocab": int(w_e.shape[0]),
        "d_vocab_out": int(w_u.shape[1]),
        "n_ctx": int(w_pos.shape[0]),
        "act_fn": "relu",
        "normalization_type": None,
        "attention_dir": "causal" if config.causal else "bidirectional",
        "attn_only": False,
        "positional_embedding_type": "standard",
        "use_attn_scale": True,
        "attn_scale": math.sqrt(k),
        "default_prepend_bos": False,
    }
    out_enc = model.output_encoder
    output_values = None
    if isinstance(out_enc, encoder.CategoricalEncoder):
        output_values = tuple(out_enc.decoding_map[i] for i in range(out_enc.vocab_size))
    return TransformerLensExport(
        state_dict=state,
        config=tl_config,
        tokens=tuple(in_enc.decoding_map[i] for i in range(in_enc.vocab_size)),
        bos_token_id=in_enc.bos_encoding,
        pad_token_id=in_enc.pad_encoding,
        output_values=output_values,
        residual_labels=tuple(model.residual_labels),
    )
