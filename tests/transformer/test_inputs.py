"""`tracr.transformer.inputs`: the one encode/decode path and input enumerator."""

import numpy as np
import pytest

from tracr.compiler import compiling, equivalence
from tracr.compiler.library_cases import CASES_BY_NAME
from tracr.transformer import inputs


@pytest.fixture(scope="module")
def model():
    case = CASES_BY_NAME["sort_unique"]
    return compiling.compile_rasp_to_model(case.program(3), set(case.vocab), 3)


def test_encode_pads_and_checks_the_whole_batch(model):
    codec = inputs.Codec.from_spec(model.spec)
    bos, pad = model.spec.input.bos_token, model.spec.input.pad_token
    encoded = codec.encode([[bos, 1, 2], [bos]])
    assert encoded.ids.shape == (2, 3) and encoded.lengths.tolist() == [3, 1]
    assert encoded.ids[1, 1:].tolist() == [codec.pad_id] * 2
    assert encoded.ids[0].tolist() == model.input_encoder.encode([bos, 1, 2])
    assert encoded.mask.tolist() == [[True] * 3, [True, False, False]]
    with pytest.raises(ValueError, match=r"Unknown tokens \[True\] \(sequence 1, position 1\)"):
        codec.encode([[bos], [bos, True]])  # True == 1 in Python, but not a token
    with pytest.raises(ValueError, match="PAD token .* at position 1;"):
        codec.encode([[bos, pad]])
    with pytest.raises(TypeError, match="list of token lists"):
        codec.encode("abc")


def test_decode_maps_no_value_to_none_and_puts_bos_first(model):
    codec = inputs.Codec.from_spec(model.spec)
    values = model.spec.output.values
    out = np.array([[0, 1, inputs.NO_VALUE], [2, 0, 0]])
    got = codec.decode(out, np.array([3, 2]))
    bos = model.spec.input.bos_token
    assert got == [[bos, values[1], None], [bos, values[0]]]
    scores = np.array([[0.9, 0.1], [0.2, 0.3], [0.0, 0.0]])
    assert inputs.categorical_ids(scores).tolist() == [0, inputs.NO_VALUE, inputs.NO_VALUE]


def test_enumerate_inputs_lists_the_domain_or_a_seeded_sample(model):
    everything = inputs.enumerate_inputs(model.spec)
    tokens = inputs.domain_tokens(model.spec)
    assert len(tokens) == 3 and model.spec.input.bos_token not in tokens
    assert len(everything) == 3 + 9 + 27
    assert all(x[0] == model.spec.input.bos_token for x in everything)
    assert sorted(map(tuple, everything)) == sorted(
        (model.spec.input.bos_token, *x) for x in equivalence.all_inputs(set(tokens), 3)
    )
    sample = inputs.enumerate_inputs(model.spec, sample=50, seed=3)
    assert sample == inputs.enumerate_inputs(model.spec, sample=50, seed=3)
    assert sample != inputs.enumerate_inputs(model.spec, sample=50, seed=4)
    assert {len(x) for x in sample} <= {2, 3, 4}
    with pytest.raises(ValueError, match="max_len=4 is larger"):
        inputs.enumerate_inputs(model.spec, max_len=4)


def test_run_batch_is_apply_batch_with_any_forward(model):
    codec = inputs.Codec.from_spec(model.spec)
    weights = model.lean_weights()
    from tracr.transformer import fast

    batch = inputs.enumerate_inputs(model.spec, sample=20, seed=0)
    got = inputs.run_batch(codec, lambda ids: fast.outputs(weights, ids), batch)
    assert got == model.apply_batch(batch)
