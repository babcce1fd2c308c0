"""Export compiled models to other tools.

- `to_transformer_lens`: the state dict and config in TransformerLens names (numpy only).
- `write_transformer_lens`: the same, written to a directory (what `tracr export` does).
- `to_torch_module`: a plain `torch.nn.Module` (needs the `torch` extra).
- `to_transformer_lens_model`: a live TransformerLens model (needs the `torch` extra).
"""

from tracr.export.transformer_lens import (
    TransformerLensExport,
    to_transformer_lens,
    write_transformer_lens,
)

__all__ = [
    "TransformerLensExport",
    "to_torch_module",
    "to_transformer_lens",
    "to_transformer_lens_model",
    "write_transformer_lens",
]

_LAZY = {"to_torch_module": "torch_model", "to_transformer_lens_model": "lens_model"}


def __getattr__(name):
    # torch and TransformerLens load only when these are used (they take seconds).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"tracr.export.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tracr.export' has no attribute {name!r}")
