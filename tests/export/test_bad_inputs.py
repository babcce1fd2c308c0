"""Bad inputs: the torch exports refuse them exactly as `model.apply` / `apply_batch` do.

For a table of inputs (not a list, unknown tokens, too long, BOS missing or
inside, PAD inside, empty and ragged batches, ...), the torch module's `run`
and `decode_batch` and the TransformerLens model's `token_ids`, `decode`,
`batch` and `decode_batch` raise the same exception type with the same
message as the JAX path, or give the same result.
"""

import functools
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformer_lens")

from tracr.compiler import compiling, lib  # noqa: E402
from tracr.export import to_torch_module, to_transformer_lens_model  # noqa: E402
from tracr.rasp import rasp  # noqa: E402

MAX_SEQ_LEN = 3
BOS, PAD = compiling.COMPILER_BOS, compiling.COMPILER_PAD
GOOD = [BOS, "a", "b"]


@functools.lru_cache(maxsize=None)
def _models():
    model = compiling.compile_rasp_to_model(
        lib.make_reverse(rasp.tokens), {"a", "b", "c"}, MAX_SEQ_LEN
    )
    return model, to_torch_module(model), to_transformer_lens_model(model)


def _outcome(fn, arg):
    """("ok", result) or (exception type, message) of fn(arg)."""
    try:
        return "ok", fn(arg)
    except Exception as e:  # noqa: BLE001 - the point is to compare any exception
        return type(e), re.sub(r" at 0x[0-9a-f]+", "", str(e))  # two generators' addresses


def _generator():
    return (t for t in GOOD)


# One input each (`apply` and `run`), also run inside a batch with a good input.
SEQUENCES = {
    "string": lambda: "abc",
    "string of bos": lambda: BOS,
    "none": lambda: None,
    "int": lambda: 5,
    "dict": lambda: {BOS: 1},
    "set": lambda: {BOS},
    "numpy array": lambda: np.array(GOOD, dtype=object),
    "generator": _generator,
    "unknown token": lambda: [BOS, "a", "zzz"],
    "unhashable token": lambda: [BOS, ["a"]],
    "too long": lambda: [BOS] + ["a"] * (MAX_SEQ_LEN + 1),
    "missing bos": lambda: ["a", "b"],
    "bos inside": lambda: [BOS, "a", BOS],
    "pad inside": lambda: [BOS, "a", PAD],
    "trailing pad": lambda: [BOS, "a", PAD, PAD],
    "empty": lambda: [],
    "only bos": lambda: [BOS],
    "tuple": lambda: tuple(GOOD),
    "good": lambda: list(GOOD),
}

# Whole batches (`apply_batch` and `decode_batch`).
BATCHES = {
    "string": lambda: "abc",
    "none": lambda: None,
    "int": lambda: 5,
    "empty batch": lambda: [],
    "empty tuple": lambda: (),
    "generator": lambda: (x for x in [GOOD]),
    "numpy array": lambda: np.array([GOOD, GOOD], dtype=object),
    "list of strings": lambda: ["abc"],
    "ragged": lambda: [[BOS, "a"], [BOS, "a", "b", "c"], [BOS]],
    "tuple of tuples": lambda: (tuple(GOOD), (BOS, "c")),
    **{f"[good, {k}]": (lambda make=make: [list(GOOD), make()]) for k, make in SEQUENCES.items()},
}


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_one_input_is_refused_as_apply_refuses_it(name):
    model, module, lens = _models()
    make = SEQUENCES[name]
    want = _outcome(lambda x: model.apply(x).decoded, make())
    assert _outcome(lambda x: module.run(x).decoded, make()) == want
    assert _outcome(lens.decode, make()) == want
    kind, _ = want
    got = _outcome(lens.token_ids, make())
    if kind == "ok":
        assert got[0] == "ok" and got[1].shape == (1, len(make()))
    else:
        assert got == want


@pytest.mark.parametrize("name", list(BATCHES))
def test_batch_is_refused_as_apply_batch_refuses_it(name):
    model, module, lens = _models()
    make = BATCHES[name]
    want = _outcome(model.apply_batch, make())
    assert _outcome(module.decode_batch, make()) == want
    assert _outcome(lens.decode_batch, make()) == want
    kind, result = want
    got = _outcome(lens.batch, make())
    if kind == "ok":
        assert got[0] == "ok" and len(got[1][2]) == len(result)
    else:
        assert got == want


def test_error_messages_are_the_codecs():
    """A spot check that the table compares real messages, not two equal bare errors."""
    model, module, _ = _models()
    with pytest.raises(TypeError, match="Expected a list of token lists, got str"):
        module.decode_batch("abc")
    with pytest.raises(TypeError, match="expected a list of tokens, got str"):
        module.run("abc")
    with pytest.raises(ValueError, match="sequence 1"):
        module.decode_batch([GOOD, [BOS, "zzz"]])
    assert module.decode_batch([]) == model.apply_batch([]) == []
