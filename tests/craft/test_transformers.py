"""Tests for tracr.craft.transformers."""

import dataclasses

import numpy as np
import pytest

from tracr.craft import bases, transformers
from tracr.craft import vectorspace_fns as vf

D = bases.BasisDirection


def _head(causal=False):
    q_space = bases.VectorSpaceWithBasis.from_names(["q"])
    k_space = bases.VectorSpaceWithBasis.from_names(["k"])
    v_space = bases.VectorSpaceWithBasis.from_names(["v"])
    o_space = bases.VectorSpaceWithBasis.from_names(["o"])
    w_qk = vf.ScalarBilinear(q_space, k_space, np.array([[2.0]]))
    w_ov = vf.Linear(v_space, o_space, np.array([[3.0]]))
    return transformers.AttentionHead(w_qk, w_ov, causal=causal)


def _reference_attention(x, causal):
    q, k, v = x[:, 0], x[:, 1], x[:, 2]
    logits = 2.0 * q[:, None] * k[None, :]
    if causal:
        logits = np.where(np.triu(np.ones_like(logits, dtype=bool), 1), -np.inf, logits)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return weights @ (3.0 * v)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_head_matches_reference(causal):
    head = _head(causal)
    assert [str(d) for d in head.residual_space.basis] == ["k", "o", "q", "v"]
    rng = np.random.default_rng(0)
    mags = rng.normal(size=(5, 3))
    residual = bases.VectorSpaceWithBasis.from_names(["q", "k", "v", "extra"])
    x = residual.make_vector(np.concatenate([mags, rng.normal(size=(5, 1))], axis=1))
    out = head.apply(x)
    assert out.basis_directions == head.residual_space.basis
    np.testing.assert_allclose(
        out.project([D("o")]).magnitudes[:, 0], _reference_attention(mags, causal)
    )
    np.testing.assert_allclose(out.project([D("q"), D("k"), D("v")]).magnitudes, 0)


def test_attention_head_batched():
    head = _head(causal=True)
    residual = bases.VectorSpaceWithBasis.from_names(["q", "k", "v"])
    mags = np.random.default_rng(1).normal(size=(2, 4, 3))
    out = head.apply(residual.make_vector(mags)).project([D("o")]).magnitudes[..., 0]
    for b in range(2):
        np.testing.assert_allclose(out[b], _reference_attention(mags[b], True))


def test_attention_head_residual_space_checked():
    head = _head()
    with pytest.raises(ValueError, match="missing from residual_space"):
        transformers.AttentionHead(
            head.w_qk, head.w_ov, residual_space=bases.VectorSpaceWithBasis.from_names(["q"])
        )
    with pytest.raises(ValueError, match=r"\[..., T, D\]"):
        head.apply(head.residual_space.null_vector())


def test_w_ov_residual_and_multi():
    head = _head()
    x = head.residual_space.vector_from_basis_direction(D("v"))
    assert head.w_ov_residual(x) == head.residual_space.make_vector([0, 3.0, 0, 0])
    multi = head.as_multi()
    assert multi.num_heads == 1 and list(multi.heads()) == [head]
    nested = transformers.MultiAttentionHead([multi, _head(causal=True)])
    assert nested.num_heads == 2 and len(list(nested.heads())) == 2


def test_multi_head_sums_heads():
    h1 = _head()
    w_ov2 = vf.Linear(
        bases.VectorSpaceWithBasis.from_names(["v"]),
        bases.VectorSpaceWithBasis.from_names(["o2"]),
        np.array([[1.0]]),
    )
    h2 = transformers.AttentionHead(h1.w_qk, w_ov2)
    multi = transformers.MultiAttentionHead([h1, h2])
    residual = bases.VectorSpaceWithBasis.from_names(["q", "k", "v"])
    x = residual.make_vector(np.random.default_rng(2).normal(size=(3, 3)))
    out = multi.apply(x)
    expected = h1.apply(x).add_directions(h2.apply(x))
    assert out == expected.project(multi.residual_space)


def _mlp(hidden_name="h", in_name="x", out_name="y"):
    in_space = bases.VectorSpaceWithBasis.from_names([in_name])
    hidden = bases.VectorSpaceWithBasis.from_values(hidden_name, [0, 1])
    out_space = bases.VectorSpaceWithBasis.from_names([out_name])
    fst = vf.Linear(in_space, hidden, np.array([[1.0, -1.0]]))
    snd = vf.Linear(hidden, out_space, np.array([[1.0], [1.0]]))
    return transformers.MLP(fst, snd)  # |x|


def test_mlp_apply_ignores_extra_directions():
    mlp = _mlp()
    residual = bases.VectorSpaceWithBasis.from_names(["x", "other"])
    x = residual.make_vector(np.array([[-2.0, 5.0], [3.0, 1.0]]))
    out = mlp.apply(x)
    np.testing.assert_allclose(out.project([D("y")]).magnitudes[:, 0], [2.0, 3.0])
    assert out.basis_directions == mlp.residual_space.basis


def test_mlp_hidden_spaces_must_match():
    mlp = _mlp()
    other = vf.Linear(
        bases.VectorSpaceWithBasis.from_names(["zz"]), mlp.snd.output_space, np.zeros((1, 1))
    )
    with pytest.raises(ValueError, match="same hidden space"):
        transformers.MLP(mlp.fst, other)


def test_mlp_combine_in_parallel():
    a = _mlp("ha", "x", "y")
    b = _mlp("hb", "x", "z")
    both = transformers.MLP.combine_in_parallel([a, b])
    x = bases.VectorSpaceWithBasis.from_names(["x"]).make_vector(np.array([[-4.0]]))
    out = both.apply(x)
    np.testing.assert_allclose(out.project([D("y"), D("z")]).magnitudes, [[4.0, 4.0]])
    with pytest.raises(ValueError, match="hidden directions collide"):
        transformers.MLP.combine_in_parallel([a, _mlp("ha", "x", "w")])


def test_series_with_residuals_accumulates():
    mlp = _mlp()  # y = |x|
    mlp2 = _mlp("h2", "y", "w")  # w = |y|
    series = transformers.SeriesWithResiduals([mlp, mlp2])
    residual = bases.VectorSpaceWithBasis.from_names(["x", "extra"])
    x = residual.make_vector(np.array([[-3.0, 7.0]]))
    out = series.apply(x)
    assert out.basis_directions[:3] == series.residual_space.basis
    assert out.project([D("x"), D("y"), D("w"), D("extra")]) == bases.VectorInBasis(
        [D("x"), D("y"), D("w"), D("extra")], np.array([[-3.0, 3.0, 3.0, 7.0]])
    )
    nested = transformers.SeriesWithResiduals([series, _mlp("h3", "w", "v")])
    out = nested.apply(x)
    np.testing.assert_allclose(out.project([D("v"), D("y")]).magnitudes, [[3.0, 3.0]])


def test_blocks_are_frozen_and_replaceable():
    head = _head()
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.causal = True
    assert dataclasses.replace(head, causal=True).causal
    series = transformers.SeriesWithResiduals([head])
    assert dataclasses.replace(series, blocks=[_mlp()]).residual_space.num_dims == 2


def test_relu_and_project_alias():
    space = bases.VectorSpaceWithBasis.from_names(["a", "b"])
    assert transformers.relu(space.make_vector([-1.0, 2.0])) == space.make_vector([0.0, 2.0])
    assert transformers.project is vf.project
