"""The differential checker: a compiled model against the RASP evaluator.

For one program, vocabulary and max_seq_len, ``check`` compiles the program
and runs the model and the evaluator (the causal evaluator for causal
programs) on EVERY input of the domain, then classifies the program:

* ``exact``: on every input of the program's meaning, the model gives the
  evaluator's value at every position where that value is not None (the
  model has no 'no value'; numerical values within
  ``equivalence.NUMERICAL_TOLERANCE``). An input is outside the meaning when
  ``validating.dynamic_validate`` reports a problem on it: the evaluator
  raises there (a categorical Aggregate that selects two different values, a
  ConstantSOp of another length, a Map dividing by zero) or, for a
  ConstantSOp built with check_length=False, gives a result of the wrong
  length. Every input where the evaluator raises must be reported, otherwise
  the program is a ``mismatch``. ``Result.flagged`` counts those inputs.
* ``rejected``: ``compile_rasp_to_model`` raised NotImplementedError; the
  reason is sorted into a category (``REJECTION_CATEGORIES``).
* ``mismatch``: some value differs, or an evaluator failure went unreported.
* ``crash``: any other exception while compiling or running: a bug.

The model is run by default with ``numpy_forward``, a float32 NumPy
re-implementation of the Haiku forward pass over the same parameters (no jit
compilation per program, so hundreds of programs fit in a test);
``backend="haiku"`` runs the Haiku model itself, as ``equivalence`` does.
``paths`` adds the other ways users run a model (``PATHS``): ``apply_batch``,
the lean batched path with every input in one ragged batch; ``compressed``,
the model with its exact compression (``compression.exact.exact_compression``)
folded into the weights; ``saved``, the model written by
``tracr.io.saving.save_model`` (with its program, so program.json is written
when the program has a lambda-free form) into a fresh temporary directory,
read back by ``load_model`` (which checks the content hash and the spec) and
run through the reloaded model's ``apply_batch``; and ``torch``, the model
exported by ``tracr.export.torch_model.to_torch_module`` and run through the
module's ``decode_batch`` (torch is optional: it is imported only when this
path runs). Every path decodes as ``apply_batch`` does (None where a
categorical output has no value, floats for numerical outputs), so one
comparison covers them all; a path that raises (a model that cannot be
saved, loaded or exported) makes the program a ``crash`` naming the path.
``apply_batch``, ``compressed`` and ``saved`` jit-compile per program, so
they cost about a second each.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
import traceback
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from tracr.compiler import compiling, equivalence, validating
from tracr.compression import exact as exact_compression
from tracr.compression import running
from tracr.fuzz import generator
from tracr.io import saving
from tracr.rasp import causal_eval, rasp
from tracr.transformer import assembled, attention
from tracr.transformer import inputs as inputs_lib
from tracr.transformer import spec as spec_lib

EXACT, REJECTED, MISMATCH, CRASH = "exact", "rejected", "mismatch", "crash"
BACKENDS = ("numpy", "haiku", "apply_batch")
# The paths a compiled model is run on: `apply` (the forward pass, by `backend`),
# `apply_batch` (the lean batched path, all inputs in one ragged batch),
# `compressed` (numpy forward with the exact compression folded in), `saved`
# (save_model to a temporary directory, load_model, then the reloaded model's
# apply_batch) and `torch` (to_torch_module's decode_batch; needs torch).
PATHS = ("apply", "apply_batch", "compressed", "saved", "torch")

# (category, pattern in the NotImplementedError message); the first match wins.
REJECTION_CATEGORIES: Tuple[Tuple[str, str], ...] = (
    ("none_under_not_or", r"Not/Or around it"),
    ("none_into_selector", r"may be None in RASP where the compiled model holds a value"),
    ("none_into_output", r"may be None in RASP where the compiled model outputs a value"),
    ("numerical_non_number", r"is numerical but can take the value"),
    ("indistinguishable_floats", r"differ only by float rounding"),
    ("numerical_value_set_too_large", r"different means"),
    ("numerical_select", r"Select's (keys|queries) .* numerical"),
    ("numerical_sequence_map", r"SequenceMap needs categorical inputs"),
    ("aggregate_encoding", r"(numerical|categorical) Aggregate"),
    ("constant_selector", r"ConstantSelector"),
    ("length_primitive", r"length primitive"),
    ("numerical_input", r"embeds tokens and indices one-hot"),
    ("numerical_partial_function", r"numerical SOp has no 'no value'"),
    ("output_never_has_a_value", r"never has a value"),
)


@dataclasses.dataclass(frozen=True)
class Result:
    """What happened to one program."""

    outcome: str  # EXACT, REJECTED, MISMATCH or CRASH
    category: str = ""  # rejection category, or a short mismatch/crash kind
    detail: str = ""  # message, first mismatches or traceback
    num_inputs: int = 0
    flagged: int = 0  # inputs outside the program's meaning, reported by dynamic_validate
    num_layers: int = 0  # of the compiled model (0 if it was not compiled)
    paths: Tuple[str, ...] = ()  # the PATHS on which an exact program agreed


def rejection_category(message: str) -> str:
    """Sorts a NotImplementedError message into one of REJECTION_CATEGORIES ('other')."""
    for category, pattern in REJECTION_CATEGORIES:
        if re.search(pattern, message):
            return category
    return "other"


# ---------------------------------------------------------------------------
# Running the model
# ---------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _float32_params(params: Any, model_spec: spec_lib.ModelSpec, width: int) -> Dict[str, Dict]:
    """The parameters as float32 arrays, checked against the spec's layout.

    Every group `spec.param_shapes()` names must be there with the spec's
    shapes, except that a residual axis (d_model) may have `width` rows or
    columns instead (a folded compressed model).
    """
    expected = model_spec.param_shapes()
    if set(params) != set(expected):
        raise ValueError(
            f"numpy_forward: parameter groups {sorted(set(params) ^ set(expected))} differ from "
            "the model spec's layout; pass the model's own params."
        )
    d = model_spec.d_model
    out: Dict[str, Dict[str, np.ndarray]] = {}
    for name, shapes in expected.items():
        out[name] = {}
        for key, shape in shapes.items():
            value = np.asarray(params[name][key], np.float32)
            fits = len(value.shape) == len(shape) and all(
                got == want or (want == d and got == width) for got, want in zip(value.shape, shape)
            )
            if not fits:
                raise ValueError(
                    f"numpy_forward: {name}/{key} has shape {value.shape}, the spec says {shape}."
                )
            out[name][key] = value
    return out


def _forward(
    params: Any, model_spec: spec_lib.ModelSpec, unembed: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """[B, T] ids -> [B, T, O] unembedded outputs, for params laid out as `model_spec` says."""
    if model_spec.layer_norm or model_spec.activation != "relu":
        raise ValueError(
            "numpy_forward runs ReLU models without layer norm; got activation="
            f"{model_spec.activation!r}, layer_norm={model_spec.layer_norm}."
        )
    width = unembed.shape[0]
    p = _float32_params(params, model_spec, width)
    b, t = ids.shape
    x = p[spec_lib.TOKEN_EMBED]["embeddings"][ids] + p[spec_lib.POS_EMBED]["embeddings"][:t][None]
    pad = model_spec.input.pad_id
    mask = np.ones((b, t), bool) if pad is None else ids != pad
    attn_mask = np.broadcast_to(mask[:, None, None, :], (b, 1, t, t))
    if model_spec.causal:
        attn_mask = attn_mask & np.tril(np.ones((t, t), bool))
    h, k = model_spec.num_heads, model_spec.key_size
    masked = np.float32(attention.MASKED_LOGIT)
    for layer in range(model_spec.num_layers):

        def linear(x, sublayer, name, layer=layer):
            group = p[spec_lib.param_name(layer, sublayer, name)]
            return x @ group["w"] + group["b"]

        q = linear(x, "attn", "query").reshape(b, t, h, k)
        kk = linear(x, "attn", "key").reshape(b, t, h, k)
        v = linear(x, "attn", "value").reshape(b, t, h, k)
        logits = np.einsum("bthk,bshk->bhts", q, kk) / np.sqrt(k).astype(np.float32)
        logits = np.where(attn_mask, logits, masked)
        weights = _softmax(logits)
        attn = np.einsum("bhts,bshd->bthd", weights, v).reshape(b, t, h * k)
        x = x + linear(attn, "attn", "linear")
        hidden = np.maximum(linear(x, "mlp", "linear_1"), 0)
        x = x + linear(hidden, "mlp", "linear_2")
    return x @ unembed


def numpy_forward(
    model: assembled.AssembledTransformerModel,
    token_ids: np.ndarray,
    compression: Optional[np.ndarray] = None,
) -> np.ndarray:
    """The Haiku forward pass in float32 NumPy: [B, T] ids -> [B, T] output ids or values.

    Categorical output ids are `inputs.NO_VALUE` where no output direction is
    active (RASP's None), as `apply` decodes them.

    Mirrors `tracr.transformer.model`: token plus position embedding; per
    layer, multi-head attention (logits scaled by 1/sqrt(key_size), PAD keys
    and, for causal models, later keys masked with MASKED_LOGIT) and a ReLU
    MLP, each added to the residual; no layer norm; then the unembedding. The
    layout (parameter names, shapes, heads, masking) is read from `model.spec`.

    Args:
      model: a compiled model (with `spec` and `unembed_matrix`).
      token_ids: [B, T] ids, BOS first.
      compression: a matrix w [d, D]: run the model compressed to width d with
        w folded into the weights (`compression.running.fold_params`).
    """
    if model.spec is None or model.unembed_matrix is None:
        raise ValueError("numpy_forward needs model.spec and model.unembed_matrix.")
    params: Any = model.params
    unembed = np.asarray(model.unembed_matrix, np.float32)
    if compression is not None:
        w = np.asarray(compression, np.float32)
        params = running.fold_params(model, w)
        unembed = w @ unembed
    out = _forward(params, model.spec, unembed, np.asarray(token_ids))
    if model.spec.output.categorical:
        return inputs_lib.categorical_ids(out)
    return out[..., 0]


def _padded_ids(model: assembled.AssembledTransformerModel, inputs: Sequence[tuple]) -> np.ndarray:
    """[B, 1 + longest] ids: BOS, the tokens, then PAD (masked out of attention)."""
    enc = model.input_encoder
    width = 1 + max(len(x) for x in inputs)
    ids = np.full((len(inputs), width), enc.pad_encoding, dtype=np.int32)
    for row, x in enumerate(inputs):
        ids[row, : len(x) + 1] = enc.encode([enc.bos_token, *x])
    return ids


def decode_inputs(
    model: assembled.AssembledTransformerModel,
    inputs: Sequence[tuple],
    backend: str = "numpy",
    compression: Optional[np.ndarray] = None,
) -> List[List[Any]]:
    """Decoded model outputs (BOS dropped), one list per input, in one batch.

    Shorter inputs are padded at the end with the PAD token, which the model
    masks out of attention, so the outputs at real positions are those of an
    unpadded run. backend 'numpy' runs `numpy_forward` (with `compression`,
    if given), 'haiku' the Haiku model, 'apply_batch' the model's lean batched
    path on the ragged inputs.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if compression is not None and backend != "numpy":
        raise ValueError(f"compression runs with backend='numpy', got {backend!r}.")
    if not inputs:
        return []
    if backend == "apply_batch":
        bos = model.input_encoder.bos_token
        return [row[1:] for row in model.apply_batch([[bos, *x] for x in inputs])]
    ids = _padded_ids(model, inputs)
    if backend == "numpy":
        out = numpy_forward(model, ids, compression)
    else:
        result = model.forward(model.params, jnp.asarray(ids))
        out = np.asarray(result.unembedded_output)
        if model.spec.output.categorical:
            residual = np.asarray(result.transformer_output.output)
            out = inputs_lib.categorical_ids(residual @ np.asarray(model.unembed_matrix))
    return [_decode_row(model, row[1 : len(x) + 1].tolist()) for row, x in zip(out, inputs)]


def _decode_row(model: assembled.AssembledTransformerModel, row: List[Any]) -> List[Any]:
    if not model.spec.output.categorical:
        return model.output_encoder.decode(row)
    return [None if i == inputs_lib.NO_VALUE else model.output_encoder.decode([i])[0] for i in row]


# ---------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------


def _equal(expected: Any, got: Any, numerical: bool) -> bool:
    if numerical:
        try:
            return math.isclose(
                float(expected), float(got), abs_tol=equivalence.NUMERICAL_TOLERANCE
            )
        except (TypeError, ValueError):
            return False
    return expected == got


def _agrees(expected: Any, got: Any, numerical: bool) -> bool:
    """Whether the model's decoded value is the evaluator's, at one position.

    Where the evaluator gives None a categorical output must decode as None (no
    output direction active); a numerical output has no way to say None (it
    reads a magnitude), so any value is accepted there.
    """
    if expected is None:
        return numerical or got is None
    return got is not None and _equal(expected, got, numerical)


def saved_outputs(
    model: assembled.AssembledTransformerModel,
    inputs: Sequence[tuple],
    program: Optional[rasp.SOp] = None,
) -> List[List[Any]]:
    """Decoded outputs (BOS dropped) of `model` saved, loaded back and run by `apply_batch`.

    The model (and `program`, written as program.json when it has a
    lambda-free form) is saved by `saving.save_model` into a fresh temporary
    directory and read back by `saving.load_model`, which refuses a file whose
    content hash, weights checksum or spec does not match; whatever either
    raises is passed on (the checker reports a crash).
    """
    with tempfile.TemporaryDirectory(prefix="tracr-fuzz-") as directory:
        saving.save_model(model, directory, program=program)
        loaded = saving.load_model(directory)
    return decode_inputs(loaded, inputs, "apply_batch")


def torch_outputs(
    model: assembled.AssembledTransformerModel, inputs: Sequence[tuple]
) -> List[List[Any]]:
    """Decoded outputs (BOS dropped) of `model` exported to torch and run by `decode_batch`.

    `to_torch_module(model)` (float32) decodes as `model.apply_batch` does.
    torch is optional, so it is imported here, not with the module.
    """
    try:
        from tracr.export import torch_model
    except ImportError as e:
        raise ImportError(
            f"the 'torch' path needs torch ({e}); install tracr[torch] or leave the path out."
        ) from e
    module = torch_model.to_torch_module(model)
    bos = model.input_encoder.bos_token
    return [row[1:] for row in module.decode_batch([[bos, *x] for x in inputs])]


def _run_path(
    model: assembled.AssembledTransformerModel,
    path: str,
    inputs: Sequence[tuple],
    all_inputs: Sequence[tuple],
    backend: str,
    program: Optional[rasp.SOp] = None,
) -> List[List[Any]]:
    """The decoded outputs of `inputs` on one of PATHS."""
    if path == "apply":
        return decode_inputs(model, inputs, backend)
    if path == "apply_batch":
        return decode_inputs(model, inputs, "apply_batch")
    if path == "saved":
        return saved_outputs(model, inputs, program)
    if path == "torch":
        return torch_outputs(model, inputs)
    if path != "compressed":
        raise ValueError(f"path must be one of {PATHS}, got {path!r}.")
    # The exact compression of the states on the whole domain: exact by construction.
    w = exact_compression.exact_compression(model, all_inputs).w
    return decode_inputs(model, inputs, "numpy", compression=w)


def check(
    program: rasp.SOp,
    vocab: Sequence[Any],
    max_seq_len: int,
    causal: bool = False,
    backend: str = "numpy",
    paths: Sequence[str] = ("apply",),
) -> Result:
    """Compiles ``program`` and compares it with the evaluator on every input.

    Args:
      program: the RASP program.
      vocab: its vocabulary.
      max_seq_len: the longest input; every input of length 1..max_seq_len is
        checked.
      causal: compile causally and compare with the causal evaluator.
      backend: how the `apply` path runs: 'numpy' (numpy_forward) or 'haiku'
        (the Haiku model).
      paths: which of PATHS to run the model on; every one must agree.

    Returns:
      The Result (see the module docstring); `paths` lists those compared.
    """
    if backend not in ("numpy", "haiku"):
        raise ValueError(f"backend must be 'numpy' or 'haiku', got {backend!r}.")
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        raise ValueError(f"paths must be a non-empty subset of {PATHS}, got {tuple(paths)!r}.")
    try:
        model = compiling.compile_rasp_to_model(program, set(vocab), max_seq_len, causal=causal)
    except NotImplementedError as e:
        return Result(REJECTED, rejection_category(str(e)), str(e))
    except Exception as e:  # noqa: BLE001 - any other exception is a compiler bug
        return Result(CRASH, f"compile: {type(e).__name__}", traceback.format_exc())
    num_layers = model.spec.num_layers

    evaluate = causal_eval.evaluate if causal else rasp.evaluate
    numerical = rasp.is_numerical(program)
    inputs = list(equivalence.all_inputs(vocab, max_seq_len))
    expected: Dict[tuple, Optional[list]] = {}
    flagged = 0
    for x in inputs:
        try:
            problems = validating.dynamic_validate(program, list(x), causal=causal)
        except Exception:  # noqa: BLE001 - it must handle whatever the evaluator can't
            return Result(CRASH, "dynamic_validate raised", traceback.format_exc(), len(inputs))
        try:
            expected[x] = list(evaluate(program, list(x)))
        except Exception as e:  # noqa: BLE001 - outside the program's meaning
            if not problems:
                return Result(
                    MISMATCH,
                    "unflagged evaluator error",
                    f"the evaluator raises {type(e).__name__}: {e} on {list(x)!r}, but "
                    f"dynamic_validate reports nothing",
                    len(inputs),
                )
            expected[x] = None
        if problems:
            # Outside the program's meaning (the evaluator raises, or its result
            # is malformed: a ConstantSOp of another length with check_length=False).
            expected[x] = None
            flagged += 1

    defined = [x for x in inputs if expected[x] is not None]
    counts = dict(num_inputs=len(inputs), flagged=flagged, num_layers=num_layers)
    for path in paths:
        mismatches: List[equivalence.Mismatch] = []
        try:
            outputs = _run_path(model, path, defined, inputs, backend, program)
            lengths = [len(row) for row in outputs]
            if lengths != [len(x) for x in defined]:
                # A path that drops inputs or positions must not pass by comparing nothing.
                return Result(
                    MISMATCH,
                    f"wrong output length ({path})",
                    f"{len(outputs)} output lists of lengths {lengths[:8]} for {len(defined)} "
                    f"inputs of lengths {[len(x) for x in defined[:8]]}",
                    **counts,
                )
            for x, got in zip(defined, outputs):
                for pos, (e, g) in enumerate(zip(expected[x], got)):
                    if not _agrees(e, g, numerical):
                        mismatches.append(equivalence.Mismatch(x, pos, e, g))
        except Exception as e:  # noqa: BLE001
            detail = traceback.format_exc()
            return Result(CRASH, f"run {path}: {type(e).__name__}", detail, **counts)
        if mismatches:
            detail = equivalence.first_mismatches(mismatches) or ""
            return Result(MISMATCH, f"wrong value ({path})", detail, **counts)
    return Result(EXACT, "", "", paths=tuple(paths), **counts)


def check_case(
    case: generator.FuzzCase, backend: str = "numpy", paths: Sequence[str] = ("apply",)
) -> Result:
    """``check`` for a generated case."""
    vocab = sorted(case.vocab, key=repr)
    return check(case.program, vocab, case.max_seq_len, case.causal, backend, paths)
