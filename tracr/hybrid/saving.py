"""Saving and loading a hybrid: `hybrid.json` (its spec) and `params.npz` (its weights).

No pickle: the spec is JSON (the compiled `ModelSpec` inside it, values typed
by `tracr.io.saving.encode_value`) and the weights are plain float32 arrays,
one per `module::name`. Loading never unpickles: hybrid.json is read as strict
JSON (size-capped, NaN refused) with every field's type and range checked, and
each array's header (float32/float64 only, shape) is checked against the shape
the spec implies before its data is read; non-finite values are refused::

    save_hybrid("my_hybrid", hspec, params)
    hspec, params = load_hybrid("my_hybrid")
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Dict, Tuple, Union

import jax
import numpy as np

from tracr.hybrid import config as config_lib
from tracr.hybrid import model as model_lib
from tracr.hybrid.config import HybridSpec
from tracr.io import saving as io_saving
from tracr.io import values as values_lib

SPEC_FILE = "hybrid.json"
PARAMS_FILE = "params.npz"
_SEP = "::"

# Bounds on hybrid.json's sizes (far above any real hybrid), so that a damaged
# or hostile file cannot make the loader build or read huge arrays.
_MAX_WIDTH = 1 << 20
_INT_FIELDS = {
    "num_classes": (1, _MAX_WIDTH),
    "d_learned": (1, _MAX_WIDTH),
    "num_heads": (0, 1 << 12),
    "key_size": (0, _MAX_WIDTH),
    "mlp_hidden_size": (0, _MAX_WIDTH),
    "extra_layers": (0, 1000),
}
_BOOL_FIELDS = ("use_compiled", "learned_positions")
_MAX_PARAMS = 1 << 28  # 1 GiB of float32

PathLike = Union[str, os.PathLike]


def is_hybrid_dir(directory: PathLike) -> bool:
    """True when `directory` holds a saved hybrid."""
    return (pathlib.Path(directory) / SPEC_FILE).is_file()


def save_hybrid(directory: PathLike, hspec: HybridSpec, params: model_lib.Params) -> None:
    """Writes `hspec` and `params` (every group, compiled and learned) to `directory`."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat = {
        f"{module}{_SEP}{name}": np.asarray(value, dtype=np.float32)
        for module, values in jax.device_get(params).items()
        for name, value in values.items()
    }
    np.savez(directory / PARAMS_FILE, **flat)
    text = json.dumps(hspec.to_json(io_saving.encode_value), indent=1)
    (directory / SPEC_FILE).write_text(text + "\n")


def load_hybrid(directory: PathLike) -> Tuple[HybridSpec, model_lib.Params]:
    """Reads what `save_hybrid` wrote.

    Nothing is unpickled; every field of hybrid.json is checked (type and range)
    before the spec is built, and each array's header (dtype, shape) is checked
    against the spec before its data is read.

    Raises:
      ValueError: a file is missing, corrupt or truncated, the spec is
        malformed, or the weights do not match it (names, shapes, dtypes,
        non-finite values); the message names the file and the field.
    """
    directory = pathlib.Path(directory)
    hspec = _read_spec(directory / SPEC_FILE)
    try:
        expected = jax.eval_shape(lambda: model_lib.random_params(hspec))
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{directory / SPEC_FILE} does not describe a buildable hybrid ({e}); "
            "save it again with save_hybrid."
        ) from e
    shapes = {
        f"{module}{_SEP}{name}": tuple(shape.shape)
        for module, values in expected.items()
        for name, shape in values.items()
    }
    total = sum(int(np.prod(shape, dtype=np.int64)) for shape in shapes.values())
    if total > _MAX_PARAMS:
        raise ValueError(
            f"{directory / SPEC_FILE} describes a hybrid with {total:,} parameters, more than "
            f"the {_MAX_PARAMS:,} this loader accepts; the sizes in it are probably damaged."
        )
    flat = _read_params(directory / PARAMS_FILE, shapes)
    params: model_lib.Params = {}
    for module, values in expected.items():
        params[module] = {
            name: jax.numpy.asarray(flat[f"{module}{_SEP}{name}"], dtype=np.float32)
            for name in values
        }
    return hspec, params


def _missing(path: pathlib.Path) -> ValueError:
    what = "is not a file" if path.exists() else "does not exist"
    return ValueError(
        f"{path} {what}: {path.parent} is not a saved hybrid (save_hybrid writes {SPEC_FILE} "
        f"and {PARAMS_FILE})."
    )


def _read_spec(path: pathlib.Path) -> HybridSpec:
    """hybrid.json, read as strict, size-capped JSON (`tracr.io.values`), every field checked."""
    if not path.is_file():
        raise _missing(path)
    doc = values_lib.read_json_file(path)
    if not isinstance(doc, dict):
        raise ValueError(
            f"{path} must hold a JSON object (a hybrid spec), got {type(doc).__name__}; "
            "save it again with save_hybrid."
        )
    config_lib.check_document(doc, str(path))
    for name, (low, high) in _INT_FIELDS.items():
        value = doc[name]
        if type(value) is not int:
            raise ValueError(
                f"{path}: {name!r} must be an integer, got {value!r}; fix it or save the "
                "hybrid again."
            )
        if not low <= value <= high:
            raise ValueError(
                f"{path}: {name!r} = {value} is out of range {low}..{high}; fix it or save the "
                "hybrid again."
            )
    for name in _BOOL_FIELDS:
        if type(doc[name]) is not bool:
            raise ValueError(f"{path}: {name!r} must be true or false, got {doc[name]!r}.")
    reads = doc["reads"]
    if not isinstance(reads, list) or not all(isinstance(r, str) for r in reads):
        raise ValueError(
            f"{path}: 'reads' must be a list of RASP labels (strings), got {reads!r:.100}."
        )
    if not isinstance(doc["compiled"], dict):
        raise ValueError(
            f"{path}: 'compiled' must be a JSON object (the compiled model's spec), got "
            f"{type(doc['compiled']).__name__}."
        )
    try:
        return HybridSpec.from_json(doc, io_saving.decode_value)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _read_params(path: pathlib.Path, shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, np.ndarray]:
    """Every array in params.npz, each header (dtype, shape) checked before its data is read."""
    if not path.is_file():
        raise _missing(path)
    return io_saving.read_npz(path, shapes, SPEC_FILE, "save the hybrid again")
