"""A picture of a compiled circuit: components as boxes, edges labelled with RASP expressions::

    from tracr.circuits import circuit
    from tracr.viz import plot_circuit
    plot_circuit(circuit(model)).savefig("circuit.png")

Columns are residual-stream stages (embed, each layer's heads, its MLP,
unembed); a box shows the node and the expressions it computes; an arrow
A -> B is labelled with B's input (q, k, v) and the expressions of the
directions it carries. matplotlib is imported lazily (the `viz` extra).
"""

from __future__ import annotations

from typing import Dict, Tuple

from tracr.circuits import graph

_WRAP = 22  # characters per line in a box


def _box_text(node: graph.Node) -> str:
    title = {"head": f"head {node.name}", "mlp": f"MLP {node.layer}"}.get(node.kind, node.name)
    lines, line = [title], ""
    for label in node.labels:
        piece = label if not line else f"{line}, {label}"
        if len(piece) > _WRAP and line:
            lines.append(line)
            line = label
        else:
            line = piece
    if line:
        lines.append(line)
    return "\n".join(lines)


def layout(c: graph.Circuit) -> Dict[str, Tuple[float, float]]:
    """Node name -> (x, y): x the stage, y spread evenly within the stage."""
    columns: Dict[int, list] = {}
    for node in c.nodes:
        columns.setdefault(node.stage, []).append(node.name)
    used = sorted(columns)
    where = {}
    for x, stage in enumerate(used):
        names = columns[stage]
        for i, name in enumerate(names):
            where[name] = (2.6 * x, (len(names) - 1) / 2 - i)
    return where


def plot_circuit(c: graph.Circuit, *, title: str = ""):
    """A matplotlib Figure of the circuit (inert edges are not drawn)."""
    from tracr.viz.plots import _pyplot

    plt = _pyplot()
    where = layout(c)
    xs = [p[0] for p in where.values()]
    ys = [p[1] for p in where.values()]
    width = max(xs) - min(xs) + 2.4
    height = max(ys) - min(ys) + 1.8 + 0.2 * len(c.edges)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * width), max(3.5, 1.2 * height)))
    colors = {"embed": "#dde8f5", "head": "#fbe3c7", "mlp": "#d9efd9", "unembed": "#e8dff5"}
    # One arrow per (parent, child), labelled with each input it feeds.
    grouped: Dict[Tuple[str, str], list] = {}
    for e in c.edges:
        grouped.setdefault((e.parent, e.child), []).append(e)
    long_edges = 0
    for (parent, child), edges in grouped.items():
        (x0, y0), (x1, y1) = where[parent], where[child]
        rad = 0.0
        if x1 - x0 > 2.7:  # skips a column: bend it around the boxes in between
            long_edges += 1
            rad = (0.18 + 0.06 * (long_edges // 2)) * (1 if long_edges % 2 else -1)
        start, end = (x0 + 0.6, y0), (x1 - 0.6, y1)
        ax.annotate(
            "",
            xy=end,
            xytext=start,
            arrowprops=dict(
                arrowstyle="-|>", color="0.35", lw=0.9, connectionstyle=f"arc3,rad={rad}"
            ),
        )
        # The middle of matplotlib's arc3 curve (data and display axes alike here).
        dx, dy = end[0] - start[0], end[1] - start[1]
        mid = ((start[0] + end[0]) / 2 + rad * dy / 2, (start[1] + end[1]) / 2 - rad * dx / 2)
        text = "\n".join(
            ", ".join(e.labels) if e.slot == graph.IN else f"{e.slot}: {', '.join(e.labels)}"
            for e in edges
        )
        ax.text(
            *mid,
            text,
            fontsize=6.5,
            ha="center",
            va="center",
            color="0.15",
            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="0.8", alpha=0.9),
        )
    for node in c.nodes:
        x, y = where[node.name]
        ax.text(
            x,
            y,
            _box_text(node),
            ha="center",
            va="center",
            fontsize=8,
            bbox=dict(boxstyle="round,pad=0.4", fc=colors[node.kind], ec="0.3"),
        )
    ax.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
    spread = 0.9 + 0.1 * len(c.edges)
    ax.set_ylim(min(ys) - spread, max(ys) + spread)
    ax.axis("off")
    ax.set_title(title or f"circuit of {c.output_label}: {len(c.edges)} edges", fontsize=10)
    return fig
