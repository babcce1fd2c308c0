"""`tracr bundle`: a Hugging Face Hub-ready folder for a saved model."""

from __future__ import annotations

import argparse
import os

from tracr.cli.errors import UsageError, _as_user_error


def cmd_bundle(args: argparse.Namespace) -> int:
    from tracr.io import saving

    if not os.path.isdir(args.model):
        raise UsageError(f"MODEL_DIR {args.model!r} is not a directory written by `tracr compile`.")
    with _as_user_error():  # a damaged or edited model folder
        model = saving.load_model(args.model)  # with its program, if MODEL_DIR has program.json
        metadata = saving.load_metadata(args.model)
    out = saving.save_model(model, args.output, metadata=metadata, overwrite=args.force, hub=True)
    print(f"wrote a Hub-ready folder for {metadata.get('program', args.model)} to {args.output}:")
    print("  " + ", ".join(sorted(p.name for p in out.iterdir() if p.is_file())))
    return 0
