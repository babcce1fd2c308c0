"""Saving and loading compiled models (no pickle; see `saving`), and Hub folders (`bundle`).

from tracr.io import save_model, load_model
save_model(model, "my_model")            # my_model/model.json + model.safetensors
save_model(model, "my_hub", hub=True)    # + config.json, vocab.json, README.md
model = load_model("my_model")           # same outputs as the original
"""

from tracr.io.saving import (
    CONFIG_FILE,
    FORMAT_VERSION,
    NPZ_PARAMS_FILE,
    PARAMS_FILE,
    expected_param_shapes,
    load_metadata,
    load_model,
    save_model,
)

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "NPZ_PARAMS_FILE",
    "PARAMS_FILE",
    "expected_param_shapes",
    "load_metadata",
    "load_model",
    "save_model",
]
