"""Pass 6: a layered craft model -> Haiku parameters and a runnable model.

Fixes one order of all residual directions, then writes every block's
matrices into the Tracr parameter layout (`transformer/layer_i/attn/...`,
`transformer/layer_i/mlp/...`, `token_embed`, `pos_embed`) by index
arithmetic: a block's spaces map to residual rows through one dict lookup
per direction, never through dense projection matrices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tracr.craft import bases, transformers, vectorspace_fns
from tracr.transformer import assembled
from tracr.transformer import spec as spec_lib

# The compiled-model class lives on the transformer floor; these names stay
# importable from here, as in Tracr.
AssembledTransformerModel = assembled.AssembledTransformerModel
AssembledTransformerModelOutput = assembled.AssembledTransformerModelOutput
ModelForward = assembled.ModelForward
EmbeddingModules = assembled.EmbeddingModules
apply_one = assembled.apply_one
build_assembled_model = assembled.build_assembled_model

_ONE_DIRECTION = bases.BasisDirection("one")


def _make_embedding_modules(
    residual_space: bases.VectorSpaceWithBasis,
    tokens_space: bases.VectorSpaceWithBasis,
    indices_space: bases.VectorSpaceWithBasis,
    output_space: bases.VectorSpaceWithBasis,
) -> EmbeddingModules:
    """Tracr's embedding modules from vector spaces (call inside ``hk.transform``).

    Decompilers and circuit tools build embeddings this way, so the signature and
    behaviour are Tracr's: token id i embeds ``tokens_space.basis[i]`` plus the
    ``one`` direction (if the residual space has it), position i embeds
    ``indices_space.basis[i]``, and the unembedding projects onto ``output_space``
    (argmax for categorical outputs). Compiled models build theirs in
    ``assemble_craft_model``, where position 0 (BOS) has no index direction.

    Args:
      residual_space: the model's whole residual space.
      tokens_space: the directions token ids embed to, in id order.
      indices_space: the directions positions embed to, in position order.
      output_space: the directions the unembedding reads.
    """
    token_matrix = vectorspace_fns.project(tokens_space, residual_space).matrix
    if _ONE_DIRECTION in residual_space:
        token_matrix[:, residual_space.index_by_direction[_ONE_DIRECTION]] = 1.0
    pos_matrix = vectorspace_fns.project(indices_space, residual_space).matrix
    unembed_matrix = vectorspace_fns.project(residual_space, output_space).matrix
    return assembled.embedding_modules(token_matrix, pos_matrix, unembed_matrix)


param_name = spec_lib.param_name


def _layered(
    blocks: Sequence[transformers.HalfLayerBlock],
) -> List[Tuple[list, Optional[transformers.MLP]]]:
    """Splits the alternating block list into (heads, mlp) per layer."""
    layers: List[Tuple[list, Optional[transformers.MLP]]] = []
    half = 0
    for block in blocks:
        is_attn = isinstance(block, (transformers.AttentionHead, transformers.MultiAttentionHead))
        if is_attn == (half % 2 == 1):
            half += 1  # an empty half-layer in between
        layer = half // 2
        while len(layers) <= layer:
            layers.append(([], None))
        heads, mlp = layers[layer]
        if is_attn:
            heads = (
                list(block.heads())
                if isinstance(block, transformers.MultiAttentionHead)
                else [block]
            )
            layers[layer] = (heads, mlp)
        else:
            layers[layer] = (heads, block)
        half += 1
    return layers


class _ResidualIndex:
    """Maps basis directions to residual rows."""

    def __init__(self, space: bases.VectorSpaceWithBasis):
        self.space = space
        self.index = {d: i for i, d in enumerate(space.basis)}

    def rows(self, space: bases.VectorSpaceWithBasis) -> np.ndarray:
        return np.array([self.index[d] for d in space.basis], dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class _Factor:
    """A [D, width] matrix that is zero outside `rows`.

    Its rows `rows` hold `block` ([len(rows), width]), or the identity (width =
    len(rows)) where `block` is None. Heads are written into the layer's
    parameter arrays from this, without a dense [D, width] copy per head.
    """

    rows: np.ndarray
    block: Optional[np.ndarray] = None

    @property
    def width(self) -> int:
        return len(self.rows) if self.block is None else self.block.shape[1]

    def write_into(self, target: np.ndarray, scale: float = 1.0) -> None:
        """Writes the factor times `scale` into target [D, >= width] (zeros elsewhere)."""
        if self.block is None:
            target[self.rows, np.arange(len(self.rows))] = scale
        else:
            target[self.rows, : self.width] = self.block if scale == 1.0 else self.block * scale


def _head_factors(head: transformers.AttentionHead, res: _ResidualIndex):
    """Factor W_QK = Wq Wk^T and W_OV = Wv Wo in residual coordinates.

    The smaller side of each bilinear/linear map is used as the head's inner
    dimension, so key/value size is min(|left|, |right|) and min(|in|, |out|).

    Returns:
      `_Factor`s for Wq, Wk, Wv [D, key] and for Wo transposed ([D, key]).
    """
    qk = head.w_qk
    left, right = res.rows(qk.left_space), res.rows(qk.right_space)
    if len(left) <= len(right):
        wq, wk = _Factor(left), _Factor(right, qk.matrix.T)
    else:
        wq, wk = _Factor(left, qk.matrix), _Factor(right)
    ov = head.w_ov
    vin, vout = res.rows(ov.input_space), res.rows(ov.output_space)
    if len(vin) <= len(vout):
        wv, wo_t = _Factor(vin), _Factor(vout, ov.matrix.T)
    else:
        wv, wo_t = _Factor(vin, ov.matrix), _Factor(vout)
    return wq, wk, wv, wo_t


def _make_residual_space(craft_model, tokens_space, indices_space, output_space):
    del tokens_space, indices_space  # only directions the blocks read or write are kept
    return bases.join_vector_spaces(
        craft_model.residual_space, output_space, bases.VectorSpaceWithBasis([_ONE_DIRECTION])
    )


def assemble_craft_model(
    craft_model: transformers.SeriesWithResiduals,
    tokens_space: bases.VectorSpaceWithBasis,
    indices_space: bases.VectorSpaceWithBasis,
    output_space: bases.VectorSpaceWithBasis,
    categorical_output: bool,
    causal: bool = False,
    *,
    bos_token: Optional[Any] = None,
    pad_token: Optional[Any] = None,
    residual_space: Optional[bases.VectorSpaceWithBasis] = None,
    allocation: Optional[Sequence[Any]] = None,
    output_label: Optional[str] = None,
    max_seq_len: Optional[int] = None,
) -> AssembledTransformerModel:
    """Writes the craft model into Haiku parameters.

    Args:
      craft_model: half-layer blocks in order (see craft_graph_to_model).
      tokens_space: one direction per token id, in id order (BOS/PAD included).
      indices_space: one direction per position of the real tokens.
      output_space: the program output's directions (unembedding).
      categorical_output: decode by argmax (True) or read the magnitude.
      causal: build a causally-masked model.
      bos_token, pad_token: token values; PAD positions are masked from attention.
      residual_space: the residual order to use; by default the sorted join of
        every block's space, the output space and `one`.
      allocation: the layers as `craft_graph_to_model.allocate_layers` returns
        them (labelled blocks); gives the spec the RASP label of every head and
        MLP. Without it, heads and MLPs are labelled None.
      output_label: the program's label (default: the output space's name).
      max_seq_len: real tokens per input (default: indices_space's size).
    """
    if residual_space is None:
        residual_space = _make_residual_space(
            craft_model, tokens_space, indices_space, output_space
        )
    res = _ResidualIndex(residual_space)
    d_model = residual_space.num_dims
    layers = _layered(craft_model.blocks)
    if not layers:
        layers = [([], None)]

    head_factors = [[_head_factors(h, res) for h in heads] for heads, _ in layers]
    num_heads = max([len(h) for h in head_factors] + [1])
    key_size = max(
        [f[0].width for hs in head_factors for f in hs]
        + [f[2].width for hs in head_factors for f in hs]
        + [1]
    )
    mlp_hidden = max([mlp.fst.output_space.num_dims for _, mlp in layers if mlp is not None] + [1])

    # The layer arrays are float32 from the start (they are most of the model's
    # memory); every entry is computed in float64 and rounded once on writing,
    # as a float64 array cast to float32 would be.
    f32 = np.float32
    params: Dict[str, Dict[str, np.ndarray]] = {}
    for layer, ((_, mlp), factors) in enumerate(zip(layers, head_factors)):
        wq = np.zeros((d_model, num_heads, key_size), dtype=f32)
        wk = np.zeros_like(wq)
        wv = np.zeros_like(wq)
        wo = np.zeros((num_heads, key_size, d_model), dtype=f32)
        for h, (q, k, v, o) in enumerate(factors):
            # The attention divides logits by sqrt(key_size); fold the inverse in.
            q.write_into(wq[:, h, :], scale=np.sqrt(key_size))
            k.write_into(wk[:, h, :])
            v.write_into(wv[:, h, :])
            o.write_into(wo[h].T)
        for name, w in (("query", wq), ("key", wk), ("value", wv)):
            params[param_name(layer, "attn", name)] = {
                "w": w.reshape(d_model, num_heads * key_size),
                "b": np.zeros(num_heads * key_size, dtype=f32),
            }
        params[param_name(layer, "attn", "linear")] = {
            "w": wo.reshape(num_heads * key_size, d_model),
            "b": np.zeros(d_model, dtype=f32),
        }

        w1 = np.zeros((d_model, mlp_hidden), dtype=f32)
        w2 = np.zeros((mlp_hidden, d_model), dtype=f32)
        if mlp is not None:
            hidden = mlp.fst.output_space.num_dims
            w1[res.rows(mlp.fst.input_space), :hidden] = mlp.fst.matrix
            w2[np.ix_(np.arange(hidden), res.rows(mlp.snd.output_space))] = mlp.snd.matrix
        params[param_name(layer, "mlp", "linear_1")] = {
            "w": w1,
            "b": np.zeros(mlp_hidden, dtype=f32),
        }
        params[param_name(layer, "mlp", "linear_2")] = {"w": w2, "b": np.zeros(d_model, dtype=f32)}

    # Embeddings: a token writes its own direction (if the program reads it)
    # and the constant `one`; position p >= 1 writes indices:p-1 (BOS has none).
    token_matrix = np.zeros((tokens_space.num_dims, d_model))
    for i, direction in enumerate(tokens_space.basis):
        if direction in res.index:
            token_matrix[i, res.index[direction]] = 1.0
    if _ONE_DIRECTION in res.index:
        token_matrix[:, res.index[_ONE_DIRECTION]] = 1.0
    pos_matrix = np.zeros((indices_space.num_dims + 1, d_model))
    for i, direction in enumerate(indices_space.basis):
        if direction in res.index:
            pos_matrix[i + 1, res.index[direction]] = 1.0
    params["token_embed"] = {"embeddings": token_matrix}
    params["pos_embed"] = {"embeddings": pos_matrix}

    model_spec = _spec(
        layers,
        allocation,
        res,
        tokens_space,
        indices_space,
        output_space,
        categorical_output=categorical_output,
        causal=causal,
        bos_token=bos_token,
        pad_token=pad_token,
        num_heads=num_heads,
        key_size=key_size,
        mlp_hidden=mlp_hidden,
        output_label=output_label,
        max_seq_len=indices_space.num_dims if max_seq_len is None else max_seq_len,
    )
    return assembled.build_assembled_model(params, model_spec)


def _spec(
    layers,
    allocation,
    res: _ResidualIndex,
    tokens_space: bases.VectorSpaceWithBasis,
    indices_space: bases.VectorSpaceWithBasis,
    output_space: bases.VectorSpaceWithBasis,
    *,
    categorical_output: bool,
    causal: bool,
    bos_token,
    pad_token,
    num_heads: int,
    key_size: int,
    mlp_hidden: int,
    output_label: Optional[str],
    max_seq_len: int,
) -> spec_lib.ModelSpec:
    """The ModelSpec of the assembled layers: what each head and MLP reads and writes."""

    def rows(space: bases.VectorSpaceWithBasis) -> Tuple[int, ...]:
        return tuple(int(i) for i in res.rows(space))

    layer_specs = []
    for index, (heads, mlp) in enumerate(layers):
        alloc = allocation[index] if allocation is not None and index < len(allocation) else None
        head_labels = {id(block): label for label, block in alloc.heads} if alloc else {}
        head_specs = tuple(
            spec_lib.HeadSpec(
                layer=index,
                head=h,
                label=head_labels.get(id(head)),
                query=rows(head.w_qk.left_space),
                key=rows(head.w_qk.right_space),
                value=rows(head.w_ov.input_space),
                writes=rows(head.w_ov.output_space),
            )
            for h, head in enumerate(heads)
        )
        mlp_spec = None
        if mlp is not None:
            hidden_index = {d: i for i, d in enumerate(mlp.fst.output_space.basis)}
            parts = alloc.mlps if alloc and alloc.mlps else ((None, mlp),)
            mlp_spec = spec_lib.MLPSpec(
                layer=index,
                parts=tuple(
                    spec_lib.MLPPart(
                        label=label,
                        reads=rows(part.fst.input_space),
                        writes=rows(part.snd.output_space),
                        hidden=tuple(hidden_index[d] for d in part.fst.output_space.basis),
                    )
                    for label, part in parts
                ),
            )
        layer_specs.append(spec_lib.LayerSpec(index=index, heads=head_specs, mlp=mlp_spec))

    basis = res.space.basis
    return spec_lib.ModelSpec(
        layers=tuple(layer_specs),
        residual_labels=tuple(str(d) for d in basis),
        residual_names=tuple(d.name for d in basis),
        residual_values=tuple(d.value for d in basis),
        input=spec_lib.InputSpec(
            tokens=tuple(d.value for d in tokens_space.basis),
            bos_token=bos_token,
            pad_token=pad_token,
            max_seq_len=max_seq_len,
            embeds=tuple(res.index.get(d) for d in tokens_space.basis),
            positions=(None,) + tuple(res.index.get(d) for d in indices_space.basis),
            one=res.index.get(_ONE_DIRECTION),
        ),
        output=spec_lib.OutputSpec(
            label=output_label
            if output_label is not None
            else (output_space.basis[0].name if output_space.basis else ""),
            categorical=categorical_output,
            values=tuple(d.value for d in output_space.basis) if categorical_output else (),
            reads=rows(output_space),
        ),
        causal=causal,
        num_heads=num_heads,
        key_size=key_size,
        mlp_hidden_size=mlp_hidden,
    )
