"""Exact compression: on every input, the compressed model is the uncompressed one."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest

from tracr.compiler import compiling
from tracr.compiler.library_cases import CASES_BY_NAME, LIBRARY_CASES
from tracr.compression import exact, running

MAX_SEQ_LEN = 4


@functools.lru_cache(maxsize=None)
def _compiled(name: str):
    case = CASES_BY_NAME[name]
    return compiling.compile_rasp_to_model(case.program(MAX_SEQ_LEN), set(case.vocab), MAX_SEQ_LEN)


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=lambda c: c.name)
def test_exact_compression_equals_uncompressed_model_on_every_input(case):
    model = _compiled(case.name)
    inputs, exhaustive = exact.domain_inputs(model)
    assert exhaustive and len(inputs) == exact.domain_size(len(case.vocab), MAX_SEQ_LEN)
    compression = exact.exact_compression(model, inputs)
    residual_size = len(model.residual_labels)
    assert compression.d_exact < residual_size  # the residual is never full rank
    w = compression.w
    np.testing.assert_allclose(w @ w.T, np.eye(compression.d_exact), atol=1e-5)

    ids = jnp.asarray(running.encode_padded(model, inputs))
    real = np.asarray(ids) != model.input_encoder.pad_encoding
    want = model.forward(model.params, ids)
    small = running.CompressedModel(model, w)
    got = small.forward(small.params, ids)
    assert small.params["transformer"]["w_emb"].shape == (compression.d_exact, residual_size)

    # Every recorded state, decompressed, is the uncompressed model's.
    for a, b in zip(got.transformer_output.residuals, want.transformer_output.residuals):
        np.testing.assert_allclose(np.asarray(a)[real], np.asarray(b)[real], atol=1e-4)
    # And so is every decoded output at the input positions. A categorical
    # output is compared where the program has a value: where RASP gives None
    # every output logit is 0 and the argmax is a tie.
    interface = running.model_interface(model)
    scored = real.copy()
    scored[:, 0] = False
    if interface.categorical:
        logits = np.asarray(want.transformer_output.output) @ interface.unembed
        scored &= logits.max(axis=-1) > 0.5
        assert scored.sum() > 0
        np.testing.assert_array_equal(
            np.asarray(got.unembedded_output)[scored], np.asarray(want.unembedded_output)[scored]
        )
    else:
        np.testing.assert_allclose(
            np.asarray(got.unembedded_output)[scored],
            np.asarray(want.unembedded_output)[scored],
            atol=1e-4,
        )


def test_dropping_a_direction_breaks_exactness():
    model = _compiled("sort_unique")
    compression = exact.exact_compression(model)
    ids = jnp.asarray(running.encode_padded(model, exact.domain_inputs(model)[0]))
    want = model.forward(model.params, ids).transformer_output.residuals[-1]
    small = running.CompressedModel(model, compression.truncated(compression.d_exact - 1))
    got = small.forward(small.params, ids).transformer_output.residuals[-1]
    assert float(jnp.max(jnp.abs(got - want))) > 0.1
    # The singular values show the rank plainly: a gap of orders of magnitude.
    assert exact.spectrum_gap(compression) > 4


def test_sampled_domain_is_flagged_not_exhaustive():
    model = _compiled("frac_prevs")
    inputs, exhaustive = exact.domain_inputs(model, max_inputs=10, seed=3)
    assert not exhaustive and len(inputs) == 10
    assert all(1 <= len(x) <= MAX_SEQ_LEN and set(x) <= {"x", "y"} for x in inputs)
    assert exact.domain_inputs(model, max_inputs=10, seed=3)[0] == inputs


def test_bad_arguments_are_refused():
    model = _compiled("frac_prevs")
    with pytest.raises(ValueError, match="tolerance must be in"):
        exact.exact_compression(model, tolerance=2.0)
    with pytest.raises(ValueError, match="inputs is empty"):
        exact.exact_compression(model, [])
    with pytest.raises(ValueError, match=r"d must be in 1\.\.D"):
        exact.exact_compression(model).truncated(0)
