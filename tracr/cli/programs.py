"""Programs: lib:NAME or FILE.py:NAME, with arguments bound by the function's signature."""

from __future__ import annotations

import collections.abc
import importlib.util
import inspect
import pathlib
import typing
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tracr.cli.errors import UsageError
from tracr.cli.parsing import parse_value


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


def _annotation(fn: Any, parameter: inspect.Parameter) -> Any:
    """The parameter's annotation as an object: resolved by `typing.get_type_hints`.

    When the function's hints do not all resolve (a user's file), the one
    annotation is evaluated alone in the function's globals; failing that, its
    text is returned.
    """
    try:
        return typing.get_type_hints(fn).get(parameter.name, parameter.annotation)
    except Exception:  # unresolvable annotations in a user's file
        pass
    annotation = parameter.annotation
    if isinstance(annotation, str):
        try:
            return eval(annotation, getattr(fn, "__globals__", {}))  # noqa: S307 - the user's own file
        except Exception:  # noqa: BLE001 - keep the text
            return annotation
    return annotation


def _sop_class_names() -> set:
    from tracr.rasp import rasp

    names, pending = set(), [rasp.SOp]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return names


def _is_sop_type(annotation: Any) -> bool:
    """Whether an annotation is `rasp.SOp` (or a subclass), alone or in Optional/Union/List."""
    from tracr.rasp import rasp

    if isinstance(annotation, str):  # unresolved text: compare class names, e.g. "rasp.SOp"
        name = annotation.split("[")[0].rsplit(".", 1)[-1].strip()
        return name in _sop_class_names()
    if isinstance(annotation, type):
        return issubclass(annotation, rasp.SOp)
    if _is_callable_type(annotation):
        return False
    return any(_is_sop_type(arg) for arg in typing.get_args(annotation))


def _is_callable_type(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.split("[")[0].rsplit(".", 1)[-1].strip() == "Callable"
    return typing.get_origin(annotation) is collections.abc.Callable or (
        annotation is collections.abc.Callable or annotation is typing.Callable
    )


def _is_sop_parameter(fn: Any, parameter: inspect.Parameter) -> bool:
    return _is_sop_type(_annotation(fn, parameter))


def _is_callable_parameter(fn: Any, parameter: inspect.Parameter) -> bool:
    return _is_callable_type(_annotation(fn, parameter))


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
