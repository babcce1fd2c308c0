"""Pass 3: a craft block (MLP, attention head, or both) for every expression.

Each SOp that is computed (not an input) gets MODEL_BLOCK: Maps, SequenceMaps,
Full and ConstantSOp become MLPs; Aggregates become attention heads;
SelectorWidth becomes an attention head followed by an MLP. Selectors have no
block of their own: the Aggregate or SelectorWidth reading them builds the
attention pattern from their predicate. Combined selectors must have been
lowered to a single Select first (see `combined_selectors`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import networkx as nx
import numpy as np

from tracr.compiler import nodes, precision, predicate_tables
from tracr.craft import bases, transformers, vectorspace_fns
from tracr.craft.chamber import categorical_attn, categorical_mlp, numerical_mlp, selector_width
from tracr.rasp import rasp
from tracr.utils import errors
from tracr.utils.value_sets import SortedNumbers

# Default sharpness of the discretising MLPs, in units of the local gap between
# neighbouring input values: 2, the best input tolerance (a quarter of the gap)
# per unit of float error; see numerical_mlp and precision.
DEFAULT_MLP_EXACTNESS = precision.DISCRETISING_SHARPNESS
# Tracr's fixed softmax coldness, kept for callers that refer to it. The compiler
# gives every head its own, derived from max_seq_len and the value sets by
# `precision` (18 to 43 in float32 for max_seq_len 5 to 100).
DEFAULT_SOFTMAX_COLDNESS = 100.0

_DEFAULT_BOS_DIR = bases.BasisDirection("tokens", "bos")
_DEFAULT_ONE_DIR = bases.BasisDirection("one")


def _space(graph: nx.DiGraph, expr: rasp.RASPExpr) -> bases.VectorSpaceWithBasis:
    return bases.VectorSpaceWithBasis(graph.nodes[expr.label][nodes.OUTPUT_BASIS])


def _value_set(graph: nx.DiGraph, expr: rasp.RASPExpr) -> set:
    return graph.nodes[expr.label][nodes.VALUE_SET]


def _attn_fn(
    predicate: Callable[[Any, Any], bool],
) -> Callable[[bases.BasisDirection, bases.BasisDirection], bool]:
    """Wraps a RASP predicate(key, query) as attn_fn(query_dir, key_dir).

    The wrapper also builds the whole W_QK table at once, vectorised for
    `rasp.Comparison` predicates (see `predicate_tables`).
    """
    return predicate_tables.PredicateAttnFn(predicate)


def _hidden_name(expr: rasp.RASPExpr) -> str:
    return f"_hidden_{expr.label}_"


def _categorical_to_numerical_sequence_map(
    expr: rasp.SequenceMap, space1, space2, output_space, one_space
) -> transformers.MLP:
    """SequenceMap of two categorical inputs with a numerical output.

    Builds the categorical lookup table into a private one-hot space, then folds
    the map from one-hot to magnitude into the second layer.
    """
    values = sorted(_apply_pairs_values(expr, space1, space2), key=repr)
    tmp_space = bases.VectorSpaceWithBasis(
        [bases.BasisDirection(f"_tmp_{expr.label}", i) for i in range(len(values))]
    )
    # Keyed by the value itself: 1, 1.0 and True are one value, as in the value set
    # (their reprs differ, and f may return any of them).
    index_of = {v: i for i, v in enumerate(values)}

    def operation(
        d1: bases.BasisDirection, d2: bases.BasisDirection
    ) -> Optional[bases.BasisDirection]:
        y = _safe(expr.f)(d1.value, d2.value)
        if y is None:
            return None
        return bases.BasisDirection(f"_tmp_{expr.label}", index_of[y])

    mlp = categorical_mlp.sequence_map_categorical_mlp(
        space1, space2, tmp_space, operation, one_space=one_space, hidden_name=_hidden_name(expr)
    )
    to_magnitude = np.array([[float(v)] for v in values]).reshape(len(values), 1)
    snd = vectorspace_fns.Linear(mlp.snd.input_space, output_space, mlp.snd.matrix @ to_magnitude)
    return transformers.MLP(mlp.fst, snd)


def _safe(f):
    return errors.ignoring_arithmetic_errors(f)


def _apply_pairs_values(expr, space1, space2) -> set:
    f = _safe(expr.f)
    out = set()
    for d1 in space1.basis:
        for d2 in space2.basis:
            y = f(d1.value, d2.value)
            if y is not None:
                out.add(y)
    return out


def _selector_parts(selector: rasp.Selector):
    if not isinstance(selector, rasp.Select):
        raise NotImplementedError(
            f"{selector.label}: only a Select (or And/Or/Not of Selects, lowered first) can feed "
            f"an Aggregate or SelectorWidth; got {type(selector).__name__}."
        )
    return selector.keys, selector.queries, selector.predicate


def _check_ready_for_blocks(graph: nx.DiGraph) -> None:
    """Refuses graphs that the block pass can't (or must not) annotate."""
    with_blocks = [label for label, data in graph.nodes(data=True) if nodes.MODEL_BLOCK in data]
    if with_blocks:
        raise ValueError(
            f"The graph already has model blocks (e.g. at {with_blocks[0]!r}); "
            f"add_craft_components_to_rasp_graph must run once, on a fresh graph from "
            f"rasp_to_graph.extract_rasp_graph and basis_inference.infer_bases."
        )
    for label, data in graph.nodes(data=True):
        if isinstance(data.get(nodes.EXPR), rasp.SOp) and not (
            nodes.VALUE_SET in data and nodes.OUTPUT_BASIS in data
        ):
            raise ValueError(
                f"Node {label!r} has no value set or output basis; run "
                f"basis_inference.infer_bases(graph, sink, vocab, max_seq_len) before "
                f"add_craft_components_to_rasp_graph."
            )


def add_craft_components_to_rasp_graph(
    graph: nx.DiGraph,
    bos_dir: bases.BasisDirection = _DEFAULT_BOS_DIR,
    one_dir: bases.BasisDirection = _DEFAULT_ONE_DIR,
    causal: bool = False,
    mlp_exactness: Optional[float] = None,
    *,
    softmax_coldness: Optional[float] = None,
    max_seq_len: Optional[int] = None,
) -> None:
    """Sets MODEL_BLOCK on every node that needs one (in place).

    Args:
      graph: the graph, with value sets and bases (see basis_inference).
      bos_dir, one_dir: the BOS token direction and the always-one direction.
      causal: build causally-masked attention.
      mlp_exactness: sharpness of every discretising MLP in units of the local
        gap; None for `DEFAULT_MLP_EXACTNESS` (2, see `precision`).
      softmax_coldness: one coldness for every head; None derives each head's
        from max_seq_len and its value sets (see `precision`).
      max_seq_len: the longest input; None reads it from the graph's value
        sets (indices or a SelectorWidth), else assumes
        `precision.ASSUMED_MAX_SEQ_LEN`.

    Raises:
      ValueError: if basis inference has not run on `graph`, or `graph`
        already has model blocks.
    """
    _check_ready_for_blocks(graph)
    bos_space = bases.VectorSpaceWithBasis([bos_dir])
    one_space = bases.VectorSpaceWithBasis([one_dir])
    large_number = DEFAULT_MLP_EXACTNESS if mlp_exactness is None else float(mlp_exactness)
    coldness = None if softmax_coldness is None else float(softmax_coldness)
    if max_seq_len is None:
        max_seq_len = precision.max_seq_len_of(graph) or precision.ASSUMED_MAX_SEQ_LEN

    for label in graph.nodes:
        node = graph.nodes[label]
        expr = node[nodes.EXPR]
        if not isinstance(expr, rasp.SOp):
            continue
        try:
            block = _make_block(
                graph,
                expr,
                bos_space,
                one_space,
                causal,
                large_number,
                _coldness_of(graph, expr, coldness, max_seq_len),
            )
        except predicate_tables.PredicateError as e:
            raise errors.TracrUserError(
                f"{expr.selector.label} (the selector of {expr.label}): {e.reason}"
            ) from e
        if block is not None:
            block = silence_at_bos(block, bos_dir, one_dir)
        node[nodes.MODEL_BLOCK] = block


def _map_block(
    expr: rasp.Map,
    in_space,
    out_space,
    in_values,
    one_space,
    large_number,
    label: Optional[str] = None,
    encoding_of: Optional[rasp.SOp] = None,
):
    """The MLP of a Map; `label`/`encoding_of` override expr's (for rewritten exprs)."""
    f = _safe(expr.f)
    label = expr.label if label is None else label
    encoding_of = expr if encoding_of is None else encoding_of
    hidden_name = f"_hidden_{label}_"
    if rasp.is_categorical(expr.inner):
        if rasp.is_categorical(encoding_of):

            def operation(d: bases.BasisDirection) -> Optional[bases.BasisDirection]:
                y = f(d.value)
                out = bases.BasisDirection(label, y)
                return out if y is not None and out in out_space else None

            return categorical_mlp.map_categorical_mlp(in_space, out_space, operation)

        def to_number(x):
            y = f(x)
            return 0.0 if y is None else float(y)

        return categorical_mlp.map_categorical_to_numerical_mlp(in_space, out_space, to_number)
    _check_separable(label, f, in_values, numerical_output=rasp.is_numerical(encoding_of))
    # The numerical MLPs skip inputs where f raises an ArithmeticError themselves;
    # the unwrapped f saves a call per input value (millions for means).
    build = (
        numerical_mlp.map_numerical_mlp
        if rasp.is_numerical(encoding_of)
        else numerical_mlp.map_numerical_to_categorical_mlp
    )
    return build(
        f=expr.f,
        input_space=in_space,
        output_space=out_space,
        input_value_set=in_values,
        one_space=one_space,
        large_number=large_number,
        hidden_name=hidden_name,
    )


# Relative distance below which two inputs of a numerical MLP are the same number
# to a float32 model (float32 has ~7 digits; this leaves 16 ulps of margin).
SAME_FLOAT32_VALUE = 1e-6


def _check_separable(label: str, f: Callable[[Any], Any], values, numerical_output: bool) -> None:
    """Refuses a Map whose function tells apart inputs a float32 model can't.

    A numerical SOp can take values that differ only by float rounding (a mean
    summed in two orders: 0.1 + 0.2 + 0.3 vs 0.3 + 0.2 + 0.1). The
    discretising MLP can't separate them, which is harmless when f agrees on
    them and wrong when it doesn't.

    Raises:
      NotImplementedError: naming the expression and the two values.
    """
    if isinstance(values, SortedNumbers):
        numbers = values.array
    else:
        values = [v for v in values if v is not None]
        if not set(map(type, values)) <= {int, float}:
            values = [float(v) for v in values]
        numbers = np.sort(np.array(values, dtype=np.float64))
    # Neighbours that are far apart need no check; find the close ones in numpy
    # (value sets of means have a million values at max_seq_len 60).
    lower, upper = numbers[:-1], numbers[1:]
    far = upper - lower > SAME_FLOAT32_VALUE * np.maximum(1.0, np.maximum(abs(lower), abs(upper)))
    close = np.flatnonzero(~far)
    # Close values come in chains (a, b), (b, c), ...: evaluate f once per value.
    in_a_pair = np.zeros(len(numbers), dtype=bool)
    in_a_pair[close] = in_a_pair[close + 1] = True
    involved = np.flatnonzero(in_a_pair)
    as_float = numbers[involved].tolist()
    try:  # f itself, mapped in C; the wrapper (None on ArithmeticError) if it raises
        outputs = list(map(getattr(f, "__wrapped__", f), as_float))
    except ArithmeticError:
        outputs = list(map(f, as_float))
    # Positions in `involved` of each close pair; pairs that certainly agree are
    # found in numpy, the rest are checked one by one below.
    pos_a = np.searchsorted(involved, close)
    pos_b = np.searchsorted(involved, close + 1)
    agree = _certainly_agree(outputs, pos_a, pos_b, numerical_output)
    for k in np.flatnonzero(~agree).tolist():
        a, b = as_float[pos_a[k]], as_float[pos_b[k]]
        fa, fb = outputs[pos_a[k]], outputs[pos_b[k]]
        if numerical_output and fa is not None and fb is not None:
            same = abs(float(fa) - float(fb)) <= SAME_FLOAT32_VALUE * max(1.0, abs(float(fa)))
        else:
            same = fa == fb
        if not same:
            raise NotImplementedError(
                f"{label}: its function gives {fa!r} for {a!r} but {fb!r} for {b!r}; the input "
                f"takes both values (they differ only by float rounding), which a float32 model "
                f"can't tell apart. Make the function agree on nearly equal inputs (e.g. compare "
                f"with a tolerance: abs(x - c) < 1e-6)."
            )


def _certainly_agree(
    outputs: list, a: np.ndarray, b: np.ndarray, numerical_output: bool
) -> np.ndarray:
    """Per pair (outputs[a[k]], outputs[b[k]]): True where `_check_separable` finds them
    the same, computed in numpy for plain outputs; all False (check each) otherwise."""
    unknown = np.zeros(len(a), dtype=bool)
    kinds = set(map(type, outputs))
    try:
        if numerical_output and kinds <= {int, float, bool}:
            y = np.array(outputs, dtype=np.float64)
            if np.isnan(y).any():
                return unknown
            return np.abs(y[a] - y[b]) <= SAME_FLOAT32_VALUE * np.maximum(1.0, np.abs(y[a]))
        if kinds <= {bool}:  # the usual case: a comparison
            y = np.array(outputs, dtype=bool)
            return y[a] == y[b]
        if kinds <= {int, float, bool, str, type(None)}:
            if float in kinds and any(o != o for o in outputs):  # NaN: == is no equivalence
                return unknown
            code: dict = {}
            codes = np.array([code.setdefault(o, len(code)) for o in outputs], dtype=np.int64)
            return codes[a] == codes[b]
    except OverflowError:  # an int too large for a float: check pair by pair
        return unknown
    return unknown


def _constant_block(expr: rasp.SOp, value_of: Callable[[Any], Any], in_space, out_space):
    """An MLP writing value_of(input value) for a one-hot input (Full, ConstantSOp)."""
    if rasp.is_numerical(expr):
        return categorical_mlp.map_categorical_to_numerical_mlp(
            in_space, out_space, lambda x: float(value_of(x) or 0.0)
        )

    def operation(d: bases.BasisDirection) -> Optional[bases.BasisDirection]:
        y = value_of(d.value)
        return None if y is None else bases.BasisDirection(expr.label, y)

    return categorical_mlp.map_categorical_mlp(in_space, out_space, operation)


def _coldness_of(
    graph: nx.DiGraph, expr: rasp.SOp, override: Optional[float], max_seq_len: int
) -> float:
    """The softmax coldness of expr's head (unused for blocks without one)."""
    if override is not None:
        return override
    if isinstance(expr, rasp.SelectorWidth):
        return precision.selector_width_coldness(max_seq_len)
    if isinstance(expr, rasp.Aggregate):
        numerical = rasp.is_numerical(expr)
        return precision.aggregate_coldness(
            max_seq_len,
            numerical=numerical,
            value_set=_value_set(graph, expr) if numerical else None,
            sop_value_set=_value_set(graph, expr.sop) if numerical else None,
        )
    return DEFAULT_SOFTMAX_COLDNESS


def _make_block(graph, expr, bos_space, one_space, causal, large_number, coldness):
    """The craft block computing `expr` (None for inputs)."""
    out_space = _space(graph, expr)
    block = None

    if isinstance(expr, (rasp.TokensType, rasp.IndicesType)) and rasp.is_numerical(expr):
        # The embedding writes tokens and indices one-hot; a numerical annotation
        # would be read as one empty direction, i.e. the value 0 everywhere.
        raise NotImplementedError(
            f"{expr.label}: the compiler embeds tokens and indices one-hot (categorical), so "
            f"rasp.numerical({expr.label}) would read 0 at every position. Use "
            f"rasp.numerical(rasp.Map(lambda x: x, rasp.{expr.label})) for its numerical value."
        )
    if isinstance(expr, (rasp.TokensType, rasp.IndicesType, rasp.LengthType)):
        block = None
    elif isinstance(expr, rasp.Map):
        in_space = _space(graph, expr.inner)
        block = _map_block(
            expr, in_space, out_space, _value_set(graph, expr.inner), one_space, large_number
        )
    elif isinstance(expr, rasp.LinearSequenceMap) and (
        rasp.is_numerical(expr.fst) and rasp.is_numerical(expr.snd) and rasp.is_numerical(expr)
    ):
        block = numerical_mlp.linear_sequence_map_numerical_mlp(
            input1_basis_direction=_space(graph, expr.fst).basis[0],
            input2_basis_direction=_space(graph, expr.snd).basis[0],
            output_basis_direction=out_space.basis[0],
            input1_factor=expr.fst_fac,
            input2_factor=expr.snd_fac,
            hidden_name=_hidden_name(expr),
        )
    elif isinstance(expr, rasp.SequenceMap) and expr.fst.label == expr.snd.label:
        # Both inputs are one SOp: a Map of f(x, x) needs no pair table.
        as_map = rasp.Map(lambda x, f=expr.f: f(x, x), expr.fst, simplify=False)
        in_space = _space(graph, expr.fst)
        block = _map_block(
            as_map,
            in_space,
            out_space,
            _value_set(graph, expr.fst),
            one_space,
            large_number,
            label=expr.label,
            encoding_of=expr,
        )
    elif isinstance(expr, rasp.SequenceMap):
        if rasp.is_numerical(expr.fst) or rasp.is_numerical(expr.snd):
            raise NotImplementedError(
                f"{expr.label}: a SequenceMap with a numerical input is only supported as a "
                "LinearSequenceMap of two numerical SOps with a numerical output."
            )
        space1, space2 = _space(graph, expr.fst), _space(graph, expr.snd)
        if rasp.is_numerical(expr):
            block = _categorical_to_numerical_sequence_map(
                expr, space1, space2, out_space, one_space
            )
        else:
            f = _safe(expr.f)

            def operation(d1, d2, f=f, label=expr.label, out_space=out_space):
                y = f(d1.value, d2.value)
                d = bases.BasisDirection(label, y)
                return d if y is not None and d in out_space else None

            block = categorical_mlp.sequence_map_categorical_mlp(
                space1,
                space2,
                out_space,
                operation,
                one_space=one_space,
                hidden_name=_hidden_name(expr),
            )
    elif isinstance(expr, rasp.Full):
        block = _constant_block(expr, lambda _: expr.fill, one_space, out_space)
    elif isinstance(expr, rasp.ConstantSOp):
        values = list(expr.value)
        indices_space = _space(graph, rasp.indices)  # rasp_to_graph adds the edge
        block = _constant_block(
            expr, lambda i: values[i] if i < len(values) else None, indices_space, out_space
        )
    elif isinstance(expr, rasp.Aggregate):
        keys, queries, predicate = _selector_parts(expr.selector)
        if rasp.is_numerical(expr) and not rasp.is_numerical(expr.sop):
            raise NotImplementedError(
                f"{expr.label}: a numerical Aggregate needs a numerical SOp to average; "
                f"{expr.sop.label} is categorical."
            )
        value_space = _space(graph, expr.sop)
        if rasp.is_categorical(expr):
            # The output has one direction per value of the aggregated SOp, in the
            # same order, so that the head copies one-hots across.
            out_space = bases.VectorSpaceWithBasis(
                [bases.BasisDirection(expr.label, d.value) for d in value_space.basis]
            )
        block = categorical_attn.categorical_attn(
            query_space=_space(graph, queries),
            key_space=_space(graph, keys),
            value_space=value_space,
            output_space=out_space,
            bos_space=bos_space,
            one_space=one_space,
            attn_fn=_attn_fn(predicate),
            default_output=out_space.null_vector(),
            causal=causal,
            always_attend_to_bos=False,
            use_bos_for_default_output=True,
            softmax_coldness=coldness,
        )
    elif isinstance(expr, rasp.SelectorWidth):
        keys, queries, predicate = _selector_parts(expr.selector)
        block = selector_width.selector_width(
            query_space=_space(graph, queries),
            key_space=_space(graph, keys),
            output_space=out_space,
            bos_space=bos_space,
            one_space=one_space,
            attn_fn=_attn_fn(predicate),
            out_value_set=_value_set(graph, expr),
            categorical_output=rasp.is_categorical(expr),
            causal=causal,
            softmax_coldness=coldness,
            mlp_large_number=large_number,
            label=expr.label,
        )
    else:
        raise NotImplementedError(f"{expr.label}: {type(expr).__name__} is not supported.")
    return block


def silence_at_bos(block, bos_dir: bases.BasisDirection, one_dir: bases.BasisDirection):
    """Makes every MLP in the block write nothing at the BOS position.

    Why: the BOS position is a key of every attention head. If an SOp had a
    value there (a Full, a numerical MLP's f(0), a SelectorWidth's 0), a
    predicate could select BOS and its score would beat the real keys. At BOS
    the residual holds only `one`, the BOS token direction and (inside a
    SelectorWidth) the helper written by its own attention; so each hidden
    unit's pre-activation there is known exactly, and a weight of
    -(max(pre, 0) + 1) from the BOS direction switches it off there and only
    there (BOS is 0 at every other position). By induction over the layers,
    every computed SOp is then zero at BOS.
    """
    x = bases.VectorInBasis([bos_dir, one_dir], np.ones((1, 2)))
    if isinstance(block, transformers.MLP):
        return _silence_mlp(block, x, bos_dir)
    if isinstance(block, transformers.SeriesWithResiduals):
        new_blocks = []
        for sub in block.blocks:
            if isinstance(sub, transformers.MLP):
                sub = _silence_mlp(sub, x, bos_dir)
            new_blocks.append(sub)
            x = x.add_directions(sub.apply(x))
        return transformers.SeriesWithResiduals(new_blocks)
    return block


def _silence_mlp(mlp: transformers.MLP, x_bos: bases.VectorInBasis, bos_dir) -> transformers.MLP:
    fst = mlp.fst
    pre = x_bos.project(fst.input_space).magnitudes.reshape(-1) @ fst.matrix  # [hidden]
    bos_row = -(np.maximum(pre, 0.0) + 1.0)
    if bos_dir in fst.input_space:
        matrix = fst.matrix.copy()
        matrix[fst.input_space.index_by_direction[bos_dir]] += bos_row
        space = fst.input_space
    else:
        space = bases.VectorSpaceWithBasis(list(fst.input_space.basis) + [bos_dir])
        matrix = np.concatenate([fst.matrix, bos_row[None, :]], axis=0)
    new_fst = vectorspace_fns.Linear(space, fst.output_space, matrix)
    return transformers.MLP(new_fst, mlp.snd)
