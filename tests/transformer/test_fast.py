"""The lean forward pass (tracr.transformer.fast) equals the Haiku model.

Every library program is compiled at a small max_seq_len and run on sampled
inputs by both paths. Categorical outputs must be the same ids at every
position where the program has a value (elsewhere both decode float noise of
order 1e-21); numerical outputs the same values to float32 rounding (the Haiku
model itself moves by one ulp between batch shapes).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tracr.compiler import compiling
from tracr.compiler.library_cases import CASES_BY_NAME
from tracr.rasp import causal_eval, rasp
from tracr.transformer import fast

MAX_SEQ_LEN = 5
NUM_INPUTS = 64


def _compile(program, vocab, causal=False, max_seq_len=MAX_SEQ_LEN):
    return compiling.compile_rasp_to_model(program, set(vocab), max_seq_len, causal=causal)


def _ids(model, vocab, length, num=NUM_INPUTS, seed=0):
    """[num, length + 1] encoded inputs that start with BOS."""
    rng = np.random.default_rng(seed)
    tokens = sorted(vocab, key=repr)
    encode = model.input_encoder.encoding_map
    ids = np.array([[encode[t] for t in tokens]], dtype=np.int32)[0]
    body = ids[rng.integers(0, len(tokens), size=(num, length))]
    bos = np.full((num, 1), model.input_encoder.bos_encoding, dtype=np.int32)
    return np.concatenate([bos, body], axis=1)


def _defined(model, program, ids, causal=False):
    """[B, T] bool: where the program has a value (BOS position excluded)."""
    evaluate = causal_eval.evaluate if causal else rasp.evaluate
    out = np.zeros(ids.shape, dtype=bool)
    for b, row in enumerate(ids):
        values = evaluate(program, model.input_encoder.decode(row.tolist())[1:])
        out[b, 1:] = [v is not None for v in values]
    return out


def _assert_same_outputs(model, program, lean, full, ids, causal=False):
    lean, full = np.asarray(lean), np.asarray(full)
    assert lean.shape == full.shape
    if rasp.is_numerical(program):
        np.testing.assert_allclose(lean, full, rtol=1e-6, atol=1e-6)
    else:
        defined = _defined(model, program, ids, causal)
        assert defined.any()
        np.testing.assert_array_equal(lean[defined], full[defined])


# Every library program runs through the lean path in
# tests/compiler/test_apply_batch.py; these cover each kind of output here.
@pytest.mark.parametrize("name", ["reverse", "sort_unique", "frac_prevs"])
def test_lean_decode_equals_haiku_model(name):
    case = CASES_BY_NAME[name]
    program = case.program(MAX_SEQ_LEN)
    model = _compile(program, case.vocab)
    weights = model.lean_weights()
    ids = _ids(model, case.vocab, MAX_SEQ_LEN)
    full = model.forward(model.params, jnp.asarray(ids)).unembedded_output
    lean = jax.jit(fast.decode)(weights, jnp.asarray(ids))
    _assert_same_outputs(model, program, lean, full, ids)
    # The lean model never carries more than the full one.
    assert weights.residual_width <= len(model.residual_labels)
    assert len(weights.sublayers) <= 2 * model.model_config.num_layers


@pytest.mark.parametrize("name", ["pair_balance"])
def test_causal_lean_decode_equals_haiku_model(name):
    case = CASES_BY_NAME[name]
    program = case.program(MAX_SEQ_LEN)
    model = _compile(program, case.vocab, causal=True)
    weights = model.lean_weights()
    assert weights.causal
    ids = _ids(model, case.vocab, MAX_SEQ_LEN)
    full = model.forward(model.params, jnp.asarray(ids)).unembedded_output
    lean = jax.jit(fast.decode)(weights, jnp.asarray(ids))
    _assert_same_outputs(model, program, lean, full, ids, causal=True)


def _varied_programs():
    tok, idx = rasp.tokens, rasp.indices
    num = rasp.numerical(rasp.Map(lambda x: x * 2, tok)).named("num")
    yield "numerical_mlp", rasp.numerical(rasp.Map(lambda x: x * x + 1, num))
    yield "numerical_to_categorical", rasp.categorical(rasp.Map(lambda x: x > 3, num))
    num2 = rasp.numerical(rasp.Map(lambda x: x - 1, tok)).named("num2")
    yield "linear_sequence_map", rasp.numerical(rasp.LinearSequenceMap(num, num2, 2.0, -1.0))
    yield "full", rasp.SequenceMap(lambda x, y: x + y, tok, rasp.Full(5))
    select = rasp.Select(tok, idx, rasp.Comparison.LEQ)
    yield "numerical_aggregate", rasp.numerical(rasp.Aggregate(select, num, default=0))


@pytest.mark.parametrize("name,program", list(_varied_programs()), ids=lambda x: str(x)[:30])
def test_lean_decode_on_varied_programs(name, program):
    vocab = {1, 2, 3}
    model = _compile(program, vocab, max_seq_len=4)
    ids = _ids(model, vocab, 4)
    full = model.forward(model.params, jnp.asarray(ids)).unembedded_output
    lean = jax.jit(fast.decode)(model.lean_weights(), jnp.asarray(ids))
    _assert_same_outputs(model, program, lean, full, ids)


def test_keep_residual_returns_the_full_final_residual():
    case = CASES_BY_NAME["sort_unique"]
    model = _compile(case.program(MAX_SEQ_LEN), case.vocab)
    weights = model.lean_weights(keep_residual=True)
    assert not weights.segmented
    assert weights.residual_index == tuple(range(len(model.residual_labels)))
    ids = jnp.asarray(_ids(model, case.vocab, MAX_SEQ_LEN))
    full = model.forward(model.params, ids).transformer_output.output
    np.testing.assert_allclose(jax.jit(fast.residual)(weights, ids), full, rtol=1e-6, atol=1e-6)


def test_lean_model_drops_zero_sublayers_heads_and_directions():
    case = CASES_BY_NAME["reverse"]
    model = _compile(case.program(10), case.vocab, max_seq_len=10)
    weights = model.lean_weights()
    config = model.model_config
    # reverse has 4 layers of attention + MLP; half of those 8 sublayers are empty.
    assert config.num_layers == 4 and len(weights.sublayers) == 5
    widths = [
        (s.key_sizes, s.value_sizes) if isinstance(s, fast.LeanAttention) else s.w_1.width
        for s in weights.sublayers
    ]
    # Each head at its own width, each MLP at its own live hidden units.
    assert widths == [((4,), (1,)), 19, 55, 10, ((11,), (3,))]
    # Factors that only select run as gathers: all of the last head's Q, K, V.
    last = weights.sublayers[-1]
    assert last.w_qkv is None and last.gathered.width == 11 + 11 + 3
    assert config.key_size == 11 and config.mlp_hidden_size == 100
    # Residual directions nothing reads are dropped; reverse has none (basis
    # inference gives it only values that occur), nary_sequencemap has some.
    assert weights.residual_width == len(model.residual_labels)
    nary = CASES_BY_NAME["nary_sequencemap"]
    nary_model = _compile(nary.program(10), nary.vocab, max_seq_len=10)
    assert nary_model.lean_weights().residual_width < len(nary_model.residual_labels)


def test_lean_path_handles_padding_like_the_haiku_model():
    case = CASES_BY_NAME["hist"]
    program = case.program(MAX_SEQ_LEN)
    model = _compile(program, case.vocab)
    weights = model.lean_weights()
    short = _ids(model, case.vocab, 2)
    padded = np.full((len(short), MAX_SEQ_LEN + 1), model.input_encoder.pad_encoding, np.int32)
    padded[:, :3] = short
    got = np.asarray(jax.jit(fast.decode)(weights, jnp.asarray(padded)))[:, :3]
    want = np.asarray(model.forward(model.params, jnp.asarray(short)).unembedded_output)
    np.testing.assert_array_equal(got, want)


def test_pure_function_under_jit_vmap_and_grad():
    case = CASES_BY_NAME["frac_prevs"]
    model = _compile(case.program(MAX_SEQ_LEN), case.vocab)
    weights = model.lean_weights()
    ids = jnp.asarray(_ids(model, case.vocab, MAX_SEQ_LEN, num=8))
    eager = fast.decode(weights, ids)
    np.testing.assert_array_equal(jax.jit(fast.decode)(weights, ids), eager)
    vmapped = jax.jit(jax.vmap(fast.decode, in_axes=(None, 0)))(weights, ids)
    np.testing.assert_array_equal(vmapped, eager)

    def loss(w):
        return jnp.sum(fast.scores(w, ids) ** 2)

    grads = jax.jit(jax.grad(loss))(weights)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(weights)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)

    # Gradients with respect to the input embeddings flow too.
    x = fast.embed(weights, ids)
    mask = fast.default_mask(weights, ids)
    g = jax.jit(jax.grad(lambda x: jnp.sum(fast.scores_from_embeddings(weights, x, mask))))(x)
    assert g.shape == x.shape and float(jnp.max(jnp.abs(g))) > 0


def test_bfloat16_weights_keep_a_categorical_program_exact():
    case = CASES_BY_NAME["hist"]
    program = case.program(MAX_SEQ_LEN)
    model = _compile(program, case.vocab)
    weights = model.lean_weights(dtype=jnp.bfloat16)
    assert weights.embedding.dtype == jnp.bfloat16
    ids = _ids(model, case.vocab, MAX_SEQ_LEN)
    full = model.forward(model.params, jnp.asarray(ids)).unembedded_output
    lean = jax.jit(fast.decode)(weights, jnp.asarray(ids))
    _assert_same_outputs(model, program, lean, full, ids)


def test_errors_name_the_problem():
    case = CASES_BY_NAME["hist"]
    model = _compile(case.program(MAX_SEQ_LEN), case.vocab)
    weights = model.lean_weights()
    with pytest.raises(ValueError, match="at most 6"):
        fast.decode(weights, jnp.zeros((1, 7), jnp.int32))
    with pytest.raises(ValueError, match="unembedding must be"):
        fast.lean_weights_from_params(
            model.params, model.model_config, np.zeros((3, 1)), categorical_output=True
        )
    with pytest.raises(ValueError, match="params has no"):
        fast.lean_weights_from_params(
            {}, model.model_config, model.unembed_matrix, categorical_output=True
        )


def test_lean_weights_are_a_pytree_that_devices_accept():
    case = CASES_BY_NAME["sort_unique"]
    model = _compile(case.program(MAX_SEQ_LEN), case.vocab)
    weights = model.lean_weights()
    moved = jax.device_put(weights, jax.devices()[0])
    assert isinstance(moved, fast.LeanWeights)
    assert moved.residual_index == weights.residual_index
    assert "attn" in weights.describe() and "mlp" in weights.describe()
