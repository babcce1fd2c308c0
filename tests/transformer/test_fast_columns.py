"""The column-wise parts of the lean forward pass give the same outputs.

`tracr.transformer.fast` runs small attention logits as unrolled sums, sparse
and gathered MLPs one column at a time, and decodes categorical outputs with a
fused comparison chain. These tests check each against its plain form (dense
matmuls, `einsum`, `inputs.categorical_ids`), and check every library program
on every input of a small domain against the RASP evaluator, with the sparse
forms on and off.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tracr.compiler import compiling
from tracr.compiler.library_cases import CASES_BY_NAME, LIBRARY_CASES
from tracr.rasp import rasp
from tracr.transformer import fast, inputs

MAX_SEQ_LEN = 4


@pytest.mark.parametrize("width", [1, 2, 3, 5, 11, 16, 17, 40])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_categorical_ids_equal_the_inputs_decoder(width, dtype):
    rng = np.random.default_rng(width)
    # Small integers and halves: many ties, values at and around the threshold;
    # infinities and negative zeros.
    scores = rng.integers(-2, 3, size=(64, 7, width)).astype(np.float32) / 2
    special = rng.random(scores.shape)
    scores[special < 0.02] = np.inf
    scores[(special >= 0.02) & (special < 0.04)] = -np.inf
    scores[(special >= 0.04) & (special < 0.06)] = -0.0
    x = jnp.asarray(scores, dtype=dtype)
    expected = np.asarray(inputs.categorical_ids(x))
    got = np.asarray(jax.jit(fast.categorical_ids)(x))
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int32


def test_a_nan_score_decodes_as_no_value():
    # (XLA's batched max does not always propagate NaN, so `inputs.categorical_ids`
    # may or may not give NO_VALUE there; compiled models never score NaN.)
    x = jnp.asarray([[np.nan, 1.0, 0.0], [1.0, np.nan, 0.0], [0.0, 2.0, np.nan], [1, 0, 0]])
    np.testing.assert_array_equal(np.asarray(fast.categorical_ids(x)), [-1, -1, -1, 0])


def test_categorical_ids_of_no_scores_are_no_value():
    got = fast.categorical_ids(jnp.zeros((3, 4, 0)))
    np.testing.assert_array_equal(np.asarray(got), np.full((3, 4), inputs.NO_VALUE))


def _sparse_matrix(rng, rows, cols, per_column):
    w = np.zeros((rows, cols), np.float32)
    for j in range(cols):
        r = rng.choice(rows, size=per_column, replace=False)
        w[r, j] = rng.choice([-3.0, -1.0, 0.5, 1.0, 2.0], size=per_column)
    return w


def test_sparse_projection_equals_the_dense_matmul_and_keeps_only_non_zeros():
    rng = np.random.default_rng(0)
    w = _sparse_matrix(rng, 30, 20, 3)
    p = fast.Projection.from_matrix(w, jnp.float32, sparse=True)
    assert p.sparse and not p.selects and p.w is None
    assert p.scale.shape == (np.count_nonzero(w),)
    assert [list(rows) for rows in p.index] == [list(np.flatnonzero(c)) for c in w.T]
    # Integer inputs: every sum is exact, so the column sums equal the matmul.
    x = jnp.asarray(rng.integers(-2, 3, size=(8, 5, 30)).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(p(x)), np.asarray(x @ w))
    # Without sparse=True, and for dense matrices, the matrix stays dense.
    assert fast.Projection.from_matrix(w, jnp.float32).w is not None
    dense = rng.normal(size=(30, 20)).astype(np.float32)
    assert fast.Projection.from_matrix(dense, jnp.float32, sparse=True).w is not None
    # Selections stay selections.
    sel = np.eye(30, dtype=np.float32)[:, [3, 1, 4]]
    assert fast.Projection.from_matrix(sel, jnp.float32, sparse=True).selects


def test_unrolled_logits_equal_the_einsum():
    rng = np.random.default_rng(1)
    for key_size in (1, 3, 11):
        q = rng.integers(-2, 3, size=(4, 6, key_size)).astype(np.float32)
        k = rng.integers(-2, 3, size=(4, 6, key_size)).astype(np.float32)
        columns = range(key_size)
        got = fast._logits([q[..., i] for i in columns], [k[..., i] for i in columns])
        np.testing.assert_array_equal(np.asarray(got), np.einsum("btk,bsk->bts", q, k))


def _compile(case, program=None):
    """The case compiled at MAX_SEQ_LEN (its own program unless one is given)."""
    program = case.program(MAX_SEQ_LEN) if program is None else program
    return compiling.compile_rasp_to_model(
        program, set(case.vocab), MAX_SEQ_LEN, compiler_bos="BOS", compiler_pad="PAD"
    )


def _dense_weights(model, monkeypatch):
    """The lean weights with no sparse matrices (the plain matmul forms)."""
    with monkeypatch.context() as m:
        m.setattr(fast, "SPARSE_MAX_TERMS", 0)
        weights = model.lean_weights()
    assert not any(
        p.sparse
        for s in weights.sublayers
        for p in ((s.w_1, s.w_2) if isinstance(s, fast.LeanMLP) else (s.gathered,))
    )
    return weights


def _all_inputs(model, case, max_len=MAX_SEQ_LEN):
    """Every input of the domain (all lengths up to max_len), each starting with BOS."""
    tokens = inputs.domain_tokens(model.spec)
    return [["BOS", *seq] for seq in inputs.sequences(tokens, max_len)]


def _ids(model, sequences):
    return jnp.asarray(model.codec().encode(sequences).ids)


def _uses_columns(weights):
    return any(
        isinstance(s, fast.LeanMLP) and s.w_1.unrolls and s.w_2.unrolls for s in weights.sublayers
    )


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=lambda c: c.name)
def test_every_library_program_on_every_input_equals_the_evaluator(case, monkeypatch):
    program = case.program(MAX_SEQ_LEN)
    model = _compile(case, program)
    sequences = _all_inputs(model, case)
    ids = _ids(model, sequences)
    new = np.asarray(jax.jit(fast.outputs)(model.lean_weights(), ids))
    old = np.asarray(jax.jit(fast.outputs)(_dense_weights(model, monkeypatch), ids))
    real = np.asarray(ids) != model.spec.input.pad_id
    real[:, 0] = False  # BOS
    if rasp.is_numerical(program):
        np.testing.assert_allclose(new[real], old[real], rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(new[real], old[real])
    # And the decoded outputs (apply_batch runs fast.outputs) are the evaluator's.
    compared = 0
    for seq, out in zip(sequences, model.apply_batch(sequences)):
        assert len(out) == len(seq) and out[0] == "BOS"
        for e, got in zip(rasp.evaluate(program, seq[1:]), out[1:]):
            if rasp.is_numerical(program):
                if e is not None:
                    assert abs(got - e) <= 1e-5 * max(1.0, abs(e)), (seq, out)
                    compared += 1
            else:
                assert got == e, (seq, out)
                compared += 1
    assert compared


@pytest.mark.parametrize("name", ["sort_unique", "reverse"])
def test_gradients_through_sparse_parts_equal_the_dense_ones(name, monkeypatch):
    case = CASES_BY_NAME[name]
    model = _compile(case)
    sparse, dense = model.lean_weights(), _dense_weights(model, monkeypatch)
    assert _uses_columns(sparse)
    ids = _ids(model, _all_inputs(model, case)[-50:])
    mask = fast.default_mask(sparse, ids)

    def loss(w, x):
        return jnp.sum(jnp.tanh(fast.scores_from_embeddings(w, x, mask)))

    x = fast.embed(sparse, ids)
    gw_s, gx_s = jax.jit(jax.grad(loss, argnums=(0, 1)))(sparse, x)
    gw_d, gx_d = jax.jit(jax.grad(loss, argnums=(0, 1)))(dense, x)
    np.testing.assert_allclose(np.asarray(gx_s), np.asarray(gx_d), rtol=1e-5, atol=1e-5)
    checked = 0
    for s, g_s, g_d in zip(sparse.sublayers, gw_s.sublayers, gw_d.sublayers):
        if not isinstance(s, fast.LeanMLP):
            continue
        for p, gp_s, gp_d in ((s.w_1, g_s.w_1, g_d.w_1), (s.w_2, g_s.w_2, g_d.w_2)):
            if not p.sparse:
                continue
            rows = [r for rows in p.index for r in rows]
            cols = [j for j, rows in enumerate(p.index) for _ in rows]
            expected = np.asarray(gp_d.w)[rows, cols]
            np.testing.assert_allclose(np.asarray(gp_s.scale), expected, rtol=1e-5, atol=1e-6)
            checked += 1
    assert checked


def test_bfloat16_sparse_weights_keep_outputs():
    case = CASES_BY_NAME["sort_unique"]
    model = _compile(case)
    ids = _ids(model, _all_inputs(model, case))
    f32 = np.asarray(fast.outputs(model.lean_weights(), ids))
    bf16 = np.asarray(fast.outputs(model.lean_weights(dtype=jnp.bfloat16), ids))
    real = np.asarray(ids) != model.spec.input.pad_id
    real[:, 0] = False
    np.testing.assert_array_equal(bf16[real], f32[real])


def test_describe_names_the_sparse_matrices():
    case = CASES_BY_NAME["reverse"]
    model = _compile(case)
    weights = model.lean_weights()
    assert "sparse=w_1(" in weights.describe()
    # Replacing a leaf keeps the structure: the sparse non-zeros are parameters.
    mlp = next(s for s in weights.sublayers if isinstance(s, fast.LeanMLP) and s.w_1.sparse)
    moved = dataclasses.replace(mlp.w_1, scale=mlp.w_1.scale * 2)
    assert jax.tree_util.tree_structure(moved) == jax.tree_util.tree_structure(mlp.w_1)


@pytest.mark.parametrize("name", ["reverse", "sort_unique", "shuffle_dyck", "frac_prevs"])
def test_past_the_unroll_limit_wide_matrices_run_whole_with_the_same_outputs(name, monkeypatch):
    """Sublayers wider than `UNROLL_MAX_COLUMNS` run as one gather or matmul."""
    case = CASES_BY_NAME[name]
    model = _compile(case)
    ids = _ids(model, _all_inputs(model, case))
    unrolled = model.lean_weights()
    with monkeypatch.context() as m:
        m.setattr(fast, "UNROLL_MAX_COLUMNS", 2)
        whole = model.lean_weights()
        got = np.asarray(jax.jit(fast.outputs)(whole, ids))
    assert _uses_columns(unrolled) or name == "frac_prevs"
    assert not any(p.sparse and p.width > 2 for s in whole.sublayers for p in _projections(s))
    want = np.asarray(jax.jit(fast.outputs)(unrolled, ids))
    real = np.asarray(ids) != model.spec.input.pad_id
    real[:, 0] = False
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got[real], want[real], rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(got[real], want[real])


def _projections(sublayer):
    if isinstance(sublayer, fast.LeanMLP):
        return (sublayer.w_1, sublayer.w_2)
    return (sublayer.gathered, sublayer.w_out)


@pytest.mark.parametrize("name", ["length", "reverse", "sort"])
def test_the_compiled_forward_stays_small_at_max_seq_len_100(name):
    """Column-by-column code is capped: at n=100 these programs lowered to 3,000-10,000
    StableHLO ops (seconds of XLA compile per call shape) before the cap, and to
    under 300 with it."""
    case = CASES_BY_NAME[name]
    model = compiling.compile_rasp_to_model(case.program(100), set(case.vocab), 100)
    ids = jnp.zeros((4, 101), jnp.int32)
    text = jax.jit(fast.outputs).lower(model.lean_weights(), ids).as_text()
    assert text.count(" = stablehlo.") < 1000
