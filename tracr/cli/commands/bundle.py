"""`tracr bundle`: a Hugging Face Hub-ready folder for a saved model."""

from __future__ import annotations

import argparse
import os

from tracr.cli.errors import UsageError


def cmd_bundle(args: argparse.Namespace) -> int:
    from tracr.circuits import formats
    from tracr.io import saving

    if not os.path.isdir(args.model):
        raise UsageError(f"MODEL_DIR {args.model!r} is not a directory written by `tracr compile`.")
    model = saving.load_model(args.model)
    metadata = saving.load_metadata(args.model)
    saving.save_model(model, args.output, metadata=metadata, overwrite=args.force, hub=True)
    # The verified circuit goes with the weights (tracr.circuits' JSON, read by formats.from_json).
    formats.write_circuit(model, "json", os.path.join(args.output, "circuit.json"))
    print(f"wrote a Hub-ready folder for {metadata.get('program', args.model)} to {args.output}:")
    print("  model.json, model.safetensors, config.json, vocab.json, circuit.json, README.md")
    return 0
