"""Running a compiled model with a given W: params, apply, folding."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest

from tracr.compiler import compiling, equivalence, lib
from tracr.compiler.library_cases import CASES_BY_NAME
from tracr.compression import exact, running
from tracr.rasp import rasp

MAX_SEQ_LEN = 4


@functools.lru_cache(maxsize=None)
def _compiled(name: str):
    case = CASES_BY_NAME[name]
    return compiling.compile_rasp_to_model(case.program(MAX_SEQ_LEN), set(case.vocab), MAX_SEQ_LEN)


def test_identity_w_reproduces_the_compiled_model_exactly():
    model = _compiled("sort_unique")
    residual_size = len(model.residual_labels)
    small = running.CompressedModel(model, np.eye(residual_size))
    tokens = ["compiler_bos", 3, 1, 2]
    want, got = model.apply(tokens), small.apply(tokens)
    assert got.decoded == want.decoded == ["compiler_bos", 1, 2, 3]
    for a, b in zip(got.residuals, want.residuals):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got.transformer_output, want.transformer_output)


def test_compressed_params_hold_w_emb_beside_the_compiled_layers():
    model = _compiled("frac_prevs")
    w = exact.exact_compression(model).w
    params = running.compressed_params(model, w)
    assert set(params) == set(model.params) | {"transformer"}
    np.testing.assert_array_equal(params["transformer"]["w_emb"], w)
    forward, forward_params = running.compressed_forward(model, w)
    ids = jnp.asarray([model.input_encoder.encode(["compiler_bos", "x", "y", "x"])])
    got = forward(forward_params, ids).unembedded_output
    np.testing.assert_allclose(got[0, 1:], [1.0, 0.5, 2 / 3], atol=1e-4)


def test_folded_model_equals_compressed_model_with_fewer_parameters():
    model = _compiled("reverse")
    w = exact.exact_compression(model).w
    d, residual_size = w.shape
    compressed = running.CompressedModel(model, w)
    folded = running.CompressedModel(model, w, folded=True)
    assert folded.params["transformer/layer_0/attn/query"]["w"].shape[0] == d
    assert folded.params["token_embed"]["embeddings"].shape[1] == d
    count = lambda params: sum(x.size for v in params.values() for x in v.values())  # noqa: E731
    assert count(folded.params) < count(model.params) < count(compressed.params)
    inputs = list(equivalence.all_inputs(CASES_BY_NAME["reverse"].vocab, MAX_SEQ_LEN))
    ids = jnp.asarray(running.encode_padded(model, inputs))
    a = compressed.forward(compressed.params, ids)
    b = folded.forward(folded.params, ids)
    real = np.asarray(ids) != model.input_encoder.pad_encoding
    for x, y in zip(a.transformer_output.residuals, b.transformer_output.residuals):
        np.testing.assert_allclose(np.asarray(x)[real], np.asarray(y)[real], atol=1e-4)
    # Code written for an assembled model runs the compressed one unchanged.
    same_length = [x for x in inputs if len(x) == 3]  # one batch shape: one compilation
    mismatches = equivalence.find_mismatches(folded, model_program("reverse"), same_length)
    assert not mismatches, equivalence.first_mismatches(mismatches)


def model_program(name):
    return CASES_BY_NAME[name].program(MAX_SEQ_LEN)


def test_w_of_the_wrong_width_is_refused():
    model = _compiled("frac_prevs")
    with pytest.raises(ValueError, match=r"w must be \[d, D\] with D = 10"):
        running.CompressedModel(model, np.eye(5))
    with pytest.raises(ValueError, match="w must be"):
        running.compressed_params(model, np.ones(11))


def test_non_finite_w_is_refused():
    model = _compiled("frac_prevs")
    w = np.eye(10)
    for bad in (np.nan, np.inf, 1e39):  # 1e39 overflows float32
        w_bad = w.copy()
        w_bad[3, 4] = bad
        with pytest.raises(ValueError, match=r"non-finite value .* at \(3, 4\)"):
            running.CompressedModel(model, w_bad)


def test_compressed_apply_decodes_none_where_rasp_has_none():
    program = lib.shift_by(1, rasp.tokens)  # position 0 selects nothing: None
    model = compiling.compile_rasp_to_model(program, {1, 2, 3}, 3)
    compressed = running.CompressedModel(model, exact.exact_compression(model).w)
    for x in ([1, 2, 3], [3, 3], [1]):
        expected = rasp.evaluate(program, x)
        assert None in expected
        assert compressed.apply(["compiler_bos", *x]).decoded[1:] == expected


@pytest.mark.parametrize("name", ["hist", "frac_prevs"])
def test_folded_model_without_unembedding_every_layer_gives_the_same_outputs(name):
    """folded=True with unembed_at_every_layer=False once crashed in apply
    (its output stayed d wide); output and input embeddings are D wide, the
    recorded residuals d wide, as in the unfolded CompressedTransformer."""
    model = _compiled(name)
    w = exact.exact_compression(model).w
    folded = running.CompressedModel(model, w, folded=True, unembed_at_every_layer=False)
    unfolded = running.CompressedModel(model, w, unembed_at_every_layer=False)
    vocab = CASES_BY_NAME[name].vocab
    for x in equivalence.all_inputs(vocab, MAX_SEQ_LEN):
        tokens = ["compiler_bos", *x]
        got, want = folded.apply(tokens).decoded, unfolded.apply(tokens).decoded
        if name == "hist":  # categorical
            assert got == want == model.apply(tokens).decoded
        else:  # numerical: the same up to the float32 rounding of the folded products
            np.testing.assert_allclose(got[1:], want[1:], atol=equivalence.NUMERICAL_TOLERANCE)
    out = folded.forward(folded.params, np.asarray([[0, 2]])).transformer_output
    assert out.output.shape[-1] == w.shape[1] and out.input_embeddings.shape[-1] == w.shape[1]
    assert out.residuals[0].shape[-1] == w.shape[0]


def test_a_layer_norm_model_is_refused_with_the_reason():
    """Compiled models have no layer norm; a hand-built one once failed deep in Haiku."""
    import dataclasses

    model = _compiled("hist")
    with_norm = dataclasses.replace(
        model, model_config=dataclasses.replace(model.model_config, layer_norm=True)
    )
    w = exact.exact_compression(model).w
    for build in (
        lambda: running.CompressedModel(with_norm, w),
        lambda: running.CompressedModel(with_norm, w, folded=True),
        lambda: exact.exact_compression(with_norm),
    ):
        with pytest.raises(ValueError, match="compression needs a model without layer norm"):
            build()
