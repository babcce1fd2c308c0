"""Export compiled models to other tools' formats (see `transformer_lens`)."""

from tracr.export.transformer_lens import TransformerLensExport, to_transformer_lens

__all__ = ["TransformerLensExport", "to_transformer_lens"]
