"""SelectorWidth: how many keys each query selects, as an attention + MLP pair.

1. Attention (`categorical_attn` with `always_attend_to_bos=True`): BOS scores
   the same as every selected key, and only BOS carries a value (its bos
   direction, copied to a helper direction). A query selecting w keys thus
   reads 1/(w+1) into `{label}_selector_width_attn_output`.
2. MLP: a discretising MLP (see `numerical_mlp`) on the values
   {1/(w+1) : w in out_value_set} maps 1/(w+1) back to w, one-hot
   (`output_space.name:w`) or as a magnitude. Its steps are placed relative to
   the local gaps, so it stays exact for any max_seq_len.

The helper direction is left holding 1/(w+1). Queries at the BOS position
produce meaningless widths; the compiler ignores that position.
"""

from __future__ import annotations

from typing import Iterable

from tracr.craft import bases, transformers
from tracr.craft.chamber import categorical_attn, numerical_mlp


def selector_width(
    query_space: bases.VectorSpaceWithBasis,
    key_space: bases.VectorSpaceWithBasis,
    output_space: bases.VectorSpaceWithBasis,
    bos_space: bases.VectorSpaceWithBasis,
    one_space: bases.VectorSpaceWithBasis,
    attn_fn: categorical_attn.QueryKeyToAttnLogit,
    out_value_set: Iterable[float],
    categorical_output: bool,
    causal: bool = False,
    softmax_coldness: float = 100.0,
    mlp_large_number: float = 100.0,
    label: str = "",
) -> transformers.SeriesWithResiduals:
    """Blocks computing the number of keys each query selects.

    Args:
      query_space: the query SOp's space.
      key_space: the key SOp's space.
      output_space: where the width goes: one direction per width
        (`categorical_output`) or a single direction.
      bos_space: the single BOS direction.
      one_space: the single always-one direction.
      attn_fn: the selection predicate on (query direction, key direction).
      out_value_set: the widths to decode (non-negative integers, typically
        0..max_seq_len).
      categorical_output: one-hot output if true, magnitude otherwise.
      causal: whether queries see only earlier or equal positions.
      softmax_coldness: attention score scale (see `categorical_attn`); the
        compiler passes ln(N / tolerance), see
        `tracr.compiler.precision.selector_width_coldness`.
      mlp_large_number: step sharpness of the decoding MLP, in units of the
        gap between neighbouring 1/(w+1); the compiler passes 2 (see
        `numerical_mlp.OPTIMAL_LARGE_NUMBER`).
      label: a name unique to this expression; it names the helper direction
        `{label}_selector_width_attn_output` and the MLP's hidden directions
        `_hidden_{label}_`.

    Returns:
      SeriesWithResiduals([attention head, MLP]).

    Raises:
      ValueError: for a negative width, or a width missing from a categorical
        `output_space`.
    """
    widths = sorted(set(out_value_set))
    for w in widths:
        if w < 0:
            raise ValueError(f"selector_width: out_value_set holds {w}; widths must be >= 0.")
    helper_space = bases.VectorSpaceWithBasis(
        [bases.BasisDirection(f"{label}_selector_width_attn_output")]
    )

    attn = categorical_attn.categorical_attn(
        query_space=query_space,
        key_space=key_space,
        value_space=bos_space,
        output_space=helper_space,
        bos_space=bos_space,
        one_space=one_space,
        attn_fn=attn_fn,
        default_output=None,
        causal=causal,
        always_attend_to_bos=True,
        use_bos_for_default_output=False,
        softmax_coldness=softmax_coldness,
    )

    width_of = {1.0 / (w + 1): w for w in widths}
    decode = width_of.get
    make_mlp = (
        numerical_mlp.map_numerical_to_categorical_mlp
        if categorical_output
        else numerical_mlp.map_numerical_mlp
    )
    mlp = make_mlp(
        f=decode,
        input_space=helper_space,
        output_space=output_space,
        input_value_set=width_of.keys(),
        one_space=one_space,
        large_number=mlp_large_number,
        hidden_name=f"_hidden_{label}_",
    )
    return transformers.SeriesWithResiduals([attn, mlp])
