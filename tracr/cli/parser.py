"""The argparse parser of the `tracr` command line."""

from __future__ import annotations

import argparse
import typing

from tracr.cli.commands import bench, bundle, circuit, compress, export, run, show
from tracr.cli.commands import compile as compile_command
from tracr.cli.errors import EXIT_USAGE

# `tracr.circuits.formats.FORMATS`, spelled out so that building the parser does
# not import JAX (tests/cli/test_cli.py checks that the two agree).
CIRCUIT_FORMATS = ("json", "tl", "acdc", "interpbench")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_program_options(parser: argparse.ArgumentParser, required: bool = False) -> None:
    group = parser.add_argument_group(
        "program options" + ("" if required else " (when MODEL is a PROGRAM)")
    )
    group.add_argument("--vocab", help="tokens separated by commas, e.g. 1,2,3 or a,b,c")
    group.add_argument("--max-seq-len", type=int, help="longest input, BOS not counted")
    group.add_argument("--causal", action="store_true", help="compile a causally-masked model")
    group.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an argument of the program function (repeatable), e.g. --arg token=a",
    )
    group.add_argument(
        "--mlp-exactness",
        type=float,
        default=None,
        help="sharpness of numerical MLPs (default: derived by the compiler)",
    )


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tracr",
        description="Compile RASP programs into transformer weights, run them and look inside.",
        epilog="Run `tracr COMMAND --help` for each command's options.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (TRACR_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sub.add_parser("demo", help="compile lib.make_sort_unique and run it on one input")

    p = sub.add_parser(
        "compile",
        help="compile a program and save the model to a directory",
        description="Compile PROGRAM (lib:NAME or path/to/file.py:NAME) and save the model.",
        epilog="example: tracr compile lib:make_sort_unique --vocab 1,2,3,4,5 "
        "--max-seq-len 5 -o sort_model",
    )
    p.add_argument("program", metavar="PROGRAM", help="lib:NAME or path/to/file.py:NAME")
    _add_program_options(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write")
    p.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip comparing the model with the RASP evaluator before saving it",
    )
    p.add_argument("--force", action="store_true", help="replace a model already saved in DIR")
    p.add_argument(
        "--check-inputs",
        type=int,
        default=20_000,
        metavar="N",
        help="check every input when there are at most N, else a sample of 200 (20000)",
    )
    p.set_defaults(func=compile_command.cmd_compile)

    model_help = "a directory written by `tracr compile`, or a PROGRAM (with --vocab ...)"
    p = sub.add_parser(
        "run",
        help="run a model on one input and print the decoded output",
        description="Run MODEL on one input; print the output (and the RASP evaluator's, "
        "for a PROGRAM).",
        epilog='example: tracr run sort_model --input "3 1 5 2" --residuals',
    )
    p.add_argument("program", metavar="MODEL", help=model_help)
    p.add_argument("--input", required=True, help='tokens, e.g. "3 1 5 2", "a,b,c" or "abc"')
    p.add_argument(
        "--residuals",
        action="store_true",
        help="also print the residual stream after each sublayer (dimensions x positions)",
    )
    _add_program_options(p)
    p.set_defaults(func=run.cmd_run)

    p = sub.add_parser(
        "show",
        help="write PNGs of the residual stream and attention patterns for one input",
        description="Write residual-stream heat maps (per layer) and attention patterns "
        "(per head) for one input. Needs matplotlib (the `viz` extra).",
        epilog='example: tracr show sort_model --input "3 1 5 2" -o pictures',
    )
    p.add_argument("program", metavar="MODEL", help=model_help)
    p.add_argument("--input", required=True, help="tokens, as for `tracr run`")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the PNGs")
    _add_program_options(p)
    p.set_defaults(func=show.cmd_show)

    p = sub.add_parser(
        "circuit",
        help="write the model's compiled circuit (verified ground truth for interpretability)",
        description="Write MODEL's circuit: nodes, edges with residual directions and RASP "
        "expressions, as our JSON, TransformerLens hook edges, ACDC's edge dictionary or "
        "InterpBench node pairs (docs/circuits.md).",
        epilog="example: tracr circuit sort_model --format acdc -o sort_acdc.json",
    )
    p.add_argument("program", metavar="MODEL", help=model_help)
    p.add_argument("--format", default="json", choices=CIRCUIT_FORMATS, help="(json)")
    p.add_argument("-o", "--output", metavar="FILE", help="file to write (default: stdout)")
    _add_program_options(p)
    p.set_defaults(func=circuit.cmd_circuit)

    p = sub.add_parser(
        "export",
        help="export a model's weights in TransformerLens names and shapes",
        description="Export MODEL's weights in TransformerLens names and shapes: write "
        "transformer_lens.npz (the state dict: embed.W_E, blocks.0.attn.W_Q, ...) and "
        "transformer_lens.json (HookedTransformerConfig arguments, tokens, output values).",
        epilog="example: tracr export sort_model -o sort_tl",
    )
    p.add_argument("program", metavar="MODEL", help=model_help)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write")
    _add_program_options(p)
    p.set_defaults(func=export.cmd_export)

    p = sub.add_parser(
        "bundle",
        help="write a Hugging Face Hub-ready folder for a saved model",
        description="Write MODEL_DIR as a Hub-ready folder: model.json, model.safetensors, "
        "config.json (TransformerLens config), vocab.json and a README model card. "
        "Upload it with huggingface_hub (HfApi().upload_folder).",
        epilog="example: tracr bundle sort_model -o sort_hub",
    )
    p.add_argument("model", metavar="MODEL_DIR", help="a directory written by `tracr compile`")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="directory to write")
    p.add_argument("--force", action="store_true", help="replace a model already saved in OUT")
    p.set_defaults(func=bundle.cmd_bundle)

    p = sub.add_parser(
        "compress",
        help="compress a model's residual stream (exact, or learned with --dim)",
        description="Report the exact compression of MODEL's residual stream (d_exact of D); "
        "with --dim, also learn a compression of that width and report its accuracy.",
        epilog="example: tracr compress sort_model --dim 8 -o w.npy",
    )
    p.add_argument("program", metavar="MODEL", help=model_help)
    p.add_argument("--dim", type=int, help="learn a compression of this width")
    p.add_argument("--steps", type=int, default=1000, help="training steps for --dim (1000)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and training (0)")
    p.add_argument("-o", "--output", metavar="FILE.npy", help="save the matrix w [d, D]")
    _add_program_options(p)
    p.set_defaults(func=compress.cmd_compress)

    p = sub.add_parser(
        "bench",
        help="run a benchmark script from benchmarks/",
        description="Run benchmarks/NAME.py with the remaining arguments.",
        epilog="example: tracr bench throughput",
    )
    p.add_argument("name", choices=bench.BENCHMARKS, help="which benchmark")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="passed to the script")
    p.set_defaults(func=bench.cmd_bench)
    return parser
