"""certificate.certify: margins and errors of compiled models against the evaluator."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from tracr.compiler import certificate, compiling, equivalence, lib, validating
from tracr.rasp import rasp
from tracr.transformer import spec as spec_lib

VOCAB = {"a", "b", "c"}


def _compile(program, vocab=VOCAB, max_seq_len=4, causal=False):
    return compiling.compile_rasp_to_model(program, vocab, max_seq_len, causal=causal)


def _set_param(model, name, key, update):
    """A copy of `model` whose parameter name/key is update(old numpy array)."""
    params = {k: dict(v) for k, v in model.params.items()}
    params[name][key] = jnp.asarray(update(np.array(params[name][key])))
    return dataclasses.replace(model, params=params)


def test_small_domain_is_exhaustive_and_exact():
    program = lib.make_hist()
    cert = certificate.certify(_compile(program), program)
    assert cert.exhaustive
    assert cert.num_inputs == 3 + 9 + 27 + 81
    assert cert.output.positions == 3 + 2 * 9 + 3 * 27 + 4 * 81
    assert cert.exact and cert.output.wrong == 0
    # A clean one-hot has margin 1; what is left is float rounding.
    assert 1 - 1e-5 < cert.output.min_margin <= 1
    assert cert.output.max_error < 1e-5
    assert "hist" in cert.summary() and "exact" in cert.summary()


def test_margin_measures_the_unembedded_logits():
    """Scaling the output MLP's weights by 0.3 scales the winning one-hot to 0.3."""
    program = lib.make_length()
    model = _compile(program)
    cert = certificate.certify(model, program)
    assert cert.output.min_margin == pytest.approx(1.0, abs=1e-5)
    name = "transformer/layer_0/mlp/linear_2"
    scaled = _set_param(model, name, "w", lambda w: 0.3 * w)
    cert = certificate.certify(scaled, program)
    assert cert.output.exact and cert.output.wrong == 0  # the argmax is still right
    assert cert.output.min_margin == pytest.approx(0.3, abs=1e-5)
    assert cert.output.max_error == pytest.approx(0.7, abs=1e-5)
    # ... but 0.3 is below spec.ACTIVE_THRESHOLD: the positions would read as None.
    assert cert.active.min_active == pytest.approx(0.3, abs=1e-5)
    assert not cert.active.certified and not cert.exact
    assert "NOT certified" in cert.why_not_exact()


def test_wrong_outputs_are_counted_with_negative_margin():
    """A bias of 2 on the direction length:1 makes every position decode 1."""
    program = lib.make_length()
    model = _compile(program)
    dim = model.residual_labels.index(f"{program.label}:1")
    broken = _set_param(
        model, "transformer/layer_0/mlp/linear_2", "b", lambda b: b + 2.0 * np.eye(len(b))[dim]
    )
    cert = certificate.certify(broken, program)
    assert not cert.exact
    # Only inputs of length 1 are still right: 3 inputs, one position each.
    assert cert.output.wrong == cert.output.positions - 3
    assert cert.output.min_margin == pytest.approx(1.0 - 2.0, abs=1e-5)
    assert len(cert.output.worst_input) > 1
    mismatches = equivalence.find_mismatches(broken, program, equivalence.all_inputs(VOCAB, 4))
    assert len(mismatches) == cert.output.wrong


def test_intermediate_sops_are_read_from_the_residual_stream():
    program = lib.make_reverse(rasp.tokens)
    cert = certificate.certify(_compile(program), program)
    labels = [m.label for m in cert.intermediates]
    named = {
        e.label for e in validating.walk(program) if e.name in ("length", "opp_idx", "opp_idx-1")
    }
    assert len(named) == 3 and named <= set(labels)  # length, opp_idx and opp_idx - 1
    assert cert.weakest_intermediate is not None
    for margin in cert.intermediates:
        assert margin.exact and margin.min_margin > 1 - 1e-5, margin.describe()
    without = certificate.certify(_compile(program), program, intermediates=False)
    assert without.intermediates == () and without.output == cert.output


def test_numerical_output_reports_the_error():
    program = lib.make_frac_prevs(rasp.numerical(rasp.Map(lambda x: x == "a", rasp.tokens)))
    model = _compile(program, causal=True)
    cert = certificate.certify(model, program)
    assert cert.causal and cert.exact
    assert cert.output.numerical and np.isnan(cert.output.min_margin)
    assert cert.output.max_error < 1e-6
    # bfloat16 keeps 8 significant bits: 1/3 is off by ~1e-3.
    cert16 = certificate.certify(model, program, dtype=jnp.bfloat16)
    assert cert16.dtype == "bfloat16"
    assert 1e-4 < cert16.output.max_error < 1e-2


@pytest.mark.parametrize("causal", [False, True])
def test_padding_changes_no_real_position(causal):
    """certify pads every input to max_seq_len; find_mismatches does not pad."""
    program = lib.make_pair_balance(rasp.tokens, "a", "b")
    model = _compile(program, causal=causal)
    assert certificate.certify(model, program).exact
    x = ["a", "b", "b"]
    encoder = model.input_encoder
    ids = encoder.encode([encoder.bos_token, *x])
    padded = model.forward(model.params, jnp.asarray([ids + [encoder.pad_encoding]]))
    plain = model.forward(model.params, jnp.asarray([ids]))
    np.testing.assert_array_equal(
        np.asarray(padded.transformer_output.output)[0, :4],
        np.asarray(plain.transformer_output.output)[0],
    )


def test_inputs_outside_the_domain_are_skipped():
    # A categorical Aggregate that selects two keys with different values is
    # undefined; the evaluator raises on such inputs.
    same_token = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
    program = rasp.Aggregate(same_token, rasp.indices).named("where")
    cert = certificate.certify(_compile(program, {"a", "b"}, 3), program)
    assert cert.exhaustive and cert.exact
    assert cert.num_inputs == 4  # ab, ba, a, b
    assert cert.skipped_inputs == 14 - 4


def test_default_inputs_sample_large_domains_reproducibly():
    inputs, exhaustive = certificate.default_inputs(VOCAB, 3)
    assert exhaustive and len(inputs) == 3 + 9 + 27
    sample, exhaustive = certificate.default_inputs(VOCAB, 20, num_samples=10, seed=3)
    assert not exhaustive and len(sample) == 10
    assert sample == certificate.default_inputs(VOCAB, 20, num_samples=10, seed=3)[0]
    assert sum(len(x) == 20 for x in sample) >= 5  # long inputs decide the margins
    assert {t for x in sample for t in x} <= VOCAB


def test_wrong_program_is_rejected():
    model = _compile(lib.make_hist())
    with pytest.raises(ValueError, match="residual"):
        certificate.certify(model, lib.make_length())


def test_values_are_looked_up_by_equality():
    """The evaluator's 1.0 or True is the direction of the value 1 (their strings differ)."""
    program = rasp.Map(lambda x: {1: True, 2: 1.0, 3: 2}[x], rasp.tokens)
    cert = certificate.certify(_compile(program, {1, 2, 3}, 3), program)
    assert cert.exact and cert.output.wrong == 0
    assert cert.output.positions == 3 + 2 * 9 + 3 * 27


def test_comparing_nothing_is_a_failure():
    same_token = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
    program = rasp.Aggregate(same_token, rasp.indices)
    model = _compile(program, {"a", "b"}, 3)
    for inputs in ([], [("a", "a"), ("b", "b", "b")]):  # none, or all outside the domain
        cert = certificate.certify(model, program, inputs)
        assert cert.compared == 0 and cert.skipped_inputs == len(inputs)
        assert not cert.exact
        assert "NOTHING COMPARED" in cert.summary()
        assert "nothing was compared" in cert.why_not_exact()
    cert = certificate.certify(model, program, [("a", "b")])
    assert cert.compared == 2 and cert.exact


def test_active_margin_of_none_positions():
    """shift_by(1): position 0 selects nothing, RASP gives None, the output must be empty."""
    program = lib.shift_by(1, rasp.tokens)
    model = _compile(program)
    cert = certificate.certify(model, program)
    n = 3 + 9 + 27 + 81  # inputs; one None position (the first) each
    assert (cert.active.none_positions, cert.active.value_positions) == (n, cert.compared)
    assert cert.active.max_inactive < 1e-5 and cert.active.min_active > 1 - 1e-5
    assert cert.active.certified and cert.exact and "certified" in cert.summary()
    # The same bias on every output direction: the argmax is unchanged, but the
    # None positions now hold 0.4, too close to the threshold.
    columns = np.array(model.spec.output.reads)
    name = spec_lib.param_name(0, "attn", "linear")
    biased = _set_param(model, name, "b", lambda b: b + 0.4 * np.isin(np.arange(len(b)), columns))
    cert = certificate.certify(biased, program)
    assert cert.output.wrong == 0 and cert.output.exact
    assert cert.active.max_inactive == pytest.approx(0.4, abs=1e-5)
    assert not cert.active.certified and not cert.exact
    assert "NOT certified" in cert.why_not_exact()
