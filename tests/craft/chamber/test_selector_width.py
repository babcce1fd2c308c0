"""Tests for tracr.craft.chamber.selector_width: every width 0..max_seq_len."""

import dataclasses

import numpy as np
import pytest

from tracr.craft import bases, transformers
from tracr.craft.chamber import selector_width

D = bases.BasisDirection
BOS = D("tokens", "bos")
BOS_SPACE = bases.VectorSpaceWithBasis([BOS])
ONE_SPACE = bases.VectorSpaceWithBasis.from_names(["one"])


def _build(n, categorical, causal=False):
    """Keys are indices 0..n-1; query value q selects the keys with index < q."""
    indices = bases.VectorSpaceWithBasis.from_values("indices", range(n))
    queries = bases.VectorSpaceWithBasis.from_values("q", range(n + 1))
    if categorical:
        output_space = bases.VectorSpaceWithBasis.from_values("width", range(n + 1))
    else:
        output_space = bases.VectorSpaceWithBasis.from_names(["width"])
    block = selector_width.selector_width(
        query_space=queries,
        key_space=indices,
        output_space=output_space,
        bos_space=BOS_SPACE,
        one_space=ONE_SPACE,
        attn_fn=lambda q, k: k.value < q.value,
        out_value_set=range(n + 1),
        categorical_output=categorical,
        causal=causal,
        label="width",
    )
    residual = bases.join_vector_spaces(block.residual_space, indices, queries)
    return block, residual, output_space


def _stream(residual, query_values):
    """A batch of sequences: BOS, then position p with indices:p and q:query_values[b][p]."""
    query_values = np.asarray(query_values)
    batch, n = query_values.shape
    index = residual.index_by_direction
    mags = np.zeros((batch, n + 1, residual.num_dims))
    mags[:, :, index[D("one")]] = 1.0
    mags[:, 0, index[BOS]] = 1.0
    for p in range(n):
        mags[:, p + 1, index[D("indices", p)]] = 1.0
        for b in range(batch):
            mags[b, p + 1, index[D("q", int(query_values[b, p]))]] = 1.0
    return residual.make_vector(mags)


@pytest.mark.parametrize("categorical", [True, False])
@pytest.mark.parametrize("n", [5, 30, 100])
def test_every_width(n, categorical):
    block, residual, output_space = _build(n, categorical)
    assert isinstance(block, transformers.SeriesWithResiduals)
    # Sequence 0 has widths 1..n, sequence 1 widths 0..n-1.
    queries = [list(range(1, n + 1)), list(range(n))]
    out = block.apply(_stream(residual, queries)).project(output_space).magnitudes[:, 1:]
    widths = np.array(queries)
    if categorical:
        np.testing.assert_allclose(out, np.eye(n + 1)[widths], atol=1e-3)
    else:
        np.testing.assert_allclose(out[..., 0], widths, atol=1e-3)


@pytest.mark.parametrize("categorical", [True, False])
def test_causal(categorical):
    n = 8
    block, residual, output_space = _build(n, categorical, causal=True)
    rng = np.random.default_rng(0)
    queries = rng.integers(0, n + 1, size=(3, n))
    out = block.apply(_stream(residual, queries)).project(output_space).magnitudes[:, 1:]
    # Position p sees keys 0..p; of those, the ones with index < q are selected.
    widths = np.minimum(queries, np.arange(1, n + 1))
    if categorical:
        np.testing.assert_allclose(out, np.eye(n + 1)[widths], atol=1e-3)
    else:
        np.testing.assert_allclose(out[..., 0], widths, atol=1e-3)


def test_helper_direction_holds_inverse_width():
    n = 6
    block, residual, _ = _build(n, categorical=True)
    helper = D("width_selector_width_attn_output")
    assert helper in block.residual_space
    out = block.apply(_stream(residual, [list(range(n))]))
    np.testing.assert_allclose(
        out.project([helper]).magnitudes[0, 1:, 0], 1 / (np.arange(n) + 1), atol=1e-9
    )
    hidden = block.blocks[1].fst.output_space.basis
    assert {d.name for d in hidden} == {"_hidden_width_"}


def _as_float32(block):
    """The same blocks with float32 weights, so that apply runs in float32."""
    f32 = lambda m: m.astype(np.float32)  # noqa: E731
    attn, mlp = block.blocks
    attn = dataclasses.replace(
        attn,
        w_qk=dataclasses.replace(attn.w_qk, matrix=f32(attn.w_qk.matrix)),
        w_ov=dataclasses.replace(attn.w_ov, matrix=f32(attn.w_ov.matrix)),
    )
    mlp = dataclasses.replace(
        mlp,
        fst=dataclasses.replace(mlp.fst, matrix=f32(mlp.fst.matrix)),
        snd=dataclasses.replace(mlp.snd, matrix=f32(mlp.snd.matrix)),
    )
    return transformers.SeriesWithResiduals([attn, mlp])


@pytest.mark.parametrize("categorical", [True, False])
def test_float32(categorical):
    """The compiled model runs in float32; the decoding must survive its rounding."""
    n = 100
    block, residual, output_space = _build(n, categorical)
    queries = [list(range(1, n + 1)), list(range(n))]
    stream = _stream(residual, queries)
    x = stream.copy_with_new_magnitudes(stream.magnitudes.astype(np.float32))
    result = _as_float32(block).apply(x)
    assert result.magnitudes.dtype == np.float32
    out = result.project(output_space).magnitudes[:, 1:]
    widths = np.array(queries)
    if categorical:
        assert (out.argmax(-1) == widths).all()
        np.testing.assert_allclose(out, np.eye(n + 1)[widths], atol=0.05)
    else:
        np.testing.assert_allclose(out[..., 0], widths, atol=0.02)


def test_negative_width_raises():
    with pytest.raises(ValueError, match="widths must be >= 0"):
        selector_width.selector_width(
            ONE_SPACE,
            ONE_SPACE,
            ONE_SPACE,
            BOS_SPACE,
            ONE_SPACE,
            lambda q, k: True,
            out_value_set=[-1, 0],
            categorical_output=False,
        )
