"""The compiler's ModelSpec: every head and MLP, what it computes, reads and writes."""

import numpy as np
import pytest

from tracr.compiler import compiling, lib
from tracr.io import saving
from tracr.rasp import rasp
from tracr.transformer import spec as spec_lib


@pytest.fixture(scope="module")
def sort_model():
    program = lib.make_sort_unique(rasp.tokens, rasp.tokens)
    return program, compiling.compile_rasp_to_model(program, {1, 2, 3}, 4)


def _nonzero_rows(w: np.ndarray) -> set:
    return set(np.flatnonzero(np.any(np.asarray(w) != 0, axis=1)).tolist())


def test_heads_and_mlps_are_labelled_with_the_expressions_they_compute(sort_model):
    program, model = sort_model
    spec = model.spec
    labels = {h.label for h in spec.heads()} | {lab for m in spec.mlps() for lab in m.labels}
    assert program.label in labels
    for head in spec.heads():
        written = {spec.residual_names[i] for i in head.writes}
        assert written, head
        # A head writes its own expression's directions (selector width writes a helper).
        assert all(name.startswith(head.label) for name in written), (head, written)
    for mlp in spec.mlps():
        for part in mlp.parts:
            assert {spec.residual_names[i] for i in part.writes} == {part.label}


def test_spec_reads_and_writes_cover_the_weights(sort_model):
    """Every non-zero weight row lies inside what the spec says a block reads or writes."""
    _, model = sort_model
    spec = model.spec
    k = spec.key_size
    for layer in spec.layers:
        wq = np.asarray(model.params[spec_lib.param_name(layer.index, "attn", "query")]["w"])
        wo = np.asarray(model.params[spec_lib.param_name(layer.index, "attn", "linear")]["w"])
        for head in layer.heads:
            cols = slice(head.head * k, (head.head + 1) * k)
            assert _nonzero_rows(wq[:, cols]) <= set(head.query)
            assert _nonzero_rows(wo[cols].T) <= set(head.writes)
        if layer.mlp is not None:
            w1 = np.asarray(model.params[spec_lib.param_name(layer.index, "mlp", "linear_1")]["w"])
            w2 = np.asarray(model.params[spec_lib.param_name(layer.index, "mlp", "linear_2")]["w"])
            for part in layer.mlp.parts:
                assert _nonzero_rows(w1[:, list(part.hidden)]) <= set(part.reads)
                assert _nonzero_rows(w2[list(part.hidden)].T) <= set(part.writes)


def test_encodings_and_output(sort_model):
    _, model = sort_model
    spec = model.spec
    assert spec.input.tokens[spec.input.bos_id] == "compiler_bos"
    assert spec.input.pad_id == model.input_encoder.pad_encoding
    assert spec.output.categorical and spec.output.values == (1, 2, 3)
    assert [spec.residual_labels[i] for i in spec.output.reads] == [
        f"{spec.output.label}:{v}" for v in (1, 2, 3)
    ]
    assert spec.param_shapes() == {
        name: {k: tuple(np.shape(v)) for k, v in inner.items()}
        for name, inner in model.params.items()
    }


def test_spec_round_trips_through_json(sort_model):
    _, model = sort_model
    doc = model.spec.to_json(saving.encode_value)
    again = spec_lib.ModelSpec.from_json(doc, saving.decode_value)
    assert again == model.spec


def test_parallel_mlps_each_get_their_own_part():
    a = rasp.Map(lambda x: x + 1, rasp.tokens)
    b = rasp.Map(lambda x: x * 2, rasp.tokens)
    program = rasp.SequenceMap(lambda x, y: x + y, a, b)
    model = compiling.compile_rasp_to_model(program, {1, 2}, 3)
    first = model.spec.layers[0].mlp
    assert set(first.labels) == {a.label, b.label}
    hidden = [set(p.hidden) for p in first.parts]
    assert not hidden[0] & hidden[1]
    assert model.spec.nodes_computing(program.label) == ["mlp 1"]


def test_bad_indices_are_refused():
    with pytest.raises(ValueError, match="outside"):
        spec_lib.ModelSpec(
            layers=(),
            residual_labels=("one",),
            residual_names=("one",),
            residual_values=(None,),
            input=spec_lib.InputSpec(("a",), None, None, 1, (3,), (None, None), 0),
            output=spec_lib.OutputSpec("x", False, (), (0,)),
            causal=False,
            num_heads=1,
            key_size=1,
            mlp_hidden_size=1,
        )
