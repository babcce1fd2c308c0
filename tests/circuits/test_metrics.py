"""Logits with a certified temperature, KL / MSE metrics and patching pairs."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from tracr.circuits import domain, forward, metrics, patching
from tracr.compiler import certificate
from tracr.rasp import rasp

from .models import compiled

CATEGORICAL = ["sort", "hist", "shuffle_dyck", "reverse"]


def _probability_bound(margin, t, width):
    """The smallest correct-value probability that margin `margin` allows at temperature t."""
    return 1 / (1 + (width - 1) * math.exp(-margin / t))


@pytest.mark.parametrize("name", CATEGORICAL)
def test_temperature_is_certified_in_float32_and_bfloat16(name):
    program, model = compiled(name, False)
    t = metrics.certified_temperature(model)
    width = model.spec.output.width
    for dtype in (None, jnp.bfloat16):
        cert = certificate.certify(model, program, dtype=dtype, intermediates=False)
        assert cert.exact and cert.exhaustive, cert.summary()
        assert _probability_bound(cert.output.min_margin, t, width) >= 1 - metrics.EPS, dtype


@pytest.mark.parametrize("name", CATEGORICAL)
def test_correct_value_probability_is_measured_above_one_minus_eps(name):
    program, model = compiled(name, False)
    inputs = [(model.spec.input.bos_token, *x) for x in domain.make_domain(model.spec).inputs]
    z = np.asarray(metrics.logits(model, inputs), np.float64)
    logp = np.asarray(metrics.log_softmax(z))
    values = list(model.spec.output.values)
    worst, checked = 0.0, 0
    for b, x in enumerate(inputs):
        for pos, want in enumerate(rasp.evaluate(program, list(x[1:])), start=1):
            if want is not None:
                worst = min(worst, logp[b, pos, values.index(want)])
                checked += 1
    assert checked > 0
    assert worst >= math.log1p(-metrics.EPS)
    # Without the temperature the probability of the correct value is far lower.
    plain = metrics.logits(model, inputs[-1:], temperature=1.0)
    assert np.exp(metrics.log_softmax(plain)).max() < 0.9


def test_kl_is_zero_on_itself_and_large_on_a_patching_pair():
    _, model = compiled("sort", False)
    clean, corrupt = patching.patching_pairs(model, "1.0", n=1, seed=0)[0]
    z = metrics.logits(model, [clean, corrupt])
    ids = metrics.encode_with_bos(model.spec, [clean])
    mask = metrics.active_positions(model.spec, ids, z[:1])
    assert metrics.default_metric(model.spec) is metrics.kl_divergence
    assert metrics.kl_divergence(z[:1], z[:1], mask) == pytest.approx(0.0, abs=1e-6)
    assert metrics.kl_divergence(z[:1], z[1:], mask) > 1.0


def test_numerical_output_uses_mse_and_has_no_temperature():
    _, model = compiled("frac_prevs", False)
    assert metrics.default_metric(model.spec) is metrics.mse
    with pytest.raises(ValueError, match="numerical"):
        metrics.certified_temperature(model)
    bos = model.spec.input.bos_token
    out = metrics.logits(model, [(bos, "x", "y"), (bos, "y", "y")])
    np.testing.assert_allclose(out[0, 1:, 0], [1.0, 0.5], atol=1e-5)
    mask = np.array([[False, True, True]] * 2)
    assert metrics.mse(out[:1], out[1:], mask) == pytest.approx((1.0 + 0.25) / 2, abs=1e-5)


def test_logits_need_bos():
    _, model = compiled("sort", False)
    with pytest.raises(ValueError, match="BOS"):
        metrics.logits(model, [(1, 2)])


@pytest.mark.parametrize("node", ["embed", "0.0", "mlp 0", "1.0"])
def test_patching_pairs_make_the_node_visible(node):
    _, model = compiled("sort_unique", False)
    pairs = patching.patching_pairs(model, node, n=5, seed=3)
    assert len(pairs) == 5 and pairs == patching.patching_pairs(model, node, n=5, seed=3)
    weights = forward.weights_of(model, numpy=True)
    for clean, corrupt in pairs:
        assert len(clean) == len(corrupt) and clean != corrupt
        ids = metrics.encode_with_bos(model.spec, [clean, corrupt])
        run = forward.run(weights, ids)
        patched = forward.run(weights, ids[:1], replace={node: run.out[node][1:]})
        out = run.out["unembed"]
        assert np.abs(run.out[node][0] - run.out[node][1]).max() > 1e-4
        assert np.abs(out[0] - out[1]).max() > 1e-4
        assert np.abs(patched.out["unembed"][0] - out[0]).max() > 1e-4


def test_patching_pairs_rejects_unknown_nodes():
    _, model = compiled("sort_unique", False)
    with pytest.raises(ValueError, match="node must be one of"):
        patching.patching_pairs(model, "7.0", n=1)
