"""Saving and loading compiled models (no pickle; see `saving`), their RASP programs
(`program`: lambda-free program.json) and Hub folders (`bundle`).

from tracr.io import save_model, load_model
save_model(model, "my_model")            # model.json + model.safetensors + program.json
save_model(model, "my_hub", hub=True)    # + config.json, vocab.json, circuit.json, README.md
model = load_model("my_model")           # same outputs as the original; model.program rebuilt
"""

from tracr.io.program import PROGRAM_FILE, ProgramNotWritable, load_program
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
    "PROGRAM_FILE",
    "ProgramNotWritable",
    "expected_param_shapes",
    "load_metadata",
    "load_model",
    "load_program",
    "save_model",
]
