"""A lean, pure, jit-able forward pass for compiled transformers.

A compiled model's Haiku parameters are mostly zeros: every layer has an
attention and an MLP sublayer even when the program needs only one of them,
every head is padded to the widest key size, every MLP to the widest hidden
layer, and the residual stream carries directions that nothing reads. This
module reads those parameters once, keeps only what can change the output,
and runs the rest as a plain function of arrays::

    weights = fast.lean_weights_from_params(
        params, config, unembedding, categorical_output=True, pad_id=pad_id
    )
    out = jax.jit(fast.decode)(weights, token_ids)   # [B, T] output ids

What is dropped (decided from the exact zero pattern of the parameters):

- heads whose value/output path writes nothing read later (or by the
  output), and MLP hidden units likewise; whole sublayers when nothing is left;
- each head's key dimensions where the query or the key projection is zero,
  and value dimensions where the value or output projection is zero, so every
  head has its own width (no padding to the widest head or MLP);
- residual directions that no sublayer reads and the output does not need.

Two layouts of the residual stream:

- *segmented* (the default when every direction has one writer, as in every
  compiled model): there is no D-wide residual at all. Each sublayer writes a
  small array of just the directions it writes that are read later (a
  "segment"); the next sublayers read the concatenation of the segments they
  need. MLPs that read only per-position functions of (token, position) are
  evaluated once, at build time, for every (token, position) pair and folded
  into the embedding table, so a program's leading MLPs cost a gather.
- *dense* (`keep_residual=True`, or when a direction is written twice): one
  residual array that every sublayer adds into, as in the Haiku model; with
  `keep_residual` it has all D directions and `residual` returns the full
  model's final residual stream.

Fused: token and position embeddings into one table `[V, T, E]`; the query,
key and value projections of all heads of a sublayer into one matmul, except
the factors that only select (one non-zero per column, e.g. a query that
reads a one-hot block), which are one gather (`Projection`); MLP and output
matrices that only select are gathers too. Matrices with few non-zeros (a
compiled MLP reads a few one-hot directions per hidden unit) are kept sparse,
as their non-zeros; an MLP whose two matrices select or are sparse runs one
column at a time, as sums of its non-zero products that XLA fuses into one
loop, with no matmul. Attention logits of small key sizes are unrolled sums
of K products over [B, T, T], reading gathered or sparse query and key
columns directly. Column-by-column code is emitted only up to
`UNROLL_MAX_COLUMNS` columns and `SPARSE_MAX_TERMS` non-zeros per matrix:
XLA's compile time grows with the number of ops, and wider matrices run as
fast as one gather or matmul. Categorical outputs are decoded by a fused
comparison chain (`categorical_ids`). Q and K are kept as factors (never wider than W_QK's
rank), and the arithmetic, including the division of the logits by
sqrt(key_size), is the full model's: a dot product whose other terms are
exact zeros equals its sum of non-zero products (in row order, where the
full model's matmul may add them in another order). Categorical outputs are
the same ids wherever the program has a value (the tests check it);
numerical ones agree to float32 rounding.

Glossary of shape letters: B batch, T sequence length (BOS included), V
vocabulary size (BOS and PAD included), D the full model's residual width, R
a lean width (of a segment or of the dense residual), E the embedding table
width, O output width.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from tracr.transformer import attention, inputs
from tracr.transformer.model import TransformerConfig
from tracr.transformer.spec import ACTIVE_THRESHOLD, ModelSpec
from tracr.transformer.spec import param_name as _param_name

Array = jax.Array


def _selects(w: np.ndarray) -> bool:
    """True when every column of the [R_in, F] matrix `w` holds exactly one non-zero."""
    return bool(w.shape[1]) and bool(np.all(np.count_nonzero(w, axis=0) == 1))


# A matrix that is not a selection is kept sparse, as its non-zeros, when it
# has at most this many and at most this fraction of its entries: compiled MLPs
# read a few one-hot directions per hidden unit, and summing those few products
# costs far less than a dense matmul over all of them.
SPARSE_MAX_TERMS = 128
SPARSE_MAX_DENSITY = 0.25
SPARSE_ANY_SIZE = 256  # matrices this small are sparse at any density (matmul overhead)
# Column-by-column code (sparse matrices, MLPs and attention factors read one
# column at a time) is emitted for at most this many columns per projection.
# Each column is a few XLA ops; past this, XLA's compile time grows with the
# ops (tens of seconds for sort_freq at max_seq_len 30) while one gather or
# matmul of the whole projection runs as fast.
UNROLL_MAX_COLUMNS = 64


def _sparse_enough(w: np.ndarray) -> bool:
    """True when the [R_in, F] matrix `w` is worth storing sparse (see `Projection`)."""
    nnz = int(np.count_nonzero(w))
    return (
        0 < w.shape[1] <= UNROLL_MAX_COLUMNS
        and nnz <= SPARSE_MAX_TERMS
        and (nnz <= SPARSE_MAX_DENSITY * w.size or w.size <= SPARSE_ANY_SIZE)
        and bool(np.all(np.any(w != 0, axis=0)))
    )


@dataclasses.dataclass(frozen=True)
class Projection:
    """`x @ w` for a `[R_in, F]` matrix, run as a gather where it only selects.

    Compiled weights are often selections: every column of `w` holds one
    non-zero (a query that reads a one-hot block, an MLP that maps one value
    to one value). Such a matrix is stored as the row each column reads
    (`index`) and that entry (`scale`, None when all are 1), and applied as
    `x[..., index] * scale`: the one non-zero product of the dot, the same
    number, without the zero terms.

    A sparse matrix (few non-zeros, `SPARSE_MAX_TERMS`) is stored as its
    non-zeros: `index` holds, for each column, the tuple of rows it reads,
    and `scale` the entries, column by column; column j is the sum of its
    products in row order. Other matrices are stored dense in `w`. Only the
    stored numbers are parameters (leaves): the structural zeros stay zero.
    """

    w: Optional[Array]  # [R_in, F], or None for a selection or a sparse matrix
    scale: Optional[Array]  # [F] (selection; None when all are 1) or [nnz] (sparse)
    index: Optional[tuple]  # selection: the row of each column; sparse: the rows of each
    width: int  # F

    @property
    def sparse(self) -> bool:
        """True for a sparse matrix (`index` holds a tuple of rows per column)."""
        return bool(self.index) and isinstance(self.index[0], tuple)

    @property
    def selects(self) -> bool:
        """True for a selection (one row per column)."""
        return self.index is not None and not self.sparse

    @property
    def unrolls(self) -> bool:
        """True when `columns` applies: a selection or sparse matrix of at most
        `UNROLL_MAX_COLUMNS` columns (sparse ones are never wider)."""
        return self.index is not None and self.width <= UNROLL_MAX_COLUMNS

    @classmethod
    def from_matrix(cls, w: np.ndarray, dtype, *, sparse: bool = False) -> "Projection":
        """`w` as a selection where it selects, else sparse (if allowed and small), else dense."""
        if _selects(w):
            rows = np.argmax(w != 0, axis=0)
            scale = w[rows, np.arange(w.shape[1])]
            return cls(
                w=None,
                scale=None if np.all(scale == 1) else jnp.asarray(scale, dtype=dtype),
                index=tuple(int(r) for r in rows),
                width=int(w.shape[1]),
            )
        if sparse and _sparse_enough(w):
            index = tuple(tuple(int(r) for r in np.flatnonzero(col)) for col in w.T)
            values = np.concatenate([w[list(rows), j] for j, rows in enumerate(index)])
            return cls(
                w=None, scale=jnp.asarray(values, dtype=dtype), index=index, width=int(w.shape[1])
            )
        return cls(w=jnp.asarray(w, dtype=dtype), scale=None, index=None, width=int(w.shape[1]))

    def columns(self, column: Callable[[int], Array]) -> List[Array]:
        """The F output columns ([...] each, float32 for bfloat16 inputs), given input columns.

        Only for selections and sparse matrices; `column(r)` is input column r.
        """
        if self.sparse:
            out, k = [], 0
            for rows in self.index:
                y = None
                for r in rows:
                    term = column(r) * self.scale[k].astype(jnp.float32)
                    y = term if y is None else y + term
                    k += 1
                out.append(y)
            return out
        cols = [column(r) for r in self.index]
        if self.scale is None:
            return cols
        return [c * self.scale[j].astype(c.dtype) for j, c in enumerate(cols)]

    def __call__(self, x: Array) -> Array:
        """[..., R_in] -> [..., F]; bfloat16 inputs give float32 (as `_dot`)."""
        if self.index is None:
            return _dot(x, self.w)
        if self.sparse:
            return jnp.stack(self.columns(lambda r: x[..., r].astype(jnp.float32)), axis=-1)
        y = _take(x, self.index) if self.index else jnp.zeros((*x.shape[:-1], 0), x.dtype)
        if x.dtype != jnp.float32:
            y = y.astype(jnp.float32)
        return y if self.scale is None else y * self.scale.astype(y.dtype)


@dataclasses.dataclass(frozen=True)
class LeanAttention:
    """One attention sublayer with only its live heads, each at its own width.

    The query, key and value factors of all heads come from two projections
    of the input: one dense matmul (`w_qkv`, the factors that need one) and
    one gather (`gathered`, the factors that only select). `factors[h]` says,
    for head h's query, key and value in turn, which of the two (0 dense, 1
    gathered) and at which column it starts; `key_sizes[h]` and
    `value_sizes[h]` give the widths. `w_out` reads the heads' values
    concatenated in head order.
    """

    w_qkv: Optional[Array]  # [R_in, F_dense], or None when every factor selects
    b_qkv: Optional[Array]  # [F_dense] or None when all zero
    gathered: Projection  # [R_in] -> [F_gathered]
    w_out: Projection  # [sum(value_sizes)] -> [R_out]
    b_out: Optional[Array]  # [R_out] or None when all zero
    key_sizes: Tuple[int, ...]
    value_sizes: Tuple[int, ...]
    factors: Tuple[Tuple[Tuple[int, int], ...], ...]  # per head: (source, start) of q, k, v
    logit_key_size: int  # the full model's key_size: logits are divided by its sqrt
    reads: Tuple[int, ...] = ()  # segments read (segmented layout); () = the residual

    def __post_init__(self):
        if not len(self.key_sizes) == len(self.value_sizes) == len(self.factors):
            raise ValueError(
                f"key_sizes, value_sizes and factors must have one entry per head, got "
                f"{self.key_sizes}, {self.value_sizes} and {self.factors}."
            )

    @property
    def qkv_width(self) -> int:
        return (0 if self.w_qkv is None else self.w_qkv.shape[1]) + self.gathered.width


@dataclasses.dataclass(frozen=True)
class LeanMLP:
    """One MLP sublayer restricted to its live hidden units."""

    w_1: Projection  # [R_in] -> [M]
    b_1: Optional[Array]  # [M] or None when all zero
    w_2: Projection  # [M] -> [R_out]
    b_2: Optional[Array]  # [R_out] or None when all zero
    activation: Callable[[Array], Array]
    reads: Tuple[int, ...] = ()  # segments read (segmented layout); () = the residual


Sublayer = Union[LeanAttention, LeanMLP]


@dataclasses.dataclass(frozen=True)
class LeanWeights:
    """Everything the lean forward pass needs; a JAX pytree.

    Arrays are leaves (so `jax.grad`, `jax.device_put` and sharding see them);
    the structure (head widths, segments read, output kind) is static.

    In the segmented layout, segment 0 is the embedding and segment i the
    output of `sublayers[i - 1]`; `residual_index` lists, for the columns of
    all segments concatenated in order, the full model's residual direction.
    In the dense layout there is one residual and `residual_index` maps its
    columns.
    """

    embedding: Array  # [V, T_max, E]: token + position embedding (+ folded MLPs)
    sublayers: Tuple[Sublayer, ...]
    unembedding: Array  # [R_out, O] over the output's input columns
    output_index: Optional[Tuple[int, ...]]  # rows of `unembedding` when it only selects
    output_reads: Tuple[int, ...]  # segments the output reads; () = the residual
    residual_index: Tuple[int, ...]
    segmented: bool
    categorical_output: bool
    causal: bool
    pad_id: Optional[int]

    @property
    def residual_width(self) -> int:
        """Number of residual directions carried (all segments together)."""
        return len(self.residual_index)

    @property
    def max_len(self) -> int:
        """Longest sequence (BOS included) the position embedding covers."""
        return int(self.embedding.shape[1])

    def activation_width(self, seq_len: int) -> int:
        """Floats per sequence in the widest intermediate array at length `seq_len`."""
        widths = [self.embedding.shape[2]]
        for s in self.sublayers:
            if isinstance(s, LeanAttention):
                widths += [s.qkv_width, len(s.key_sizes) * seq_len, s.w_out.width]
            else:
                widths += [s.w_1.width, s.w_2.width]
        return seq_len * max(widths)

    def describe(self) -> str:
        """One line per sublayer: what the lean model executes."""
        layout = "segmented" if self.segmented else "dense"
        lines = [
            f"{layout}: {self.residual_width} directions, embedding table "
            f"{tuple(self.embedding.shape)}"
        ]
        for i, s in enumerate(self.sublayers):
            reads = f" reads {s.reads}" if self.segmented else ""
            if isinstance(s, LeanAttention):
                lines.append(
                    f"{i + 1}: attn heads={len(s.key_sizes)} key={s.key_sizes} "
                    f"value={s.value_sizes} out={s.w_out.width}{reads}"
                    f" gathered={s.gathered.width}/{s.qkv_width}"
                )
            else:
                pairs = (("w_1", s.w_1), ("w_2", s.w_2))
                gathers = [n for n, p in pairs if p.selects]
                sparse = [f"{n}({p.scale.shape[0]})" for n, p in pairs if p.sparse]
                lines.append(
                    f"{i + 1}: mlp hidden={s.w_1.width} out={s.w_2.width}{reads}"
                    + (f" gathered={','.join(gathers)}" if gathers else "")
                    + (f" sparse={','.join(sparse)}" if sparse else "")
                )
        return "\n".join(lines)


jax.tree_util.register_dataclass(
    Projection, data_fields=["w", "scale"], meta_fields=["index", "width"]
)
jax.tree_util.register_dataclass(
    LeanAttention,
    data_fields=["w_qkv", "b_qkv", "gathered", "w_out", "b_out"],
    meta_fields=["key_sizes", "value_sizes", "factors", "logit_key_size", "reads"],
)
jax.tree_util.register_dataclass(
    LeanMLP, data_fields=["w_1", "b_1", "w_2", "b_2"], meta_fields=["activation", "reads"]
)
jax.tree_util.register_dataclass(
    LeanWeights,
    data_fields=["embedding", "sublayers", "unembedding"],
    meta_fields=[
        "output_index",
        "output_reads",
        "residual_index",
        "segmented",
        "categorical_output",
        "causal",
        "pad_id",
    ],
)


# --------------------------------------------------------------------------
# Planning: which parts of the full model are live, in full coordinates.


def _nonzero(x: np.ndarray, axis) -> np.ndarray:
    return np.any(x != 0, axis=axis)


@dataclasses.dataclass
class _Head:
    index: int
    key_dims: np.ndarray  # int indices into the padded key size
    value_dims: np.ndarray


@dataclasses.dataclass
class _Part:
    """One kept sublayer of the full model, with its live heads or units."""

    kind: str  # "attn" or "mlp"
    arrays: tuple  # the full-coordinate numpy parameters
    heads: List[_Head]  # attn only
    units: np.ndarray  # mlp only: kept hidden units
    reads: np.ndarray  # bool [D]: directions it reads
    writes: np.ndarray  # bool [D]: directions it writes that are live after it


def _get(params: Mapping[str, Mapping[str, Array]], name: str, key: str) -> np.ndarray:
    try:
        return np.asarray(params[name][key], dtype=np.float32)
    except KeyError:
        raise ValueError(
            f"params has no {name!r}/{key!r}: expected a compiled model's Haiku parameters "
            f"(transformer/layer_i/attn/..., token_embed, pos_embed); got modules "
            f"{sorted(params)[:6]}..."
        ) from None


def _read_sublayers(params, config: TransformerConfig, d_model: int) -> List[Tuple[str, tuple]]:
    """The model's sublayers in order, as numpy arrays with heads split out."""
    heads, key = config.num_heads, config.key_size
    raw = []
    for layer in range(config.num_layers):

        def get(sub, lin, k, layer=layer):
            return _get(params, _param_name(layer, sub, lin), k)

        value_size = get("attn", "value", "w").shape[1] // heads
        raw.append(
            (
                "attn",
                (
                    get("attn", "query", "w").reshape(d_model, heads, key),
                    get("attn", "query", "b").reshape(heads, key),
                    get("attn", "key", "w").reshape(d_model, heads, key),
                    get("attn", "key", "b").reshape(heads, key),
                    get("attn", "value", "w").reshape(d_model, heads, value_size),
                    get("attn", "value", "b").reshape(heads, value_size),
                    get("attn", "linear", "w").reshape(heads, value_size, d_model),
                    get("attn", "linear", "b"),
                ),
            )
        )
        raw.append(
            (
                "mlp",
                (
                    get("mlp", "linear_1", "w"),
                    get("mlp", "linear_1", "b"),
                    get("mlp", "linear_2", "w"),
                    get("mlp", "linear_2", "b"),
                ),
            )
        )
    return raw


def _plan(raw, live: np.ndarray, activation) -> List[Optional[_Part]]:
    """Backward liveness: a head or unit is kept iff it writes a live direction.

    `live` starts as what the output (or the caller) needs; what a kept part
    reads becomes live before it.
    """
    d_model = live.shape[0]
    plans: List[Optional[_Part]] = []
    for kind, arrays in reversed(raw):
        reads = np.zeros(d_model, dtype=bool)
        if kind == "attn":
            wq, bq, wk, bk, wv, bv, wo, bo = arrays
            heads = []
            writes = live & (bo != 0)
            for h in range(wq.shape[1]):
                # A key dimension contributes only where both factors can be non-zero.
                key_dims = (_nonzero(wq[:, h], 0) | (bq[h] != 0)) & (
                    _nonzero(wk[:, h], 0) | (bk[h] != 0)
                )
                value_dims = (_nonzero(wv[:, h], 0) | (bv[h] != 0)) & _nonzero(wo[h][:, live], 1)
                if not value_dims.any():
                    continue
                heads.append(_Head(h, np.flatnonzero(key_dims), np.flatnonzero(value_dims)))
                reads |= _nonzero(wq[:, h][:, key_dims], 1) | _nonzero(wk[:, h][:, key_dims], 1)
                reads |= _nonzero(wv[:, h][:, value_dims], 1)
                writes |= live & _nonzero(wo[h][value_dims], 0)
            part = _Part(kind, arrays, heads, np.zeros(0, int), reads, writes)
        else:
            w1, b1, w2, b2 = arrays
            constant = np.asarray(activation(jnp.asarray(b1))) != 0  # units with W1 = 0
            units = _nonzero(w2[:, live], 1) & (_nonzero(w1, 0) | constant)
            reads = _nonzero(w1[:, units], 1)
            writes = live & (_nonzero(w2[units], 0) | (b2 != 0))
            part = _Part(kind, arrays, [], np.flatnonzero(units), reads, writes)
        plans.append(part if part.writes.any() else None)
        if part.writes.any():
            live = live | reads
    plans.reverse()
    return plans


# --------------------------------------------------------------------------
# Building the arrays of each layout.


def _bias_or_none(b: np.ndarray, dtype) -> Optional[Array]:
    return jnp.asarray(b, dtype=dtype) if np.any(b != 0) else None


def _attention(part: _Part, rows, cols, key_size: int, dtype, reads=()) -> LeanAttention:
    """`part`'s live heads, reading residual `rows` and writing residual `cols`."""
    wq, bq, wk, bk, wv, bv, wo, bo = part.arrays
    dense_w, dense_b, gather_w = [], [], []
    widths = [0, 0]  # columns so far in the dense and the gathered projection
    factors, w_out = [], []
    for head in part.heads:
        h, kd, vd = head.index, head.key_dims, head.value_dims
        head_factors = []
        query = (wq[rows][:, h, kd], bq[h, kd])
        key = (wk[rows][:, h, kd], bk[h, kd])
        value = (wv[rows][:, h, vd], bv[h, vd])
        for w, b in (query, key, value):
            selects = not np.any(b) and (_selects(w) or _sparse_enough(w))
            source = 1 if selects else 0
            head_factors.append((source, widths[source]))
            widths[source] += w.shape[1]
            if selects:
                gather_w.append(w)
            else:
                dense_w.append(w)
                dense_b.append(b)
        factors.append(tuple(head_factors))
        w_out.append(wo[h][vd][:, cols])
    gathered = np.concatenate(gather_w, axis=1) if gather_w else np.zeros((len(rows), 0))
    return LeanAttention(
        w_qkv=jnp.asarray(np.concatenate(dense_w, axis=1), dtype=dtype) if dense_w else None,
        b_qkv=_bias_or_none(np.concatenate(dense_b), dtype) if dense_b else None,
        gathered=Projection.from_matrix(gathered, dtype, sparse=True)
        if gather_w
        else Projection(w=None, scale=None, index=(), width=0),
        w_out=Projection.from_matrix(
            np.concatenate(w_out, axis=0) if w_out else np.zeros((0, len(cols))), dtype
        ),
        b_out=_bias_or_none(bo[cols], dtype),
        key_sizes=tuple(len(h.key_dims) for h in part.heads),
        value_sizes=tuple(len(h.value_dims) for h in part.heads),
        factors=tuple(factors),
        logit_key_size=int(key_size),
        reads=tuple(reads),
    )


def _mlp(part: _Part, rows, cols, activation, dtype, reads=()) -> LeanMLP:
    w1, b1, w2, b2 = part.arrays
    units = part.units
    return LeanMLP(
        w_1=Projection.from_matrix(w1[rows][:, units], dtype, sparse=True),
        b_1=_bias_or_none(b1[units], dtype),
        w_2=Projection.from_matrix(w2[units][:, cols], dtype, sparse=True),
        b_2=_bias_or_none(b2[cols], dtype),
        activation=activation,
        reads=tuple(reads),
    )


def _output(unembedding: np.ndarray, rows: np.ndarray):
    """The unembedding over `rows`, and its selected rows when it only selects."""
    unembed = unembedding[rows]
    selects = np.all((unembed == 0) | (unembed == 1)) and np.all(np.sum(unembed, axis=0) == 1)
    index = tuple(int(i) for i in np.argmax(unembed, axis=0)) if selects else None
    return unembed, index


def _writers(parts: Sequence[_Part], embedded: np.ndarray) -> Optional[np.ndarray]:
    """Writer of each direction: 0 the embedding, i the i-th part, -1 none.

    None when some direction has two writers (then only the dense layout,
    which adds the writes up, reproduces the full model).
    """
    writer = np.where(embedded, 0, -1)
    for i, part in enumerate(parts, start=1):
        if np.any(writer[part.writes] != -1):
            return None
        writer[part.writes] = i
    return writer


def _apply_mlp_np(part: _Part, x: np.ndarray, activation) -> np.ndarray:
    """x + mlp(x) for a [N, D] float32 table, with the Haiku model's arithmetic."""
    w1, b1, w2, b2 = part.arrays
    units = part.units
    w2 = np.where(part.writes[None, :], w2[units], 0.0).astype(np.float32)
    b2 = np.where(part.writes, b2, 0.0).astype(np.float32)
    hidden = jnp.dot(jnp.asarray(x), jnp.asarray(w1[:, units])) + b1[units]
    return np.asarray(jnp.asarray(x) + (jnp.dot(activation(hidden), w2) + b2))


def lean_weights_from_params(
    params: Mapping[str, Mapping[str, Array]],
    config: TransformerConfig,
    unembedding: np.ndarray,
    *,
    categorical_output: bool,
    pad_id: Optional[int] = None,
    keep_residual: bool = False,
    layout: str = "segmented",
    dtype=jnp.float32,
) -> LeanWeights:
    """Reads a compiled model's Haiku parameters into `LeanWeights`.

    Args:
      params: the Haiku parameter dict (`AssembledTransformerModel.params`).
      config: the model's `TransformerConfig` (heads, key size, causal, ...).
      unembedding: `[D, O]` matrix from the residual stream to output scores.
      categorical_output: decode by argmax over the O scores (True) or read
        the single score as a number (False).
      pad_id: the PAD token id; keys holding it are masked out of attention.
      keep_residual: keep every residual direction and every part that
        writes one (dense layout), so that `residual` returns the full
        model's final residual stream. Otherwise only what the output
        depends on is kept.
      layout: "segmented" (fastest; falls back to dense where a direction has
        two writers) or "dense" (one residual array, the Haiku model's sums).
      dtype: the dtype of the weights and of the computation (`jnp.bfloat16`
        halves memory traffic; check a program's outputs before relying on it).

    Returns:
      The lean weights, a pytree.

    Raises:
      NotImplementedError: the config uses layer norm (compiled models don't).
      ValueError: params or unembedding do not match the config.
    """
    if config.layer_norm:
        raise NotImplementedError(
            "lean_weights_from_params supports models without layer norm (compiled models "
            "have layer_norm=False); got a config with layer_norm=True. Use the Haiku model."
        )
    token_table = _get(params, "token_embed", "embeddings")  # [V, D]
    pos_table = _get(params, "pos_embed", "embeddings")  # [T_max, D]
    d_model = token_table.shape[1]
    unembedding = np.asarray(unembedding, dtype=np.float32)
    if unembedding.ndim != 2 or unembedding.shape[0] != d_model:
        raise ValueError(
            f"unembedding must be [D, O] with D={d_model} (the residual width), got shape "
            f"{unembedding.shape}."
        )
    activation = config.activation_function
    raw = _read_sublayers(params, config, d_model)
    out_rows = _nonzero(unembedding, 1)
    live = np.ones(d_model, dtype=bool) if keep_residual else out_rows
    parts = [p for p in _plan(raw, live, activation) if p is not None]
    # Same float32 sum as the Haiku model's token_embed(ids) + pos_embed(positions).
    table = token_table[:, None, :] + pos_table[None, :, :]  # [V, T_max, D]
    embedded = _nonzero(table.reshape(-1, d_model), 0)
    if layout not in ("segmented", "dense"):
        raise ValueError(f"layout must be 'segmented' or 'dense', got {layout!r}.")
    dense = keep_residual or layout == "dense"
    writer = None if dense else _writers(parts, embedded)
    common = dict(categorical_output=categorical_output, causal=bool(config.causal), pad_id=pad_id)

    if writer is None:  # dense layout
        keep = np.arange(d_model)
        if not keep_residual:
            keep = np.flatnonzero(np.any([p.reads for p in parts] + [out_rows], axis=0))
        sublayers = [
            _attention(p, keep, keep, config.key_size, dtype)
            if p.kind == "attn"
            else _mlp(p, keep, keep, activation, dtype)
            for p in parts
        ]
        unembed, index = _output(unembedding, keep)
        return LeanWeights(
            embedding=jnp.asarray(table[..., keep], dtype=dtype),
            sublayers=tuple(sublayers),
            unembedding=jnp.asarray(unembed, dtype=dtype),
            output_index=index,
            output_reads=(),
            residual_index=tuple(int(i) for i in keep),
            segmented=False,
            **common,
        )

    # Segmented layout. A read of a direction whose writer comes later (or that
    # nothing writes) reads zero in the full model, so it is no read at all.
    n = len(parts)
    reads = [p.reads & (writer >= 0) & (writer < i) for i, p in enumerate(parts, start=1)]
    # Fold MLPs that only read per-position values into the embedding table.
    local = writer == 0
    folded = np.zeros(n + 1, dtype=bool)
    flat = table.reshape(-1, d_model)
    for i, part in enumerate(parts, start=1):
        if part.kind == "mlp" and not np.any(reads[i - 1] & ~local):
            folded[i] = True
            local |= writer == i
            flat = _apply_mlp_np(part, flat, activation)
    table = flat.reshape(table.shape)
    segment_of = np.where(folded[np.maximum(writer, 0)], 0, writer)  # -1 stays -1
    needed = out_rows | np.any([r for r, f in zip(reads, folded[1:]) if not f] + [out_rows], axis=0)
    # Output directions nothing writes are constant zero; the table carries them.
    segment_of = np.where(needed & (segment_of < 0), 0, segment_of)
    kept = [0] + [i for i in range(1, n + 1) if not folded[i]]
    columns = {s: np.flatnonzero(needed & (segment_of == s)) for s in kept}

    def inputs(wanted: np.ndarray, before: int):
        segs = [s for s in kept if s < before and np.any(wanted[columns[s]])]
        rows = np.concatenate([columns[s] for s in segs]) if segs else np.zeros(0, int)
        return tuple(segs), rows

    sublayers = []
    for i in kept[1:]:
        part = parts[i - 1]
        segs, rows = inputs(reads[i - 1], i)
        cols = columns[i]
        if part.kind == "attn":
            sublayers.append(_attention(part, rows, cols, config.key_size, dtype, segs))
        else:
            sublayers.append(_mlp(part, rows, cols, activation, dtype, segs))
    # Renumber: segment i of the lean model is the output of its i-th sublayer.
    renumber = {s: k for k, s in enumerate(kept)}
    sublayers = [
        dataclasses.replace(s, reads=tuple(renumber[r] for r in s.reads)) for s in sublayers
    ]
    out_segs, out_cols = inputs(out_rows, n + 1)
    unembed, index = _output(unembedding, out_cols)
    return LeanWeights(
        embedding=jnp.asarray(table[..., columns[0]], dtype=dtype),
        sublayers=tuple(sublayers),
        unembedding=jnp.asarray(unembed, dtype=dtype),
        output_index=index,
        output_reads=tuple(renumber[s] for s in out_segs),
        residual_index=tuple(int(c) for s in kept for c in columns[s]),
        segmented=True,
        **common,
    )


# --------------------------------------------------------------------------
# The pure forward pass.


def attention_mask(weights: LeanWeights, mask: Array) -> Array:
    """[B, T] validity mask -> [B, T, T] boolean mask of the keys each query sees."""
    seq_len = mask.shape[-1]
    attn_mask = jnp.broadcast_to(mask[..., None, :].astype(bool), (*mask.shape, seq_len))
    if weights.causal:
        attn_mask = attn_mask & jnp.tril(jnp.ones((seq_len, seq_len), dtype=bool))
    return attn_mask


def default_mask(weights: LeanWeights, token_ids: Array) -> Array:
    """[B, T] mask: False where the token is PAD (all True without a PAD id)."""
    if weights.pad_id is None:
        return jnp.ones(token_ids.shape, dtype=bool)
    return token_ids != weights.pad_id


def embed(weights: LeanWeights, token_ids: Array) -> Array:
    """[B, T] token ids -> [B, T, E] the input residual (segment 0)."""
    seq_len = token_ids.shape[-1]
    if seq_len > weights.max_len:
        raise ValueError(
            f"token_ids has {seq_len} positions but the model has position embeddings for "
            f"{weights.max_len}; pass at most {weights.max_len} (BOS included)."
        )
    return weights.embedding[token_ids, jnp.arange(seq_len)]


def _take(x: Array, index: Tuple[int, ...]) -> Array:
    """x[..., index], as a slice when the index is a contiguous range."""
    start = index[0]
    if index == tuple(range(start, start + len(index))):
        return x[..., start : start + len(index)]
    return x[..., list(index)]


def _dot(x: Array, w: Array) -> Array:
    """x @ w; low-precision inputs (bfloat16) accumulate and return float32."""
    if x.dtype == jnp.float32:
        return x @ w
    return jnp.matmul(x, w, preferred_element_type=jnp.float32)


# Key sizes up to this are summed term by term: for the few key dimensions of
# compiled heads, a batched matmul of [T, K] by [K, T] blocks costs more in
# overhead than one fused loop of K products over [B, T, T].
UNROLL_KEY_SIZE = 16


def _logits(q: Sequence[Array], k: Sequence[Array]) -> Array:
    """K query columns [..., T] and K key columns [..., S] -> [..., T, S] dot products."""
    logits = q[0][..., :, None] * k[0][..., None, :]
    for qi, ki in zip(q[1:], k[1:]):
        logits = logits + qi[..., :, None] * ki[..., None, :]
    return logits


def _attend(s: LeanAttention, x: Array, attn_mask: Array) -> Array:
    f32 = x.dtype != jnp.float32
    dtype = jnp.float32 if f32 else x.dtype
    # The query, key and value factors come from a dense matmul (source 0) or
    # from the gathered projection (source 1), which, when it selects or is
    # sparse, is read one column at a time: XLA fuses those columns into the
    # logits' loop instead of materialising them.
    dense = None
    if s.w_qkv is not None:
        dense = _dot(x, s.w_qkv)
        if s.b_qkv is not None:
            dense = dense + s.b_qkv
    by_columns = s.gathered.width and s.gathered.unrolls
    if by_columns:
        gathered = s.gathered.columns(lambda r: x[..., r].astype(dtype))
    else:
        gathered = s.gathered(x) if s.gathered.width else None

    def factor(src: int, start: int, width: int, columns: bool):
        if not width:
            return [] if columns else jnp.zeros((*x.shape[:-1], 0), dtype)
        if src == 1 and by_columns:
            cols = gathered[start : start + width]
            return cols if columns else jnp.stack(cols, axis=-1)
        array = (dense if src == 0 else gathered)[..., start : start + width]
        return [array[..., i] for i in range(width)] if columns else array

    # Exactly the Haiku attention's division, so that the logits are the same numbers.
    scale = np.sqrt(s.logit_key_size).astype(dtype)
    masked = jnp.asarray(attention.MASKED_LOGIT, dtype)
    outs = []
    for (q, k, v), key_size, value_size in zip(s.factors, s.key_sizes, s.value_sizes):
        if not key_size:
            logits = jnp.zeros(attn_mask.shape, dtype)
        elif key_size <= UNROLL_KEY_SIZE:
            logits = _logits(factor(*q, key_size, True), factor(*k, key_size, True))
        else:
            q_, k_ = factor(*q, key_size, False), factor(*k, key_size, False)
            logits = jnp.einsum("...tk,...sk->...ts", q_, k_)
        logits = jnp.where(attn_mask, logits / scale, masked)
        v = factor(*v, value_size, False)
        outs.append(jnp.einsum("...ts,...sv->...tv", jax.nn.softmax(logits), v))
    if outs:
        values = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
        out = s.w_out(values.astype(x.dtype))
    else:
        out = jnp.zeros((*x.shape[:-1], s.w_out.width), x.dtype)
    if s.b_out is not None:
        out = out + s.b_out
    return out.astype(x.dtype)


def _feed_forward(s: LeanMLP, x: Array) -> Array:
    if s.w_1.unrolls and s.w_2.unrolls and s.w_2.width:
        return _feed_forward_by_columns(s, x)
    hidden = s.w_1(x)
    if s.b_1 is not None:
        hidden = hidden + s.b_1
    out = s.w_2(s.activation(hidden).astype(x.dtype))
    if s.b_2 is not None:
        out = out + s.b_2
    return out.astype(x.dtype)


def _feed_forward_by_columns(s: LeanMLP, x: Array) -> Array:
    """`_feed_forward` one column at a time, for gathered or sparse `w_1` and `w_2`.

    The same sums of the same non-zero products, as [B, T] arrays that XLA
    fuses into one loop: no matmul, no [B, T, M] hidden array. The activation
    is applied to each hidden column (compiled models' activations are
    elementwise).
    """
    f32 = x.dtype != jnp.float32
    hidden = s.w_1.columns(lambda r: x[..., r].astype(jnp.float32) if f32 else x[..., r])
    if s.b_1 is not None:
        hidden = [h + s.b_1[j].astype(h.dtype) for j, h in enumerate(hidden)]
    # As `_feed_forward`: the activation's output in the input dtype.
    hidden = [s.activation(h).astype(x.dtype) for h in hidden]
    if f32:
        hidden = [h.astype(jnp.float32) for h in hidden]
    out = s.w_2.columns(lambda j: hidden[j])
    if s.b_2 is not None:
        out = [o + s.b_2[j].astype(o.dtype) for j, o in enumerate(out)]
    return jnp.stack(out, axis=-1).astype(x.dtype)


def _concat(segments: Sequence[Array], which: Tuple[int, ...]) -> Array:
    if not which:  # a sublayer that reads nothing (only biases)
        return jnp.zeros((*segments[0].shape[:-1], 0), segments[0].dtype)
    if len(which) == 1:
        return segments[which[0]]
    return jnp.concatenate([segments[i] for i in which], axis=-1)


def _run(weights: LeanWeights, embeddings: Array, mask: Optional[Array]) -> List[Array]:
    """All segments (segmented layout) or [final residual] (dense layout)."""
    if mask is None:
        mask = jnp.ones(embeddings.shape[:-1], dtype=bool)
    attn_mask = attention_mask(weights, mask)

    def sublayer(s: Sublayer, x: Array) -> Array:
        if isinstance(s, LeanAttention):
            return _attend(s, x, attn_mask)
        return _feed_forward(s, x)

    if not weights.segmented:
        x = embeddings
        for s in weights.sublayers:
            x = x + sublayer(s, x)
        return [x]
    segments = [embeddings]
    for s in weights.sublayers:
        segments.append(sublayer(s, _concat(segments, s.reads)))
    return segments


def residual_from_embeddings(
    weights: LeanWeights, embeddings: Array, mask: Optional[Array] = None
) -> Array:
    """[B, T, E] input residual -> [B, T, R] every kept direction at the end.

    Column j holds the full model's final residual direction
    `weights.residual_index[j]`. Differentiable in `weights` and `embeddings`.
    """
    return jnp.concatenate(_run(weights, embeddings, mask), axis=-1)


def residual(weights: LeanWeights, token_ids: Array, mask: Optional[Array] = None) -> Array:
    """[B, T] token ids -> [B, T, R] final residual (all D directions with keep_residual)."""
    if mask is None:
        mask = default_mask(weights, token_ids)
    return residual_from_embeddings(weights, embed(weights, token_ids), mask)


def scores_from_embeddings(
    weights: LeanWeights, embeddings: Array, mask: Optional[Array] = None
) -> Array:
    """[B, T, E] input residual -> [B, T, O] output scores; differentiable."""
    segments = _run(weights, embeddings, mask)
    x = segments[0] if not weights.segmented else _concat(segments, weights.output_reads)
    if weights.output_index is not None:
        return _take(x, weights.output_index)
    return x @ weights.unembedding


def scores(weights: LeanWeights, token_ids: Array, mask: Optional[Array] = None) -> Array:
    """[B, T] token ids -> [B, T, O] output scores (before argmax); differentiable."""
    if mask is None:
        mask = default_mask(weights, token_ids)
    return scores_from_embeddings(weights, embed(weights, token_ids), mask)


def decode(weights: LeanWeights, token_ids: Array, mask: Optional[Array] = None) -> Array:
    """[B, T] token ids -> [B, T] outputs: argmax ids (categorical) or values (numerical).

    The same numbers as the full model's `unembedded_output`. Positions where
    `mask` is False (padding) hold meaningless values; real positions are not
    affected by the padding. Works on `[T]` inputs under `jax.vmap` too.

    Args:
      weights: from `lean_weights_from_params`.
      token_ids: int array `[B, T]`, T <= weights.max_len.
      mask: `[B, T]` bool, False at padding; by default `token_ids != pad_id`.

    Returns:
      int32 `[B, T]` output ids, or float `[B, T]` values for numerical output.
    """
    out = scores(weights, token_ids, mask)
    if weights.categorical_output:
        return jnp.argmax(out, axis=-1)
    return out[..., 0]


def outputs(weights: LeanWeights, token_ids: Array, mask: Optional[Array] = None) -> Array:
    """[B, T] token ids -> [B, T] outputs as `tracr.transformer.inputs` decodes them.

    Categorical: the argmax id, or `inputs.NO_VALUE` (-1) where no output
    score reaches `spec.ACTIVE_THRESHOLD` (RASP's None). Numerical: the value.
    """
    out = scores(weights, token_ids, mask)
    if weights.categorical_output:
        return categorical_ids(out)
    return out[..., 0]


# Output widths up to this are decoded by a chain of elementwise comparisons,
# which XLA fuses into one loop with the layer before; wider ones by argmax.
UNROLL_OUTPUT_WIDTH = 16


def categorical_ids(scores: Array) -> Array:
    """`inputs.categorical_ids` of `[..., O]` scores: the same ids, in one fused loop.

    The first index of the largest score (as `argmax`), or `inputs.NO_VALUE`
    where the largest score is below `spec.ACTIVE_THRESHOLD` or any score is
    NaN (where `inputs.categorical_ids` finds a NaN maximum).
    """
    width = scores.shape[-1]
    if width == 0 or width > UNROLL_OUTPUT_WIDTH:
        return inputs.categorical_ids(scores)
    best = jnp.zeros(scores.shape[:-1], jnp.int32)
    top = scores[..., 0]  # the largest score so far, first of equals
    top_nan = top  # jnp.maximum's running max: NaN as soon as one score is NaN
    for i in range(1, width):
        x = scores[..., i]
        better = x > top
        best = jnp.where(better, jnp.int32(i), best)
        top = jnp.where(better, x, top)
        top_nan = jnp.maximum(top_nan, x)
    active = top_nan >= jnp.asarray(ACTIVE_THRESHOLD, scores.dtype)
    return jnp.where(active, best, jnp.int32(inputs.NO_VALUE))


def lean_weights_from_spec(
    params: Mapping[str, Mapping[str, Array]],
    model_spec: ModelSpec,
    config: TransformerConfig,
    **kwargs,
) -> LeanWeights:
    """`lean_weights_from_params` with the output and PAD id read from `model_spec`.

    The unembedding is the selection of `model_spec.output.reads`; other
    keyword arguments (keep_residual, layout, dtype) pass through.
    """
    return lean_weights_from_params(
        params,
        config,
        unembedding_from_spec(model_spec),
        categorical_output=model_spec.output.categorical,
        pad_id=model_spec.input.pad_id,
        **kwargs,
    )


def unembedding_from_spec(model_spec: ModelSpec) -> np.ndarray:
    """[D, O]: column j selects residual row `output.reads[j]`."""
    matrix = np.zeros((model_spec.d_model, model_spec.output.width), dtype=np.float32)
    matrix[list(model_spec.output.reads), np.arange(model_spec.output.width)] = 1.0
    return matrix
