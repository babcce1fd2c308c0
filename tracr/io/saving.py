"""Save a compiled model to a directory and load it back, without pickle.

A saved model is a directory with two files (and program.json, the RASP
program without lambdas, when the program is known: see `tracr.io.program`)::

    model.json         format version, model config, vocabulary (types kept),
                       BOS/PAD tokens, output encoding, residual labels,
                       unembedding, the model's spec, the SHA-256 of the
                       weights file and a content hash (below)
    model.safetensors  the parameters (written with the `safetensors`
                       package), one float32 tensor per Haiku parameter,
                       named `<module path>/<parameter>` (e.g.
                       `transformer/layer_0/attn/query/w`); its metadata holds
                       the format, the format version and the content hash

The content hash covers the canonical JSON of every field of model.json (each
second-level field hashed on its own) together with every array: a model
edited after saving, in the JSON or the weights, is refused with one line
naming the fields or arrays that changed. model.json's `program` field holds
program.json's SHA-256 (null when no program was written), so program.json is
covered too: another model's program, or an edited one, is refused. Models
saved by format version 2 (`params.npz`, no content hash) still load, with a
warning; a version-2 file carrying version-3 fields (`content_hash`,
`program`) is refused. Version-3 files written before the `program` field
existed still load (their program.json is checked against the model's
vocabulary, max_seq_len and output name, not a checksum).

Loading also checks that the model's description agrees with itself and with
the weights (`_model_problem`, then `tracr.compiler.invariants.check_spec`):
BOS and PAD differ, every token, position and output value is the residual
direction the spec names, head and hidden-unit indices are distinct ints in
range, and no head or hidden unit has weights the spec does not list. A model
that fails these is refused on saving too, so what saves, loads.

Example::

    from tracr.compiler import compiling, lib
    from tracr.io import load_model, save_model
    from tracr.rasp import rasp

    model = compiling.compile_rasp_to_model(
        lib.make_reverse(rasp.tokens), vocab={"a", "b"}, max_seq_len=4)
    save_model(model, "reverse_model")                  # overwrite=True to replace
    again = load_model("reverse_model")
    again.apply(["compiler_bos", "a", "b"]).decoded   # ['compiler_bos', 'b', 'a']

Loading never executes code from the files and never unpickles: the JSON is
parsed with the standard library (NaN and Infinity refused); safetensors
headers are parsed by the `safetensors` package and every tensor's dtype and
shape are checked against the config before it is read; version-2 `.npz`
arrays are read member by member from the zip after their headers have been
checked, and every field is validated
before a model is built. Anything unexpected (unknown keys, a wrong version,
shapes or names that do not match, non-finite values, object arrays, a
checksum mismatch from a corrupt or truncated file) raises `ValueError`
naming the file and the problem.

Token and output values keep their Python type: each is written as
`{"type": "int" | "float" | "str" | "bool" | "tuple", "value": ...}`, so a
vocabulary {1, "1", True} survives the round trip (`tracr.io.values`, the one
encoder every tracr file uses).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import re
import zipfile
import zlib
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import jax
import numpy as np
import safetensors
import safetensors.numpy

from tracr.io import program as program_io
from tracr.io import values as values_lib
from tracr.io.values import decode_value, encode_value  # noqa: F401 (re-exported)
from tracr.io.values import typed_key as _typed_key
from tracr.rasp import rasp
from tracr.transformer import assembled, encoder
from tracr.transformer import spec as spec_lib

FORMAT_NAME = "tracr-model"
FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)
CONFIG_FILE = "model.json"
PARAMS_FILE = "model.safetensors"
NPZ_PARAMS_FILE = "params.npz"  # format version 2
_PARAMS_FILES = {2: NPZ_PARAMS_FILE, 3: PARAMS_FILE}

# Bounds on config integers, so that a hostile file cannot make the loader
# build huge name tables before it looks at the arrays.
_MAX_LAYERS = 10_000
_MAX_SIZE = 1 << 24
_ACTIVATIONS = {"relu": jax.nn.relu}

PathLike = Union[str, os.PathLike]
_LOG = logging.getLogger(__name__)

_TOP_KEYS = {
    "format",
    "format_version",
    "config",
    "input",
    "output",
    "residual_labels",
    "unembedding",
    "params",
    "metadata",
    "spec",
    "content_hash",
    "program",
}
# Fields that only format version 3 writes: a version-2 file that has them is a
# version-3 file relabelled (which would skip the content hash).
_V3_ONLY_KEYS = ("content_hash", "program")
_CONFIG_KEYS = {
    "num_heads": int,
    "num_layers": int,
    "key_size": int,
    "mlp_hidden_size": int,
    "dropout_rate": float,
    "activation_function": str,
    "layer_norm": bool,
    "causal": bool,
    "d_model": int,
    "max_seq_len": int,
}
_INPUT_KEYS = {"tokens", "bos_token", "pad_token"}
_PARAMS_KEYS = {"file", "sha256"}
_PROGRAM_KEYS = {"file", "sha256"}


# --------------------------------------------------------------------------
# Parameter names and shapes, derived from the config alone.


def expected_param_shapes(config: Mapping[str, int], vocab_size: int) -> Dict[str, Tuple[int, ...]]:
    """Every array a saved model must contain, with its shape.

    Args:
      config: the `config` section of model.json (num_heads, num_layers,
        key_size, mlp_hidden_size, d_model, max_seq_len).
      vocab_size: number of tokens, BOS and PAD included.

    Returns:
      `{"<module>/<param>": shape}`, e.g. `"transformer/layer_0/attn/query/w"`.
    """
    d, h, k, m = (config[n] for n in ("d_model", "num_heads", "key_size", "mlp_hidden_size"))
    shapes: Dict[str, Tuple[int, ...]] = {
        "token_embed/embeddings": (vocab_size, d),
        "pos_embed/embeddings": (config["max_seq_len"] + 1, d),
    }
    for layer in range(config["num_layers"]):
        for name in ("query", "key", "value"):
            prefix = spec_lib.param_name(layer, "attn", name)
            shapes[f"{prefix}/w"] = (d, h * k)
            shapes[f"{prefix}/b"] = (h * k,)
        prefix = spec_lib.param_name(layer, "attn", "linear")
        shapes[f"{prefix}/w"] = (h * k, d)
        shapes[f"{prefix}/b"] = (d,)
        prefix = spec_lib.param_name(layer, "mlp", "linear_1")
        shapes[f"{prefix}/w"] = (d, m)
        shapes[f"{prefix}/b"] = (m,)
        prefix = spec_lib.param_name(layer, "mlp", "linear_2")
        shapes[f"{prefix}/w"] = (m, d)
        shapes[f"{prefix}/b"] = (d,)
    return shapes


def _flatten_params(params: Mapping[str, Mapping[str, Any]]) -> Dict[str, np.ndarray]:
    return {
        f"{module}/{name}": np.asarray(value, dtype=np.float32)
        for module, inner in params.items()
        for name, value in inner.items()
    }


def _unflatten_params(flat: Mapping[str, np.ndarray]) -> Dict[str, Dict[str, np.ndarray]]:
    params: Dict[str, Dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        module, name = key.rsplit("/", 1)
        params.setdefault(module, {})[name] = value
    return params


# --------------------------------------------------------------------------
# Saving.


def _unembedding_indices(unembed_matrix: Optional[np.ndarray], d_model: int) -> List[int]:
    if unembed_matrix is None:
        raise ValueError(
            "model.unembed_matrix is None, so the output directions are unknown; save a model "
            "built by compiling.compile_rasp_to_model or assemble.build_assembled_model."
        )
    u = np.asarray(unembed_matrix)
    rows, cols = np.nonzero(u)
    is_selection = (
        u.ndim == 2
        and u.shape[0] == d_model
        and len(cols) == u.shape[1]
        and sorted(cols.tolist()) == list(range(u.shape[1]))
        and np.all(u[rows, cols] == 1.0)
    )
    if not is_selection:
        raise ValueError(
            f"model.unembed_matrix (shape {u.shape}) is not a selection of residual directions "
            "(one 1 per column); only compiled models' unembeddings can be saved."
        )
    order = np.argsort(cols)
    return rows[order].tolist()


def _model_json(
    compiled: assembled.AssembledTransformerModel,
    flat: Mapping[str, np.ndarray],
    sha256: str,
    metadata: Optional[Mapping[str, str]],
) -> Dict[str, Any]:
    config = compiled.model_config
    activation = [n for n, f in _ACTIVATIONS.items() if f is config.activation_function]
    if not activation:
        raise ValueError(
            f"model_config.activation_function is {config.activation_function!r}; saved models "
            f"support {sorted(_ACTIVATIONS)} (compiled models use jax.nn.relu)."
        )
    if config.layer_norm:
        raise ValueError(
            "model_config.layer_norm is True; saved models have no layer norm parameters "
            "(compiled models use layer_norm=False)."
        )
    in_enc = compiled.input_encoder
    if not isinstance(in_enc, encoder.CategoricalEncoder) or in_enc.bos_token is None:
        raise ValueError(
            "model.input_encoder must be a CategoricalEncoder with a BOS token, got "
            f"{type(in_enc).__name__}; save a model from compiling.compile_rasp_to_model."
        )
    tokens = [in_enc.decoding_map[i] for i in range(in_enc.vocab_size)]
    out_enc = compiled.output_encoder
    if isinstance(out_enc, encoder.CategoricalEncoder):
        output = {
            "encoding": "categorical",
            "values": [encode_value(out_enc.decoding_map[i]) for i in range(out_enc.vocab_size)],
        }
    elif isinstance(out_enc, encoder.NumericalEncoder):
        output = {"encoding": "numerical"}
    else:
        raise ValueError(
            "model.output_encoder must be a CategoricalEncoder or NumericalEncoder, got "
            f"{type(out_enc).__name__}."
        )
    d_model = flat["token_embed/embeddings"].shape[1]
    meta = dict(metadata or {})
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"metadata must map str to str, got {key!r}: {value!r}.")
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": {
            "num_heads": int(config.num_heads),
            "num_layers": int(config.num_layers),
            "key_size": int(config.key_size),
            "mlp_hidden_size": int(config.mlp_hidden_size),
            "dropout_rate": float(config.dropout_rate),
            "activation_function": activation[0],
            "layer_norm": bool(config.layer_norm),
            "causal": bool(config.causal),
            "d_model": int(d_model),
            "max_seq_len": int(flat["pos_embed/embeddings"].shape[0] - 1),
        },
        "input": {
            "tokens": [encode_value(t) for t in tokens],
            "bos_token": encode_value(in_enc.bos_token),
            "pad_token": None if in_enc.pad_token is None else encode_value(in_enc.pad_token),
        },
        "output": output,
        "residual_labels": [str(label) for label in compiled.residual_labels],
        "unembedding": _unembedding_indices(compiled.unembed_matrix, d_model),
        "params": {"file": PARAMS_FILE, "sha256": sha256},
        "metadata": meta,
        "spec": _model_spec(compiled).to_json(encode_value),
    }


def _model_spec(compiled: assembled.AssembledTransformerModel) -> spec_lib.ModelSpec:
    if compiled.spec is None:
        raise ValueError(
            "model.spec is None; save a model built by compiling.compile_rasp_to_model "
            "or assembled.build_assembled_model."
        )
    return compiled.spec


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# The content hash: canonical JSON of each field, and each array.


def _canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "little"))
        h.update(chunk)
    return h.hexdigest()


def content_parts(doc: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Dict[str, str]:
    """A hash per field of model.json (`spec.layers`, `config.causal`, ...) and per array.

    `params.sha256` (the weights file's checksum, which covers the hash itself)
    and `content_hash` are left out.
    """
    parts: Dict[str, str] = {}
    for key, value in doc.items():
        if key == "content_hash":
            continue
        if isinstance(value, dict) and value:
            for sub, inner in value.items():
                if (key, sub) != ("params", "sha256"):
                    parts[f"{key}.{sub}"] = _digest(_canonical(inner))
        else:
            parts[key] = _digest(_canonical(value))
    for name, array in arrays.items():
        a = np.ascontiguousarray(array, dtype="<f4")
        parts[f"array {name}"] = _digest(_canonical(list(a.shape)), a.tobytes())
    return parts


def _total(parts: Mapping[str, str]) -> str:
    return _digest(_canonical(dict(parts)))


def _check_content_hash(
    doc: Mapping[str, Any], arrays: Mapping[str, np.ndarray], where: str
) -> None:
    """Refuses a model whose fields or arrays differ from what was hashed at saving."""
    recorded = doc.get("content_hash")
    if (
        not isinstance(recorded, dict)
        or set(recorded) != {"sha256", "parts"}
        or not isinstance(recorded["parts"], dict)
        or not all(isinstance(v, str) for v in recorded["parts"].values())
    ):
        raise ValueError(f"{where}: content_hash must be {{'sha256': ..., 'parts': {{...}}}}.")
    parts = content_parts(doc, arrays)
    if _total(parts) == recorded["sha256"] and parts == recorded["parts"]:
        return
    changed = sorted(
        k for k in set(parts) | set(recorded["parts"]) if parts.get(k) != recorded["parts"].get(k)
    )
    if not changed:
        changed = ["content_hash.sha256"]
    shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
    raise ValueError(
        f"{where}: {shown} changed since the model was saved (the content hash does not "
        "match: edited or corrupt); save the model again."
    )


def save_model(
    compiled: assembled.AssembledTransformerModel,
    directory: PathLike,
    *,
    metadata: Optional[Mapping[str, str]] = None,
    overwrite: bool = False,
    hub: bool = False,
    program: Optional[Any] = None,
) -> pathlib.Path:
    """Writes a compiled model to `directory` (created if needed).

    Args:
      compiled: a model from `compiling.compile_rasp_to_model` (or one rebuilt
        by `load_model`).
      directory: where to write model.json and model.safetensors.
      metadata: optional free-form strings stored with the model (the CLI
        records the program, vocabulary and certificate here).
      overwrite: replace a model already saved in `directory` (CLI: --force).
      hub: also write a Hugging Face Hub-ready folder: config.json
        (TransformerLens config), vocab.json, circuit.json and a README model
        card (see `tracr.io.bundle`).
      program: the RASP program the model computes (default: `compiled.program`,
        which the compiler and `load_model` set). When known, it is written as
        program.json (`tracr.io.program`: lambda-free, functions as tables over
        the model's value sets). A program that has no such form is skipped,
        with the reason in the model card (hub) or the log; a program.json from
        an earlier save in `directory` is removed rather than left stale.

    Returns:
      The directory, as a path.

    Raises:
      FileExistsError: `directory` already holds a saved model and overwrite is False.
      ValueError: the model cannot be described by the format (no encoders,
        an activation other than relu, layer norm, unsupported token types).
    """
    directory = pathlib.Path(directory)
    if program is not None and not isinstance(program, rasp.SOp):
        raise TypeError(
            f"program must be the rasp.SOp the model was compiled from, got "
            f"{type(program).__name__}: {program!r:.100}."
        )
    if (directory / CONFIG_FILE).exists() and not overwrite:
        raise FileExistsError(
            f"{directory} already holds a saved model; pass overwrite=True (tracr: --force) "
            "to replace it, or choose another directory."
        )
    flat = _flatten_params(compiled.params)
    in_enc = compiled.input_encoder
    vocab_size = in_enc.vocab_size if isinstance(in_enc, encoder.CategoricalEncoder) else -1
    if "token_embed/embeddings" not in flat or "pos_embed/embeddings" not in flat:
        raise ValueError(
            "model.params has no token_embed/embeddings or pos_embed/embeddings; only models "
            "in the Tracr parameter layout can be saved."
        )
    config_json = _model_json(compiled, flat, sha256="", metadata=metadata)
    expected = expected_param_shapes(config_json["config"], vocab_size)
    if set(flat) != set(expected):
        extra = sorted(set(flat) - set(expected))
        missing = sorted(set(expected) - set(flat))
        raise ValueError(
            f"model.params do not match its config: unexpected {extra}, missing {missing}."
        )
    for name, shape in expected.items():
        if flat[name].shape != shape:
            raise ValueError(f"model.params[{name!r}] has shape {flat[name].shape}, want {shape}.")

    problem = _model_problem(_model_spec(compiled), flat) or _invariant_problem(compiled)
    if problem:
        raise ValueError(f"The model cannot be saved: {problem}.")

    program_doc, program_note = _program_document(
        compiled.program if program is None else program, compiled
    )
    program_bytes = None
    if program_doc is not None:
        program_text = json.dumps(program_doc, separators=(",", ":"), allow_nan=False)
        program_bytes = (program_text + "\n").encode("ascii")
    # program.json's checksum is part of model.json, so the content hash covers it.
    config_json["program"] = (
        None
        if program_bytes is None
        else {
            "file": program_io.PROGRAM_FILE,
            "sha256": hashlib.sha256(program_bytes).hexdigest(),
        }
    )

    parts = content_parts(config_json, flat)
    total = _total(parts)
    directory.mkdir(parents=True, exist_ok=True)
    params_path = directory / PARAMS_FILE
    tmp = params_path.with_name(PARAMS_FILE + ".tmp")
    safetensors.numpy.save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in flat.items()},
        str(tmp),
        metadata={
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "content_sha256": total,
        },
    )
    _sort_safetensors_header(tmp)
    os.replace(tmp, params_path)
    (directory / NPZ_PARAMS_FILE).unlink(missing_ok=True)  # an older save's weights
    config_json["params"]["sha256"] = _sha256(params_path)
    config_json["content_hash"] = {"sha256": total, "parts": parts}
    text = json.dumps(config_json, indent=1, allow_nan=False, ensure_ascii=True) + "\n"
    _write_atomically(directory / CONFIG_FILE, text.encode("ascii"))
    program_path = directory / program_io.PROGRAM_FILE
    if program_bytes is None:
        program_path.unlink(missing_ok=True)  # an earlier save's program, not this model's
        if program_note and not hub:
            _LOG.warning("%s: %s not written: %s", directory, program_io.PROGRAM_FILE, program_note)
    else:
        _write_atomically(program_path, program_bytes)
    if hub:
        from tracr.io import bundle

        bundle.write_hub_files(
            compiled, directory, metadata=dict(metadata or {}), program_note=program_note
        )
    return directory


def _program_document(
    program: Any, compiled: assembled.AssembledTransformerModel
) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(program.json's document, None), or (None, why there is none)."""
    if program is None:
        return None, "the program is not known (pass save_model(..., program=...))"
    if compiled.spec is None:
        return None, "the model has no spec, so its vocabulary and max_seq_len are unknown"
    from tracr.transformer import inputs

    if not _computes(program, compiled.spec.output.label):
        return None, (
            f"the program's output is named {program.name!r}, but the model computes "
            f"{compiled.spec.output.label!r} (not the program the model was compiled from)"
        )
    try:
        doc = program_io.program_to_json(
            program, inputs.domain_tokens(compiled.spec), compiled.spec.max_seq_len
        )
    except program_io.ProgramNotWritable as e:
        return None, e.reason
    except (TypeError, ValueError, NotImplementedError) as e:  # the model still saves
        return None, f"{type(e).__name__}: {e}"
    return doc, None


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Loading.


def _check_keys(section: Any, want: set, where: str, optional: frozenset = frozenset()) -> None:
    if not isinstance(section, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(section).__name__}.")
    unknown = sorted(set(section) - want)
    missing = sorted(want - set(section) - optional)
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; expected only {sorted(want)}.")
    if missing:
        raise ValueError(f"{where} is missing keys {missing}.")


def _exists(path: pathlib.Path) -> bool:
    return path.exists() or path.is_symlink()  # a broken link is there, but not a file


def _not_regular(path: pathlib.Path, what: str) -> ValueError:
    return ValueError(
        f"{path} is not a regular file (a directory, a device or a broken link?); {what} "
        "must be the file save_model wrote: remove it and save the model again."
    )


def _read_json(path: pathlib.Path) -> Dict[str, Any]:
    if not _exists(path):
        raise ValueError(f"{path} does not exist: not a saved tracr model directory.")
    if not path.is_file():
        raise _not_regular(path, path.name)
    doc = values_lib.read_json_file(path)
    if not isinstance(doc, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(doc).__name__}.")
    return doc


def _validate_config(doc: Dict[str, Any], where: str) -> Dict[str, Any]:
    if doc.get("format") != FORMAT_NAME:
        raise ValueError(f"{where}: 'format' is {doc.get('format')!r}, expected {FORMAT_NAME!r}.")
    version = doc.get("format_version")
    if not values_lib.is_int(version) or version not in READABLE_VERSIONS:
        raise ValueError(
            f"{where}: format_version {version!r} is not supported; this tracr reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (an integer). Re-save the model with "
            "this version of tracr."
        )
    if version == 2:
        newer = [key for key in _V3_ONLY_KEYS if key in doc]
        if newer:
            raise ValueError(
                f"{where}: format_version is 2, but the file has {newer}, which only format "
                "version 3 writes (a version-3 model relabelled, whose content hash would not "
                "be checked); save the model again with this tracr."
            )
    # "program" is optional: version-3 files written before it existed lack it.
    optional = {"metadata", "program"} | ({"content_hash"} if version == 2 else set())
    _check_keys(doc, _TOP_KEYS, where, optional=frozenset(optional))
    config = doc["config"]
    _check_keys(config, set(_CONFIG_KEYS), f"{where} 'config'")
    for key, kind in _CONFIG_KEYS.items():
        value = config[key]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise ValueError(f"{where}: config[{key!r}] must be {kind.__name__}, got {value!r}.")
        limit = _MAX_LAYERS if key == "num_layers" else _MAX_SIZE
        if kind is int and not 1 <= value <= limit:
            raise ValueError(f"{where}: config[{key!r}] = {value} is out of range 1..{limit}.")
    if config["activation_function"] not in _ACTIVATIONS:
        raise ValueError(
            f"{where}: activation_function {config['activation_function']!r} is not one of "
            f"{sorted(_ACTIVATIONS)}."
        )
    if config["layer_norm"]:
        raise ValueError(f"{where}: layer_norm must be false (saved models have no layer norm).")
    if not 0.0 <= config["dropout_rate"] < 1.0:
        raise ValueError(f"{where}: dropout_rate {config['dropout_rate']} is not in [0, 1).")
    return config


def _validate_values(items: Any, where: str) -> List[Any]:
    if not isinstance(items, list) or not items:
        raise ValueError(f"{where} must be a non-empty list of typed values.")
    values = [decode_value(item, f"{where}[{i}]") for i, item in enumerate(items)]
    keys = [_typed_key(v) for v in values]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{where} lists a value more than once.")
    return values


def _read_params(path: pathlib.Path, expected: Dict[str, Tuple[int, ...]]) -> Dict[str, np.ndarray]:
    """Reads every expected array from the .npz, checking each header first."""
    return read_npz(path, expected, "model.json's config", "save the model again")


def read_npz(
    path: pathlib.Path, expected: Dict[str, Tuple[int, ...]], described_by: str, remedy: str
) -> Dict[str, np.ndarray]:
    """Exactly the `expected` arrays (name -> shape) of a .npz, as float32.

    Each member's header (float32/float64 only, the expected shape) is checked
    before its data is read, so a small file cannot declare a huge array;
    nothing is unpickled; values must be finite after the cast to float32.
    Also read by the hybrid loader (`tracr.hybrid.saving`).

    Raises:
      ValueError: naming `path`, the array and `described_by` (what the
        arrays must match), ending with `remedy`.
    """
    arrays: Dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
            if len(set(members)) != len(members):
                raise ValueError(f"{path} lists an array more than once; {remedy}.")
            names = [m[: -len(".npy")] for m in members if m.endswith(".npy")]
            unknown = sorted(set(names) - set(expected)) + [
                m for m in members if not m.endswith(".npy")
            ]
            missing = sorted(set(expected) - set(names))
            if unknown or missing:
                raise ValueError(
                    f"{path} does not match {described_by}: unexpected arrays "
                    f"{unknown[:8]}, missing arrays {missing[:8]}; {remedy}."
                )
            for name in names:
                with archive.open(name + ".npy") as f:
                    arrays[name] = _read_npy(f, name, expected[name], path)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
        raise ValueError(
            f"{path} is not a valid .npz archive (corrupt or truncated?): {e}; {remedy}."
        ) from None
    return arrays


_SAFETENSORS_DTYPES = {"F32": np.float32, "F64": np.float64}


def _sort_safetensors_header(path: pathlib.Path) -> None:
    """Rewrites a safetensors file's JSON header with its keys sorted, in place.

    The safetensors package writes metadata keys in a varying order, so two
    saves of one model would differ in bytes (and in the SHA-256 model.json
    records). The header is `u64 length + JSON`, padded with spaces; sorting
    its keys keeps its length and every data offset, so the data is untouched.
    """
    with open(path, "r+b") as f:
        (length,) = np.frombuffer(f.read(8), dtype="<u8")
        header = json.loads(f.read(int(length)).decode("utf-8"))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        data = text.encode("utf-8")
        if len(data) > length:  # never: the same entries in another order
            raise ValueError(f"{path}: sorted safetensors header grew; not rewritten.")
        f.seek(8)
        f.write(data + b" " * (int(length) - len(data)))


def _read_safetensors(
    path: pathlib.Path, expected: Dict[str, Tuple[int, ...]], content_hash: Any
) -> Dict[str, np.ndarray]:
    """Reads every expected tensor, checking names, dtypes, shapes and metadata first."""
    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            names = list(f.keys())
            unknown = sorted(set(names) - set(expected))
            missing = sorted(set(expected) - set(names))
            if unknown or missing:
                raise ValueError(
                    f"{path} does not match model.json's config: unexpected arrays "
                    f"{unknown[:8]}, missing arrays {missing[:8]}."
                )
            want = {
                "format": FORMAT_NAME,
                "format_version": str(FORMAT_VERSION),
                "content_sha256": content_hash.get("sha256")
                if isinstance(content_hash, dict)
                else None,
            }
            wrong = sorted(k for k, v in want.items() if metadata.get(k) != v)
            if wrong:
                raise ValueError(
                    f"{path}: metadata {', '.join(wrong)} do not match {CONFIG_FILE} (weights "
                    "from another save?); save the model again."
                )
            arrays = {}
            for name in names:
                where = f"{path}: array {name!r}"
                piece = f.get_slice(name)
                dtype, shape = piece.get_dtype(), tuple(piece.get_shape())
                if dtype not in _SAFETENSORS_DTYPES:
                    raise ValueError(f"{where} has dtype {dtype}; only F32 or F64 are accepted.")
                if shape != expected[name]:
                    raise ValueError(
                        f"{where} has shape {shape}, but the config implies {expected[name]}."
                    )
                arrays[name] = _finite_float32(f.get_tensor(name), where)
    except safetensors.SafetensorError as e:
        raise ValueError(
            f"{path} is not a valid safetensors file (corrupt or truncated?): {e}"
        ) from None
    return arrays


def _read_npy(f, name: str, shape: Tuple[int, ...], path: pathlib.Path) -> np.ndarray:
    fmt = np.lib.format
    where = f"{path}: array {name!r}"
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            header = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            header = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{where} has an unreadable header (corrupt?): {e}") from None
    got_shape, _, dtype = header
    want_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if dtype.hasobject or dtype.kind != "f" or dtype.itemsize not in (4, 8):
        raise ValueError(
            f"{where} has dtype {dtype}; only float32 or float64 arrays are accepted "
            "(object arrays would need pickle, which loading never uses)."
        )
    if tuple(got_shape) != shape:
        raise ValueError(f"{where} has shape {tuple(got_shape)}, but the config implies {shape}.")
    f_data = f.read(want_bytes + 1)
    if len(f_data) != want_bytes:
        raise ValueError(
            f"{where} holds {len(f_data)} bytes of data, expected {want_bytes} (truncated?)."
        )
    order = "F" if header[1] else "C"
    array = np.frombuffer(f_data, dtype=dtype).reshape(shape, order=order)
    return _finite_float32(array, where)


def _finite_float32(array: np.ndarray, where: str) -> np.ndarray:
    """The array as float32, refused if any value is NaN or infinite there.

    Checked after the cast: a finite float64 beyond float32's range would
    otherwise load as inf.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        cast = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(cast)):
        beyond = bool(np.all(np.isfinite(array)))
        raise ValueError(
            f"{where} contains NaN or infinite values"
            + (" (float64 values beyond float32's range)" if beyond else "")
            + "; the weights are corrupt or were edited: save the model again."
        )
    return cast


def load_model(directory: PathLike) -> assembled.AssembledTransformerModel:
    """Rebuilds a model saved by `save_model`; it gives the same outputs.

    Args:
      directory: a directory holding model.json and model.safetensors (or, as
        saved by format version 2, params.npz).

    Returns:
      An `AssembledTransformerModel` with `apply`, `forward`, params, config,
      residual labels and encoders.

    Raises:
      FileNotFoundError: `directory` does not exist.
      ValueError: a file is missing, not a regular file, corrupt, truncated, of
        another format version, or does not match the schema (unknown or missing
        keys, wrong array names, shapes or dtypes, non-finite values, also after
        the cast to float32, checksum mismatch), was edited after saving
        (content hash, program.json's SHA-256), or describes a model that
        contradicts itself or its weights; program.json belongs to another
        model or is malformed (`tracr.io.program`, e.g. a table input listed twice).
    """
    directory = pathlib.Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"{directory} does not exist; give the directory save_model wrote.")
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory; give the directory save_model wrote.")
    json_path = directory / CONFIG_FILE
    where = str(json_path)
    doc = _read_json(json_path)
    config = _validate_config(doc, where)

    inputs = doc["input"]
    _check_keys(inputs, _INPUT_KEYS, f"{where} 'input'")
    tokens = _validate_values(inputs["tokens"], f"{where} input.tokens")
    token_keys = [_typed_key(t) for t in tokens]
    bos = decode_value(inputs["bos_token"], f"{where} input.bos_token")
    pad = inputs["pad_token"]
    pad = None if pad is None else decode_value(pad, f"{where} input.pad_token")
    for name, token in (("bos_token", bos), ("pad_token", pad)):
        if token is not None and _typed_key(token) not in token_keys:
            raise ValueError(f"{where}: input.{name} {token!r} is not among input.tokens.")

    output = doc["output"]
    if not isinstance(output, dict) or output.get("encoding") not in ("categorical", "numerical"):
        raise ValueError(
            f"{where}: output must be {{'encoding': 'categorical', 'values': [...]}} or "
            f"{{'encoding': 'numerical'}}, got {output!r}."
        )
    categorical = output["encoding"] == "categorical"
    if categorical:
        _check_keys(output, {"encoding", "values"}, f"{where} 'output'")
        output_values = _validate_values(output["values"], f"{where} output.values")
    else:
        _check_keys(output, {"encoding"}, f"{where} 'output'")
        output_values = [None]

    d_model = config["d_model"]
    labels = doc["residual_labels"]
    if (
        not isinstance(labels, list)
        or len(labels) != d_model
        or not all(isinstance(label, str) for label in labels)
    ):
        raise ValueError(f"{where}: residual_labels must be a list of {d_model} strings.")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{where}: residual_labels name a dimension more than once.")
    unembedding = doc["unembedding"]
    if (
        not isinstance(unembedding, list)
        or len(unembedding) != len(output_values)
        or not all(map(values_lib.is_int, unembedding))
        or not all(0 <= i < d_model for i in unembedding)
        or len(set(unembedding)) != len(unembedding)
    ):
        raise ValueError(
            f"{where}: unembedding must list {len(output_values)} distinct residual indices in "
            f"0..{d_model - 1}, got {unembedding!r}."
        )
    params_info = doc["params"]
    _check_keys(params_info, _PARAMS_KEYS, f"{where} 'params'")
    version = doc["format_version"]
    params_file = _PARAMS_FILES[version]
    if params_info["file"] != params_file:
        raise ValueError(
            f"{where}: params.file must be {params_file!r} in format version {version}, got "
            f"{params_info['file']!r}."
        )
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError(f"{where}: metadata must map strings to strings.")

    program_record = _program_record(doc, where)

    params_path = directory / params_file
    if not _exists(params_path):
        raise ValueError(f"{params_path} does not exist: the saved model is incomplete.")
    if not params_path.is_file():
        raise _not_regular(params_path, params_file)
    digest = _sha256(params_path)
    if digest != params_info["sha256"]:
        raise ValueError(
            f"{params_path} does not match the SHA-256 recorded in {CONFIG_FILE} "
            "(corrupt, truncated or modified); save the model again."
        )
    expected = expected_param_shapes(config, len(tokens))
    if version == 2:
        flat = _read_params(params_path, expected)
    else:
        flat = _read_safetensors(params_path, expected, doc.get("content_hash"))

    model_spec = _read_spec(doc, where)
    _check_spec_agrees(
        model_spec,
        where,
        config=config,
        tokens=tokens,
        bos=bos,
        pad=pad,
        categorical=categorical,
        output_values=output_values,
        labels=labels,
        unembedding=unembedding,
    )
    if version >= 3:
        _check_content_hash(doc, flat, where)

    problem = _model_problem(model_spec, flat)
    if problem:
        raise ValueError(
            f"{where}: {problem} (the file is inconsistent: edited or corrupt); save the "
            "model again."
        )
    model = assembled.build_assembled_model(_unflatten_params(flat), model_spec)
    problem = _invariant_problem(model)
    if problem:
        raise ValueError(
            f"{where}: the spec does not describe the weights ({problem}); the file is "
            "inconsistent (edited or corrupt): save the model again."
        )
    model.program = _read_program(directory, model_spec, program_record)
    if version == 2:
        _LOG.warning(
            "%s: format version 2 has no content hash, so edits made after saving cannot be "
            "detected; save the model again to upgrade it to version %d.",
            where,
            FORMAT_VERSION,
        )
    return model


_ABSENT = object()  # model.json has no "program" field (written before it existed)


def _program_record(doc: Mapping[str, Any], where: str) -> Any:
    """model.json's `program` field: _ABSENT, None (saved without one) or its SHA-256."""
    if "program" not in doc:
        return _ABSENT
    record = doc["program"]
    if record is None:
        return None
    _check_keys(record, _PROGRAM_KEYS, f"{where} 'program'")
    if record["file"] != program_io.PROGRAM_FILE:
        raise ValueError(
            f"{where}: program.file must be {program_io.PROGRAM_FILE!r}, got {record['file']!r}."
        )
    digest = record["sha256"]
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(f"{where}: program.sha256 must be a SHA-256 hex digest, got {digest!r}.")
    return digest


def _read_program(directory: pathlib.Path, model_spec: spec_lib.ModelSpec, record: Any) -> Any:
    """The program of program.json, if the folder has one (checked against the model).

    `record` is what model.json says about it (`_program_record`): its
    SHA-256 is checked when model.json has one (a model saved without its
    program, or by an older tracr, has none: a program.json added later is
    still checked against the model's domain and output).
    """
    path = directory / program_io.PROGRAM_FILE
    if not _exists(path):
        if isinstance(record, str):
            _LOG.info(
                "%s: %s was saved with the model but is missing; the model loads without "
                "its program.",
                directory,
                program_io.PROGRAM_FILE,
            )
        return None
    if not path.is_file():
        raise _not_regular(path, program_io.PROGRAM_FILE)
    from tracr.transformer import inputs

    data = values_lib.read_file_bytes(path)  # kept: its SHA-256 is checked below
    program, vocab, max_seq_len = program_io.program_with_domain_from_json(
        values_lib.parse_json_bytes(data, path), str(path)
    )
    tokens = inputs.domain_tokens(model_spec)
    if sorted(map(_typed_key, vocab), key=repr) != sorted(map(_typed_key, tokens), key=repr) or (
        max_seq_len != model_spec.max_seq_len
    ):
        raise ValueError(
            f"{path} was written for vocabulary {vocab!r} and max_seq_len {max_seq_len}, but the "
            f"model has {list(tokens)!r} and {model_spec.max_seq_len}: it belongs to another "
            "model; delete it or save the model again."
        )
    if not _computes(program, model_spec.output.label):
        raise ValueError(
            f"{path}: its program's output is named {program.name!r}, but the model computes "
            f"{model_spec.output.label!r} (spec.output.label): it belongs to another model; "
            "delete it or save the model again."
        )
    if isinstance(record, str) and hashlib.sha256(data).hexdigest() != record:
        raise ValueError(
            f"{path} does not match the SHA-256 recorded in {CONFIG_FILE} (program.sha256): "
            "it is another model's program, or was edited or corrupted; delete it or save "
            "the model again."
        )
    return program


def _computes(program: rasp.SOp, output_label: str) -> bool:
    """Whether `program` is the expression whose label the spec records as its output.

    A label is `<name>_<unique id>` (`tokens`, `indices`, `length` are their
    own labels), and program.json keeps only names: a program read back has
    new ids, so names are compared.
    """
    name = program.name
    return output_label == name or re.fullmatch(re.escape(name) + r"_\d+", output_label) is not None


def _read_spec(doc: Mapping[str, Any], where: str) -> spec_lib.ModelSpec:
    def decode(item: Any, field: str) -> Any:
        return decode_value(item, f"{where} spec.{field}")

    if not isinstance(doc.get("spec"), dict):
        raise ValueError(f"{where}: 'spec' must be a JSON object (the model's description).")
    try:
        return spec_lib.ModelSpec.from_json(doc["spec"], decode)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _check_spec_agrees(model_spec: spec_lib.ModelSpec, where: str, **fields: Any) -> None:
    """Every field a reader sees must say what the spec says (a hand edit is refused)."""
    config = fields["config"]
    same = {
        "config.num_heads": config["num_heads"] == model_spec.num_heads,
        "config.num_layers": config["num_layers"] == max(model_spec.num_layers, 1),
        "config.key_size": config["key_size"] == model_spec.key_size,
        "config.mlp_hidden_size": config["mlp_hidden_size"] == model_spec.mlp_hidden_size,
        "config.activation_function": config["activation_function"] == model_spec.activation,
        "config.causal": config["causal"] == model_spec.causal,
        "config.layer_norm": config["layer_norm"] == model_spec.layer_norm,
        "config.d_model": config["d_model"] == model_spec.d_model,
        "config.max_seq_len": config["max_seq_len"] == model_spec.max_seq_len,
        "input.tokens": [_typed_key(t) for t in fields["tokens"]]
        == [_typed_key(t) for t in model_spec.input.tokens],
        "input.bos_token": _typed_key(fields["bos"]) == _typed_key(model_spec.input.bos_token),
        "input.pad_token": (fields["pad"] is None) == (model_spec.input.pad_token is None)
        and (
            fields["pad"] is None
            or _typed_key(fields["pad"]) == _typed_key(model_spec.input.pad_token)
        ),
        "output.encoding": fields["categorical"] == model_spec.output.categorical,
        "output.values": not fields["categorical"]
        or [_typed_key(v) for v in fields["output_values"]]
        == [_typed_key(v) for v in model_spec.output.values],
        "residual_labels": list(fields["labels"]) == list(model_spec.residual_labels),
        "unembedding": list(fields["unembedding"]) == list(model_spec.output.reads),
    }
    wrong = [name for name, ok in same.items() if not ok]
    if wrong:
        raise ValueError(
            f"{where}: {', '.join(wrong)} disagree with the model's spec (the file was edited "
            "or is inconsistent); save the model again."
        )


def _model_problem(model_spec: spec_lib.ModelSpec, flat: Mapping[str, np.ndarray]) -> Optional[str]:
    """What in the spec contradicts itself or the weights (None if nothing).

    Checked on saving and loading, so a model that saves also loads: BOS and
    PAD differ; every token, position, output and `one` direction is the
    residual direction of that value; residual labels are `name:value`;
    embeddings write only those directions; head and hidden-unit indices are
    in range and distinct; weights of head slots and hidden units the spec
    does not list are zero (a dropped head or MLP is noticed).
    """
    spec, inp, out = model_spec, model_spec.input, model_spec.output
    names, values, labels = spec.residual_names, spec.residual_values, spec.residual_labels

    def is_direction(index: Optional[int], name: str, value: Any) -> bool:
        return (
            index is not None
            and names[index] == name
            and (values[index] is None) == (value is None)
            and (value is None or _typed_key(values[index]) == _typed_key(value))
        )

    for i, (name, value, label) in enumerate(zip(names, values, labels)):
        if label != (name if value is None else f"{name}:{value}"):
            return (
                f"spec.residual_labels[{i}] is {label!r}, but residual_names and "
                f"residual_values say {name!r} and {value!r}"
            )
    if inp.bos_token is None:
        return "spec.input.bos_token is null; compiled models have a BOS token"
    if inp.pad_token is not None and _typed_key(inp.pad_token) == _typed_key(inp.bos_token):
        return f"input.pad_token is the BOS token {inp.bos_token!r}; they must differ"
    if len(inp.embeds) != len(inp.tokens):
        return (
            f"spec.input.embeds has {len(inp.embeds)} entries for {len(inp.tokens)} tokens "
            "(one per token)"
        )
    if len(inp.positions) != inp.max_seq_len + 1:
        return (
            f"spec.input.positions has {len(inp.positions)} entries, but max_seq_len "
            f"{inp.max_seq_len} needs {inp.max_seq_len + 1} (BOS and each position)"
        )
    for i, (token, index) in enumerate(zip(inp.tokens, inp.embeds)):
        if index is not None and not is_direction(index, "tokens", token):
            return (
                f"spec.input.embeds[{i}] is residual {index} ({labels[index]!r}), not the "
                f"direction of token {token!r}"
            )
    position_dirs = [i for i in inp.positions if i is not None]
    if len(set(position_dirs)) != len(position_dirs) or not all(
        names[i] == "indices" and values_lib.is_int(values[i]) for i in position_dirs
    ):
        return "spec.input.positions must name distinct 'indices' directions"
    if inp.one is not None and not is_direction(inp.one, "one", None):
        return f"spec.input.one is residual {inp.one} ({labels[inp.one]!r}), not 'one'"
    if out.categorical:
        if len(out.values) != len(out.reads):
            return f"spec.output has {len(out.values)} values but reads {len(out.reads)} directions"
        for j, (value, index) in enumerate(zip(out.values, out.reads)):
            if not is_direction(index, out.label, value):
                return (
                    f"output column {j} reads residual {index} ({labels[index]!r}), not the "
                    f"direction of {out.label}'s value {value!r}"
                )
    elif out.values or len(out.reads) != 1 or not is_direction(out.reads[0], out.label, None):
        return f"the numerical output must read the one direction {out.label!r} and list no values"

    embeddings = (
        ("token_embed/embeddings", [{i, inp.one} - {None} for i in inp.embeds]),
        ("pos_embed/embeddings", [{i} - {None} for i in inp.positions]),
    )
    for name, allowed in embeddings:
        for row, (weights, ok) in enumerate(zip(flat[name], allowed)):
            stray = set(np.flatnonzero(weights).tolist()) - ok
            if stray:
                return (
                    f"array {name} row {row} writes residual {sorted(stray)[:4]}, which "
                    "spec.input does not list for it"
                )

    k, hidden_size = spec.key_size, spec.mlp_hidden_size
    for layer in spec.layers:
        slots = [h.head for h in layer.heads]
        if not all(0 <= h < spec.num_heads for h in slots) or len(set(slots)) != len(slots):
            return (
                f"spec.layers[{layer.index}] head indices {slots} are not distinct ints in "
                f"0..{spec.num_heads - 1}"
            )
        units = [u for part in (layer.mlp.parts if layer.mlp else ()) for u in part.hidden]
        if not all(0 <= u < hidden_size for u in units) or len(set(units)) != len(units):
            return (
                f"spec.layers[{layer.index}].mlp hidden units are not distinct ints in "
                f"0..{hidden_size - 1}"
            )

        def w(sublayer: str, linear: str, index: int = layer.index) -> np.ndarray:
            return flat[spec_lib.param_name(index, sublayer, linear) + "/w"]

        qkv = [w("attn", n) for n in ("query", "key", "value")]
        for h in sorted(set(range(spec.num_heads)) - set(slots)):
            cols = slice(h * k, (h + 1) * k)
            if any(np.any(m[:, cols]) for m in qkv) or np.any(w("attn", "linear")[cols]):
                return (
                    f"layer {layer.index} head slot {h} has weights, but spec.layers"
                    f"[{layer.index}] lists no head there"
                )
        unused = sorted(set(range(hidden_size)) - set(units))
        if unused and (
            np.any(w("mlp", "linear_1")[:, unused]) or np.any(w("mlp", "linear_2")[unused])
        ):
            return (
                f"layer {layer.index}'s MLP has hidden units with weights that "
                f"spec.layers[{layer.index}].mlp does not list"
            )
    return None


def _invariant_problem(model: assembled.AssembledTransformerModel) -> Optional[str]:
    """`invariants.check_spec`'s complaint about a built model, or None."""
    from tracr.compiler import invariants

    try:
        invariants.check_spec(model)
    except invariants.InvariantError as e:
        return str(e)
    return None


def load_metadata(directory: PathLike) -> Dict[str, str]:
    """The free-form metadata strings of a saved model (validated like load_model)."""
    path = pathlib.Path(directory) / CONFIG_FILE
    doc = _read_json(path)
    _validate_config(doc, str(path))
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError(f"{path}: metadata must map strings to strings.")
    return dict(metadata)
