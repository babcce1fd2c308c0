"""The circuit in the formats the field uses, each with a reader.

- **JSON** (ours, `to_json`/`from_json`): `{"format": "tracr-circuit",
  "version": 3, ...}` with every node (its inputs and writes as residual
  indices), edge (with directions and RASP labels; an edge from `embed` also
  with `embed_parts`), inert edge and the RASP correspondence. Stable: fields
  are only ever added, under a new version (2 added `num_heads`, 3
  `embed_parts`; versions 1 and 2 are still read, without `embed_parts`:
  every part carrying a direction, as they were exported).
- **TransformerLens hooks** (`to_transformer_lens`): one record per hook edge,
  `{"parent": hook, "parent_index": h or None, "child": ..., "child_index": ...}`.
  Writers: `hook_embed` (the token embedding, with `one`) and `hook_pos_embed`
  (an edge from embed is exported through the parts that matter alone,
  `Circuit.parts_of`; an inert part, `Circuit.inert_parts`, is not),
  `blocks.{l}.attn.hook_result` (head h), `blocks.{l}.hook_mlp_out`.
  Readers: `blocks.{l}.hook_{q,k,v}_input` (head h), `blocks.{l}.hook_mlp_in`,
  and `blocks.{L-1}.hook_resid_post` for the unembedding.
- **ACDC** (`to_acdc`): ACDC's edge dictionary, keyed `(child hook, child
  index, parent hook, parent index)` with TorchIndex-style index tuples
  (`(None,)` whole tensor, `(None, None, h)` head h), over the **full** edge
  set ACDC's `load_subgraph` needs, that of
  `TLACDCCorrespondence.setup_from_model(model, use_pos_embed=True)` on the
  exported model: every block has `num_heads` heads (zero-padded ones
  included) and an MLP (also where the compiled layer has none); every
  addition edge from a writer (`hook_embed`, `hook_pos_embed`, head results,
  MLP outputs) to a later reader, `hook_{q,k,v}_input -> attn.hook_{q,k,v}`
  and `attn.hook_{q,k,v} -> attn.hook_result`, `hook_mlp_in -> hook_mlp_out`;
  True for the circuit's, False otherwise.
- **InterpBench** (`to_interpbench`): `(sender, receiver)` node-name pairs
  (`name[idx]` for heads) at the granularities `component` (`embed`,
  `pos_embed`, `blocks.{l}.attn[h]`, `blocks.{l}.mlp`; no output node),
  `matrix` (`embed.W_E`, `pos_embed.W_pos`, `blocks.{l}.attn.W_{Q,K,V,O}[h]`,
  `blocks.{l}.mlp.W_{in,out}`; no output node) and `acdc_hooks` (the hooks
  above with `attn.hook_{q,k,v}` between inputs and results, ending in
  `hook_resid_post`).

Every reader returns edge keys: `(parent, child, slot)` node names of our
circuit (component granularity: `(parent, child)`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple

from tracr.circuits import graph

FORMAT = "tracr-circuit"
VERSION = 3
READS = (1, 2, 3)  # versions from_json reads
FORMATS = ("json", "tl", "acdc", "interpbench")
GRANULARITIES = ("component", "matrix", "acdc_hooks")

Hook = Tuple[str, Optional[int]]  # (hook name, head index or None)
EdgeKey = Tuple[str, str, str]

# ---- our JSON


def to_json(c: graph.Circuit) -> Dict[str, Any]:
    """The circuit as a JSON-able dict (see the module docstring)."""

    def edge(e: graph.Edge) -> Dict[str, Any]:
        doc = {
            "parent": e.parent,
            "child": e.child,
            "slot": e.slot,
            "directions": list(e.directions),
            "labels": list(e.labels),
        }
        if e.embed_parts is not None:
            doc["embed_parts"] = list(e.embed_parts)
        return doc

    labels = dict.fromkeys(label for n in c.nodes for label in n.labels)
    return {
        "format": FORMAT,
        "version": VERSION,
        "output_label": c.output_label,
        "num_layers": c.num_layers,
        "residual_labels": list(c.residual_labels),
        "residual_names": list(c.residual_names),
        "position_directions": list(c.position_directions),
        "num_heads": c.num_heads,
        "nodes": [
            {
                "name": n.name,
                "kind": n.kind,
                "stage": n.stage,
                "layer": n.layer,
                "head": n.head,
                "labels": list(n.labels),
                "inputs": {slot: list(reads) for slot, reads in n.inputs},
                "writes": list(n.writes),
            }
            for n in c.nodes
        ],
        "edges": [edge(e) for e in c.edges],
        "inert": [edge(e) for e in c.inert],
        "expressions": {label: c.nodes_of(label) for label in labels},
    }


def from_json(doc: Mapping[str, Any]) -> graph.Circuit:
    """The inverse of `to_json`.

    Raises:
      ValueError: not a tracr circuit, a newer version, or a missing field.
    """
    if doc.get("format") != FORMAT:
        raise ValueError(f"Not a tracr circuit: format is {doc.get('format')!r}, not {FORMAT!r}.")
    if doc.get("version") not in READS:
        raise ValueError(
            f"Circuit format version {doc.get('version')!r}; this tracr reads versions "
            f"{', '.join(map(str, READS))}."
        )

    def edge(e) -> graph.Edge:
        # Before version 3 (or without the field): None, every part with a direction.
        parts = e.get("embed_parts")
        return graph.Edge(
            e["parent"],
            e["child"],
            e["slot"],
            tuple(e["directions"]),
            tuple(e["labels"]),
            embed_parts=None if parts is None else tuple(parts),
        )

    try:
        return graph.Circuit(
            nodes=tuple(
                graph.Node(
                    name=n["name"],
                    kind=n["kind"],
                    stage=n["stage"],
                    layer=n["layer"],
                    head=n["head"],
                    labels=tuple(n["labels"]),
                    inputs=tuple((slot, tuple(r)) for slot, r in n["inputs"].items()),
                    writes=tuple(n["writes"]),
                )
                for n in doc["nodes"]
            ),
            edges=tuple(edge(e) for e in doc["edges"]),
            residual_labels=tuple(doc["residual_labels"]),
            residual_names=tuple(doc["residual_names"]),
            output_label=doc["output_label"],
            num_layers=doc["num_layers"],
            inert=tuple(edge(e) for e in doc["inert"]),
            position_directions=tuple(doc["position_directions"]),
            # Version 1 has no num_heads: 0 (derived from the nodes, see heads_per_layer).
            num_heads=doc["num_heads"] if doc["version"] >= 2 else 0,
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"circuit JSON: missing or malformed field {e}.") from None


# ---- TransformerLens hook names


def _last_block(c: graph.Circuit) -> int:
    return max(c.num_layers, 1) - 1


_EMBED_HOOKS = {"token": "hook_embed", "position": "hook_pos_embed"}


def output_hooks(c: graph.Circuit, e: graph.Edge) -> List[Hook]:
    """The TransformerLens hooks that carry edge `e`'s parent's contribution.

    The embedding splits into its parts that matter alone (`Circuit.parts_of`):
    `hook_embed` for the token part (with `one`), `hook_pos_embed` for the
    position part.
    """
    node = c.node(e.parent)
    if node.kind == "embed":
        return [(_EMBED_HOOKS[part], None) for part in c.parts_of(e)]
    if node.kind == "head":
        return [(f"blocks.{node.layer}.attn.hook_result", node.head)]
    return [(f"blocks.{node.layer}.hook_mlp_out", None)]


def input_hook(c: graph.Circuit, child: str, slot: str) -> Hook:
    """The TransformerLens hook at which node `child` reads input `slot`."""
    node = c.node(child)
    if node.kind == "head":
        return (f"blocks.{node.layer}.hook_{slot}_input", node.head)
    if node.kind == "mlp":
        return (f"blocks.{node.layer}.hook_mlp_in", None)
    return (f"blocks.{_last_block(c)}.hook_resid_post", None)


def _hook_edges(c: graph.Circuit, edges: Iterable[graph.Edge]) -> List[Tuple[Hook, Hook]]:
    out = []
    for e in edges:
        child = input_hook(c, e.child, e.slot)
        out += [(parent, child) for parent in output_hooks(c, e)]
    return out


def to_transformer_lens(c: graph.Circuit) -> List[Dict[str, Any]]:
    """One `{"parent", "parent_index", "child", "child_index"}` record per hook edge."""
    return [
        {"parent": p[0], "parent_index": p[1], "child": ch[0], "child_index": ch[1]}
        for p, ch in _hook_edges(c, c.edges)
    ]


_RESULT = re.compile(r"blocks\.(\d+)\.attn\.hook_result$")
_MLP_OUT = re.compile(r"blocks\.(\d+)\.hook_mlp_out$")
_INPUT = re.compile(r"blocks\.(\d+)\.hook_([qkv])_input$")
_MLP_IN = re.compile(r"blocks\.(\d+)\.hook_mlp_in$")
_RESID_POST = re.compile(r"blocks\.(\d+)\.hook_resid_post$")


def _parent_node(hook: str, index: Optional[int]) -> str:
    if hook in ("hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre"):
        return "embed"
    if m := _RESULT.match(hook):
        return f"{m.group(1)}.{index}"
    if m := _MLP_OUT.match(hook):
        return f"mlp {m.group(1)}"
    raise ValueError(f"{hook!r} is not a writer's hook (hook_embed, attn.hook_result, ...).")


def _child_node(hook: str, index: Optional[int]) -> Tuple[str, str]:
    if m := _INPUT.match(hook):
        return f"{m.group(1)}.{index}", m.group(2)
    if m := _MLP_IN.match(hook):
        return f"mlp {m.group(1)}", graph.IN
    if _RESID_POST.match(hook):
        return "unembed", graph.IN
    raise ValueError(f"{hook!r} is not a reader's hook (hook_q_input, hook_mlp_in, ...).")


def from_transformer_lens(records: Iterable[Mapping[str, Any]]) -> FrozenSet[EdgeKey]:
    """Edge keys `(parent, child, slot)` from `to_transformer_lens` records."""
    return frozenset(
        (_parent_node(r["parent"], r["parent_index"]),) + _child_node(r["child"], r["child_index"])
        for r in records
    )


# ---- ACDC


def _torch_index(index: Optional[int]) -> Tuple[Optional[int], ...]:
    return (None,) if index is None else (None, None, index)


def _from_torch_index(index: Tuple[Optional[int], ...]) -> Optional[int]:
    return index[-1] if len(index) == 3 else None


def acdc_graph(c: graph.Circuit) -> List[Tuple[Hook, Hook]]:
    """Every `(child, parent)` hook edge of ACDC's graph of the exported model.

    That of `TLACDCCorrespondence.setup_from_model(model, use_pos_embed=True)`:
    `max(num_layers, 1)` blocks, each with `heads_per_layer` heads and an MLP.
    """
    layers, heads = max(c.num_layers, 1), c.heads_per_layer
    writers: List[Tuple[int, Hook]] = [(0, ("hook_embed", None)), (0, ("hook_pos_embed", None))]
    readers: List[Tuple[int, Hook]] = []
    inside: List[Tuple[Hook, Hook]] = []
    for layer in range(layers):
        result = f"blocks.{layer}.attn.hook_result"
        for h in range(heads):
            writers.append((2 * layer + 1, (result, h)))
            for slot in graph.HEAD_SLOTS:
                outer = (f"blocks.{layer}.hook_{slot}_input", h)
                inner = (f"blocks.{layer}.attn.hook_{slot}", h)
                readers.append((2 * layer + 1, outer))
                inside += [(inner, outer), ((result, h), inner)]
        mlp_in = (f"blocks.{layer}.hook_mlp_in", None)
        mlp_out = (f"blocks.{layer}.hook_mlp_out", None)
        writers.append((2 * layer + 2, mlp_out))
        readers.append((2 * layer + 2, mlp_in))
        inside.append((mlp_out, mlp_in))
    readers.append((2 * layers + 1, (f"blocks.{layers - 1}.hook_resid_post", None)))
    additions = [(r, w) for rs, r in readers for ws, w in writers if ws < rs]
    return additions + inside


def to_acdc(c: graph.Circuit) -> Dict[Tuple[str, tuple, str, tuple], bool]:
    """ACDC's full edge dictionary; True for the circuit's edges (see the module docstring)."""
    present = {(child, parent) for parent, child in _hook_edges(c, c.edges)}
    for e in c.edges:
        node = c.node(e.child)
        if node.kind == "head":
            outer = input_hook(c, e.child, e.slot)
            inner = (f"blocks.{node.layer}.attn.hook_{e.slot}", node.head)
            present |= {
                (inner, outer),
                ((f"blocks.{node.layer}.attn.hook_result", node.head), inner),
            }
        elif node.kind == "mlp":
            present.add(
                ((f"blocks.{node.layer}.hook_mlp_out", None), input_hook(c, e.child, e.slot))
            )
    everything = acdc_graph(c)
    unknown = present - set(everything)
    if unknown:  # a circuit whose node names or num_heads do not fit its layers
        raise ValueError(f"circuit edges outside ACDC's graph of the model: {sorted(unknown)}")
    return {
        (child[0], _torch_index(child[1]), parent[0], _torch_index(parent[1])): (child, parent)
        in present
        for child, parent in everything
    }


def _is_addition(parent: str, child: str) -> bool:
    """Whether parent -> child is a residual edge (not one inside a head or an MLP)."""
    writer = parent in ("hook_embed", "hook_pos_embed") or parent.endswith(
        (".attn.hook_result", ".hook_mlp_out")
    )
    return writer and child.endswith(("_input", ".hook_mlp_in", ".hook_resid_post"))


def from_acdc(edges: Mapping[Tuple[str, tuple, str, tuple], bool]) -> FrozenSet[EdgeKey]:
    """Edge keys `(parent, child, slot)` of the True addition edges of an ACDC dictionary."""
    keys = set()
    for (child, child_index, parent, parent_index), present in edges.items():
        if not present or not _is_addition(parent, child):
            continue
        keys.add(
            (_parent_node(parent, _from_torch_index(parent_index)),)
            + _child_node(child, _from_torch_index(child_index))
        )
    return frozenset(keys)


# ---- InterpBench


def _name(hook: str, index: Optional[int]) -> str:
    return hook if index is None else f"{hook}[{index}]"


def _split_name(name: str) -> Hook:
    m = re.fullmatch(r"(.*)\[(\d+)\]", name)
    return (m.group(1), int(m.group(2))) if m else (name, None)


_COMPONENT = {"hook_embed": "embed", "hook_pos_embed": "pos_embed"}
_MATRIX = {"hook_embed": "embed.W_E", "hook_pos_embed": "pos_embed.W_pos"}


def _component(hook: Hook) -> str:
    name, index = hook
    if name in _COMPONENT:
        return _COMPONENT[name]
    layer = name.split(".")[1]
    return f"blocks.{layer}.attn[{index}]" if index is not None else f"blocks.{layer}.mlp"


def _matrix(hook: Hook, reader: bool) -> str:
    name, index = hook
    if name in _MATRIX:
        return _MATRIX[name]
    layer = name.split(".")[1]
    if index is None:
        return f"blocks.{layer}.mlp.{'W_in' if reader else 'W_out'}"
    slot = _INPUT.match(name).group(2).upper() if reader else "O"
    return f"blocks.{layer}.attn.W_{slot}[{index}]"


def to_interpbench(c: graph.Circuit, granularity: str = "acdc_hooks") -> List[Tuple[str, str]]:
    """InterpBench `(sender, receiver)` pairs at `granularity` (see the module docstring).

    Raises:
      ValueError: an unknown granularity.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}.")
    pairs: List[Tuple[str, str]] = []
    used = sorted({(e.child, e.slot) for e in c.edges}, key=lambda x: (c.node(x[0]).stage, x))
    for parent, child in _hook_edges(c, c.edges):
        if granularity == "acdc_hooks":
            pairs.append((_name(*parent), _name(*child)))
        elif child[0].endswith("hook_resid_post"):
            continue  # no output node at component and matrix granularity
        elif granularity == "component":
            pairs.append((_component(parent), _component(child)))
        else:
            pairs.append((_matrix(parent, False), _matrix(child, True)))
    for name, slot in used:
        node = c.node(name)
        if node.kind == "unembed":
            continue
        outer = input_hook(c, name, slot)
        if granularity == "acdc_hooks" and node.kind == "head":
            inner = _name(f"blocks.{node.layer}.attn.hook_{slot}", node.head)
            result = _name(f"blocks.{node.layer}.attn.hook_result", node.head)
            pairs += [(_name(*outer), inner), (inner, result)]
        elif granularity == "acdc_hooks":
            pairs.append((_name(*outer), f"blocks.{node.layer}.hook_mlp_out"))
        elif granularity == "matrix":
            out = (
                (f"blocks.{node.layer}.attn.hook_result", node.head)
                if node.head is not None
                else (f"blocks.{node.layer}.hook_mlp_out", None)
            )
            pairs.append((_matrix(outer, True), _matrix(out, False)))
    return list(dict.fromkeys(pairs))


def from_interpbench(pairs: Iterable[Tuple[str, str]], granularity: str = "acdc_hooks"):
    """Edge keys from InterpBench pairs: `(parent, child, slot)`, or `(parent, child)`
    at component granularity (which has no slots). Edges inside a head or MLP are skipped.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}.")
    keys = set()
    for sender, receiver in pairs:
        if granularity == "acdc_hooks":
            parent, child = _split_name(sender), _split_name(receiver)
            if _is_addition(parent[0], child[0]):
                keys.add((_parent_node(*parent),) + _child_node(*child))
        elif granularity == "component":
            keys.add((_component_node(sender), _component_node(receiver)))
        else:
            key = _matrix_key(sender, receiver)
            if key is not None:
                keys.add(key)
    return frozenset(keys)


def _component_node(name: str) -> str:
    if name in ("embed", "pos_embed"):
        return "embed"
    m = re.fullmatch(r"blocks\.(\d+)\.(attn\[(\d+)\]|mlp)", name)
    if m is None:
        raise ValueError(f"{name!r} is not an InterpBench component (embed, blocks.0.attn[0]...).")
    return f"{m.group(1)}.{m.group(3)}" if m.group(3) is not None else f"mlp {m.group(1)}"


_MATRIX_NAME = re.compile(r"blocks\.(\d+)\.(attn\.W_([QKVO])\[(\d+)\]|mlp\.W_(in|out))")


def _matrix_key(sender: str, receiver: str) -> Optional[EdgeKey]:
    def parse(name: str):
        if name in ("embed.W_E", "pos_embed.W_pos"):
            return "embed", None
        m = _MATRIX_NAME.fullmatch(name)
        if m is None:
            raise ValueError(f"{name!r} is not an InterpBench matrix (embed.W_E, ...W_Q[0]...).")
        if m.group(3) is not None:
            return f"{m.group(1)}.{m.group(4)}", m.group(3).lower()
        return f"mlp {m.group(1)}", m.group(5)

    parent, out = parse(sender)
    child, slot = parse(receiver)
    if out not in (None, "o", "out"):
        return None  # inside a head or an MLP: input matrix -> output matrix
    return (parent, child, graph.IN if slot == "in" else slot)


# ---- one entry point for the command line


def render(c: graph.Circuit, fmt: str) -> str:
    """The circuit as text in format `fmt` (one of `FORMATS`), for `tracr circuit`.

    `acdc` is written as rows `[child, child_index, parent, parent_index, present]`
    (JSON has no tuple keys; `acdc_from_rows` rebuilds the dictionary);
    `interpbench` as `{granularity: [[sender, receiver], ...]}`.

    Raises:
      ValueError: an unknown format.
    """
    if fmt == "json":
        doc: Any = to_json(c)
    elif fmt == "tl":
        doc = to_transformer_lens(c)
    elif fmt == "acdc":
        doc = [[k[0], list(k[1]), k[2], list(k[3]), v] for k, v in to_acdc(c).items()]
    elif fmt == "interpbench":
        doc = {g: [list(p) for p in to_interpbench(c, g)] for g in GRANULARITIES}
    else:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    return json.dumps(doc, indent=1)


def acdc_from_rows(rows: Iterable[List[Any]]) -> Dict[Tuple[str, tuple, str, tuple], bool]:
    """The ACDC dictionary from the rows `render(c, "acdc")` writes."""
    return {(r[0], tuple(r[1]), r[2], tuple(r[3])): bool(r[4]) for r in rows}


def components(keys: Iterable[EdgeKey]) -> FrozenSet[Tuple[str, str]]:
    """(parent, child) of edge keys, slots and the unembedding dropped: InterpBench's
    component granularity."""
    return frozenset((k[0], k[1]) for k in keys if k[1] != "unembed")


def write_circuit(model, fmt: str, output: Optional[str]) -> str:
    """What `tracr circuit` does: build the circuit, render it, write it to `output`
    (stdout when None). Returns a one-line summary for stderr."""
    import pathlib
    import sys

    c = graph.circuit(model)
    text = render(c, fmt)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        pathlib.Path(output).write_text(text + "\n")
    where = "stdout" if output is None else output
    inert = f"{len(c.inert)} inert, {len(c.inert_parts)} inert embedding parts"
    return f"{len(c.nodes)} nodes, {len(c.edges)} edges ({inert}) as {fmt} to {where}"
