"""The compiled circuit: structure from the spec, verified by ablation on the real model."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from tracr.circuits import ablation, circuit, domain, forward, verify
from tracr.compiler import compiling, lib
from tracr.rasp import rasp

from .models import BOS, LIBRARY_PARAMS, circuit_of, compiled


@pytest.mark.parametrize("name, causal", LIBRARY_PARAMS)
def test_library_circuit_is_verified_by_ablation(name, causal):
    _, model = compiled(name, causal)
    c = circuit(model)
    # Another resample seed than the one the circuit was built with.
    result = verify(model, c, seed=1)
    assert result.ok, result.summary()
    assert result.exhaustive and result.num_inputs == len(domain.make_domain(model.spec))
    assert result.edges_checked == len(c.edges) > 0
    assert result.non_edges_checked > 0
    assert result.part_checks  # every program reads the embedding
    checked = len(result.checks) + len(result.part_checks)
    assert result.comparisons == 2 * result.num_inputs * checked
    # The unembedding reads what the nodes computing the program's output write.
    readers = {e.parent for e in c.edges_into("unembed")}
    assert readers and readers <= set(c.nodes_of(model.spec.output.label))


@pytest.mark.parametrize("causal", [False, True])
def test_forward_is_the_haiku_model(causal):
    _, model = compiled("sort", causal)
    ids = domain.encode(model.spec, domain.make_domain(model.spec).inputs)
    want = np.asarray(model.forward(model.params, jnp.asarray(ids)).transformer_output.output)
    want = want @ model.unembed_matrix
    for numpy in (True, False):
        weights = forward.weights_of(model, numpy=numpy)
        got = forward.run(weights, ids if numpy else jnp.asarray(ids)).out["unembed"]
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_verify_catches_a_missing_and_a_made_up_edge():
    _, model = compiled("sort_unique", False)
    c = circuit(model)
    dropped = c.edges[0]
    missing = dataclasses.replace(c, edges=c.edges[1:])
    result = verify(model, missing)
    assert not result.ok
    assert [(x.parent, x.child, x.slot) for x in result.leaking_pairs] == [dropped.key]
    non_edge = next(p for p in c.candidate_pairs() if p not in c.edge_keys())
    made_up = dataclasses.replace(
        c,
        edges=(
            *c.edges,
            dataclasses.replace(dropped, parent=non_edge[0], child=non_edge[1], slot=non_edge[2]),
        ),
    )
    result = verify(model, made_up)
    assert [(x.parent, x.child, x.slot) for x in result.ineffective_edges] == [non_edge]


def test_an_expression_spanning_a_head_and_an_mlp():
    length = lib.make_length()
    model = compiling.compile_rasp_to_model(length, {"a", "b"}, 3, compiler_bos=BOS)
    c = circuit(model)
    nodes = c.nodes_of(length.label)
    assert [c.node(n).kind for n in nodes] == ["head", "mlp"]
    head, mlp = nodes
    assert [e.parent for e in c.edges_into(mlp)] == ["embed", head]
    assert c.expressions_of(head) == c.expressions_of(mlp) == (length.label,)


def test_one_mlp_computing_two_expressions():
    first = rasp.Map(lambda x: x == "a", rasp.tokens)
    second = rasp.Map(lambda x: x != "b", rasp.tokens)
    both = rasp.SequenceMap(lambda x, y: x and y, first, second)
    model = compiling.compile_rasp_to_model(both, {"a", "b", "c"}, 3, compiler_bos=BOS)
    c = circuit(model)
    (shared,) = set(c.nodes_of(first.label)) & set(c.nodes_of(second.label))
    assert set(c.expressions_of(shared)) == {first.label, second.label}
    # The edge out of the shared MLP carries both expressions' directions.
    (edge,) = [e for e in c.edges_from(shared) if both.label in c.expressions_of(e.child)]
    assert set(edge.labels) == {first.label, second.label}
    assert verify(model, c).ok


def test_reads_and_writes_are_spec_directions_the_weights_use():
    _, model = compiled("sort", False)
    c = circuit(model)
    for h in model.spec.heads():
        node = c.node(h.name)
        assert set(node.reads("q")) <= set(h.query)
        assert set(node.reads("k")) <= set(h.key)
        assert set(node.reads("v")) <= set(h.value)
        assert set(node.writes) <= set(h.writes)
        assert node.reads("q") and node.reads("k") and node.writes
    for e in c.edges:
        assert set(e.directions) <= set(c.node(e.parent).writes)
        assert set(e.directions) <= set(c.node(e.child).reads(e.slot))
        assert e.labels == tuple(dict.fromkeys(c.residual_names[i] for i in e.directions))


def test_inert_edges_change_nothing_and_are_outside_the_circuit():
    _, model = compiled("length", True)
    c = circuit(model)
    assert c.inert  # a causal selector width: its query meets equal logits
    assert not set(e.key for e in c.inert) & c.edge_keys()
    result = verify(model, c, seed=3)
    inert = {e.key for e in c.inert}
    assert all(not x.has_effect for x in result.checks if (x.parent, x.child, x.slot) in inert)


def test_sampled_domain_is_seeded_and_distinct():
    _, model = compiled("shuffle_dyck", False)
    a = domain.make_domain(model.spec, max_exhaustive=10, num_samples=30, seed=5)
    b = domain.make_domain(model.spec, max_exhaustive=10, num_samples=30, seed=5)
    assert a == b and not a.exhaustive and len(set(a.inputs)) == 30
    result = verify(model, circuit(model, domain=a), domain=a)
    assert result.ok and result.num_inputs == 30 and not result.exhaustive


def _after_bos(model_spec, ids):
    where = domain.real_positions(model_spec, ids).copy()
    where[:, 0] = False
    return where


def test_edges_that_change_only_the_bos_row_are_not_in_the_circuit():
    # `length` is a TRUE selector's width: its query and key change the attention
    # of the BOS query alone, whose row decoding never reads.
    _, model = compiled("length", False)
    c = circuit(model)
    bos_only = {("embed", "0.0", "q"), ("embed", "0.0", "k")}
    assert bos_only <= {e.key for e in c.inert} and not bos_only & c.edge_keys()
    assert c.edge_keys() == {
        ("embed", "0.0", "v"),
        ("embed", "mlp 0", "in"),
        ("0.0", "mlp 0", "in"),
        ("mlp 0", "unembed", "in"),
    }
    result = verify(model, c)
    assert result.ok, result.summary()
    for x in result.checks:
        if (x.parent, x.child, x.slot) in bos_only:
            assert not any(x.effect.changed) and any(x.effect.bos_changed)
            assert not any(x.effect.output_changed) and not x.has_effect


@pytest.mark.parametrize("name, causal", LIBRARY_PARAMS)
def test_ablating_every_dropped_edge_changes_no_output_after_bos(name, causal):
    _, model = compiled(name, causal)
    c = circuit(model)
    weights = forward.weights_of(model, numpy=True)
    ids = domain.encode(model.spec, domain.make_domain(model.spec).inputs)
    where = _after_bos(model.spec, ids)[:, :, None]
    clean = forward.run(weights, ids)
    assert np.array_equal(ablation.output_without(weights, ids, []), clean.out["unembed"])
    # Every inert edge alone, end to end, by zero and by resample ablation.
    partner = ablation.resample_partner(domain.make_domain(model.spec).inputs)
    for e in c.inert:
        for delta in (-clean.out[e.parent], clean.out[e.parent][partner] - clean.out[e.parent]):
            out = forward.run(weights, ids, add={(e.child, e.slot): delta}).out["unembed"]
            assert np.max(np.where(where, np.abs(out - clean.out["unembed"]), 0)) <= 1e-4, e.key
    # And every pair outside the circuit (inert edges included) at once.
    dropped = [p for p in c.candidate_pairs() if p not in c.edge_keys()]
    out = ablation.output_without(weights, ids, dropped)
    assert np.max(np.where(where, np.abs(out - clean.out["unembed"]), 0)) <= 1e-4
    # The circuit's edges are what the output needs: cutting them all changes it.
    out = ablation.output_without(weights, ids, sorted(c.edge_keys()))
    assert np.max(np.where(where, np.abs(out - clean.out["unembed"]), 0)) > 1e-4


def test_a_bos_row_that_a_later_head_carries_on_counts():
    # reverse's embed -> 0.0.q changes 0.0's output at BOS only: inert. Make head
    # 3.0's key read 0.0's output (and its query `one`), so the BOS key's logit,
    # hence every query's attention to BOS, depends on 0.0's BOS row.
    _, model = compiled("reverse", False)
    c = circuit(model)
    pair = ("embed", "0.0", "q")
    assert pair in {e.key for e in c.inert}
    weights = forward.weights_of(model, numpy=True)
    wq, bq, wk, bk, wv, bv, wo = weights.heads["3.0"]
    wq, wk = wq.copy(), wk.copy()
    wq[model.spec.input.one, 0] += 3.0
    (written,) = c.node("0.0").writes
    wk[written, 0] += 3.0  # BOS-key logit + 9 x (0.0 at BOS) / 2
    tampered = dataclasses.replace(
        weights, heads={**weights.heads, "3.0": (wq, bq, wk, bk, wv, bv, wo)}
    )
    d = domain.make_domain(model.spec)
    (found,) = ablation.effects(tampered, d, [pair]).values()
    assert not any(found.changed) and any(found.bos_changed)
    assert any(found.output_changed) and found.through_bos and found.any
    (plain,) = ablation.effects(weights, d, [pair]).values()
    assert not plain.any


def test_a_compressed_model_is_refused_with_what_to_pass_instead():
    from tracr.compression import exact, running

    _, model = compiled("sort_unique", False)
    small = running.CompressedModel(model, exact.exact_compression(model).w)
    with pytest.raises(ValueError, match=r"CompressedModel, pass its `\.model`"):
        circuit(small)
    with pytest.raises(ValueError, match="compiled model"):
        verify(small, circuit(model))
    assert circuit(small.model) == circuit(model)


def test_verify_checks_each_embedding_part():
    # sort_unique's sort head queries `indices` and `one`: each part matters alone.
    _, model = compiled("sort_unique", False)
    c = circuit_of("sort_unique", False)
    (edge,) = c.edges_into("1.0", "q")
    assert edge.parent == "embed" and edge.embed_parts == ("token", "position")
    assert c.inert_parts == ()
    fewer = dataclasses.replace(
        c,
        edges=tuple(
            dataclasses.replace(e, embed_parts=("position",)) if e == edge else e for e in c.edges
        ),
    )
    result = verify(model, fewer)
    assert not result.ok and not result.leaking_pairs and not result.ineffective_edges
    assert [x.name for x in result.leaking_parts] == ["embed -> 1.0.q (token part)"]
    assert "non-edge embed -> 1.0.q (token part) changed" in result.summary()
    # Every pair from embed is checked part by part, edges and non-edges alike.
    from_embed = [p for p in c.candidate_pairs() if p[0] == "embed"]
    assert len(result.part_checks) == 2 * len(from_embed)
