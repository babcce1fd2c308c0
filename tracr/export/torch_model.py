"""A compiled model as a plain `torch.nn.Module`, for users without TransformerLens.

The module computes exactly what `model.forward` computes (no layer norm,
the spec's activation, PAD keys hidden from attention, causal masking when
`spec.causal`), from the same weights, read by `spec.param_name`::

    from tracr.export import to_torch_module
    module = to_torch_module(model)                 # torch.nn.Module
    out = module.run(["compiler_bos", 3, 1, 2])     # decoded, logits, residuals
    logits = module(token_ids)                      # [B, T, O]: plain forward

Submodules are named for tracing (nnsight, forward hooks):
`layers[i].attn` (q, k, v, o linears; `.output` is the attention sublayer's
output), `layers[i].mlp` (fc_in, fc_out), `embed`, `pos_embed`, `unembed`.
Each attention also keeps `hook_z` and `hook_pattern` (identity modules) so
per-head values can be read or patched.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from tracr.export import tokens as tokens_lib
from tracr.transformer import assembled, attention
from tracr.transformer import spec as spec_lib

_ACTIVATIONS = {"relu": nn.ReLU}


def _linear(weight: np.ndarray, bias: Optional[np.ndarray], dtype: torch.dtype) -> nn.Linear:
    """nn.Linear computing `x @ weight + bias` (Haiku's [in, out] layout)."""
    layer = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(np.array(weight.T), dtype=dtype))
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(np.array(bias), dtype=dtype))
    return layer.to(dtype)


class Attention(nn.Module):
    """Multi-head attention with the compiled model's masking rules."""

    def __init__(self, params, layer: int, spec: spec_lib.ModelSpec, dtype: torch.dtype):
        super().__init__()
        self.n_heads, self.d_head, self.causal = spec.num_heads, spec.key_size, spec.causal
        for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("linear", "o")):
            p = params[spec_lib.param_name(layer, "attn", ours)]
            setattr(self, theirs, _linear(np.asarray(p["w"]), np.asarray(p["b"]), dtype))
        self.hook_pattern = nn.Identity()  # [B, H, Tq, Tk]
        self.hook_z = nn.Identity()  # [B, T, H, d_head]

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x [B, T, D]; keep [B, T] is False at PAD positions (hidden as keys)."""
        b, t, _ = x.shape

        def heads(linear: nn.Linear) -> torch.Tensor:
            return linear(x).view(b, t, self.n_heads, self.d_head).transpose(1, 2)

        q, k, v = heads(self.q), heads(self.k), heads(self.v)
        scores = q @ k.transpose(-2, -1) / float(np.sqrt(self.d_head))
        allowed = keep[:, None, None, :]
        if self.causal:
            allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        # The finite logit Haiku uses, so fully masked rows behave the same.
        scores = scores.masked_fill(~allowed, attention.MASKED_LOGIT)
        pattern = self.hook_pattern(torch.softmax(scores, dim=-1))
        z = self.hook_z((pattern @ v).transpose(1, 2))  # [B, T, H, d_head]
        return self.o(z.reshape(b, t, self.n_heads * self.d_head))


class MLP(nn.Module):
    def __init__(self, params, layer: int, spec: spec_lib.ModelSpec, dtype: torch.dtype):
        super().__init__()
        first = params[spec_lib.param_name(layer, "mlp", "linear_1")]
        second = params[spec_lib.param_name(layer, "mlp", "linear_2")]
        self.fc_in = _linear(np.asarray(first["w"]), np.asarray(first["b"]), dtype)
        self.act = _ACTIVATIONS[spec.activation]()
        self.fc_out = _linear(np.asarray(second["w"]), np.asarray(second["b"]), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class Block(nn.Module):
    def __init__(self, params, layer: int, spec: spec_lib.ModelSpec, dtype: torch.dtype):
        super().__init__()
        self.attn = Attention(params, layer, spec, dtype)
        self.mlp = MLP(params, layer, spec, dtype)


@dataclasses.dataclass(frozen=True)
class TorchRun:
    """One input run through the module.

    decoded: as `model.apply(tokens).decoded` (position 0 is the BOS token).
    logits: [T, O] unembedded output (numerical programs: O = 1).
    residuals: the residual stream after each sublayer, each [T, D]
      (`model.apply(...).residuals`).
    """

    decoded: List[Any]
    logits: torch.Tensor
    residuals: List[torch.Tensor]


class TracrTorchModel(nn.Module):
    """The compiled transformer in PyTorch; see the module docstring."""

    def __init__(self, model: assembled.AssembledTransformerModel, dtype: torch.dtype):
        super().__init__()
        spec = model.spec
        params = model.params
        self.spec = spec
        self.codec = tokens_lib.TokenCodec.from_spec(spec)
        self.embed = nn.Embedding.from_pretrained(
            torch.as_tensor(np.array(params[spec_lib.TOKEN_EMBED]["embeddings"]), dtype=dtype)
        )
        self.pos_embed = nn.Embedding.from_pretrained(
            torch.as_tensor(np.array(params[spec_lib.POS_EMBED]["embeddings"]), dtype=dtype)
        )
        num_layers = assembled.config_from_spec(spec).num_layers
        self.layers = nn.ModuleList(Block(params, i, spec, dtype) for i in range(num_layers))
        unembed = assembled.unembed_matrix_from_spec(spec)
        self.unembed = _linear(unembed, None, dtype)

    def forward(
        self,
        token_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        residuals: Optional[List[torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Logits [B, T, O] for token ids [B, T].

        attention_mask: [B, T], False (0) where a key must be ignored; by
          default every position except PAD.
        residuals: if given, a list that receives the residual after each sublayer.
        """
        keep = self.codec.keep_mask(token_ids) if attention_mask is None else attention_mask.bool()
        positions = torch.arange(token_ids.shape[1], device=token_ids.device)
        x = self.embed(token_ids) + self.pos_embed(positions)[None]
        for block in self.layers:
            x = x + block.attn(x, keep)
            if residuals is not None:
                residuals.append(x)
            x = x + block.mlp(x)
            if residuals is not None:
                residuals.append(x)
        return self.unembed(x)

    @torch.no_grad()
    def run(self, tokens: Sequence[Any]) -> TorchRun:
        """Runs one input that starts with the BOS token; decodes like `model.apply`."""
        ids = torch.as_tensor([self.codec.encode(tokens)], device=self.embed.weight.device)
        residuals: List[torch.Tensor] = []
        logits = self.forward(ids, residuals=residuals)[0]
        return TorchRun(
            decoded=self.codec.decode(logits),
            logits=logits,
            residuals=[r[0] for r in residuals],
        )

    @torch.no_grad()
    def decode_batch(self, batch: Sequence[Sequence[Any]]) -> List[List[Any]]:
        """`model.apply_batch`: inputs of any lengths (each starting with BOS), padded with PAD."""
        ids, lengths = self.codec.encode_batch(batch)
        if not lengths:  # an empty batch, as `apply_batch([])`
            return []
        logits = self.forward(torch.as_tensor(ids, device=self.embed.weight.device))
        return [self.codec.decode(row[:n]) for row, n in zip(logits, lengths)]


def to_torch_module(
    model: assembled.AssembledTransformerModel, *, dtype: torch.dtype = torch.float32
) -> TracrTorchModel:
    """The compiled model as a `torch.nn.Module` (eval mode, no gradients needed).

    Args:
      model: a compiled or loaded model (it must carry `model.spec`).
      dtype: parameter dtype (float32 for parity with JAX; bfloat16 to test precision).

    Raises:
      ValueError: the model has no spec, uses layer norm, or an unknown activation.
    """
    spec = tokens_lib.require_spec(model)
    if spec.activation not in _ACTIVATIONS:
        raise ValueError(
            f"model.spec.activation is {spec.activation!r}; the torch export supports "
            f"{sorted(_ACTIVATIONS)}."
        )
    return TracrTorchModel(model, dtype).eval()
