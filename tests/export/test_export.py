"""TransformerLens export: names, shapes, and an independent numpy forward pass."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tracr.compiler import compiling, equivalence
from tracr.compiler.library_cases import CASES_BY_NAME
from tracr.export import to_transformer_lens
from tracr.rasp import causal_eval, rasp

MAX_SEQ_LEN = 4


def _numpy_forward(state, cfg, tokens, pad_token_id):
    """TransformerLens' HookedTransformer forward (no layer norm), in numpy.

    Args:
      state, cfg: the exported state dict and config.
      tokens: [B, T] token ids.
      pad_token_id: keys holding this token are masked out of attention.

    Returns:
      (logits [B, T, d_vocab_out], final residual [B, T, d_model], attention
      scores before masking, one [B, H, T, T] per layer, and the mask).
    """
    b, t = tokens.shape
    x = state["embed.W_E"][tokens] + state["pos_embed.W_pos"][:t][None]
    allowed = np.broadcast_to((tokens != pad_token_id)[:, None, None, :], (b, 1, t, t))
    if cfg["attention_dir"] == "causal":
        allowed = allowed & np.tril(np.ones((t, t), dtype=bool))
    all_scores = []
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        q = np.einsum("btd,hdk->bhtk", x, state[p + "attn.W_Q"]) + state[p + "attn.b_Q"][:, None]
        k = np.einsum("btd,hdk->bhtk", x, state[p + "attn.W_K"]) + state[p + "attn.b_K"][:, None]
        v = np.einsum("btd,hdk->bhtk", x, state[p + "attn.W_V"]) + state[p + "attn.b_V"][:, None]
        scores = np.einsum("bhtk,bhsk->bhts", q, k) / cfg["attn_scale"]
        all_scores.append(scores)
        scores = np.where(allowed, scores, -np.inf)
        pattern = np.exp(scores - scores.max(axis=-1, keepdims=True))
        pattern = pattern / pattern.sum(axis=-1, keepdims=True)
        z = np.einsum("bhts,bhsk->bhtk", pattern, v)
        x = x + np.einsum("bhtk,hkd->btd", z, state[p + "attn.W_O"]) + state[p + "attn.b_O"]
        hidden = np.maximum(x @ state[p + "mlp.W_in"] + state[p + "mlp.b_in"], 0.0)
        x = x + hidden @ state[p + "mlp.W_out"] + state[p + "mlp.b_out"]
    return x @ state["unembed.W_U"] + state["unembed.b_U"], x, all_scores, allowed


def _padded_batch(model, inputs):
    enc = model.input_encoder
    return np.array(
        [
            enc.encode([enc.bos_token, *x]) + [enc.pad_encoding] * (MAX_SEQ_LEN - len(x))
            for x in inputs
        ],
        dtype=np.int32,
    )


@pytest.mark.parametrize(
    "name, causal",
    [
        ("reverse", False),
        ("sort_unique", False),
        ("hist", False),
        ("frac_prevs", True),
        ("pair_balance", False),
        ("shuffle_dyck", True),
        ("sort_freq", False),
    ],
)
def test_numpy_forward_over_exported_weights_matches_model(name, causal):
    case = CASES_BY_NAME[name]
    program = case.program(MAX_SEQ_LEN)
    model = compiling.compile_rasp_to_model(program, set(case.vocab), MAX_SEQ_LEN, causal=causal)
    exported = to_transformer_lens(model)
    inputs = equivalence.sample_inputs(case.vocab, MAX_SEQ_LEN, num=40, seed=1)
    tokens = _padded_batch(model, inputs)  # ragged inputs padded with PAD
    with jax.disable_jit():
        out = model.forward(model.params, jnp.asarray(tokens))
    logits, residual, scores, allowed = _numpy_forward(
        {k: v.astype(np.float64) for k, v in exported.state_dict.items()},
        exported.config,
        tokens,
        exported.pad_token_id,
    )
    real = tokens != exported.pad_token_id
    # Same attention scores wherever attention is allowed: no scaling mismatch.
    allowed = np.broadcast_to(allowed, scores[0].shape)
    for ours, theirs in zip(out.transformer_output.attn_logits, scores):
        np.testing.assert_allclose(np.asarray(ours)[allowed], theirs[allowed], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(
        residual[real], np.asarray(out.transformer_output.output)[real], atol=1e-4
    )
    unembedded = np.asarray(out.unembedded_output)
    if exported.output_values is None:  # numerical: the value is logit 0
        np.testing.assert_allclose(logits[..., 0][real], unembedded[real], atol=1e-4)
        got = logits[..., 0]
    else:
        np.testing.assert_array_equal(logits.argmax(-1)[real], unembedded[real])
        got = np.array(exported.output_values, dtype=object)[logits.argmax(-1)]
    # And the numpy forward computes the program itself.
    evaluate = causal_eval.evaluate if causal else rasp.evaluate
    numerical = exported.output_values is None
    for x, row in zip(inputs, got):
        for expected, value in zip(evaluate(program, list(x)), row[1:]):
            if expected is not None:
                assert equivalence._values_equal(expected, value, numerical), (x, row)


def test_names_shapes_and_config():
    case = CASES_BY_NAME["sort_unique"]
    program = case.program(MAX_SEQ_LEN)
    model = compiling.compile_rasp_to_model(program, set(case.vocab), 4)
    exported = to_transformer_lens(model)
    cfg = exported.config
    d, h, k, m = cfg["d_model"], cfg["n_heads"], cfg["d_head"], cfg["d_mlp"]
    assert d == len(model.residual_labels) == len(exported.residual_labels)
    assert (h, k, m) == (
        model.model_config.num_heads,
        model.model_config.key_size,
        model.model_config.mlp_hidden_size,
    )
    assert cfg["d_vocab"] == 5  # 1, 2, 3, BOS, PAD
    assert cfg["d_vocab_out"] == 3
    assert cfg["n_ctx"] == MAX_SEQ_LEN + 1
    assert cfg["act_fn"] == "relu" and cfg["normalization_type"] is None
    assert cfg["attention_dir"] == "bidirectional"
    # Both models divide scores by sqrt(d_head): no weight rescaling needed.
    assert cfg["use_attn_scale"] and cfg["attn_scale"] == pytest.approx(math.sqrt(k))
    want = {
        "embed.W_E": (5, d),
        "pos_embed.W_pos": (MAX_SEQ_LEN + 1, d),
        "unembed.W_U": (d, 3),
        "unembed.b_U": (3,),
    }
    for i in range(cfg["n_layers"]):
        for x in "QKV":
            want[f"blocks.{i}.attn.W_{x}"] = (h, d, k)
            want[f"blocks.{i}.attn.b_{x}"] = (h, k)
        want[f"blocks.{i}.attn.W_O"] = (h, k, d)
        want[f"blocks.{i}.attn.b_O"] = (d,)
        want[f"blocks.{i}.mlp.W_in"] = (d, m)
        want[f"blocks.{i}.mlp.b_in"] = (m,)
        want[f"blocks.{i}.mlp.W_out"] = (m, d)
        want[f"blocks.{i}.mlp.b_out"] = (d,)
    assert {name: a.shape for name, a in exported.state_dict.items()} == want
    assert all(a.dtype == np.float32 for a in exported.state_dict.values())
    assert exported.tokens[exported.bos_token_id] == "compiler_bos"
    assert exported.tokens[exported.pad_token_id] == "compiler_pad"
    assert exported.output_values == (1, 2, 3)
    # W_U selects the output dimensions <sort's label>:1, :2, :3.
    rows = exported.state_dict["unembed.W_U"].argmax(0)
    assert [exported.residual_labels[r] for r in rows] == [
        f"{program.label}:{v}" for v in (1, 2, 3)
    ]
    # W_Q of head 0 in layer 0 is our query weight, reshaped per head.
    ours = np.asarray(model.params["transformer/layer_0/attn/query"]["w"]).reshape(d, h, k)
    np.testing.assert_array_equal(exported.state_dict["blocks.0.attn.W_Q"][0], ours[:, 0, :])


def test_causal_model_exports_causal_attention():
    case = CASES_BY_NAME["frac_prevs"]
    model = compiling.compile_rasp_to_model(case.program(3), set(case.vocab), 3, causal=True)
    assert to_transformer_lens(model).config["attention_dir"] == "causal"
    assert to_transformer_lens(model).output_values is None


def test_model_without_spec_is_refused():
    case = CASES_BY_NAME["hist"]
    model = compiling.compile_rasp_to_model(case.program(3), set(case.vocab), 3)
    model.spec = None
    with pytest.raises(ValueError, match="model.spec is None"):
        to_transformer_lens(model)


def test_config_turns_on_the_hooks_circuit_tools_use():
    case = CASES_BY_NAME["hist"]
    model = compiling.compile_rasp_to_model(case.program(3), set(case.vocab), 3)
    cfg = to_transformer_lens(model).config
    assert cfg["use_attn_result"] and cfg["use_split_qkv_input"] and cfg["use_hook_mlp_in"]
    assert cfg["act_fn"] == model.spec.activation
