"""The `tracr` command line: compile, run, look inside, save and export.

    tracr demo
    tracr compile lib:make_sort_unique --vocab 1,2,3,4,5 --max-seq-len 5 -o sort_model
    tracr run sort_model --input "3 1 5 2"
    tracr run sort_model --input "3 1 5 2" --residuals
    tracr run lib:make_reverse --vocab a,b,c --max-seq-len 5 --input abc
    tracr show sort_model --input "3 1 5 2" -o pictures
    tracr export sort_model -o sort_tl
    tracr circuit sort_model --format acdc -o sort_acdc.json
    tracr bundle sort_model -o sort_hub
    tracr compress sort_model
    tracr bench throughput

PROGRAM is `lib:NAME` (a function of `tracr.compiler.lib`) or
`path/to/file.py:NAME` (a function returning an SOp, or an SOp). Arguments
are filled in by name:
  - SOp parameters get `tokens`; give another with `--arg keys=indices`, or a
    boolean map of the tokens with `--arg bools=tokens==x` (a numerical SOp,
    as make_frac_prevs needs; its default is tokens == the first vocab token);
  - `max_seq_len` gets `--max-seq-len`; make_sort's `min_key` defaults to the
    smallest gap between two vocab numbers (1 for other vocabularies);
  - anything else comes from `--arg NAME=VALUE`: a vocab token if VALUE
    spells one, else an int, float, True/False, a comma-separated list
    (`--arg pairs="(),{}"`), or the string itself.

An unannotated parameter is bound as an SOp when its `--arg` value is
`tokens`, `indices` or `tokens==VALUE` (`--arg sop=tokens` means
`rasp.tokens`).

`--vocab 1,2,3` gives ints when every item is an integer, floats when every
item is a number, strings otherwise. `--input` takes tokens separated by
spaces, commas or both (`"1, 2 3"`); a string without separators whose
characters are all tokens is split into characters (`--input "(())"`). BOS
is added for you.

MODEL (run, show, circuit, export, compress) is a directory written by
`compile` or a PROGRAM with `--vocab` and `--max-seq-len`. User errors
(`TracrUserError`, a refused program, a missing file) print one line on
stderr and exit with status 2; an unexpected error prints one line and exits
with status 1. Pass `--debug` (or set TRACR_DEBUG=1) to see the traceback.
Output piped into a command that stops reading (`tracr run ... | head`) ends
quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from tracr.cli.commands.bench import BENCHMARKS
from tracr.cli.commands.demo import demo
from tracr.cli.errors import (
    _USER_ERRORS,
    EXIT_BUG,
    EXIT_USAGE,
    ModelMismatchError,
    UsageError,
    _one_line,
)
from tracr.cli.parser import make_parser
from tracr.cli.parsing import parse_args_list, parse_input, parse_value, parse_vocab
from tracr.cli.programs import build_program, is_program_spec

__all__ = [
    "BENCHMARKS",
    "EXIT_BUG",
    "EXIT_USAGE",
    "ModelMismatchError",
    "UsageError",
    "build_program",
    "demo",
    "is_program_spec",
    "main",
    "make_parser",
    "parse_args_list",
    "parse_input",
    "parse_value",
    "parse_vocab",
]


def _debug(args: Optional[argparse.Namespace]) -> bool:
    return bool(os.environ.get("TRACR_DEBUG")) or bool(getattr(args, "debug", False))


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (`| head`): stop quietly, as `cat` does."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush writes nowhere
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if "--debug" in argv:  # accepted anywhere, e.g. `tracr run MODEL --debug`
        argv = ["--debug"] + [a for a in argv if a != "--debug"]
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        if args.command == "demo":
            status = demo()
        else:
            status = _run_command(args)
        sys.stdout.flush()  # a broken pipe shows here, not at exit
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()


def _run_command(args: argparse.Namespace) -> int:
    # A benchmark's own exceptions keep their tracebacks; ours become one line.
    if args.command == "bench":
        try:
            return args.func(args)
        except UsageError as e:
            print(f"tracr {args.command}: error: {_one_line(e)}", file=sys.stderr)
            return EXIT_USAGE
    try:
        return args.func(args)
    except ModelMismatchError as e:
        print(f"tracr {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise
    except _USER_ERRORS as e:
        if _debug(args):
            raise
        print(f"tracr {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - a bug in tracr: say so in one line
        if _debug(args):
            raise
        print(
            f"tracr {args.command}: internal error: {type(e).__name__}: {_one_line(e)} "
            "(a bug in tracr; rerun with --debug for the traceback and please report it)",
            file=sys.stderr,
        )
        return EXIT_BUG
