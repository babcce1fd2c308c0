"""Attribution patching: exact where the metric is linear, zero off the circuit."""

import numpy as np
import pytest

from tracr.circuits import attribution, circuit, domain, metrics

from .models import compiled


def _pairs(model, n):
    inputs = [x for x in domain.make_domain(model.spec).inputs if len(x) == 3]
    rng = np.random.default_rng(0)
    picks = rng.choice(len(inputs), size=(n, 2))
    return [inputs[i] for i, _ in picks], [inputs[j] for _, j in picks]


@pytest.mark.parametrize("name", ["sort_unique", "frac_prevs"])
def test_scores_are_exact_into_the_output_and_zero_off_the_circuit(name):
    _, model = compiled(name, False)
    c = circuit(model)
    clean, corrupted = _pairs(model, 12)
    t = metrics.certified_temperature(model) if model.spec.output.categorical else 1.0
    pairs = list(c.candidate_pairs())
    scores = attribution.edge_scores(model, clean, corrupted, pairs, temperature=t)
    exact = attribution.edge_patching(model, clean, corrupted, pairs, temperature=t)
    for pair in pairs:
        if pair[1] == "unembed":  # L is linear in the unembedding's input
            np.testing.assert_allclose(scores[pair], exact[pair], rtol=1e-4, atol=1e-3)
        if pair not in c.edge_keys():  # no effect, and no gradient along what it writes
            assert np.all(scores[pair] == 0) and np.all(np.abs(exact[pair]) < 1e-4), pair
    assert any(np.any(scores[e] != 0) for e in c.edge_keys())


def test_clean_and_corrupted_must_match_in_length():
    _, model = compiled("sort_unique", False)
    with pytest.raises(ValueError, match="same length"):
        attribution.edge_scores(model, [(1, 2)], [(1,)], [])
