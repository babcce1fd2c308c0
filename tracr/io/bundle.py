"""A Hugging Face Hub-ready folder: the saved model plus what a Hub user looks for.

`save_model(model, "reverse_hub", hub=True)` (or `tracr bundle MODEL_DIR -o OUT`,
which loads MODEL_DIR and calls it) writes, next to model.json and
model.safetensors (and program.json, which `save_model` writes when the
program is known)::

    config.json   TransformerLens config (HookedTransformerConfig /
                  TransformerBridgeConfig arguments) of the model
    vocab.json    the encoders: tokens in id order (types kept), BOS/PAD ids,
                  output values, max_seq_len
    circuit.json  the circuit (`tracr.circuits`' JSON, read back by
                  `tracr.circuits.formats.from_json`)
    README.md     a model card: program, vocabulary, max_seq_len, layers,
                  heads, the certificate the compiler's check produced, and
                  which optional files are there (or why not)

`write_hub_files` is the one writer of these files. `tracr.io.load_model(folder)`
loads the folder back (with its program, if program.json is there), and
`tracr.export.to_transformer_lens_model(load_model(folder))` gives the
TransformerLens model. Pushing stays the user's step (no network is assumed)::

    from huggingface_hub import HfApi
    HfApi().upload_folder(folder_path="reverse_hub", repo_id="you/tracr-reverse")
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Dict, Mapping, Optional

from tracr.export import transformer_lens as tl_export
from tracr.io import values as values_lib
from tracr.transformer import assembled

TL_CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
CIRCUIT_FILE = "circuit.json"
PROGRAM_FILE = "program.json"  # written by save_model (tracr.io.program)
README_FILE = "README.md"


def vocab_json(model: assembled.AssembledTransformerModel) -> Dict[str, Any]:
    """The encoders of a model, as JSON (typed values: 1 and "1" stay apart)."""
    inp, out = model.spec.input, model.spec.output
    return {
        "tokens": [values_lib.encode_value(t) for t in inp.tokens],
        "bos_token_id": inp.bos_id,
        "pad_token_id": inp.pad_id,
        "max_seq_len": inp.max_seq_len,
        "output": {
            "label": out.label,
            "encoding": "categorical" if out.categorical else "numerical",
            "values": [values_lib.encode_value(v) for v in out.values] if out.categorical else None,
        },
    }


def model_card(
    model: assembled.AssembledTransformerModel,
    metadata: Mapping[str, str],
    *,
    notes: Optional[Mapping[str, Optional[str]]] = None,
) -> str:
    """A README.md for the Hub: what the model computes and how to load it.

    `notes` maps an optional file (program.json, circuit.json) to None when it
    was written, or to the reason it was not.
    """
    spec = model.spec
    program = metadata.get("program", spec.output.label)
    vocab = [t for t in spec.input.tokens if t not in (spec.input.bos_token, spec.input.pad_token)]
    heads = sum(1 for _ in spec.heads())
    certificate = metadata.get("certificate", "not recorded (compile with `tracr compile`)")
    lines = [
        "---",
        "library_name: tracr",
        "tags: [tracr, rasp, transformer-lens, interpretability, compiled-transformer]",
        "---",
        "",
        f"# {program}",
        "",
        "A transformer compiled from a RASP program by tracr: its weights compute the program "
        "exactly, so every head and MLP has a known meaning.",
        "",
        f"- program: `{program}` (output `{spec.output.label}`, "
        f"{'categorical' if spec.output.categorical else 'numerical'})",
        f"- vocabulary: {vocab!r}",
        f"- max_seq_len: {spec.max_seq_len} (plus BOS `{spec.input.bos_token}` at position 0)",
        f"- layers: {spec.num_layers}, heads: {heads} compiled "
        f"({spec.num_heads} per layer in the padded layout), d_model: {spec.d_model}, "
        f"d_mlp: {spec.mlp_hidden_size}",
        f"- attention: {'causal' if spec.causal else 'bidirectional'}, activation: "
        f"{spec.activation}, no layer norm",
        "",
        "## Certificate",
        "",
        "```",
        certificate,
        "```",
        "",
        "## Use",
        "",
        "```python",
        "from tracr.io import load_model",
        "from tracr.export import to_transformer_lens_model",
        "",
        'model = load_model("THIS_FOLDER")            # JAX',
        "lens = to_transformer_lens_model(model)      # TransformerLens (pip install tracr[torch])",
        "```",
        "",
        "Files: `model.json` + `model.safetensors` (tracr), `config.json` (TransformerLens "
        "config), `vocab.json` (encoders).",
        "",
    ]
    optional = {
        PROGRAM_FILE: "the RASP program without lambdas (`tracr.io.program.load_program`)",
        CIRCUIT_FILE: "the circuit (`tracr.circuits.formats.from_json`)",
    }
    for name, reason in (notes or {}).items():
        if reason is None:
            lines.append(f"- `{name}`: {optional.get(name, name)}")
        else:
            lines.append(f"- `{name}`: not written: {reason}")
    if notes:
        lines.append("")
    return "\n".join(lines)


def write_hub_files(
    model: assembled.AssembledTransformerModel,
    directory: pathlib.Path,
    *,
    metadata: Mapping[str, str],
    program_note: Optional[str] = None,
) -> None:
    """Writes config.json, vocab.json, circuit.json and README.md next to a saved model.

    `save_model(..., hub=True)` calls it after writing the model (and
    program.json); `program_note` is why program.json was not written, if it was not.
    """
    from tracr.circuits import formats, graph  # circuits sit below io, above transformer

    directory = pathlib.Path(directory)
    config = tl_export.transformer_lens_config(model.spec)
    (directory / TL_CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    (directory / VOCAB_FILE).write_text(json.dumps(vocab_json(model), indent=1) + "\n")
    notes: Dict[str, Optional[str]] = {PROGRAM_FILE: program_note}
    try:
        circuit_text = formats.render(graph.circuit(model), "json")
    except (ValueError, NotImplementedError) as e:
        (directory / CIRCUIT_FILE).unlink(missing_ok=True)
        notes[CIRCUIT_FILE] = f"the circuit could not be built ({e})"
    else:
        (directory / CIRCUIT_FILE).write_text(circuit_text + "\n")
        notes[CIRCUIT_FILE] = None
    (directory / README_FILE).write_text(model_card(model, metadata, notes=notes))
