"""Circuit formats: each round-trips through its reader."""

import json

import pytest

from tracr.circuits import circuit, formats

from .models import compiled

NAMES = ["sort", "shuffle_dyck", "length", "frac_prevs"]


@pytest.fixture(scope="module", params=NAMES)
def the_circuit(request):
    _, model = compiled(request.param, False)
    return circuit(model)


def test_json_round_trips(the_circuit):
    text = json.dumps(formats.to_json(the_circuit))
    doc = json.loads(text)
    assert doc["format"] == "tracr-circuit" and doc["version"] == formats.VERSION
    assert formats.from_json(doc) == the_circuit
    for label, nodes in doc["expressions"].items():
        assert nodes == the_circuit.nodes_of(label)


def test_json_reader_refuses_other_documents(the_circuit):
    doc = formats.to_json(the_circuit)
    with pytest.raises(ValueError, match="version"):
        formats.from_json({**doc, "version": formats.VERSION + 1})
    with pytest.raises(ValueError, match="Not a tracr circuit"):
        formats.from_json({**doc, "format": "other"})
    with pytest.raises(ValueError, match="missing or malformed"):
        formats.from_json({k: v for k, v in doc.items() if k != "edges"})


def test_transformer_lens_hooks_round_trip(the_circuit):
    records = formats.to_transformer_lens(the_circuit)
    assert formats.from_transformer_lens(records) == the_circuit.edge_keys()
    for r in records:
        if r["parent"].endswith("attn.hook_result"):
            layer = int(r["parent"].split(".")[1])
            assert the_circuit.node(f"{layer}.{r['parent_index']}").kind == "head"
        if r["child"].endswith("hook_resid_post"):
            assert r["child"] == f"blocks.{max(the_circuit.num_layers, 1) - 1}.hook_resid_post"


def test_acdc_dictionary_is_the_full_edge_set(the_circuit):
    edges = formats.to_acdc(the_circuit)
    assert formats.from_acdc(edges) == the_circuit.edge_keys()
    assert True in edges.values() and False in edges.values()
    for key in edges:
        for index in (key[1], key[3]):  # TorchIndex: (None,) or (None, None, head)
            assert index == (None,) or (index[:2] == (None, None) and isinstance(index[2], int))
    # One entry per candidate pair (embed: per token/position hook) and head/MLP inside.
    additions = [k for k in edges if formats._is_addition(k[2], k[0])]
    assert len(additions) >= len(list(the_circuit.candidate_pairs()))
    # The rows `tracr circuit --format acdc` writes rebuild the same dictionary.
    rows = json.loads(formats.render(the_circuit, "acdc"))
    assert formats.acdc_from_rows(rows) == edges


@pytest.mark.parametrize("granularity", formats.GRANULARITIES)
def test_interpbench_pairs_round_trip(the_circuit, granularity):
    pairs = formats.to_interpbench(the_circuit, granularity)
    keys = the_circuit.edge_keys()
    want = {
        "acdc_hooks": keys,
        "matrix": frozenset(k for k in keys if k[1] != "unembed"),
        "component": formats.components(keys),
    }[granularity]
    assert formats.from_interpbench(pairs, granularity) == want
    assert len(set(pairs)) == len(pairs)


def test_embed_splits_into_token_and_position_hooks():
    _, model = compiled("sort", False)
    c = circuit(model)
    position = set(c.position_directions)
    assert position and set(c.node("embed").writes) - position
    hooks = {(r["parent"], r["child"], r["child_index"]) for r in formats.to_transformer_lens(c)}
    for e in c.edges_from("embed"):
        child = formats.input_hook(c, e.child, e.slot)
        has_position = bool(set(e.directions) & position)
        assert (("hook_pos_embed", *child) in hooks) == has_position
        assert (("hook_embed", *child) in hooks) == bool(set(e.directions) - position)


def test_render_rejects_unknown_format(the_circuit):
    with pytest.raises(ValueError, match="--format"):
        formats.render(the_circuit, "yaml")
