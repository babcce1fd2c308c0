"""Parsing values on the command line: vocabularies, --arg values, inputs."""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Sequence

from tracr.cli.errors import UsageError


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
    elif all(c in by_name for c in text) or all(
        len(name) == 1 for name, token in by_name.items() if token != bos
    ):
        items = list(text)  # a one-character vocabulary: the bad characters are named
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
