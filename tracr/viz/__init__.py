"""Pictures of compiled models (optional `viz` extra: matplotlib, imported lazily).

from tracr.viz import write_pngs
write_pngs(model, ["compiler_bos", "a", "b"], "pictures")
"""

from tracr.viz.circuit_plot import plot_circuit
from tracr.viz.plots import (
    attention_patterns,
    head_roles,
    plot_attention,
    plot_residual_stream,
    residual_stages,
    token_labels,
    used_heads,
    write_pngs,
)

__all__ = [
    "attention_patterns",
    "head_roles",
    "plot_attention",
    "plot_circuit",
    "plot_residual_stream",
    "residual_stages",
    "token_labels",
    "used_heads",
    "write_pngs",
]
