"""Saving and loading compiled models (no pickle; see `saving`).

from tracr.io import save_model, load_model
save_model(model, "my_model")       # my_model/model.json + params.npz
model = load_model("my_model")      # same outputs as the original
"""

from tracr.io.saving import (
    CONFIG_FILE,
    FORMAT_VERSION,
    PARAMS_FILE,
    expected_param_shapes,
    load_metadata,
    load_model,
    save_model,
)

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "PARAMS_FILE",
    "expected_param_shapes",
    "load_metadata",
    "load_model",
    "save_model",
]
