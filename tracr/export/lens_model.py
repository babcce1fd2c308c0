"""A live TransformerLens model of a compiled program, in one call.

    from tracr.export import to_transformer_lens_model
    lens = to_transformer_lens_model(model)
    lens.decode(["compiler_bos", 3, 1, 2])          # as model.apply(...).decoded
    logits, cache = lens.model.run_with_cache(lens.token_ids(["compiler_bos", 3, 1, 2]))
    cache["blocks.0.attn.hook_z"]                    # [B, T, H, d_head]

TransformerLens 4 (the `torch` extra pins 4.3) has no `HookedTransformer`; its
models are `TransformerBridge`s, booted natively from a config and loaded with
the state dict converted by TransformerLens' own `convert_tl_checkpoint`.
With a 3.x release (or older) installed, the same config and state dict build a
`HookedTransformer` instead. Either way the weights are loaded as they are (no
folding, no centring), `normalization_type=None`, the activation, attention
direction and unembedding come from `model.spec`, and `use_attn_result`,
`use_split_qkv_input` and `use_hook_mlp_in` are set in the config.

Per-head hooks on 4.3: its native bridge's `AttentionBridge.forward`
(model_bridge/generalized_components/attention.py) hands the whole attention to
the native module, so `attn.hook_result` and `hook_q_input`/`hook_k_input`/
`hook_v_input` exist but never fire, whatever the config says, and
`set_use_attn_result(True)` raises (`_validate_attention_fork_supported` in
model_bridge/transformer_bridge.py: only `JointQKVAttentionBridge` and
`PositionEmbeddingsAttentionBridge` fork per head). `_fire_head_hooks` makes
them fire, with HookedTransformer's shapes and meaning, through torch forward
hooks on the bridge's own Q/K/V/O linears: `hook_{q,k,v}_input` [B, T, H, D]
(the residual copied per head; head h's projection reads copy h) and
`hook_result` [B, T, H, D] (each head's output before the sum, b_O excluded).
An edit in one of them changes the output by exactly its effect; an unedited
run gives bit-for-bit the bridge's own output. `HookedTransformer` (3.x) fires
them itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Sequence

import torch
import transformer_lens

from tracr.export import tokens as tokens_lib
from tracr.export import transformer_lens as tl_export
from tracr.transformer import assembled

# Buffers a HookedTransformer has that the state dict does not (causal mask, -inf).
_HT_BUFFERS = (".mask", ".IGNORE")


def has_hooked_transformer() -> bool:
    """True where the installed TransformerLens still has `HookedTransformer` (< 4.0)."""
    try:  # TransformerLens 4 raises ImportError on the removed name
        return getattr(transformer_lens, "HookedTransformer", None) is not None
    except ImportError:
        return False


@dataclasses.dataclass(frozen=True)
class LensModel:
    """A TransformerLens model with our tokens in and decoded values out.

    Attributes:
      model: the `TransformerBridge` (TransformerLens 4) or `HookedTransformer` (3.x).
      codec: encodes inputs and decodes logits as `model.apply` does.
      export: the state dict and config the model was built from.
    """

    model: Any
    codec: tokens_lib.TokenCodec
    export: tl_export.TransformerLensExport

    def token_ids(self, tokens: Sequence[Any]) -> torch.Tensor:
        """[1, T] ids of one input that starts with the BOS token."""
        return torch.as_tensor([self.codec.encode(tokens)])

    def batch(self, batch: Sequence[Sequence[Any]]):
        """([B, T] ids padded with PAD, [B, T] attention mask, lengths) of inputs."""
        ids, lengths = self.codec.encode_batch(batch)
        ids = torch.as_tensor(ids)
        return ids, self.codec.keep_mask(ids).long(), lengths

    @torch.no_grad()
    def decode(self, tokens: Sequence[Any]) -> List[Any]:
        """`model.apply(tokens).decoded`, computed by TransformerLens."""
        return self.decode_batch([tokens])[0]

    @torch.no_grad()
    def decode_batch(self, batch: Sequence[Sequence[Any]]) -> List[List[Any]]:
        """Decoded values of inputs of any lengths; PAD keys are masked out of attention."""
        ids, mask, lengths = self.batch(batch)
        if not lengths:  # an empty batch, as `apply_batch([])`
            return []
        if _ignores_padding(self.model):
            logits = self.model.run_with_hooks(
                ids, attention_mask=mask, fwd_hooks=[(_is_attn_scores, _hide_keys(mask))]
            )
        else:
            logits = self.model(ids, attention_mask=mask)
        return [self.codec.decode(row[:n]) for row, n in zip(logits, lengths)]


def _ignores_padding(lens: Any) -> bool:
    """A bidirectional HookedTransformer (3.x): it drops `attention_mask` from attention.

    TransformerLens 3.9's `AbstractAttention.forward`
    (components/abstract_attention.py) applies the padding mask only inside
    `apply_causal_mask`, which runs for `attention_dir="causal"` alone, so PAD
    keys would be attended to. The 4.x bridge masks them either way.
    """
    cfg = getattr(lens, "cfg", None)
    return type(lens).__name__ == "HookedTransformer" and cfg.attention_dir != "causal"


def _is_attn_scores(name: str) -> bool:
    return name.endswith("attn.hook_attn_scores")


def _hide_keys(mask: torch.Tensor):
    keep = mask.bool()[:, None, None, :]  # [B, 1, 1, T]: keys to keep

    def hook(scores: torch.Tensor, hook: Any) -> torch.Tensor:
        return scores.masked_fill(~keep, float("-inf"))  # BOS is always kept: no empty row

    return hook


def _fire_head_hooks(bridge: Any) -> None:
    """Makes `attn.hook_result` and `hook_{q,k,v}_input` fire on a native bridge.

    Each is a torch forward hook on the linear the bridge already runs: it
    computes the per-head tensor, passes it through the HookPoint (so
    run_with_cache, run_with_hooks and nnsight see and edit it), and adds the
    effect of any edit to the linear's own output. The added term is exactly
    zero when nothing was edited, so outputs stay those of the bridge.
    """
    n_heads, d_head = bridge.cfg.n_heads, bridge.cfg.d_head
    for block in bridge.blocks:
        attn = block.attn
        for name in ("q", "k", "v"):
            linear = getattr(attn, name).original_component
            linear.register_forward_hook(
                _qkv_input_hook(getattr(attn, f"hook_{name}_input"), n_heads)
            )
        attn.o.original_component.register_forward_hook(
            _result_hook(attn.hook_result, n_heads, d_head)
        )


def _qkv_input_hook(hook_point: Any, n_heads: int):
    def forward_hook(linear: torch.nn.Linear, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]  # [B, T, D]: the residual every head reads
        fork = x.unsqueeze(-2).expand(*x.shape[:-1], n_heads, x.shape[-1])  # [B, T, H, D]
        clean = fork.clone()
        edited = hook_point(fork.clone())
        w = linear.weight.view(n_heads, -1, x.shape[-1])  # [H, K, D]
        delta = torch.einsum("bthd,hkd->bthk", edited - clean, w)
        return output + delta.reshape(output.shape)

    return forward_hook


def _result_hook(hook_point: Any, n_heads: int, d_head: int):
    def forward_hook(linear: torch.nn.Linear, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        z = inputs[0]  # [B, T, H * K]
        w = linear.weight.view(-1, n_heads, d_head)  # [D, H, K]
        per_head = torch.einsum("bthk,dhk->bthd", z.view(*z.shape[:-1], n_heads, d_head), w)
        clean = per_head.clone()
        edited = hook_point(per_head)
        return output + (edited - clean).sum(dim=-2)

    return forward_hook


def _bridge(export: tl_export.TransformerLensExport, dtype: torch.dtype):
    from transformer_lens import TransformerBridge, TransformerBridgeConfig
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    cfg = TransformerBridgeConfig(**export.config, init_weights=False, dtype=dtype)
    bridge = TransformerBridge.boot_native(cfg, dtype=dtype)
    state = {k: torch.as_tensor(v.copy(), dtype=dtype) for k, v in export.state_dict.items()}
    bridge.load_state_dict(convert_tl_checkpoint(state, cfg), strict=True)
    _fire_head_hooks(bridge)
    return bridge.eval()


def _hooked_transformer(export: tl_export.TransformerLensExport, dtype: torch.dtype):
    cfg = transformer_lens.HookedTransformerConfig(**export.config, dtype=dtype)
    model = transformer_lens.HookedTransformer(cfg)
    state = {k: torch.as_tensor(v.copy(), dtype=dtype) for k, v in export.state_dict.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(_HT_BUFFERS)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"HookedTransformer did not take the exported weights: missing {missing}, "
            f"unexpected {result.unexpected_keys}."
        )
    return model.eval()


def to_transformer_lens_model(
    model: assembled.AssembledTransformerModel, *, dtype: torch.dtype = torch.float32
) -> LensModel:
    """A TransformerLens model computing `model`, with a decoding wrapper.

    Args:
      model: a compiled or loaded model (it must carry `model.spec`).
      dtype: the weights' dtype (float32 for parity with JAX).

    Returns:
      A `LensModel`; `.model` is the TransformerLens model itself.

    Raises:
      ValueError: the model has no spec or uses layer norm.
    """
    export = tl_export.to_transformer_lens(model)
    codec = tokens_lib.TokenCodec.from_spec(model.spec)
    build = _hooked_transformer if has_hooked_transformer() else _bridge
    return LensModel(model=build(export, dtype), codec=codec, export=export)
