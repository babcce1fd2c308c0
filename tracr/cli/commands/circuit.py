"""`tracr circuit`: write the model's compiled circuit."""

from __future__ import annotations

import argparse
import sys

from tracr.cli.models import _get_model


def cmd_circuit(args: argparse.Namespace) -> int:
    from tracr.circuits import formats

    model, _, description = _get_model(args)
    summary = formats.write_circuit(model, args.format, args.output)
    print(f"{description}: {summary}", file=sys.stderr)
    return 0
