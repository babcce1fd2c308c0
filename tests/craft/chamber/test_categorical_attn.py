"""Tests for tracr.craft.chamber.categorical_attn.

The residual stream is built as the compiler lays it out: position 0 is BOS
(`tokens:bos + one`, no index), then `tokens:x + one + indices:i + ...`.
"""

import numpy as np
import pytest

from tracr.craft import bases
from tracr.craft.chamber import categorical_attn

D = bases.BasisDirection
BOS = D("tokens", "bos")
ONE = D("one")
BOS_SPACE = bases.VectorSpaceWithBasis([BOS])
ONE_SPACE = bases.VectorSpaceWithBasis([ONE])
VOCAB = ["a", "b", "c"]


def _stream(rows, residual):
    """rows[p] maps directions to magnitudes for non-BOS position p + 1."""
    mags = np.zeros((len(rows) + 1, residual.num_dims))
    index = residual.index_by_direction
    mags[0, index[BOS]] = 1.0
    mags[0, index[ONE]] = 1.0
    for p, row in enumerate(rows, start=1):
        mags[p, index[ONE]] = 1.0
        for direction, magnitude in row.items():
            mags[p, index[direction]] += magnitude
    return residual.make_vector(mags)


def _spaces(n):
    tokens = bases.VectorSpaceWithBasis.from_values("tokens", VOCAB)
    indices = bases.VectorSpaceWithBasis.from_values("indices", range(n))
    # Query SOp with one extra value (n + 5) that selects no key.
    target = bases.VectorSpaceWithBasis.from_values("target", list(range(n)) + [n + 5])
    out = bases.VectorSpaceWithBasis.from_values("out", VOCAB)
    return tokens, indices, target, out


def _eq(query, key):
    return query.value == key.value


@pytest.mark.parametrize("seed", range(3))
def test_categorical_aggregate_every_query_and_bos_fallback(seed):
    n = 6
    tokens, indices, target, out = _spaces(n)
    head = categorical_attn.categorical_attn(
        query_space=target,
        key_space=indices,
        value_space=tokens,
        output_space=out,
        bos_space=BOS_SPACE,
        one_space=ONE_SPACE,
        attn_fn=_eq,
    )
    residual = bases.join_vector_spaces(tokens, indices, target, out, BOS_SPACE, ONE_SPACE)
    rng = np.random.default_rng(seed)
    xs = list(rng.choice(VOCAB, size=n))
    # Every query value, including the one that selects nothing.
    targets = list(rng.permutation(n))
    targets[0] = n + 5
    rows = [
        {D("tokens", xs[p]): 1, D("indices", p): 1, D("target", int(targets[p])): 1}
        for p in range(n)
    ]
    result = head.apply(_stream(rows, residual)).project(out).magnitudes
    for p in range(n):
        t = int(targets[p])
        expected = np.zeros(len(VOCAB)) if t == n + 5 else np.eye(len(VOCAB))[VOCAB.index(xs[t])]
        np.testing.assert_allclose(result[p + 1], expected, atol=1e-9)


def test_default_output_when_nothing_selected():
    n = 3
    tokens, indices, target, out = _spaces(n)
    default = out.vector_from_basis_direction(D("out", "c"))
    head = categorical_attn.categorical_attn(
        target, indices, tokens, out, BOS_SPACE, ONE_SPACE, _eq, default_output=default
    )
    residual = bases.join_vector_spaces(head.residual_space)
    rows = [{D("tokens", "a"): 1, D("indices", p): 1, D("target", n + 5): 1} for p in range(n)]
    result = head.apply(_stream(rows, residual)).project(out).magnitudes
    np.testing.assert_allclose(result[1:], np.tile([0.0, 0.0, 1.0], (n, 1)), atol=1e-9)


def test_weight_matrix_layout():
    tokens, indices, target, out = _spaces(2)
    head = categorical_attn.categorical_attn(
        target, indices, tokens, out, BOS_SPACE, ONE_SPACE, _eq, softmax_coldness=10.0
    )
    qk = head.w_qk
    q, k = qk.left_space.index_by_direction, qk.right_space.index_by_direction
    assert qk.matrix[q[ONE], k[BOS]] == 5.0
    assert qk.matrix[q[D("target", 1)], k[D("indices", 1)]] == 10.0
    assert qk.matrix[q[D("target", 1)], k[D("indices", 0)]] == 0.0
    assert qk.matrix[q[ONE], k[D("indices", 0)]] == 0.0
    assert qk.matrix[q[D("target", 0)], k[BOS]] == 0.0
    ov = head.w_ov
    assert ov.matrix[ov.input_space.index_by_direction[BOS]].sum() == 0.0


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numerical_mean(causal, dtype):
    n = 100
    indices = bases.VectorSpaceWithBasis.from_values("indices", range(n))
    x_space = bases.VectorSpaceWithBasis.from_names(["x"])
    mean_space = bases.VectorSpaceWithBasis.from_names(["mean"])
    # Select keys with index <= query index (a prefix), or all keys.
    head = categorical_attn.categorical_attn(
        indices,
        indices,
        x_space,
        mean_space,
        BOS_SPACE,
        ONE_SPACE,
        attn_fn=lambda q, k: k.value <= q.value,
        causal=causal,
    )
    all_head = categorical_attn.categorical_attn(
        indices,
        indices,
        x_space,
        mean_space,
        BOS_SPACE,
        ONE_SPACE,
        attn_fn=lambda q, k: True,
        causal=causal,
    )
    residual = bases.join_vector_spaces(head.residual_space)
    xs = np.random.default_rng(0).integers(0, 2, size=n).astype(float)
    rows = [{D("indices", p): 1, D("x"): xs[p]} for p in range(n)]
    stream = _stream(rows, residual)
    stream = stream.copy_with_new_magnitudes(stream.magnitudes.astype(dtype))
    prefix_means = np.cumsum(xs) / np.arange(1, n + 1)
    np.testing.assert_allclose(
        head.apply(stream).project(mean_space).magnitudes[1:, 0], prefix_means, atol=1e-5
    )
    expected_all = prefix_means if causal else np.full(n, xs.mean())
    np.testing.assert_allclose(
        all_head.apply(stream).project(mean_space).magnitudes[1:, 0], expected_all, atol=1e-5
    )


def test_errors():
    tokens, indices, target, out = _spaces(2)
    two = bases.VectorSpaceWithBasis.from_names(["one", "two"])
    with pytest.raises(ValueError, match="one_space must have exactly 1"):
        categorical_attn.categorical_attn(target, indices, tokens, out, BOS_SPACE, two, _eq)
    short_out = bases.VectorSpaceWithBasis.from_values("out", ["a", "b"])
    with pytest.raises(ValueError, match="paired in basis order"):
        categorical_attn.categorical_attn(
            target, indices, tokens, short_out, BOS_SPACE, ONE_SPACE, _eq
        )
    with pytest.raises(ValueError, match="default_output"):
        categorical_attn.categorical_attn(
            target,
            indices,
            tokens,
            out,
            BOS_SPACE,
            ONE_SPACE,
            _eq,
            default_output=tokens.null_vector(),
        )
