"""`tracr export`: the weights in TransformerLens names and shapes."""

from __future__ import annotations

import argparse
import pathlib

from tracr.cli.models import _get_model


def cmd_export(args: argparse.Namespace) -> int:
    from tracr.export import transformer_lens

    model, _, description = _get_model(args)
    directory = pathlib.Path(args.output)
    exported = transformer_lens.write_transformer_lens(model, directory)
    print(f"exported {description} in TransformerLens layout to {directory}:")
    print(f"  transformer_lens.npz ({len(exported.state_dict)} arrays), transformer_lens.json")
    return 0
