"""Attention heads for Select + Aggregate, with a beginning-of-sequence fallback.

The head scores a query against a key with a large "softmax coldness" `c`
times the predicate, so the softmax becomes a hard average over the selected
keys. Position 0 holds the BOS token, whose residual is `bos + one` and
nothing else (no value, no key or query direction). The query side always
has `one`, and W_QK gives the pair (one, bos) the score `c/2`. Hence, at a
query with k selected keys among N keys (BOS excluded), the logits are

    selected: c      BOS: c/2      not selected: 0.

Leakage bound (why c = 100 is exact to float32):

* k >= 1: the softmax weight on BOS is e^{c/2} / (k e^c + e^{c/2} + N - k)
  <= e^{-c/2} / k, and the total weight on non-selected keys is
  <= (N - k) / (k e^c) <= N e^{-c}. The output is the mean over selected keys
  up to a relative error of at most e^{-c/2} + N e^{-c} <= (N + 1) e^{-c/2}.
* k = 0: BOS gets e^{c/2} / (e^{c/2} + N) >= 1 - N e^{-c/2}, so the output is
  the BOS default up to N e^{-c/2}.

With c = 100, e^{-c/2} ~ 1.9e-22, so the error stays below float32's 6e-8
for any N < 1e6 (indeed for any N < 3e14).

With `always_attend_to_bos=True` (used by SelectorWidth) the (one, bos) score
is `c`, so BOS weighs the same as each selected key: with w selected keys BOS
receives 1/(w+1) of the attention.
"""

from __future__ import annotations

from typing import Optional, Protocol

import numpy as np

from tracr.craft import bases, transformers, vectorspace_fns


class QueryKeyToAttnLogit(Protocol):
    """Whether (or how strongly) a query direction attends to a key direction."""

    def __call__(self, query: bases.BasisDirection, key: bases.BasisDirection) -> bool: ...


def categorical_attn(
    query_space: bases.VectorSpaceWithBasis,
    key_space: bases.VectorSpaceWithBasis,
    value_space: bases.VectorSpaceWithBasis,
    output_space: bases.VectorSpaceWithBasis,
    bos_space: bases.VectorSpaceWithBasis,
    one_space: bases.VectorSpaceWithBasis,
    attn_fn: QueryKeyToAttnLogit,
    default_output: Optional[bases.VectorInBasis] = None,
    causal: bool = False,
    always_attend_to_bos: bool = False,
    use_bos_for_default_output: bool = True,
    softmax_coldness: float = 100.0,
) -> transformers.AttentionHead:
    """An attention head that averages `value_space` over the selected keys.

    Args:
      query_space: directions read at the query position (the query SOp).
      key_space: directions read at key positions (the key SOp).
      value_space: directions averaged over the selected keys. They are written
        to `output_space` pairwise in basis order: `value_space.basis[i]` (the
        caller's order, skipping the BOS direction unless
        `always_attend_to_bos`) goes to `output_space.basis[i]`. A numerical
        aggregate is the case of one value and one output direction.
      output_space: directions written.
      bos_space: the single BOS direction (the token direction of the BOS
        position).
      one_space: the single direction that is 1 at every position.
      attn_fn: `attn_fn(query_direction, key_direction)` is true where the query
        selects the key.
      default_output: what a query selecting nothing writes (a vector in
        `output_space`); None for zero.
      causal: whether queries see only keys at earlier or equal positions.
      always_attend_to_bos: give BOS the same score as a selected key (see the
        module docstring); used by SelectorWidth.
      use_bos_for_default_output: map the BOS direction to `default_output`.
      softmax_coldness: the score scale `c`; see the module docstring.

    Returns:
      An AttentionHead reading `query_space + one`, `key_space + bos`,
      `value_space + bos` and writing `output_space`.

    Raises:
      ValueError: if `bos_space`/`one_space` are not one-dimensional, if the
        value and output directions do not pair up, or if `default_output` lies
        outside `output_space`.
    """
    bases.ensure_dims(bos_space, 1, "bos_space")
    bases.ensure_dims(one_space, 1, "one_space")
    bos_direction = bos_space.basis[0]
    one_direction = one_space.basis[0]
    special = {bos_direction, one_direction}

    query_space = bases.join_vector_spaces(query_space, one_space)
    key_space_joined = bases.join_vector_spaces(key_space, bos_space)

    # W_QK: c * attn_fn on ordinary pairs; the (one, bos) pair sets BOS's score.
    qk = np.zeros((query_space.num_dims, key_space_joined.num_dims))
    key_cols = [(j, k) for j, k in enumerate(key_space_joined.basis) if k not in special]
    for i, q in enumerate(query_space.basis):
        if q in special:
            continue
        for j, k in key_cols:
            qk[i, j] = float(attn_fn(q, k))
    qk *= softmax_coldness
    bos_score = 1.0 if always_attend_to_bos else 0.5
    qk[
        query_space.index_by_direction[one_direction],
        key_space_joined.index_by_direction[bos_direction],
    ] = softmax_coldness * bos_score
    w_qk = vectorspace_fns.ScalarBilinear(query_space, key_space_joined, qk)

    # W_OV: value directions pairwise onto output directions; BOS -> default.
    value_directions = [d for d in value_space.basis if d != bos_direction or always_attend_to_bos]
    if len(value_directions) != output_space.num_dims:
        raise ValueError(
            f"categorical_attn: value_space has {len(value_directions)} value "
            f"direction(s) {bases._describe(value_directions)} but output_space has "
            f"{output_space.num_dims} {bases._describe(output_space.basis)}; they are "
            "paired in basis order, so give both spaces the same values in the same order."
        )
    value_space_joined = bases.join_vector_spaces(value_space, bos_space)
    ov = np.zeros((value_space_joined.num_dims, output_space.num_dims))
    rows = bases._index_array(value_space_joined.index_by_direction, value_directions)
    ov[rows, np.arange(output_space.num_dims)] = 1.0
    bos_is_value = bos_direction in value_directions
    if use_bos_for_default_output and not bos_is_value and default_output is not None:
        if default_output not in output_space:
            outside = [d for d in default_output.basis_directions if d not in output_space]
            raise ValueError(
                f"categorical_attn: default_output has directions outside "
                f"output_space: {bases._describe(outside)}."
            )
        if default_output.magnitudes.ndim != 1:
            raise ValueError(
                "categorical_attn: default_output must be a single vector, got "
                f"magnitudes of shape {default_output.magnitudes.shape}."
            )
        ov[value_space_joined.index_by_direction[bos_direction]] = default_output.project(
            output_space
        ).magnitudes
    w_ov = vectorspace_fns.Linear(value_space_joined, output_space, ov)

    return transformers.AttentionHead(w_qk=w_qk, w_ov=w_ov, causal=causal)
