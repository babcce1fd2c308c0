"""`tracr show`: pictures of the residual stream and attention patterns."""

from __future__ import annotations

import argparse
import os

from tracr.cli.errors import UsageError, _as_user_error
from tracr.cli.models import _get_model
from tracr.cli.parsing import parse_input


def cmd_show(args: argparse.Namespace) -> int:
    try:
        from tracr.viz import plots

        plots._pyplot()
    except ImportError as e:
        raise UsageError(str(e)) from None
    if os.path.isdir(args.program):
        from tracr.hybrid import saving as hybrid_saving

        if hybrid_saving.is_hybrid_dir(args.program):
            return _show_hybrid(args.program, args.output)
    model, _, description = _get_model(args)
    tokens = parse_input(args.input, model)
    with _as_user_error():
        paths = plots.write_pngs(model, tokens, args.output)
    print(f"{description}: wrote {len(paths)} pictures to {args.output}")
    for path in paths:
        print(f"  {path}")
    return 0


def _show_hybrid(directory: str, output: str) -> int:
    """A saved hybrid (tracr.hybrid.saving): one picture of compiled vs learned parts."""
    from tracr.hybrid import picture
    from tracr.hybrid import saving as hybrid_saving

    with _as_user_error():  # a damaged or edited hybrid folder
        hspec, _ = hybrid_saving.load_hybrid(directory)
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, "hybrid_layout.png")
    picture.draw(hspec, path)
    print(f"hybrid {directory}: wrote 1 picture to {output}\n  {path}")
    return 0
