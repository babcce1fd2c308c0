"""The compiled circuit: which node reads which residual directions another writes.

A compiled model's mechanism is known when it is built, so we emit it rather
than rediscover it::

    from tracr.circuits import circuit
    c = circuit(model)
    c.edges_into("1.0")            # Edge(parent="embed", child="1.0", slot="q", ...)
    c.nodes_of(program.label)      # the heads/MLPs computing the program's output
    c.expressions_of("mlp 0")      # the RASP expressions MLP 0 computes

Nodes, at four granularities:

- component: `embed`, each head `L.H`, each MLP `mlp L`, `unembed`;
- per head: its query, key and value inputs (`Edge.slot` is `q`, `k` or `v`;
  MLPs and the unembedding have one input, `in`);
- per node: the residual directions it reads (per input) and writes
  (indices into `residual_labels`);
- RASP: the expressions each node computes (`Node.labels`), and back
  (`Circuit.nodes_of`); one node may compute several (MLPs side by side) and
  one expression may span several nodes (a selector width's head and MLP).

Edges: A -> B.slot when B's input reads a direction A writes; `Edge.directions`
lists them, `Edge.labels` the expressions they hold.

Structure comes from `model.spec`, made precise in three steps, computed once
when the circuit is built:

1. Weights. The spec lists the directions of the craft spaces a block reads
   and writes; its weights may give some of them no effect. A block keeps
   only the rows its weights use: non-zero rows, and for a query only the
   directions whose logits differ between keys (a query direction that only
   meets the key's constant `one` direction shifts every logit of a query
   alike, which softmax cancels; likewise the key's `one` direction).
2. Domain. Some wired edges still change nothing on any input of the
   domain: a BOS guard (an MLP row from `tokens:BOS` that switches hidden
   units off at BOS, where its other inputs are already zero), or a causal
   selector width whose query meets equal logits at every visible key, or
   a query or key that changes the attention only of the BOS query (a TRUE
   selector's, in `length`). Each wired edge is ablated (`ablation.effects`,
   zero and resample) on the domain: it stays iff it changes its child's
   output after BOS, or changes it at BOS only and the model's output after
   BOS then changes end to end (later heads can carry a BOS row on). The
   others move to `Circuit.inert`.
3. Embedding parts. The embedding is two terms, the token embedding (with
   the constant `one` direction) and the position embedding, which hook-level
   formats (TransformerLens' `hook_embed` and `hook_pos_embed`) name apart.
   Each part of each edge from `embed` is ablated alone by the same rule;
   `Edge.embed_parts` lists those that matter, and only they are exported.
   A part that carries some of the edge's directions and changes nothing
   alone is listed in `Circuit.inert_parts`: in the library these are all
   token parts carrying only `one` or `tokens:BOS` beside a position part
   that does the work (a query's `one` and a key's BOS default next to
   `indices`).

`verify` then demands that every edge and every part it lists matters and
that every other pair (inert edges included) and part changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, List, Optional, Tuple

import numpy as np

from tracr.circuits import ablation, forward
from tracr.circuits import domain as domain_lib
from tracr.transformer import assembled
from tracr.transformer import spec as spec_lib

HEAD_SLOTS = forward.HEAD_SLOTS
IN = forward.IN
EMBED_PARTS = forward.EMBED_PARTS  # ("token", "position")


@dataclasses.dataclass(frozen=True)
class Node:
    """One component of the model.

    Attributes:
      name: `embed`, `L.H`, `mlp L` or `unembed`.
      kind: `embed`, `head`, `mlp` or `unembed`.
      stage: position in the residual stream: 0 embed, 2L+1 the heads of
        layer L, 2L+2 its MLP, 2*num_layers+1 unembed; A can feed B iff
        A.stage < B.stage.
      layer, head: where it sits (None where it does not apply).
      labels: the RASP expressions it computes (embed: tokens, indices, one).
      inputs: (slot, residual indices read) per input.
      writes: residual indices it writes.
    """

    name: str
    kind: str
    stage: int
    layer: Optional[int]
    head: Optional[int]
    labels: Tuple[str, ...]
    inputs: Tuple[Tuple[str, Tuple[int, ...]], ...]
    writes: Tuple[int, ...]

    @property
    def slots(self) -> Tuple[str, ...]:
        return tuple(slot for slot, _ in self.inputs)

    def reads(self, slot: str) -> Tuple[int, ...]:
        """Residual indices the input `slot` reads."""
        for s, indices in self.inputs:
            if s == slot:
                return indices
        raise KeyError(f"Node {self.name} has no input {slot!r}; it has {list(self.slots)}.")


@dataclasses.dataclass(frozen=True)
class Edge:
    """`parent` writes `directions` that input `slot` of `child` reads.

    `embed_parts`, for an edge of the circuit from `embed`: the parts of the
    embedding (`EMBED_PARTS`) whose ablation alone changes the child, by the
    rule edges are kept by. None elsewhere, and in circuits read from JSON
    older than version 3, where `Circuit.parts_of` takes every part that
    carries one of the directions.
    """

    parent: str
    child: str
    slot: str
    directions: Tuple[int, ...]
    labels: Tuple[str, ...]  # RASP expressions of the directions
    embed_parts: Optional[Tuple[str, ...]] = None

    @property
    def key(self) -> Tuple[str, str, str]:
        return (self.parent, self.child, self.slot)


@dataclasses.dataclass(frozen=True)
class Circuit:
    """Nodes in stage order, edges, and the residual directions they refer to."""

    nodes: Tuple[Node, ...]
    edges: Tuple[Edge, ...]
    residual_labels: Tuple[str, ...]
    residual_names: Tuple[str, ...]
    output_label: str
    num_layers: int
    inert: Tuple[Edge, ...] = ()  # wired by the weights, without effect on the domain
    # Directions the position embedding writes (the rest of embed's come from
    # the token embedding): formats that split embed into token and position
    # embeddings (ACDC, InterpBench) need them.
    position_directions: Tuple[int, ...] = ()
    # Heads per layer in the padded layout (TransformerLens' n_heads): formats
    # over the whole exported graph (ACDC) list the zero-padded heads too.
    num_heads: int = 0

    def __post_init__(self):
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"Circuit node names must be unique, got {names}.")
        known = set(names)
        for e in self.edges:
            if e.parent not in known or e.child not in known:
                raise ValueError(f"Edge {e.key} refers to a node not in the circuit.")

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"No node {name!r}; nodes are {[n.name for n in self.nodes]}.")

    def edges_into(self, child: str, slot: Optional[str] = None) -> List[Edge]:
        return [e for e in self.edges if e.child == child and slot in (None, e.slot)]

    def edges_from(self, parent: str) -> List[Edge]:
        return [e for e in self.edges if e.parent == parent]

    def edge_keys(self) -> frozenset:
        """{(parent, child, slot)} of every edge."""
        return frozenset(e.key for e in self.edges)

    def candidate_pairs(self) -> Iterator[Tuple[str, str, str]]:
        """Every (parent, child, slot) that could be an edge: parent earlier than child."""
        for child in self.nodes:
            for slot in child.slots:
                for parent in self.nodes:
                    if parent.stage < child.stage and parent.kind != "unembed":
                        yield (parent.name, child.name, slot)

    @property
    def heads_per_layer(self) -> int:
        """`num_heads`, or (when unknown, 0) one more than the largest head index."""
        heads = [n.head for n in self.nodes if n.kind == "head"]
        return self.num_heads or (max(heads) + 1 if heads else 0)

    def nodes_of(self, label: str) -> List[str]:
        """Names of the nodes that compute the RASP expression `label`."""
        return [n.name for n in self.nodes if label in n.labels]

    def expressions_of(self, name: str) -> Tuple[str, ...]:
        """The RASP expressions node `name` computes."""
        return self.node(name).labels

    def direction_labels(self, indices) -> List[str]:
        """`"name:value"` of residual indices."""
        return [self.residual_labels[i] for i in indices]

    def part_directions(self, e: Edge, part: str) -> Tuple[int, ...]:
        """The directions of edge `e` that embedding part `part` writes
        (`position`: `position_directions`; `token`: the others, `one` included)."""
        if part not in EMBED_PARTS:
            raise ValueError(f"embedding part must be one of {EMBED_PARTS}, got {part!r}.")
        position = set(self.position_directions)
        return tuple(d for d in e.directions if (d in position) == (part == "position"))

    def parts_of(self, e: Edge) -> Tuple[str, ...]:
        """The embedding parts edge `e` is exported through: `e.embed_parts`, or
        (not recorded: an old document) every part carrying one of its directions;
        () for an edge not from `embed`."""
        if self.node(e.parent).kind != "embed":
            return ()
        if e.embed_parts is not None:
            return e.embed_parts
        return tuple(p for p in EMBED_PARTS if self.part_directions(e, p))

    @property
    def inert_parts(self) -> Tuple[Tuple[Edge, str], ...]:
        """(edge, part) of each edge from `embed` whose `part` carries some of its
        directions but changes nothing alone, so is not exported."""
        return tuple(
            (e, p)
            for e in self.edges
            if self.node(e.parent).kind == "embed"
            for p in EMBED_PARTS
            if p not in self.parts_of(e) and self.part_directions(e, p)
        )


def _nonzero_rows(w: np.ndarray) -> np.ndarray:
    return np.any(w != 0, axis=1)


def _keep(indices, used: np.ndarray) -> Tuple[int, ...]:
    return tuple(sorted(i for i in set(indices) if used[i]))


def _names(model_spec: spec_lib.ModelSpec, indices) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(model_spec.residual_names[i] for i in sorted(indices)))


def _head_node(model_spec, h: spec_lib.HeadSpec, w, stage: int) -> Node:
    wq, bq, wk, bk, wv, bv, wo = (np.asarray(x, np.float64) for x in w)
    d = model_spec.d_model
    one = model_spec.input.one
    qk = wq @ wk.T  # [D, D]: the bilinear form of the logits
    # A key direction that is the same at every key (`one`) adds the same
    # amount to every logit of a query: softmax cancels it.
    varying_keys = [j for j in h.key if j != one]
    key_mask = np.zeros(d, bool)
    key_mask[varying_keys] = True
    query_used = _nonzero_rows(qk[:, key_mask])
    key_used = _nonzero_rows(qk[list(h.query)].T) | (wk @ bq != 0)
    key_used &= key_mask
    ov = wv @ wo  # [D, D]
    value_used = _nonzero_rows(ov[list(h.value)])
    rows_used = np.zeros(d, bool)
    rows_used[list(h.value)] = value_used
    writes_used = np.any(ov[rows_used] != 0, axis=0) | (bv @ wo != 0)
    writes = _keep(h.writes, writes_used)
    labels = (h.label,) if h.label is not None else _names(model_spec, writes)
    return Node(
        name=h.name,
        kind="head",
        stage=stage,
        layer=h.layer,
        head=h.head,
        labels=labels,
        inputs=(
            ("q", _keep(h.query, query_used)),
            ("k", _keep(h.key, key_used)),
            ("v", _keep(h.value, rows_used)),
        ),
        writes=writes,
    )


def _mlp_node(model_spec, m: spec_lib.MLPSpec, w, stage: int) -> Node:
    w1, b1, w2, b2 = (np.asarray(x, np.float64) for x in w)
    writes_used = np.any(w2 != 0, axis=0) | (b2 != 0)
    writes = _keep(m.writes, writes_used)
    labels = tuple(p.label for p in m.parts if p.label is not None) or _names(model_spec, writes)
    return Node(
        name=forward.mlp_name(m.layer),
        kind="mlp",
        stage=stage,
        layer=m.layer,
        head=None,
        labels=tuple(dict.fromkeys(labels)),
        inputs=((IN, _keep(m.reads, _nonzero_rows(w1))),),
        writes=writes,
    )


def circuit(
    model: assembled.AssembledTransformerModel,
    *,
    domain: Optional[domain_lib.Domain] = None,
    atol: float = 1e-4,
    seed: int = 0,
) -> Circuit:
    """The circuit of a compiled model, from `model.spec` and the weights it names.

    Args:
      model: a compiled (or loaded) model.
      domain: the inputs wired edges are checked on (default: `domain.make_domain(spec)`,
        every input when there are at most 2,000, else a seeded sample).
      atol: the smallest change of a node's output that counts as an effect.
      seed: for the sample and the resample ablation.

    Raises:
      ValueError: `model` is not a compiled model (a compression's `CompressedModel`:
        pass its `.model`), has no spec, or uses layer norm.
    """
    weights = forward.weights_of(model, numpy=True)
    model_spec = weights.spec
    inp = model_spec.input
    pos_used = np.any(np.asarray(weights.pos_embed) != 0, axis=0)
    embed_used = np.any(np.asarray(weights.token_embed) != 0, axis=0) | pos_used
    embed_writes = _keep(
        [i for i in (*inp.embeds, *inp.positions, inp.one) if i is not None], embed_used
    )
    nodes = [
        Node(
            name=forward.EMBED,
            kind="embed",
            stage=0,
            layer=None,
            head=None,
            labels=_names(model_spec, embed_writes),
            inputs=(),
            writes=embed_writes,
        )
    ]
    for layer in model_spec.layers:
        for h in layer.heads:
            nodes.append(_head_node(model_spec, h, weights.heads[h.name], 2 * layer.index + 1))
        if layer.mlp is not None:
            name = forward.mlp_name(layer.index)
            nodes.append(_mlp_node(model_spec, layer.mlp, weights.mlps[name], 2 * layer.index + 2))
    nodes.append(
        Node(
            name=forward.UNEMBED,
            kind="unembed",
            stage=2 * model_spec.num_layers + 1,
            layer=None,
            head=None,
            labels=(),
            inputs=((IN, tuple(sorted(set(model_spec.output.reads)))),),
            writes=(),
        )
    )
    wired = list(_edges(nodes, model_spec))
    if domain is None:
        domain = domain_lib.make_domain(model_spec, seed=seed)
    pairs = [e.key for e in wired]
    pairs += [_part_pair(e.key, p) for e in wired if e.parent == forward.EMBED for p in EMBED_PARTS]
    found = ablation.effects(weights, domain, pairs, atol=atol, seed=seed)
    edges = [
        dataclasses.replace(e, embed_parts=_embed_parts(e, found, pos_used))
        if e.parent == forward.EMBED
        else e
        for e in wired
        if found[e.key].any
    ]
    return Circuit(
        nodes=tuple(nodes),
        edges=tuple(edges),
        residual_labels=model_spec.residual_labels,
        residual_names=model_spec.residual_names,
        output_label=model_spec.output.label,
        num_layers=model_spec.num_layers,
        inert=tuple(e for e in wired if not found[e.key].any),
        position_directions=tuple(int(i) for i in np.flatnonzero(pos_used)),
        num_heads=int(model_spec.num_heads),
    )


def _part_pair(key: Tuple[str, str, str], part: str) -> Tuple[str, str, str]:
    """The ablation pair of embedding part `part` of the edge `key` from `embed`."""
    return (forward.embed_part(part), key[1], key[2])


def _embed_parts(e: Edge, found, pos_used: np.ndarray) -> Tuple[str, ...]:
    """The parts of edge `e` from `embed` that matter alone; if none does (the edge
    matters only as a whole), every part carrying one of its directions."""
    parts = tuple(p for p in EMBED_PARTS if found[_part_pair(e.key, p)].any)
    if parts:
        return parts
    position = {d for d in e.directions if pos_used[d]}
    carried = {"token": set(e.directions) - position, "position": position}
    return tuple(p for p in EMBED_PARTS if carried[p])


def _edges(nodes: List[Node], model_spec: spec_lib.ModelSpec) -> Iterator[Edge]:
    for child in nodes:
        for slot, reads in child.inputs:
            for parent in nodes:
                if parent.stage >= child.stage:
                    continue
                shared = tuple(sorted(set(parent.writes) & set(reads)))
                if shared:
                    yield Edge(parent.name, child.name, slot, shared, _names(model_spec, shared))
