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
import contextlib
import importlib.util
import inspect
import json
import math
import os
import pathlib
import re
import runpy
import sys
import typing
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from tracr.utils import errors

EXIT_USAGE = 2
BENCHMARKS = ("compression", "throughput", "compile_time")


class UsageError(errors.TracrUserError):
    """A mistake in the command line: printed as one line, exit status 2."""


@contextlib.contextmanager
def _as_user_error() -> Iterator[None]:
    """ValueErrors raised on what the user gave (an input, a model file) are user errors.

    Elsewhere a ValueError or TypeError is a bug of tracr (see `main`).
    """
    try:
        yield
    except errors.TracrUserError:
        raise
    except ValueError as e:
        raise UsageError(str(e)) from e


class ModelMismatchError(Exception):
    """A compiled model that disagrees with the RASP evaluator: one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# --------------------------------------------------------------------------
# demo (README's first command: keep its output stable).


def demo() -> int:
    """Compiles lib.make_sort_unique and runs it on one input."""
    from tracr.compiler import compiling, lib
    from tracr.rasp import rasp

    program = lib.make_sort_unique(rasp.tokens, rasp.tokens)
    model = compiling.compile_rasp_to_model(program, vocab={1, 2, 3, 4, 5}, max_seq_len=5)
    tokens = ["compiler_bos", 3, 1, 5, 2]
    out = model.apply(tokens)
    print(f"program: sort_unique  input: {tokens}")
    print(f"model output:     {out.decoded}")
    print(f"RASP evaluator:   {program(tokens[1:])}")
    return 0


# --------------------------------------------------------------------------
# Parsing values: vocabularies, --arg values, inputs.


def _number(text: str) -> Optional[Any]:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_vocab(text: str) -> List[Any]:
    """`"1,2,3"` -> [1, 2, 3]; `"0.5,1"` -> [0.5, 1.0]; `"a,b"` -> ["a", "b"].

    Raises:
      UsageError: an empty item or a repeated token.
    """
    items = [item.strip() for item in text.split(",")]
    if any(item == "" for item in items):
        raise UsageError(
            f"--vocab {text!r} has an empty item; give tokens separated by commas, e.g. 1,2,3."
        )
    if len(set(items)) != len(items):
        raise UsageError(f"--vocab {text!r} lists a token more than once.")
    numbers = [_number(item) for item in items]
    if all(isinstance(n, int) for n in numbers):
        return numbers
    if all(n is not None for n in numbers):
        return [float(n) for n in numbers]
    return items


def parse_value(text: str, vocab: Sequence[Any]) -> Any:
    """An `--arg` value: a vocab token, number, bool, comma-separated list or string."""
    if "," in text:
        return [parse_value(item.strip(), vocab) for item in text.split(",") if item.strip()]
    for token in vocab:
        if str(token) == text:
            return token
    if text in ("True", "False"):
        return text == "True"
    number = _number(text)
    return text if number is None else number


def parse_input(text: str, model: Any) -> List[Any]:
    """The tokens of `--input`, typed as the model's vocabulary, BOS prepended.

    Raises:
      UsageError: an unknown token (the message lists the vocabulary).
    """
    enc = model.input_encoder
    bos, pad = enc.bos_token, enc.pad_token
    vocab = [enc.decoding_map[i] for i in range(enc.vocab_size)]
    by_name: Dict[str, Any] = {}
    for token in vocab:
        if token == pad:
            continue
        if str(token) in by_name:
            raise UsageError(
                f"the vocabulary has two tokens spelled {str(token)!r}; --input cannot tell "
                "them apart, use the Python API."
            )
        by_name[str(token)] = token
    by_name.setdefault("BOS", bos)
    text = text.strip()
    comma_items = [item.strip() for item in text.split(",")]
    if "," in text and all(item in by_name for item in comma_items):
        items = comma_items  # tokens that hold spaces need commas alone
    elif "," in text or any(c.isspace() for c in text):
        items = [item for item in re.split(r"[\s,]+", text) if item]  # mixed separators
    elif text in by_name or not text:
        items = [text] if text else []
    elif all(c in by_name for c in text):
        items = list(text)
    else:
        items = [text]
    unknown = [item for item in items if item not in by_name]
    if unknown:
        known = ", ".join(str(t) for t in vocab if t not in (bos, pad))
        raise UsageError(f"--input: unknown tokens {unknown}; the vocabulary is {{{known}}}.")
    tokens = [by_name[item] for item in items]
    if tokens and tokens[0] == bos:
        tokens = tokens[1:]
    return [bos, *tokens]


def parse_args_list(pairs: Sequence[str]) -> Dict[str, str]:
    """`["k=v", ...]` -> {"k": "v"}; UsageError on a malformed or repeated key."""
    result: Dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--arg {pair!r} must look like NAME=VALUE, e.g. --arg token=a.")
        if key in result:
            raise UsageError(f"--arg {key} is given twice.")
        result[key] = value
    return result


# --------------------------------------------------------------------------
# Programs: lib:NAME or FILE.py:NAME, with arguments filled in by name.


def is_program_spec(spec: str) -> bool:
    """Whether `spec` names a program (`lib:NAME`, `FILE.py:NAME`), not a directory."""
    head, sep, name = spec.rpartition(":")
    return bool(sep and name) and (head == "lib" or head.endswith(".py"))


def _library_names() -> List[str]:
    from tracr.compiler import lib

    return sorted(
        n for n, f in vars(lib).items() if inspect.isfunction(f) and f.__module__ == lib.__name__
    )


def _load_target(spec: str) -> Tuple[Any, str]:
    head, _, name = spec.rpartition(":")
    if head == "lib":
        from tracr.compiler import lib

        target = getattr(lib, name, None)
        if name.startswith("_") or target is None:
            raise UsageError(
                f"lib:{name} is not in tracr.compiler.lib; choose one of "
                f"{', '.join(_library_names())}."
            )
        return target, f"lib:{name}"
    path = pathlib.Path(head)
    if not path.is_file():
        raise UsageError(f"program file {head!r} does not exist.")
    module_name = f"tracr_user_program_{abs(hash(str(path.resolve())))}"
    spec_obj = importlib.util.spec_from_file_location(module_name, path)
    if spec_obj is None or spec_obj.loader is None:
        raise UsageError(f"cannot import {head!r} as a Python file.")
    module = importlib.util.module_from_spec(spec_obj)
    try:
        spec_obj.loader.exec_module(module)
    except Exception as e:  # the user's file: report it, whatever it raised
        raise UsageError(f"importing {head} failed: {type(e).__name__}: {e}") from None
    if not hasattr(module, name):
        raise UsageError(f"{head} has no attribute {name!r}.")
    return getattr(module, name), spec


def _is_sop_parameter(fn: Any, parameter: inspect.Parameter) -> bool:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations in a user's file: use the raw text
        hints = {}
    annotation = hints.get(parameter.name, parameter.annotation)
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return "SOp" in str(text) or "SOp" in repr(annotation)


def _is_callable_parameter(fn: Any, parameter: inspect.Parameter) -> bool:
    try:
        annotation = typing.get_type_hints(fn).get(parameter.name, parameter.annotation)
    except Exception:  # unresolvable annotations in a user's file
        annotation = parameter.annotation
    return "Callable" in str(annotation)


def _smallest_gap(vocab: Sequence[Any]) -> Any:
    """make_sort's min_key default: the smallest gap between two vocab numbers (or 1)."""
    numbers = sorted({v for v in vocab if isinstance(v, (int, float)) and not isinstance(v, bool)})
    gaps = [b - a for a, b in zip(numbers, numbers[1:])]
    return min(gaps) if gaps and len(numbers) == len(vocab) else 1


def _spells_sop(text: str) -> bool:
    """Whether an `--arg` value names an SOp (see `_sop_argument`)."""
    return text in ("tokens", "indices") or text.startswith("tokens==")


def _sop_argument(name: str, text: str, vocab: Sequence[Any]):
    from tracr.rasp import rasp

    if text == "tokens":
        return rasp.tokens
    if text == "indices":
        return rasp.indices
    if text.startswith("tokens=="):
        value = parse_value(text[len("tokens==") :], vocab)
        return rasp.numerical(rasp.Map(lambda t: t == value, rasp.tokens)).named(
            f"{name}_is_{value}"
        )
    raise UsageError(
        f"--arg {name}={text!r}: an SOp argument must be tokens, indices or tokens==VALUE."
    )


def build_program(
    spec: str,
    vocab: Sequence[Any],
    max_seq_len: int,
    raw_args: Dict[str, str],
    target: Optional[Tuple[Any, str]] = None,
):
    """The SOp named by `spec`, with its arguments filled in (see module docstring).

    Args:
      spec: `lib:NAME` or `path/to/file.py:NAME`.
      vocab, max_seq_len: what the program is compiled for.
      raw_args: the `--arg` values, as text.
      target: `_load_target(spec)`, when already loaded.

    Returns:
      (program, description), e.g. (sop, "lib:make_sort(max_seq_len=5, min_key=1)").

    Raises:
      UsageError: unknown program, missing or unused arguments, not an SOp.
    """
    from tracr.rasp import rasp

    target, label = target or _load_target(spec)
    if isinstance(target, rasp.SOp):
        if raw_args:
            raise UsageError(f"{label} is an SOp, not a function: --arg does not apply.")
        return target, label
    if not callable(target):
        raise UsageError(f"{label} is a {type(target).__name__}, not a function returning an SOp.")
    args = dict(raw_args)
    positional: List[Any] = []
    keywords: Dict[str, Any] = {}
    shown: List[str] = []
    missing: List[str] = []
    for p in inspect.signature(target).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        is_sop = _is_sop_parameter(target, p)
        if p.name in args:
            text = args.pop(p.name)
            # An unannotated parameter given tokens/indices/tokens==X is an SOp, as documented.
            if p.annotation is p.empty and _spells_sop(text):
                is_sop = True
            value = _sop_argument(p.name, text, vocab) if is_sop else parse_value(text, vocab)
            shown.append(f"{p.name}={text}")
        elif p.name == "max_seq_len":
            value = max_seq_len
            shown.append(f"max_seq_len={max_seq_len}")
        elif p.name == "bools" and is_sop:
            first = sorted(vocab, key=repr)[0]
            value = _sop_argument(p.name, f"tokens=={first}", vocab)
            shown.append(f"bools=tokens=={first}")
        elif is_sop:
            value = rasp.tokens
            shown.append(f"{p.name}=tokens")
        elif p.name == "min_key" and p.default is p.empty:
            value = _smallest_gap(vocab)
            shown.append(f"min_key={value}")
        elif _is_callable_parameter(target, p) and p.default is p.empty:
            raise UsageError(
                f"{label} takes a Python function as {p.name!r}, which the command line cannot "
                "give; write a file.py with a function that builds the program and pass "
                "file.py:NAME."
            )
        elif p.default is not p.empty:
            continue
        else:
            missing.append(p.name)
            continue
        if p.kind == p.POSITIONAL_ONLY:
            positional.append(value)
        else:
            keywords[p.name] = value
    if missing:
        fixes = " ".join(f"--arg {m}=VALUE" for m in missing)
        raise UsageError(f"{label} needs {', '.join(missing)}: pass {fixes}.")
    if args:
        raise UsageError(
            f"{label} has no parameter {', '.join(sorted(args))}; its signature is "
            f"{label.split(':')[-1]}{inspect.signature(target)}."
        )
    try:
        program = target(*positional, **keywords)
    except Exception as e:  # noqa: BLE001 - the user's function: name it, whatever it raised
        raise UsageError(
            f"{label}({', '.join(shown)}) raised {type(e).__name__}: {e}"
            + (" (run with --debug for the traceback)" if not isinstance(e, UsageError) else "")
        ) from e
    if not isinstance(program, rasp.SOp):
        raise UsageError(f"{label} returned a {type(program).__name__}, not a rasp.SOp.")
    return program, f"{label}({', '.join(shown)})"


# --------------------------------------------------------------------------
# Getting a model: from a saved directory or by compiling a program.


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


# --------------------------------------------------------------------------
# Commands.


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


def _format_value(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _format_cell(value: float) -> str:
    return "." if abs(value) < 5e-4 else f"{value:.3g}"


def _print_residuals(model: Any, tokens: List[Any]) -> None:
    from tracr.viz import plots  # numpy only here; matplotlib stays unimported

    stages = plots.residual_stages(model, tokens)
    columns = plots.token_labels(model, tokens)
    labels = list(model.residual_labels)
    label_width = max(len("dimension"), *(len(x) for x in labels))
    previous = None
    for name, values in stages:
        unchanged = previous is not None and bool(abs(values - previous).max() < 1e-6)
        title = name if name == "embeddings" else f"after {name}"
        print(f"\n== residual stream {title}" + (" (no change) ==" if unchanged else " =="))
        previous = values
        if unchanged:
            continue
        cells = [[_format_cell(v) for v in values[:, d]] for d in range(len(labels))]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        header = "  ".join(c.rjust(w) for c, w in zip(columns, widths))
        print(f"{'dimension'.ljust(label_width)}  {header}")
        for label, row in zip(labels, cells):
            print(
                f"{label.ljust(label_width)}  " + "  ".join(c.rjust(w) for c, w in zip(row, widths))
            )


def cmd_run(args: argparse.Namespace) -> int:
    from tracr.rasp import causal_eval, rasp

    model, program, description = _get_model(args)
    tokens = parse_input(args.input, model)
    with _as_user_error():  # an input the model refuses (too long, ...)
        out = model.apply(tokens)
    print(f"model:  {description}")
    print(f"input:  {[_format_value(t) for t in tokens[1:]]}")
    print(f"output: {[_format_value(v) for v in out.decoded[1:]]}")
    if program is not None:
        evaluate = causal_eval.evaluate if args.causal else rasp.evaluate
        expected = evaluate(program, tokens[1:])
        print(f"RASP:   {[_format_value(v) for v in expected]}")
    if args.residuals:
        _print_residuals(model, tokens)
    return 0


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

    hspec, _ = hybrid_saving.load_hybrid(directory)
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, "hybrid_layout.png")
    picture.draw(hspec, path)
    print(f"hybrid {directory}: wrote 1 picture to {output}\n  {path}")
    return 0


def cmd_circuit(args: argparse.Namespace) -> int:
    from tracr.circuits import formats

    model, _, description = _get_model(args)
    summary = formats.write_circuit(model, args.format, args.output)
    print(f"{description}: {summary}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import numpy as np

    from tracr.export import transformer_lens
    from tracr.io import saving

    model, _, description = _get_model(args)
    exported = transformer_lens.to_transformer_lens(model)
    directory = pathlib.Path(args.output)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "transformer_lens.npz", **exported.state_dict)
    info = {
        "config": exported.config,
        "tokens": [saving.encode_value(t) for t in exported.tokens],
        "bos_token_id": exported.bos_token_id,
        "pad_token_id": exported.pad_token_id,
        "output_values": None
        if exported.output_values is None
        else [saving.encode_value(v) for v in exported.output_values],
        "residual_labels": list(exported.residual_labels),
    }
    (directory / "transformer_lens.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"exported {description} in TransformerLens layout to {directory}:")
    print(f"  transformer_lens.npz ({len(exported.state_dict)} arrays), transformer_lens.json")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from tracr.io import saving

    if not os.path.isdir(args.model):
        raise UsageError(f"MODEL_DIR {args.model!r} is not a directory written by `tracr compile`.")
    model = saving.load_model(args.model)
    metadata = saving.load_metadata(args.model)
    saving.save_model(model, args.output, metadata=metadata, overwrite=args.force, hub=True)
    print(f"wrote a Hub-ready folder for {metadata.get('program', args.model)} to {args.output}:")
    print("  model.json, model.safetensors, config.json, vocab.json, README.md")
    return 0


def _import_optional(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise UsageError(
            f"{what} needs {module}, which is not available ({e.name} missing)."
        ) from None


def cmd_compress(args: argparse.Namespace) -> int:
    exact = _import_optional("tracr.compression.exact", "tracr compress")
    model, _, description = _get_model(args)
    result = exact.exact_compression(model, seed=args.seed)
    residual_size = len(model.residual_labels)
    kind = "every input" if result.exhaustive else f"{result.num_inputs} sampled inputs"
    print(f"model:  {description}")
    print(
        f"exact compression: d_exact = {result.d_exact} of D = {residual_size} "
        f"({result.d_exact / residual_size:.2f}), from {kind}"
    )
    w = result.w
    if args.dim is not None:
        learned = _import_optional("tracr.compression.learned", "tracr compress --dim")
        inputs, _ = exact.domain_inputs(model, seed=args.seed)
        train, held_out = learned.split_inputs(inputs, seed=args.seed)
        trained = learned.learn_compression(
            model,
            train,
            held_out,
            embedding_size=args.dim,
            steps=args.steps,
            seed=args.seed,
            progress=False,
        )
        report = trained.report
        print(
            f"learned compression: d = {args.dim}, held-out token accuracy "
            f"{report.token_accuracy:.4f} over {report.num_positions} positions"
        )
        for name, error in zip(report.layer_names, report.layer_errors):
            print(f"  {name}: residual MSE {error:.2e}")
        w = trained.w
    if args.output:
        import numpy as np

        path = pathlib.Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(w, dtype=np.float32), allow_pickle=False)
        print(f"saved w [{w.shape[0]}, {w.shape[1]}] to {path}")
    return 0


def _benchmarks_dir() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def cmd_bench(args: argparse.Namespace) -> int:
    path = _benchmarks_dir() / f"{args.name}.py"
    if not path.is_file():
        raise UsageError(
            f"benchmark {args.name!r} is not available: {path} does not exist "
            "(benchmarks run from a source checkout)."
        )
    saved_argv = sys.argv
    sys.argv = [str(path), *args.bench_args]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved_argv
    return 0


# --------------------------------------------------------------------------
# The parser.


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
    p.set_defaults(func=cmd_compile)

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
    p.set_defaults(func=cmd_run)

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
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "circuit",
        help="write the model's compiled circuit (verified ground truth for interpretability)",
        description="Write MODEL's circuit: nodes, edges with residual directions and RASP "
        "expressions, as our JSON, TransformerLens hook edges, ACDC's edge dictionary or "
        "InterpBench node pairs (docs/circuits.md).",
        epilog="example: tracr circuit sort_model --format acdc -o sort_acdc.json",
    )
    p.add_argument("program", metavar="MODEL", help=model_help)
    p.add_argument(
        "--format", default="json", choices=("json", "tl", "acdc", "interpbench"), help="(json)"
    )
    p.add_argument("-o", "--output", metavar="FILE", help="file to write (default: stdout)")
    _add_program_options(p)
    p.set_defaults(func=cmd_circuit)

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
    p.set_defaults(func=cmd_export)

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
    p.set_defaults(func=cmd_bundle)

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
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser(
        "bench",
        help="run a benchmark script from benchmarks/",
        description="Run benchmarks/NAME.py with the remaining arguments.",
        epilog="example: tracr bench throughput",
    )
    p.add_argument("name", choices=BENCHMARKS, help="which benchmark")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="passed to the script")
    p.set_defaults(func=cmd_bench)
    return parser


# What the user got wrong: one line, exit status 2. Other exceptions are
# tracr's bugs: one line too, exit status 1, the traceback under --debug.
_USER_ERRORS = (errors.TracrUserError, NotImplementedError, OSError, ImportError)
EXIT_BUG = 1


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


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
