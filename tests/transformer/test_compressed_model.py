"""CompressedTransformer: parameter layout, and w_emb = identity is the plain model."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tracr.transformer import compressed_model, model

B, T, D = 2, 5, 7


def _config(layer_norm: bool = False) -> model.TransformerConfig:
    return model.TransformerConfig(
        num_heads=2,
        num_layers=2,
        key_size=3,
        mlp_hidden_size=6,
        dropout_rate=0.0,
        activation_function=jax.nn.relu,
        layer_norm=layer_norm,
        causal=False,
    )


def _inputs():
    embeddings = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))
    mask = jnp.ones((B, T)).at[1, -2:].set(0)  # padding in the second row
    return embeddings, mask


def _jitted(transformed: hk.Transformed) -> hk.Transformed:
    # One compilation per function is much faster than eager op-by-op dispatch.
    return hk.Transformed(init=jax.jit(transformed.init), apply=jax.jit(transformed.apply))


def _plain(config):
    def f(embeddings, mask):
        return model.Transformer(config, name="transformer")(embeddings, mask, use_dropout=False)

    return _jitted(hk.without_apply_rng(hk.transform(f)))


def _compressed(config, embedding_size, unembed_at_every_layer=True):
    def f(embeddings, mask):
        return compressed_model.CompressedTransformer(config, name="transformer")(
            embeddings,
            mask,
            use_dropout=False,
            embedding_size=embedding_size,
            unembed_at_every_layer=unembed_at_every_layer,
        )

    return hk.without_apply_rng(hk.transform(f))


def _compressed_jit(config, embedding_size, unembed_at_every_layer=True):
    return _jitted(_compressed(config, embedding_size, unembed_at_every_layer))


def _shapes(params):
    return {(m, k): v.shape for m, values in params.items() for k, v in values.items()}


def test_params_are_the_plain_models_plus_w_emb():
    embeddings, mask = _inputs()
    config = _config()
    key = jax.random.PRNGKey(1)
    # eval_shape traces init without compiling or running it.
    plain = jax.eval_shape(_plain(config).init, key, embeddings, mask)
    compressed = jax.eval_shape(_compressed(config, 4).init, key, embeddings, mask)
    expected = _shapes(plain)
    expected[("transformer", "w_emb")] = (4, D)
    assert _shapes(compressed) == expected
    assert ("transformer/layer_1/mlp/linear_2", "w") in expected


@functools.lru_cache(maxsize=None)
def _plain_params(layer_norm: bool = False):
    embeddings, mask = _inputs()
    return _plain(_config(layer_norm)).init(jax.random.PRNGKey(2), embeddings, mask)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_identity_w_emb_reproduces_the_plain_model_exactly(layer_norm):
    embeddings, mask = _inputs()
    config = _config(layer_norm)
    params = _plain_params(layer_norm)
    want = _plain(config).apply(params, embeddings, mask)
    with_w = {**params, "transformer": {"w_emb": jnp.eye(D)}}
    # Under jit, and eagerly (op by op, slow) once.
    applies = [_compressed_jit(config, D).apply]
    if not layer_norm:
        applies.append(_compressed(config, D).apply)
    for apply in applies:
        got = apply(with_w, embeddings, mask)
        # Multiplying by the identity is exact; jit may fuse layer norm differently.
        np.testing.assert_allclose(got.output, want.output, rtol=0, atol=1e-6)
        for name in ("residuals", "layer_outputs", "attn_logits"):
            for a, b in zip(getattr(got, name), getattr(want, name)):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        assert len(got.residuals) == 2 * config.num_layers


def test_no_embedding_size_runs_uncompressed_without_w_emb():
    embeddings, mask = _inputs()
    config = _config()
    params = _plain_params()
    got = _compressed_jit(config, None).apply(params, embeddings, mask)
    np.testing.assert_array_equal(got.output, _plain(config).apply(params, embeddings, mask).output)


def test_a_rotation_of_the_full_space_changes_nothing_but_rounding():
    embeddings, mask = _inputs()
    config = _config()
    params = _plain_params()
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((D, D)))
    got = _compressed_jit(config, D).apply(
        {**params, "transformer": {"w_emb": jnp.asarray(q, jnp.float32)}}, embeddings, mask
    )
    want = _plain(config).apply(params, embeddings, mask)
    np.testing.assert_allclose(got.output, want.output, atol=1e-4)
    np.testing.assert_allclose(got.residuals[-1], want.residuals[-1], atol=1e-4)


@pytest.mark.parametrize("unembed_at_every_layer, width", [(True, D), (False, 3)])
def test_recorded_states_are_decompressed_only_when_asked(unembed_at_every_layer, width):
    embeddings, mask = _inputs()
    transformed = _compressed_jit(_config(), 3, unembed_at_every_layer)
    w = jax.random.normal(jax.random.PRNGKey(5), (3, D)) / np.sqrt(3)
    params = {**_plain_params(), "transformer": {"w_emb": w}}
    out = transformed.apply(params, embeddings, mask)
    assert out.output.shape == (B, T, D)  # always decompressed, for the unembedding
    assert out.input_embeddings.shape == (B, T, D)
    assert {r.shape for r in out.residuals + out.layer_outputs} == {(B, T, width)}
    if unembed_at_every_layer:
        # A decompressed state lies in the row space of w: w^+ w x = x.
        projector = np.linalg.pinv(np.asarray(w)) @ np.asarray(w)
        last = np.asarray(out.residuals[-1])
        np.testing.assert_allclose(last @ projector, last, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"embedding_size": 0}, "embedding_size must be >= 1"), ({"embedding_size": 2.5}, "int")],
)
def test_bad_embedding_size_is_refused(kwargs, message):
    embeddings, mask = _inputs()
    config = _config()

    def f(e, m):
        return compressed_model.CompressedTransformer(config)(e, m, **kwargs)

    with pytest.raises(ValueError, match=message):
        hk.transform(f).init(jax.random.PRNGKey(0), embeddings, mask)


def test_embeddings_without_batch_axis_are_refused():
    embeddings, mask = _inputs()
    config = _config()

    def f(e, m):
        return compressed_model.CompressedTransformer(config)(e, m, embedding_size=3)

    with pytest.raises(ValueError, match=r"embeddings must be \[B, T, D\]"):
        hk.transform(f).init(jax.random.PRNGKey(0), embeddings[0], mask[0])


def test_layer_norm_parameters_have_tracrs_names():
    embeddings, mask = _inputs()
    key = jax.random.PRNGKey(1)
    plain = _shapes(jax.eval_shape(_plain(_config(True)).init, key, embeddings, mask))
    norms = {name: shape for name, shape in plain.items() if "layer_norm" in name[0]}
    want = {}
    for scope in ("transformer/layer_0", "transformer/layer_1", "transformer"):
        for suffix in (
            ("/layer_norm", "/layer_norm_1") if scope != "transformer" else ("/layer_norm",)
        ):
            for param in ("scale", "offset"):
                want[(scope + suffix, param)] = (D,)
    assert norms == want


def test_compressed_layer_norm_acts_on_the_compressed_stream():
    embeddings, mask = _inputs()
    key = jax.random.PRNGKey(1)
    shapes = _shapes(jax.eval_shape(_compressed(_config(True), 4).init, key, embeddings, mask))
    norms = {shape for name, shape in shapes.items() if "layer_norm" in name[0]}
    assert norms == {(4,)}
    assert shapes[("transformer", "w_emb")] == (4, D)
