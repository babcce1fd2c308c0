"""`tracr compile`: compile a program, check it against the RASP evaluator, save it."""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

from tracr.cli.errors import ModelMismatchError, UsageError
from tracr.cli.models import _compile, _describe_model
from tracr.cli.programs import is_program_spec


def cmd_compile(args: argparse.Namespace) -> int:
    from tracr.io import saving

    if not is_program_spec(args.program):
        raise UsageError(
            f"PROGRAM {args.program!r} must be lib:NAME or path/to/file.py:NAME, "
            "e.g. lib:make_sort_unique."
        )
    output = pathlib.Path(args.output)
    if (output / saving.CONFIG_FILE).exists() and not args.force:  # before compiling
        raise UsageError(f"{output} already holds a saved model; pass --force to replace it.")
    model, program, description = _compile(args)
    print(f"compiled {description}: {_describe_model(model)}")
    metadata = {
        "program": description,
        "vocab": args.vocab,
        "max_seq_len": str(args.max_seq_len),
        "causal": str(bool(args.causal)),
    }
    if args.check:
        metadata["certificate"] = _check_against_evaluator(model, program, args)
    saving.save_model(model, args.output, metadata=metadata, overwrite=args.force)
    print(f"saved to {args.output}")
    return 0


def _check_against_evaluator(model: Any, program: Any, args: argparse.Namespace) -> str:
    """Compares the compiled model with the RASP evaluator before it is saved.

    Every input up to --max-seq-len when there are at most --check-inputs of
    them, else a seeded sample of 200 (half of them of full length).

    Returns:
      The certificate's summary (kept in the model's metadata, shown by `tracr bundle`).

    Raises:
      ModelMismatchError: the model decodes a different value somewhere.
    """
    from tracr.compiler import certificate

    cert = certificate.certify(
        model,
        program,
        causal=args.causal,
        max_exhaustive=args.check_inputs,
        intermediates=False,
    )
    which = f"all {cert.num_inputs}" if cert.exhaustive else f"a sample of {cert.num_inputs}"
    if not cert.exact:
        raise ModelMismatchError(
            f"the compiled model disagrees with the RASP evaluator on {which} inputs "
            f"({cert.why_not_exact()}); nothing was saved. This is a compiler bug: please "
            f"report it with the command line."
        )
    skipped = f", {cert.skipped_inputs} outside the program's domain skipped" * bool(
        cert.skipped_inputs
    )
    print(f"checked against the RASP evaluator on {which} inputs{skipped}: every output agrees")
    return cert.summary()
