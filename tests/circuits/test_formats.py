"""Circuit formats: each round-trips through its reader."""

import json

import pytest

from tracr.circuits import ablation, circuit, domain, formats, forward, verify

from .models import LIBRARY_PARAMS, circuit_of, compiled

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
    for e in doc["edges"]:  # which embedding parts matter: on the edges from embed only
        assert ("embed_parts" in e) == (e["parent"] == "embed")


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
    c = circuit_of("sort", False)
    position = set(c.position_directions)
    assert position and set(c.node("embed").writes) - position
    hooks = {(r["parent"], r["child"], r["child_index"]) for r in formats.to_transformer_lens(c)}
    for e in c.edges_from("embed"):
        child = formats.input_hook(c, e.child, e.slot)
        assert e.embed_parts and set(e.embed_parts) <= {
            p for p in ("token", "position") if c.part_directions(e, p)
        }
        assert (("hook_pos_embed", *child) in hooks) == ("position" in e.embed_parts)
        assert (("hook_embed", *child) in hooks) == ("token" in e.embed_parts)
    assert {part for _, part in c.inert_parts} == {"token"}


def test_an_inert_embedding_part_is_not_exported(tmp_path):
    # sort's head 2.0 queries `indices` and `one`. Ablating the token embedding
    # (which writes `one`) alone changes nothing, so only the position embedding
    # feeds that query; a hook_embed edge there would be a false positive.
    c = circuit_of("sort", False)
    (edge,) = c.edges_into("2.0", "q")
    assert edge.parent == "embed" and "one" in edge.labels and "indices" in edge.labels
    assert edge.embed_parts == ("position",)
    assert c.inert_parts == ((edge, "token"),)
    assert c.direction_labels(c.part_directions(edge, "token")) == ["one"]
    reader = ("blocks.2.hook_q_input", 0)
    tl = {(r["parent"], r["child"], r["child_index"]) for r in formats.to_transformer_lens(c)}
    assert ("hook_pos_embed", *reader) in tl and ("hook_embed", *reader) not in tl
    acdc = formats.to_acdc(c)
    assert acdc[(reader[0], (None, None, 0), "hook_pos_embed", (None,))]
    assert not acdc[(reader[0], (None, None, 0), "hook_embed", (None,))]
    hooks = formats.to_interpbench(c, "acdc_hooks")
    assert ("hook_pos_embed", "blocks.2.hook_q_input[0]") in hooks
    assert ("hook_embed", "blocks.2.hook_q_input[0]") not in hooks
    matrix = formats.to_interpbench(c, "matrix")
    assert ("pos_embed.W_pos", "blocks.2.attn.W_Q[0]") in matrix
    assert ("embed.W_E", "blocks.2.attn.W_Q[0]") not in matrix
    # The summary `tracr circuit` prints counts it.
    _, model = compiled("sort", False)
    summary = formats.write_circuit(model, "json", str(tmp_path / "sort.json"))
    assert "(1 inert, 1 inert embedding parts)" in summary


_PARTS = {"hook_embed": "token", "hook_pos_embed": "position"}
_MATRIX_READER = {"q": "W_Q", "k": "W_K", "v": "W_V"}


@pytest.mark.parametrize("name, causal", LIBRARY_PARAMS)
def test_every_exported_hook_edge_changes_its_child_alone(name, causal):
    _, model = compiled(name, causal)
    c = circuit_of(name, causal)
    records = formats.to_transformer_lens(c)
    hooks = {((r["parent"], r["parent_index"]), (r["child"], r["child_index"])) for r in records}
    assert len(hooks) == len(records)
    # Each hook edge alone, ablated as edges are (zero and resample, the BOS rule);
    # hook_embed and hook_pos_embed are the token and the position embedding.
    pairs = []
    for r in records:
        ((parent, child, slot),) = formats.from_transformer_lens([r])
        if r["parent"] in _PARTS:
            parent = forward.embed_part(_PARTS[r["parent"]])
        pairs.append((parent, child, slot))
    weights = forward.weights_of(model, numpy=True)
    found = ablation.effects(weights, domain.make_domain(model.spec), pairs, seed=1)
    assert [p for p in pairs if not found[p].any] == []
    # ACDC and InterpBench (acdc_hooks; matrix for the embedding) claim the same hook edges.
    acdc = {
        ((parent, formats._from_torch_index(pi)), (child, formats._from_torch_index(ci)))
        for (child, ci, parent, pi), present in formats.to_acdc(c).items()
        if present and formats._is_addition(parent, child)
    }
    assert acdc == hooks
    interpbench = {
        (formats._split_name(sender), formats._split_name(receiver))
        for sender, receiver in formats.to_interpbench(c, "acdc_hooks")
        if formats._is_addition(formats._split_name(sender)[0], formats._split_name(receiver)[0])
    }
    assert interpbench == hooks
    matrix = {
        (sender, receiver)
        for sender, receiver in formats.to_interpbench(c, "matrix")
        if sender in ("embed.W_E", "pos_embed.W_pos")
    }
    want = set()
    for r in records:  # the embedding's hook edges, at matrix granularity
        layer = r["child"].split(".")[1] if r["child"].startswith("blocks.") else None
        if r["parent"] not in _PARTS or r["child"].endswith("hook_resid_post"):
            continue
        if r["child"].endswith("hook_mlp_in"):
            receiver = f"blocks.{layer}.mlp.W_in"
        else:
            slot = r["child"].split("hook_")[1][0]
            receiver = f"blocks.{layer}.attn.{_MATRIX_READER[slot]}[{r['child_index']}]"
        want.add(
            (
                {"hook_embed": "embed.W_E", "hook_pos_embed": "pos_embed.W_pos"}[r["parent"]],
                receiver,
            )
        )
    assert matrix == want


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


def test_json_reads_version_2_as_it_was_exported():
    _, model = compiled("sort", False)
    c = circuit_of("sort", False)
    doc = formats.to_json(c)
    edges = [{k: v for k, v in e.items() if k != "embed_parts"} for e in doc["edges"]]
    read = formats.from_json({**doc, "version": 2, "edges": edges})
    assert all(e.embed_parts is None for e in read.edges)
    assert read.edge_keys() == c.edge_keys() and read.inert_parts == ()
    # Without embed_parts every part carrying a direction is exported, as before
    # version 3: sort's hook_embed -> 2.0.q is back ...
    old = formats.to_transformer_lens(read)
    new = formats.to_transformer_lens(c)
    extra = {"parent": "hook_embed", "parent_index": None}
    assert [r for r in old if r not in new] == [
        {**extra, "child": "blocks.2.hook_q_input", "child_index": 0}
    ]
    # ... and verify says that it changes nothing.
    result = verify(model, read)
    assert not result.ok and not result.ineffective_edges and not result.leaking_pairs
    assert [x.name for x in result.ineffective_parts] == ["embed -> 2.0.q (token part)"]
    assert "edge embed -> 2.0.q (token part) changed nothing" in result.summary()


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
