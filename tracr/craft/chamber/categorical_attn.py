"""Attention heads for Select + Aggregate, with a beginning-of-sequence fallback.

The head scores a query against a key with a large "softmax coldness" `c`
times the predicate, so the softmax becomes a hard average over the selected
keys. Position 0 holds the BOS token, whose residual is `bos + one` and
nothing else (no value, no key or query direction). The query side always
has `one`, and W_QK gives the pair (one, bos) the score `c/2`. Hence, at a
query with k selected keys among N keys (BOS excluded), the logits are

    selected: c      BOS: c/2      not selected: 0.

Leakage bound. Let the values averaged have magnitude at most M.

* k >= 1: with Z = k e^c + e^{c/2} + (N - k), the weight off the selected
  keys is (e^{c/2} + N - k) / Z <= e^{-c/2} + N e^{-c}, and the non-selected
  keys add at most N M e^{-c}. The output is the mean over the selected keys
  up to M (e^{-c/2} + 2 N e^{-c}) <= M (N + 1) e^{-c/2} (for c >= 2 ln 2).
* k = 0: BOS gets e^{c/2} / (e^{c/2} + N) >= 1 - N e^{-c/2}, so the output is
  the BOS default (zero) up to M N e^{-c/2}.

So the error relative to M is at most (N + 1) e^{-c/2} (`leakage_bound`), and
`coldness_for_tolerance` inverts it: c = 2 ln((N + 1) / tolerance).

With `always_attend_to_bos=True` (used by SelectorWidth) the (one, bos) score
is `c`, so BOS weighs the same as each selected key: with w selected keys BOS
receives 1/(w+1) of the attention. Only the N - w non-selected keys leak: BOS
gets e^c / ((w+1) e^c + N - w), which is 1/(w+1) up to a relative error of
N e^{-c} / (w+1) <= N e^{-c}; hence c = ln(N / tolerance) there.

Why not simply a huge c. Every logit is c times a product of residual
coordinates, so an error d in an upstream one-hot (a previous head's leakage,
an MLP's float rounding) moves logits by ~c d and scales the weights of keys
that should weigh the same by up to e^{2 c d}: the smallest c that meets the
tolerance is the most robust. Float rounding of the logits themselves (c u
for unit roundoff u) has the same effect; float32 (u = 6e-8) keeps it below
1e-5 for any c < 100. Large logits never overflow: the softmax subtracts the
row maximum, and weights below the smallest float flush to zero, which only
removes leakage.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence

import numpy as np

from tracr.craft import bases, transformers, vectorspace_fns


class QueryKeyToAttnLogit(Protocol):
    """Whether (or how strongly) a query direction attends to a key direction.

    An attn_fn may also have a method `table(queries, keys)` returning the
    array [len(queries), len(keys)] of `attn_fn(q, k)` for all pairs at once;
    `categorical_attn` then calls it instead of the function per pair (see
    `tracr.compiler.predicate_tables`, which vectorises RASP comparisons).
    """

    def __call__(self, query: bases.BasisDirection, key: bases.BasisDirection) -> bool: ...


def attn_table(
    attn_fn: QueryKeyToAttnLogit,
    queries: Sequence[bases.BasisDirection],
    keys: Sequence[bases.BasisDirection],
) -> np.ndarray:
    """`float(attn_fn(q, k))` for every query and key direction, shape [Q, K]."""
    table = getattr(attn_fn, "table", None)
    if table is not None:
        out = np.asarray(table(queries, keys), dtype=np.float64)
        if out.shape != (len(queries), len(keys)):
            raise ValueError(
                f"attn_fn.table returned shape {out.shape}; expected "
                f"[len(queries), len(keys)] = {[len(queries), len(keys)]}."
            )
        return out
    out = np.array([[float(attn_fn(q, k)) for k in keys] for q in queries], dtype=np.float64)
    return out.reshape(len(queries), len(keys))


def leakage_bound(
    softmax_coldness: float, num_keys: int, always_attend_to_bos: bool = False
) -> float:
    """Bound on the head's error relative to the values' magnitude (module docstring).

    Args:
      softmax_coldness: the score scale c.
      num_keys: N, the most keys (BOS excluded) a query can see.
      always_attend_to_bos: the SelectorWidth variant (BOS scores c, not c/2);
        the bound is then on the relative error of BOS's weight 1/(w+1).

    Returns:
      (N + 1) e^{-c/2}, or N e^{-c} for the SelectorWidth variant.
    """
    if always_attend_to_bos:
        return num_keys * float(np.exp(-softmax_coldness))
    return (num_keys + 1) * float(np.exp(-softmax_coldness / 2))


def coldness_for_tolerance(
    num_keys: int, tolerance: float, always_attend_to_bos: bool = False
) -> float:
    """The smallest softmax coldness whose `leakage_bound` is at most `tolerance`.

    Never below 2 ln 2, where the simplified bound starts to hold.

    Raises:
      ValueError: for num_keys < 1 or a tolerance outside (0, 1).
    """
    if num_keys < 1:
        raise ValueError(f"coldness_for_tolerance: num_keys must be >= 1, got {num_keys}.")
    if not 0 < tolerance < 1:
        raise ValueError(f"coldness_for_tolerance: tolerance must be in (0, 1), got {tolerance}.")
    if always_attend_to_bos:
        coldness = float(np.log(num_keys / tolerance))
    else:
        coldness = 2 * float(np.log((num_keys + 1) / tolerance))
    return max(coldness, 2 * float(np.log(2)))


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
    query_rows = [i for i, q in enumerate(query_space.basis) if q not in special]
    key_cols = [j for j, k in enumerate(key_space_joined.basis) if k not in special]
    qk[np.ix_(query_rows, key_cols)] = attn_table(
        attn_fn,
        [query_space.basis[i] for i in query_rows],
        [key_space_joined.basis[j] for j in key_cols],
    )
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
