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


def _setup_from_model_keys(n_layers, n_heads):
    """ACDC's edge set, built as `TLACDCCorrespondence.setup_from_model(model,
    use_pos_embed=True)` does: from the sink backwards, each writer feeding
    every reader seen so far."""

    def index(h):
        return (None,) if h is None else (None, None, h)

    keys = set()
    downstream = [(f"blocks.{n_layers - 1}.hook_resid_post", index(None))]
    for layer in reversed(range(n_layers)):
        mlp_out = (f"blocks.{layer}.hook_mlp_out", (None,))
        mlp_in = (f"blocks.{layer}.hook_mlp_in", (None,))
        keys |= {(*d, *mlp_out) for d in downstream} | {(*mlp_out, *mlp_in)}
        downstream.append(mlp_in)
        inputs = []
        for h in reversed(range(n_heads)):
            result = (f"blocks.{layer}.attn.hook_result", index(h))
            keys |= {(*d, *result) for d in downstream}
            for slot in "qkv":
                inner = (f"blocks.{layer}.attn.hook_{slot}", index(h))
                outer = (f"blocks.{layer}.hook_{slot}_input", index(h))
                keys |= {(*result, *inner), (*inner, *outer)}
                inputs.append(outer)
        downstream += inputs
    for embed in ("hook_embed", "hook_pos_embed"):
        keys |= {(*d, embed, (None,)) for d in downstream}
    return keys


@pytest.mark.parametrize("name", ["sort_unique", "length", "pair_balance", "shuffle_dyck"])
def test_acdc_keys_are_those_of_the_exported_model(name):
    from tracr.export import transformer_lens

    _, model = compiled(name, False)
    c = circuit(model)
    config = transformer_lens.transformer_lens_config(model.spec)
    edges = formats.to_acdc(c)
    assert set(edges) == _setup_from_model_keys(config["n_layers"], config["n_heads"])
    assert formats.from_acdc(edges) == c.edge_keys()
    if name == "sort_unique":  # the docs' example
        assert (len(edges), sum(edges.values())) == (46, 24)
    # Zero-padded heads and MLPs absent from the spec are there, all False.
    real = {n.name for n in c.nodes}
    for (child, child_index, parent, parent_index), present in edges.items():
        for hook, idx in ((child, child_index), (parent, parent_index)):
            layer = hook.split(".")[1] if hook.startswith("blocks.") else None
            if "attn" in hook or "_input" in hook:
                if f"{layer}.{idx[2]}" not in real:
                    assert not present, (child, parent)
            elif "mlp" in hook and f"mlp {layer}" not in real:
                assert not present, (child, parent)


def test_json_reads_version_1():
    _, model = compiled("pair_balance", False)
    c = circuit(model)
    doc = formats.to_json(c)
    assert doc["num_heads"] == c.num_heads == model.spec.num_heads == 2
    old = {k: v for k, v in doc.items() if k != "num_heads"}
    old["version"] = 1
    read = formats.from_json(old)
    assert read.num_heads == 0 and read.heads_per_layer == 2  # from the head indices
    assert read.edges == c.edges
