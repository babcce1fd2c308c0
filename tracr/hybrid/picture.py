"""A picture of a hybrid: which heads and MLPs are compiled (frozen) and which learned.

One column per layer, two rows (attention, MLP). Compiled heads and MLP parts
are blue boxes named by the RASP expression they compute (from the compiled
spec); learned heads and MLPs are orange; the readout, with the expressions
it reads, is on the right. matplotlib is imported only here, when drawing::

    picture.draw(hspec, "hybrid.png")
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple, Union

from tracr.hybrid.config import HybridSpec

COMPILED_COLOR = "#8fb8de"
LEARNED_COLOR = "#f4a261"


def components(hspec: HybridSpec) -> List[Tuple[int, str, str, str]]:
    """(layer, sublayer, kind, text) of every box: kind is "compiled" or "learned"."""
    boxes = []
    for layer in range(hspec.num_layers):
        if layer < hspec.compiled_layers:
            spec_layer = hspec.compiled.layers[layer]
            for head in spec_layer.heads:
                boxes.append((layer, "attn", "compiled", f"{head.name} {head.label}"))
            if spec_layer.mlp is not None:
                for label in spec_layer.mlp.labels:
                    boxes.append((layer, "mlp", "compiled", f"mlp {label}"))
        if hspec.num_heads:
            boxes.append((layer, "attn", "learned", f"{hspec.num_heads} heads x {hspec.key_size}"))
        if hspec.mlp_hidden_size:
            boxes.append((layer, "mlp", "learned", f"mlp {hspec.mlp_hidden_size}"))
    return boxes


def draw(hspec: HybridSpec, path: Optional[Union[str, os.PathLike]] = None):
    """Draws the hybrid's layout; saves a PNG to `path` if given. Returns the figure.

    Raises:
      ImportError: matplotlib is missing (install the `viz` extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib import patches
        from matplotlib import pyplot as plt
    except ImportError:
        raise ImportError("drawing a hybrid needs matplotlib: pip install 'tracr[viz]'.") from None
    boxes = components(hspec)
    rows = {"attn": 1, "mlp": 0}
    per_cell = {}
    for layer, sub, _, _ in boxes:
        per_cell[(layer, sub)] = per_cell.get((layer, sub), 0) + 1
    height = max(per_cell.values(), default=1)
    fig, ax = plt.subplots(figsize=(2.4 * (hspec.num_layers + 1), 1.2 + 1.1 * height))
    seen = {}
    for layer, sub, kind, text in boxes:
        k = seen.get((layer, sub), 0)
        seen[(layer, sub)] = k + 1
        x = layer * 2.4
        y = rows[sub] * (height + 0.5) + k
        color = COMPILED_COLOR if kind == "compiled" else LEARNED_COLOR
        ax.add_patch(patches.FancyBboxPatch((x, y), 2.0, 0.8, boxstyle="round,pad=0.05", fc=color))
        ax.text(x + 1.0, y + 0.4, text, ha="center", va="center", fontsize=7)
    x = hspec.num_layers * 2.4
    reads = ", ".join(hspec.reads) or "learned stream"
    ax.add_patch(
        patches.FancyBboxPatch((x, 0), 2.0, 0.8, boxstyle="round,pad=0.05", fc=LEARNED_COLOR)
    )
    ax.text(
        x + 1.0,
        0.4,
        f"readout ({hspec.num_classes})\nreads {reads}",
        ha="center",
        va="center",
        fontsize=7,
    )
    for layer in range(hspec.num_layers):
        ax.text(layer * 2.4 + 1.0, -0.5, f"layer {layer}", ha="center", fontsize=8)
    ax.text(-0.3, height + 0.5 + 0.4, "attn", ha="right", va="center", fontsize=8)
    ax.text(-0.3, 0.4, "mlp", ha="right", va="center", fontsize=8)
    ax.legend(
        handles=[
            patches.Patch(color=COMPILED_COLOR, label="compiled (frozen)"),
            patches.Patch(color=LEARNED_COLOR, label="learned"),
        ],
        loc="upper right",
        fontsize=7,
    )
    ax.set_xlim(-1.2, (hspec.num_layers + 1) * 2.4)
    ax.set_ylim(-1.0, 2 * (height + 0.5) + 0.6)
    ax.axis("off")
    ax.set_title(
        f"hybrid: compiled stream {hspec.d_compiled} + learned stream {hspec.d_learned}",
        fontsize=9,
    )
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig
