"""Getting a model: from a saved directory or by compiling a program."""

from __future__ import annotations

import argparse
import os
from typing import Any

from tracr.cli.errors import UsageError, _as_user_error
from tracr.cli.parsing import parse_args_list, parse_vocab
from tracr.cli.programs import _load_target, build_program, is_program_spec


def _compile(args: argparse.Namespace):
    target = _load_target(args.program)  # an unknown program is the first thing to report
    if not args.vocab or args.max_seq_len is None:
        raise UsageError(
            f"compiling {args.program} needs --vocab and --max-seq-len, "
            "e.g. --vocab 1,2,3 --max-seq-len 5."
        )
    if args.max_seq_len < 1:
        raise UsageError(f"--max-seq-len must be at least 1, got {args.max_seq_len}.")
    from tracr.compiler import compiling

    vocab = parse_vocab(args.vocab)
    program, description = build_program(
        args.program, vocab, args.max_seq_len, parse_args_list(args.arg), target=target
    )
    try:
        model = compiling.compile_rasp_to_model(
            program,
            vocab=set(vocab),
            max_seq_len=args.max_seq_len,
            causal=args.causal,
            mlp_exactness=args.mlp_exactness,
        )
    except NotImplementedError as e:
        raise UsageError(" ".join(str(e).split())) from None
    return model, program, description


def _get_model(args: argparse.Namespace):
    """(model, program or None, description) for MODEL given as a directory or PROGRAM."""
    spec = args.program
    if os.path.isdir(spec) and not is_program_spec(spec):
        given = [flag for flag, v in (("--vocab", args.vocab), ("--arg", args.arg)) if v]
        if args.max_seq_len is not None:
            given.append("--max-seq-len")
        if args.causal:
            given.append("--causal")
        if given:
            raise UsageError(
                f"{' and '.join(given)} only apply when MODEL is a program; {spec} is a saved "
                "model directory."
            )
        from tracr.io import saving

        with _as_user_error():  # a damaged or edited file
            model = saving.load_model(spec)
            meta = saving.load_metadata(spec)
        return model, None, meta.get("program", spec)
    if not is_program_spec(spec):
        problem = "is not a directory" if os.path.exists(spec) else "does not exist"
        raise UsageError(
            f"MODEL {spec!r} {problem}; give a directory written by `tracr compile` or a "
            "program (lib:NAME or path/to/file.py:NAME)."
        )
    return _compile(args)


def _describe_model(model: Any) -> str:
    config = model.model_config
    count = sum(int(x.size) for inner in model.params.values() for x in inner.values())
    return (
        f"{config.num_layers} layers, {config.num_heads} heads, d_model "
        f"{len(model.residual_labels)}, mlp {config.mlp_hidden_size}, {count:,} parameters"
        + (", causal" if config.causal else "")
    )
