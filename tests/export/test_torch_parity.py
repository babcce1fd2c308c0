"""Parity: the torch module and the TransformerLens model compute what `model.apply` does.

For every library program, on every input up to MAX_SEQ_LEN (padded into one
batch, PAD masked), both torch models decode exactly as the JAX model and
their residual streams after every sublayer match it within 1e-5. In
bfloat16 they decode the RASP evaluator's values wherever the certificate
(`certificate.certify(..., dtype=bfloat16)`) says bfloat16 is exact.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformer_lens")

from tracr.compiler import certificate, compiling, equivalence  # noqa: E402
from tracr.compiler.library_cases import CASES_BY_NAME, LIBRARY_CASES  # noqa: E402
from tracr.export import to_torch_module, to_transformer_lens_model  # noqa: E402
from tracr.rasp import causal_eval, rasp  # noqa: E402

MAX_SEQ_LEN = 3
ATOL = 1e-5


def _reference(model, inputs):
    """JAX: ids [B, T], decoded lists (as `apply`, None included) and residuals [B, T, D]
    per sublayer."""
    lens_ids = [[model.input_encoder.bos_token, *x] for x in inputs]
    ids = np.full((len(inputs), MAX_SEQ_LEN + 1), model.spec.input.pad_id, dtype=np.int64)
    for i, x in enumerate(lens_ids):
        ids[i, : len(x)] = model.input_encoder.encode(x)
    with jax.disable_jit():  # one eager call: cheaper than compiling each model
        out = model.forward(model.params, jnp.asarray(ids, dtype=jnp.int32))
    decoded = model.apply_batch(lens_ids)  # as `apply`: None where no output is active
    residuals = [np.asarray(r) for r in out.transformer_output.residuals]
    return lens_ids, ids, decoded, residuals


@functools.lru_cache(maxsize=None)
def _compile(case, program=None):
    program = case.program(MAX_SEQ_LEN) if program is None else program
    return compiling.compile_rasp_to_model(
        program, set(case.vocab), MAX_SEQ_LEN, causal=case.supports_causal
    )


def _assert_residuals_match(ours, theirs, real):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        err = float(np.abs(a[real] - b[real]).max())
        assert err <= ATOL, f"sublayer {i}: residual differs by {err}"


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=lambda c: c.name)
def test_torch_module_and_transformer_lens_match_apply(case):
    model = _compile(case)
    inputs = list(equivalence.all_inputs(case.vocab, MAX_SEQ_LEN))
    tokens, ids, decoded, residuals = _reference(model, inputs)
    real = ids != model.spec.input.pad_id

    module = to_torch_module(model)
    assert module.decode_batch(tokens) == decoded
    got = []
    with torch.no_grad():
        module(torch.as_tensor(ids), residuals=got)
    _assert_residuals_match(residuals, [r.numpy() for r in got], real)

    lens = to_transformer_lens_model(model)
    assert lens.decode_batch(tokens) == decoded
    mask = torch.as_tensor(real).long()
    with torch.no_grad():
        _, cache = lens.model.run_with_cache(torch.as_tensor(ids), attention_mask=mask)
    theirs = []
    for layer in range(len(module.layers)):
        theirs.append(cache[f"blocks.{layer}.hook_resid_mid"].numpy())
        theirs.append(cache[f"blocks.{layer}.hook_resid_post"].numpy())
    _assert_residuals_match(residuals, theirs, real)


def test_positions_without_an_output_decode_as_none_in_both_torch_models():
    """shift_by has no value at its first positions: apply gives None, so must torch."""
    case = CASES_BY_NAME["shift_by"]
    model = _compile(case)
    tokens = [[model.input_encoder.bos_token, *x] for x in case.vocab]
    want = [model.apply(x).decoded for x in tokens]
    assert all(w[1] is None for w in want)
    assert to_torch_module(model).decode_batch(tokens) == want
    assert to_transformer_lens_model(model).decode_batch(tokens) == want


def test_transformer_lens_model_config_comes_from_the_spec():
    case = CASES_BY_NAME["frac_prevs"]
    model = _compile(case)
    cfg = to_transformer_lens_model(model).model.cfg
    spec = model.spec
    assert cfg.normalization_type is None
    assert cfg.act_fn == spec.activation
    assert cfg.attention_dir == ("causal" if spec.causal else "bidirectional")
    assert cfg.d_vocab_out == spec.output.width == 1  # numerical: one logit, read as the value
    assert (cfg.n_heads, cfg.d_head, cfg.d_mlp) == (
        spec.num_heads,
        spec.key_size,
        spec.mlp_hidden_size,
    )
    assert cfg.use_attn_result and cfg.use_split_qkv_input and cfg.use_hook_mlp_in


def test_a_patched_head_changes_the_output():
    """Zeroing the head that computes the output (read from the spec) changes the decode."""
    case = CASES_BY_NAME["reverse"]
    model = _compile(case)
    lens = to_transformer_lens_model(model)
    spec = model.spec
    out_dims = set(spec.output.reads)
    head = next(h for h in spec.heads() if out_dims & set(h.writes))
    tokens = [model.input_encoder.bos_token, "a", "b", "c"]
    ids = lens.token_ids(tokens)

    def zero_head(z, hook):
        z[:, :, head.head] = 0.0
        return z

    with torch.no_grad():
        clean = lens.model(ids)
        patched = lens.model.run_with_hooks(
            ids, fwd_hooks=[(f"blocks.{head.layer}.attn.hook_z", zero_head)]
        )
    assert lens.codec.decode(clean[0]) == model.apply(tokens).decoded
    assert lens.codec.decode(patched[0]) != lens.codec.decode(clean[0])
    assert not torch.allclose(clean, patched)


def test_per_head_hooks_fire_and_patching_one_head_via_hook_result_changes_the_output():
    """hook_result and hook_{q,k,v}_input fire on the 4.x bridge, as on HookedTransformer."""
    case = CASES_BY_NAME["reverse"]
    model = _compile(case)
    lens = to_transformer_lens_model(model)
    spec = model.spec
    head = next(h for h in spec.heads() if set(spec.output.reads) & set(h.writes))
    tokens = [model.input_encoder.bos_token, "a", "b", "c"]
    ids = lens.token_ids(tokens)
    block = f"blocks.{head.layer}"
    shape = (1, len(tokens), spec.num_heads, spec.d_model)
    with torch.no_grad():
        clean = lens.model(ids)
        logits, cache = lens.model.run_with_cache(ids)
    assert torch.equal(logits, clean)
    names = ["attn.hook_result"] + [f"{p}hook_{x}_input" for p in ("attn.", "") for x in "qkv"]
    for name in names:  # blocks.{l}.hook_q_input is the HookedTransformer (and ACDC) name
        assert tuple(cache[f"{block}.{name}"].shape) == shape, name
    b_o = lens.model.blocks[head.layer].attn.o.original_component.bias
    summed = cache[f"{block}.attn.hook_result"].sum(dim=-2) + b_o
    torch.testing.assert_close(summed, cache[f"{block}.hook_attn_out"], atol=ATOL, rtol=0)
    torch.testing.assert_close(
        cache[f"{block}.attn.hook_q_input"][:, :, head.head],
        cache[f"{block}.hook_resid_pre"],
        atol=0,
        rtol=0,
    )

    def zero(name):
        def hook(x, hook):
            x[:, :, head.head] = 0.0
            return x

        return (f"{block}.{name}", hook)

    with torch.no_grad():
        untouched = lens.model.run_with_hooks(
            ids, fwd_hooks=[(f"{block}.attn.hook_result", lambda x, hook: x)]
        )
        via_result = lens.model.run_with_hooks(ids, fwd_hooks=[zero("attn.hook_result")])
        via_z = lens.model.run_with_hooks(ids, fwd_hooks=[zero("attn.hook_z")])
        via_v_input = lens.model.run_with_hooks(ids, fwd_hooks=[zero("attn.hook_v_input")])
    assert torch.equal(untouched, clean)  # an unedited hook leaves the output bit for bit
    assert lens.codec.decode(via_result[0]) != lens.codec.decode(clean[0])
    torch.testing.assert_close(via_result, via_z, atol=ATOL, rtol=0)  # z_h = 0 => result_h = 0
    assert not torch.allclose(via_v_input, clean)


@pytest.mark.parametrize(
    "name", ["reverse", "sort_unique", "pair_balance", "count", "detect_pattern"]
)
def test_bfloat16_is_exact_where_the_certificate_says_so(name):
    case = CASES_BY_NAME[name]
    program = case.program(MAX_SEQ_LEN)  # certify reads the compiled program's labels
    model = _compile(case, program)
    cert = certificate.certify(model, program, dtype=jnp.bfloat16, intermediates=False)
    assert cert.exhaustive and cert.exact, cert.summary()
    inputs = list(equivalence.all_inputs(case.vocab, MAX_SEQ_LEN))
    batch = [[model.input_encoder.bos_token, *x] for x in inputs]
    evaluate = causal_eval.evaluate if case.supports_causal else rasp.evaluate
    numerical = not model.spec.output.categorical
    for decoded in (
        to_torch_module(model, dtype=torch.bfloat16).decode_batch(batch),
        to_transformer_lens_model(model, dtype=torch.bfloat16).decode_batch(batch),
    ):
        for x, row in zip(inputs, decoded):
            for expected, value in zip(evaluate(program, list(x)), row[1:]):
                if expected is not None:  # the positions the certificate checks
                    assert equivalence._values_equal(expected, value, numerical), (x, row)


def test_model_without_spec_is_refused():
    case = CASES_BY_NAME["hist"]
    model = compiling.compile_rasp_to_model(case.program(2), set(case.vocab), 2)
    model.spec = None
    with pytest.raises(ValueError, match="model.spec is None"):
        to_torch_module(model)
    with pytest.raises(ValueError, match="model.spec is None"):
        to_transformer_lens_model(model)
