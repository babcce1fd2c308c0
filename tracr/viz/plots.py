"""Pictures of a compiled model at work: residual stream and attention.

Run a model on one input and write PNGs a person can read at a glance::

    from tracr.viz import write_pngs
    paths = write_pngs(model, ["compiler_bos", 3, 1, 2], "pictures")

- `residual_stream.png`: one heat map per stage (embeddings, then after each
  attention and MLP sublayer), positions down the side labelled with their
  tokens, residual dimensions along the bottom labelled `name:value`;
  `residual_<k>_<stage>.png` holds each stage on its own.
- `attention_layer<i>.png`: the attention pattern of every head of layer i
  (query positions down, key positions across, weights in [0, 1]); heads
  the compiler did not place (padding) are left out.
- `circuit.png`: the compiled circuit (`tracr.circuits`): components as
  boxes, edges labelled with the RASP expressions they carry.

matplotlib is imported inside the functions (the `viz` extra), so importing
this module costs nothing; the Agg backend is used, so no display is needed.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from tracr.transformer import assembled
from tracr.transformer import spec as spec_lib

PathLike = Union[str, pathlib.Path]

# Annotate cells with their values only while the numbers stay legible.
_MAX_ANNOTATED_CELLS = 600
_MAX_ANNOTATED_POSITIONS = 12


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "tracr.viz needs matplotlib; install it with `pip install 'tracr[viz]'`."
        ) from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def token_labels(model: assembled.AssembledTransformerModel, tokens: Sequence[Any]) -> List[str]:
    """`"0: BOS"`, `"1: a"`, ...: one axis label per position (position: token)."""
    enc = model.input_encoder
    bos = getattr(enc, "bos_token", None)
    pad = getattr(enc, "pad_token", None)
    names = []
    for pos, token in enumerate(tokens):
        shown = "BOS" if pos == 0 and token == bos else "PAD" if token == pad else str(token)
        names.append(f"{pos}: {shown}")
    return names


def residual_stages(
    model: assembled.AssembledTransformerModel, tokens: Sequence[Any]
) -> List[Tuple[str, np.ndarray]]:
    """The residual stream [T, D] at each stage of the forward pass.

    Returns:
      `[("embeddings", x0), ("layer 0 attention", x1), ("layer 0 MLP", x2), ...]`.
    """
    out = model.apply(list(tokens))
    stages = [("embeddings", np.asarray(out.input_embeddings)[0])]
    for i, residual in enumerate(out.residuals):
        sublayer = "attention" if i % 2 == 0 else "MLP"
        stages.append((f"layer {i // 2} {sublayer}", np.asarray(residual)[0]))
    return stages


def attention_patterns(
    model: assembled.AssembledTransformerModel, tokens: Sequence[Any]
) -> List[np.ndarray]:
    """Per layer, the attention weights [H, T, T] (softmax of the logits)."""
    out = model.apply(list(tokens))
    patterns = []
    for logits in out.attn_logits:
        x = np.asarray(logits, dtype=np.float64)[0]
        x = x - x.max(axis=-1, keepdims=True)
        w = np.exp(x)
        patterns.append(w / w.sum(axis=-1, keepdims=True))
    return patterns


def used_heads(model: assembled.AssembledTransformerModel, layer: int) -> List[int]:
    """Heads of `layer` that the compiler placed (from `model.spec`); padding heads are left out."""
    layers = _spec(model).layers
    return [h.head for h in layers[layer].heads] if layer < len(layers) else []


def _spec(model: assembled.AssembledTransformerModel) -> spec_lib.ModelSpec:
    if model.spec is None:
        raise ValueError("tracr.viz needs model.spec (a model compiled or loaded by this tracr).")
    return model.spec


def _variables(model_spec: spec_lib.ModelSpec, indices: Sequence[int]) -> str:
    names = dict.fromkeys(model_spec.residual_names[i] for i in indices)
    return ", ".join(names) or "-"


def head_roles(model: assembled.AssembledTransformerModel, layer: int, head: int) -> dict:
    """The variables a head's query and key read and its output writes (from `model.spec`).

    Returns:
      `{"query": "indices", "key": "target_pos", "writes": "sort"}` (RASP labels).

    Raises:
      ValueError: the layer has no such head.
    """
    model_spec = _spec(model)
    found = [h for h in model_spec.heads() if (h.layer, h.head) == (layer, head)]
    if not found:
        raise ValueError(
            f"Layer {layer} has no compiled head {head}; see used_heads(model, layer)."
        )
    (h,) = found
    return {
        "query": _variables(model_spec, h.query),
        "key": _variables(model_spec, h.key),
        "writes": _variables(model_spec, h.writes),
    }


def _draw_residual(ax, values: np.ndarray, labels: Sequence[str], rows: Sequence[str], title: str):
    vmax = max(1.0, float(np.abs(values).max()))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylabel("position: token", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    # Thin lines between variables (tokens:*, indices:*, ...) to group their values.
    names = [label.split(":", 1)[0] for label in labels]
    for i in range(1, len(names)):
        if names[i] != names[i - 1]:
            ax.axvline(i - 0.5, color="0.55", linewidth=0.8)
    ax.set_xticks(np.arange(-0.5, len(labels), 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(rows), 1), minor=True)
    ax.grid(which="minor", color="0.92", linewidth=0.4)
    ax.tick_params(which="minor", length=0)
    if values.size <= _MAX_ANNOTATED_CELLS:
        for (r, c), v in np.ndenumerate(values):
            if abs(v) > 1e-3:
                color = "white" if abs(v) > 0.6 * vmax else "black"
                ax.text(c, r, f"{v:.2g}", ha="center", va="center", fontsize=6, color=color)
    return image


def plot_residual_stream(
    model: assembled.AssembledTransformerModel,
    tokens: Sequence[Any],
    stages: Optional[Sequence[int]] = None,
):
    """A figure with one residual-stream heat map per stage.

    Args:
      model: a compiled model.
      tokens: one input, starting with the BOS token.
      stages: indices into `residual_stages` to draw (default: all).

    Returns:
      A matplotlib Figure.
    """
    plt = _pyplot()
    all_stages = residual_stages(model, tokens)
    chosen = [all_stages[i] for i in (range(len(all_stages)) if stages is None else stages)]
    labels = list(model.residual_labels)
    rows = token_labels(model, tokens)
    width = min(60.0, max(7.0, 0.2 * len(labels) + 2.5))
    panel_height = 0.32 * len(rows) + 0.7
    label_space = 0.075 * max(len(x) for x in labels) + 0.4
    fig, axes = plt.subplots(
        len(chosen),
        1,
        figsize=(width, panel_height * len(chosen) + label_space + 0.6),
        sharex=True,
        squeeze=False,
    )
    previous = None
    for ax, (name, values) in zip(axes[:, 0], chosen):
        unchanged = previous is not None and np.allclose(values, previous)
        title = f"residual stream after {name}" if name != "embeddings" else "embeddings"
        image = _draw_residual(
            ax, values, labels, rows, title + (" (no change)" if unchanged else "")
        )
        previous = values
    for ax in axes[:-1, 0]:
        ax.tick_params(labelbottom=False)
    axes[-1, 0].set_xlabel("residual dimension (variable:value)", fontsize=8)
    fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.02, pad=0.01, label="value")
    return fig


def plot_attention(model: assembled.AssembledTransformerModel, tokens: Sequence[Any], layer: int):
    """A figure with the attention pattern of each used head of `layer`.

    Returns:
      A matplotlib Figure, or None when no head of the layer is used.
    """
    plt = _pyplot()
    heads = used_heads(model, layer)
    if not heads:
        return None
    weights = attention_patterns(model, tokens)[layer]
    rows = token_labels(model, tokens)
    t = len(rows)
    size = max(3.2, 0.42 * t + 1.6)
    fig, axes = plt.subplots(
        1, len(heads), figsize=(size * len(heads) + 1.0, size + 0.4), squeeze=False
    )
    for ax, head in zip(axes[0], heads):
        w = weights[head]
        image = ax.imshow(w, cmap="Blues", vmin=0.0, vmax=1.0)
        roles = head_roles(model, layer, head)
        ax.set_title(
            f"layer {layer}, head {head}: writes {roles['writes']}\n"
            f"query reads {roles['query']}; key reads {roles['key']}",
            fontsize=9,
        )
        short = max(len(r) for r in rows) <= 6
        ax.set_xticks(range(t), rows, rotation=0 if short else 90, fontsize=8)
        ax.set_yticks(range(t), rows, fontsize=8)
        ax.set_xlabel("key position (attended to)", fontsize=8)
        ax.set_ylabel("query position", fontsize=8)
        if t <= _MAX_ANNOTATED_POSITIONS:
            for (r, c), v in np.ndenumerate(w):
                if v >= 0.005:
                    color = "white" if v > 0.6 else "black"
                    ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.03, pad=0.02, label="attention weight")
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def write_pngs(
    model: assembled.AssembledTransformerModel,
    tokens: Sequence[Any],
    directory: PathLike,
    *,
    dpi: int = 120,
) -> List[pathlib.Path]:
    """Writes the residual stream and attention pictures for one input.

    Args:
      model: a compiled model.
      tokens: one input, starting with the BOS token.
      directory: where to write the PNGs (created if needed).
      dpi: resolution of the PNGs.

    Returns:
      The paths written: circuit.png, residual_stream.png, residual_<k>_<stage>.png per
      stage, and attention_layer<i>.png per layer with a used head.

    Raises:
      ValueError: the input is not valid for the model (from `model.apply`).
      ImportError: matplotlib is not installed.
    """
    plt = _pyplot()
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.apply(list(tokens))  # fail on a bad input before writing anything
    written = []

    def save(fig, name: str) -> None:
        path = directory / name
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    from tracr.circuits import circuit
    from tracr.viz.circuit_plot import plot_circuit

    save(plot_circuit(circuit(model)), "circuit.png")
    save(plot_residual_stream(model, tokens), "residual_stream.png")
    for k, (name, _) in enumerate(residual_stages(model, tokens)):
        save(plot_residual_stream(model, tokens, stages=[k]), f"residual_{k:02d}_{_slug(name)}.png")
    for layer in range(model.model_config.num_layers):
        fig = plot_attention(model, tokens, layer)
        if fig is not None:
            save(fig, f"attention_layer{layer}.png")
    return written
