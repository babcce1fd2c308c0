"""Precision constants chosen from the program, so that models are exact at any size.

Two constants decide whether a compiled model computes its program exactly:
the softmax coldness `c` of each attention head (how hard its average is)
and the sharpness `L` of each discretising MLP (how steep its steps are).
Fixed values stop working once max_seq_len grows: a SelectorWidth must tell
1/(w+1) from 1/(w+2), which differ by ~1/N^2. This module picks both from
what the compiler knows: max_seq_len N, the value sets (their smallest gap
and largest magnitude) and the float type's unit roundoff u. The bounds are
derived next to the constructions (`categorical_attn`, `numerical_mlp`);
this module only picks the tolerance each block must meet::

    from tracr.compiler import precision

    precision.aggregate_coldness(100)              # ~42.5 (categorical, float32)
    precision.selector_width_coldness(100)         # ~21.2
    precision.DISCRETISING_SHARPNESS               # 2.0

The tolerances, and why:

* A discretising MLP with L = 2 (`numerical_mlp.OPTIMAL_LARGE_NUMBER`, the
  best input tolerance per unit of float error) reads its input exactly when
  the input is off by less than a quarter of the local gap g. Upstream
  attention may use half of that: leakage <= g / 8.
* Nothing is gained from leakage below the float type's own rounding of the
  value, u |x|, so no head is made colder than that needs: leakage <= u M for
  values of magnitude <= M. Colder heads only amplify upstream errors (see
  `categorical_attn`).

Per block, with N = max_seq_len (the most keys a head can select):

* numerical Aggregate of values with magnitude <= M, whose means have
  smallest gap g:  relative tolerance t = min(u, g / (8 M)),
  c = 2 ln((N + 1) / t);
* categorical Aggregate (one-hots, M = 1, g = 1): t = u, c = 2 ln((N + 1) / u);
* SelectorWidth (BOS weight 1/(w+1), relative gap to 1/(w+2) at least
  1/(N+1)): t = min(u, 1 / (8 (N + 1))), c = ln(N / t);
* discretising MLPs: L = 2.

In float32 (u = 2^-24) this gives c = 36.9 / 40.1 / 42.5 for categorical
aggregates at N = 5 / 30 / 100 and c = 18.2 / 20.0 / 21.2 for SelectorWidth,
growing like 2 ln N and ln N. `certificate.certify` measures the margins the
constants buy.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

import jax.numpy as jnp
import networkx as nx
import numpy as np

from tracr.compiler import nodes
from tracr.craft.chamber import categorical_attn, numerical_mlp
from tracr.rasp import rasp

# Compiled models run in float32 (see assemble).
DEFAULT_DTYPE = np.float32

# The sharpness of every discretising MLP unless mlp_exactness overrides it.
DISCRETISING_SHARPNESS = numerical_mlp.OPTIMAL_LARGE_NUMBER

# Upstream errors may use this fraction of the local gap: half of the quarter
# gap a discretising MLP with L = 2 tolerates.
GAP_FRACTION = 1.0 / 8.0

# Used when the graph does not reveal max_seq_len (no indices and no
# SelectorWidth): the bounds grow like ln N, so this costs ~10 in c.
ASSUMED_MAX_SEQ_LEN = 2**20


def unit_roundoff(dtype: Any = DEFAULT_DTYPE) -> float:
    """u = eps / 2 of a float type: 2^-24 for float32, 2^-8 for bfloat16."""
    return float(jnp.finfo(dtype).eps) / 2


def smallest_gap(values: Iterable[Any]) -> float:
    """The smallest distance between two distinct numbers in `values` (inf if < 2)."""
    numbers = np.unique(np.asarray([float(v) for v in values if v is not None], dtype=np.float64))
    if numbers.size < 2:
        return math.inf
    return float(np.diff(numbers).min())


def largest_magnitude(values: Iterable[Any]) -> float:
    """max |v| over the numbers in `values` (0 if there are none)."""
    numbers = [abs(float(v)) for v in values if v is not None]
    return max(numbers, default=0.0)


def aggregate_coldness(
    max_seq_len: int,
    *,
    numerical: bool = False,
    value_set: Optional[Iterable[Any]] = None,
    sop_value_set: Optional[Iterable[Any]] = None,
    dtype: Any = DEFAULT_DTYPE,
) -> float:
    """The softmax coldness of an Aggregate's head (see the module docstring).

    Args:
      max_seq_len: N, the most keys a query can select.
      numerical: whether the Aggregate is numerical (a mean) or categorical.
      value_set: a numerical Aggregate's own values (the means), for their gap.
      sop_value_set: the values it averages, for their magnitude.
      dtype: the float type the model runs in.
    """
    tolerance = unit_roundoff(dtype)
    if numerical and value_set is not None and sop_value_set is not None:
        magnitude = largest_magnitude(sop_value_set)
        gap = smallest_gap(value_set)
        if magnitude > 0 and math.isfinite(gap):
            tolerance = min(tolerance, GAP_FRACTION * gap / magnitude)
    return categorical_attn.coldness_for_tolerance(max_seq_len, tolerance)


def selector_width_coldness(max_seq_len: int, *, dtype: Any = DEFAULT_DTYPE) -> float:
    """The softmax coldness of a SelectorWidth's head (see the module docstring)."""
    tolerance = min(unit_roundoff(dtype), GAP_FRACTION / (max_seq_len + 1))
    return categorical_attn.coldness_for_tolerance(
        max_seq_len, tolerance, always_attend_to_bos=True
    )


def max_seq_len_of(graph: nx.DiGraph) -> Optional[int]:
    """max_seq_len as recorded in the value sets of `indices` or a SelectorWidth."""
    found = []
    for label in graph.nodes:
        node = graph.nodes[label]
        expr, values = node.get(nodes.EXPR), node.get(nodes.VALUE_SET)
        if not values:
            continue
        if isinstance(expr, rasp.IndicesType):
            found.append(max(values) + 1)
        elif isinstance(expr, rasp.SelectorWidth):
            found.append(max(values))
    return max(found) if found else None
