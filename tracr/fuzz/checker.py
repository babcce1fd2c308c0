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
"""

from __future__ import annotations

import dataclasses
import math
import re
import traceback
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from tracr.compiler import compiling, equivalence, validating
from tracr.fuzz import generator
from tracr.rasp import causal_eval, rasp
from tracr.transformer import assembled, attention, encoder
from tracr.transformer import spec as spec_lib

EXACT, REJECTED, MISMATCH, CRASH = "exact", "rejected", "mismatch", "crash"

# (category, pattern in the NotImplementedError message); the first match wins.
REJECTION_CATEGORIES: Tuple[Tuple[str, str], ...] = (
    ("none_under_not_or", r"Not/Or around it"),
    ("none_into_selector", r"may be None in RASP where the compiled model holds a value"),
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


def numpy_forward(model: assembled.AssembledTransformerModel, token_ids: np.ndarray) -> np.ndarray:
    """The Haiku forward pass in float32 NumPy: [B, T] ids -> [B, T] argmax ids or values.

    Mirrors `tracr.transformer.model`: token plus position embedding; per
    layer, multi-head attention (logits scaled by 1/sqrt(key_size), PAD keys
    and, for causal models, later keys masked with MASKED_LOGIT) and a ReLU
    MLP, each added to the residual; no layer norm; then the unembedding.
    """
    params = {
        name: {key: np.asarray(value, np.float32) for key, value in group.items()}
        for name, group in model.params.items()
    }
    config = model.model_config
    if config.layer_norm:
        raise ValueError("numpy_forward: compiled models have no layer norm; got layer_norm=True.")
    unembed = getattr(model, "unembed_matrix", None)
    if unembed is None:
        raise ValueError("numpy_forward needs model.unembed_matrix; use backend='haiku'.")
    ids = np.asarray(token_ids)
    b, t = ids.shape
    x = params["token_embed"]["embeddings"][ids] + params["pos_embed"]["embeddings"][:t][None]
    pad = model.input_encoder.pad_encoding if model.input_encoder is not None else None
    mask = np.ones((b, t), bool) if pad is None else ids != pad
    attn_mask = np.broadcast_to(mask[:, None, None, :], (b, 1, t, t))
    if config.causal:
        attn_mask = attn_mask & np.tril(np.ones((t, t), bool))
    h, k = config.num_heads, config.key_size
    masked = np.float32(attention.MASKED_LOGIT)
    for layer in range(config.num_layers):

        def linear(x, sublayer, name, layer=layer):
            p = params[spec_lib.param_name(layer, sublayer, name)]
            return x @ p["w"] + p["b"]

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
    out = x @ np.asarray(unembed, np.float32)
    if isinstance(model.output_encoder, encoder.CategoricalEncoder):
        return out.argmax(-1)
    return out[..., 0]


def decode_inputs(
    model: assembled.AssembledTransformerModel, inputs: Sequence[tuple], backend: str = "numpy"
) -> List[List[Any]]:
    """Decoded model outputs (BOS dropped), one list per input, in one batch.

    Shorter inputs are padded at the end with the PAD token, which the model
    masks out of attention, so the outputs at real positions are those of an
    unpadded run.
    """
    if backend not in ("numpy", "haiku"):
        raise ValueError(f"backend must be 'numpy' or 'haiku', got {backend!r}.")
    if not inputs:
        return []
    enc = model.input_encoder
    width = 1 + max(len(x) for x in inputs)
    ids = np.full((len(inputs), width), enc.pad_encoding, dtype=np.int32)
    for row, x in enumerate(inputs):
        ids[row, : len(x) + 1] = enc.encode([enc.bos_token, *x])
    if backend == "numpy":
        out = numpy_forward(model, ids)
    else:
        out = np.asarray(model.forward(model.params, jnp.asarray(ids)).unembedded_output)
    return [
        model.output_encoder.decode(row[1 : len(x) + 1].tolist()) for row, x in zip(out, inputs)
    ]


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


def check(
    program: rasp.SOp,
    vocab: Sequence[Any],
    max_seq_len: int,
    causal: bool = False,
    backend: str = "numpy",
) -> Result:
    """Compiles ``program`` and compares it with the evaluator on every input.

    Args:
      program: the RASP program.
      vocab: its vocabulary.
      max_seq_len: the longest input; every input of length 1..max_seq_len is
        checked.
      causal: compile causally and compare with the causal evaluator.
      backend: 'numpy' (numpy_forward) or 'haiku' (the Haiku model).

    Returns:
      The Result (see the module docstring).
    """
    try:
        model = compiling.compile_rasp_to_model(program, set(vocab), max_seq_len, causal=causal)
    except NotImplementedError as e:
        return Result(REJECTED, rejection_category(str(e)), str(e))
    except Exception as e:  # noqa: BLE001 - any other exception is a compiler bug
        return Result(CRASH, f"compile: {type(e).__name__}", traceback.format_exc())

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
    mismatches: List[equivalence.Mismatch] = []
    try:
        for x, got in zip(defined, decode_inputs(model, defined, backend)):
            for pos, (e, g) in enumerate(zip(expected[x], got)):
                if e is not None and not _equal(e, g, numerical):
                    mismatches.append(equivalence.Mismatch(x, pos, e, g))
    except Exception as e:  # noqa: BLE001
        return Result(CRASH, f"run: {type(e).__name__}", traceback.format_exc(), len(inputs))
    if mismatches:
        return Result(
            MISMATCH,
            "wrong value",
            equivalence.first_mismatches(mismatches) or "",
            len(inputs),
            flagged,
        )
    return Result(EXACT, "", "", len(inputs), flagged)


def check_case(case: generator.FuzzCase, backend: str = "numpy") -> Result:
    """``check`` for a generated case."""
    return check(case.program, sorted(case.vocab, key=repr), case.max_seq_len, case.causal, backend)
