"""nnsight traces both torch exports: it reads sublayer outputs and patches a head."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nnsight = pytest.importorskip("nnsight")

from tracr.compiler import compiling  # noqa: E402
from tracr.compiler.library_cases import CASES_BY_NAME  # noqa: E402
from tracr.export import to_torch_module, to_transformer_lens_model  # noqa: E402


@pytest.fixture(scope="module")
def compiled():
    case = CASES_BY_NAME["reverse"]
    model = compiling.compile_rasp_to_model(case.program(3), set(case.vocab), 3)
    tokens = [model.input_encoder.bos_token, "a", "b", "c"]
    with jax.disable_jit():
        out = model.apply(tokens)
    return model, tokens, out


def _output_head(model):
    """The head that writes the program's output directions (from the spec)."""
    reads = set(model.spec.output.reads)
    return next(h for h in model.spec.heads() if reads & set(h.writes))


def test_nnsight_traces_the_torch_module(compiled):
    model, tokens, out = compiled
    module = to_torch_module(model)
    traced = nnsight.NNsight(module)
    ids = torch.as_tensor([module.codec.encode(tokens)])
    head = _output_head(model)
    attn = []
    with traced.trace(ids):  # modules in forward order
        for layer in traced.layers:
            attn.append(layer.attn.output.save())
        logits = traced.output.save()
    for i, saved in enumerate(attn):  # layer_outputs[2i] is attention sublayer i
        np.testing.assert_allclose(
            saved[0].detach().numpy(), np.asarray(out.layer_outputs[2 * i])[0], atol=1e-5
        )
    assert module.codec.decode(logits[0]) == out.decoded
    with traced.trace(ids):
        traced.layers[head.layer].attn.hook_z.output[:, :, head.head] = 0
        patched = traced.output.save()
    assert module.codec.decode(patched[0]) != out.decoded


def test_nnsight_traces_the_transformer_lens_model(compiled):
    model, tokens, out = compiled
    lens = to_transformer_lens_model(model)
    traced = nnsight.NNsight(lens.model)
    ids = lens.token_ids(tokens)
    head = _output_head(model)
    with traced.trace(ids):
        attn_out = traced.blocks[head.layer].hook_attn_out.output.save()
        logits = traced.output.save()
    np.testing.assert_allclose(
        attn_out[0].detach().numpy(), np.asarray(out.layer_outputs[2 * head.layer])[0], atol=1e-5
    )
    assert lens.codec.decode(logits[0]) == out.decoded
    with traced.trace(ids):
        traced.blocks[head.layer].hook_attn_out.output[:] = 0
        patched = traced.output.save()
    assert lens.codec.decode(patched[0]) != out.decoded
    with traced.trace(ids):  # one head, as ACDC and InterpBench address it
        traced.blocks[head.layer].attn.hook_result.output[:, :, head.head] = 0
        patched = traced.output.save()
    assert lens.codec.decode(patched[0]) != out.decoded
