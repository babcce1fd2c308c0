"""Typed values in JSON: the one encoder of tokens and values that every tracr file uses.

JSON keeps 1, 1.0, "1" and true apart only if we say which, so each value is
written as `{"type": "int" | "float" | "str" | "bool" | "tuple", "value": ...}`::

    encode_value((1, "a"))   # {"type": "tuple", "value": [{"type": "int", ...}, ...]}
    decode_value(encode_value(2.5), "where")   # 2.5

RASP's "no value", None, is JSON `null` (`encode_optional` / `decode_optional`),
as model.json writes a missing PAD token. model.json, vocab.json,
transformer_lens.json, hybrid models and program.json all go through here.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Dict, Optional, Tuple

import numpy as np

_MAX_TUPLE_DEPTH = 16
# The largest JSON file tracr reads (a real model.json is a few KiB plus the
# labels: about 30 bytes per residual dimension).
MAX_JSON_BYTES = 64 * 1024 * 1024


def read_json_file(path: pathlib.Path) -> Any:
    """The JSON document in `path` (which must exist), read defensively: at most
    MAX_JSON_BYTES, strict JSON (no NaN or Infinity), errors that name the file.

    Raises:
      ValueError: the path is not a regular file (a directory, a device), or the
        file is too big, not UTF-8 or not valid JSON.
    """
    return parse_json_bytes(read_file_bytes(path), path)


def read_file_bytes(path: pathlib.Path, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them.

    A directory, a device (/dev/zero would never end) or a pipe is refused
    before anything is read.

    Raises:
      ValueError: `path` is not a regular file, or holds more than `limit` bytes.
    """
    if not path.is_file():
        raise ValueError(
            f"{path} is not a regular file (a directory, a device or a broken link?); it must "
            "be the file tracr wrote."
        )
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is more than the {limit} bytes allowed.")
    return data


def parse_json_bytes(data: bytes, path: Any) -> Any:
    """Strict JSON (no NaN or Infinity) from `data`; errors name `path`.

    Raises:
      ValueError: `data` is not UTF-8 or not valid JSON.
    """
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"{path} is not valid JSON (corrupt or truncated?): {e}") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"contains {name}, which is not valid JSON")


def encode_value(value: Any) -> Dict[str, Any]:
    """A token or output value as `{"type": ..., "value": ...}`.

    Raises:
      ValueError: the value is not an int, float, str, bool or tuple of
        those, or is a non-finite float.
    """
    if isinstance(value, (bool, np.bool_)):
        return {"type": "bool", "value": bool(value)}
    if isinstance(value, (int, np.integer)):
        return {"type": "int", "value": int(value)}
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"Cannot save the non-finite value {value!r}: JSON has no NaN/inf.")
        return {"type": "float", "value": float(value)}
    if isinstance(value, str):
        return {"type": "str", "value": value}
    if isinstance(value, tuple):
        return {"type": "tuple", "value": [encode_value(v) for v in value]}
    raise ValueError(
        f"Cannot save the value {value!r} of type {type(value).__name__}: saved models "
        "support int, float, str, bool and tuples of those as tokens and outputs."
    )


def decode_value(item: Any, where: str, _depth: int = 0) -> Any:
    """Inverse of `encode_value`, checking the shape of `item`.

    Raises:
      ValueError: `item` is not a well-formed typed value.
    """
    if _depth > _MAX_TUPLE_DEPTH:
        raise ValueError(f"{where}: tuples nested more than {_MAX_TUPLE_DEPTH} deep.")
    if not isinstance(item, dict) or set(item) != {"type", "value"}:
        raise ValueError(
            f"{where}: expected a typed value {{'type': ..., 'value': ...}}, got {item!r}."
        )
    kind, value = item["type"], item["value"]
    checks = {
        "bool": lambda v: isinstance(v, bool),
        "int": is_int,
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "tuple": lambda v: isinstance(v, list),
    }
    if kind not in checks:
        raise ValueError(f"{where}: unknown value type {kind!r}; expected one of {sorted(checks)}.")
    if not checks[kind](value):
        raise ValueError(f"{where}: a value of type {kind!r} cannot be {value!r}.")
    if kind == "float":
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{where}: non-finite float {value!r}.")
        return value
    if kind == "tuple":
        return tuple(decode_value(v, f"{where}[{i}]", _depth + 1) for i, v in enumerate(value))
    return value


def encode_optional(value: Any) -> Optional[Dict[str, Any]]:
    """`encode_value`, with None (RASP's "no value") as JSON null."""
    return None if value is None else encode_value(value)


def decode_optional(item: Any, where: str) -> Any:
    """Inverse of `encode_optional`."""
    return None if item is None else decode_value(item, where)


def typed_key(value: Any) -> Tuple[str, Any]:
    """A key under which 1, 1.0 and True stay distinct (for duplicate checks)."""
    if isinstance(value, tuple):
        return ("tuple", tuple(typed_key(v) for v in value))
    return (type(value).__name__, value)


def is_int(value: Any) -> bool:
    """A JSON integer: an int and not a bool (a file's `true` is not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)
