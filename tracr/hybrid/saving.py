"""Saving and loading a hybrid: `hybrid.json` (its spec) and `params.npz` (its weights).

No pickle: the spec is JSON (the compiled `ModelSpec` inside it, values typed
by `tracr.io.saving.encode_value`) and the weights are plain float32 arrays,
one per `module::name`, loaded with `allow_pickle=False` and checked against
the shapes the spec implies::

    save_hybrid("my_hybrid", hspec, params)
    hspec, params = load_hybrid("my_hybrid")
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Tuple, Union

import jax
import numpy as np

from tracr.hybrid import model as model_lib
from tracr.hybrid.config import HybridSpec
from tracr.io import saving as io_saving

SPEC_FILE = "hybrid.json"
PARAMS_FILE = "params.npz"
_SEP = "::"

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

    Raises:
      FileNotFoundError: a file is missing.
      ValueError: the spec is malformed, or the weights do not match it.
    """
    directory = pathlib.Path(directory)
    try:
        doc = json.loads((directory / SPEC_FILE).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{directory / SPEC_FILE} is not valid JSON: {e}.") from None
    hspec = HybridSpec.from_json(doc, io_saving.decode_value)
    expected = jax.eval_shape(lambda: model_lib.random_params(hspec))
    params: model_lib.Params = {}
    with np.load(directory / PARAMS_FILE, allow_pickle=False) as npz:
        found = set(npz.files)
        want = {f"{m}{_SEP}{n}" for m, values in expected.items() for n in values}
        if found != want:
            raise ValueError(
                f"{directory / PARAMS_FILE}: missing arrays {sorted(want - found)[:5]}, "
                f"unexpected arrays {sorted(found - want)[:5]}; it does not match {SPEC_FILE}."
            )
        for module, values in expected.items():
            params[module] = {}
            for name, shape in values.items():
                array = npz[f"{module}{_SEP}{name}"]
                if array.shape != shape.shape:
                    raise ValueError(
                        f"{directory / PARAMS_FILE}: {module}{_SEP}{name} has shape "
                        f"{array.shape}, the spec says {shape.shape}."
                    )
                params[module][name] = jax.numpy.asarray(array, dtype=np.float32)
    return hspec, params
