"""Pass 2: the value set of every SOp, and the residual subspace it owns.

Value sets come from the vocabulary and max_seq_len: tokens -> vocab,
indices -> 0..max_seq_len-1, a Map applies its function to every input value,
a SequenceMap to every pair, SelectorWidth -> 0..max_seq_len, a categorical
Aggregate -> its SOp's values, a numerical Aggregate -> the means it can
produce. Categorical SOps own one direction per value (`label:value`),
numerical SOps a single direction (`label`).

Values are also tracked jointly where that is cheap and sound: two numerical
Aggregates whose selectors have the same keys, queries and predicate select
the same positions, so at any one position they divide by the same width.
Their values are kept split by that width (`_ByWidth`), and a SequenceMap of
the two only pairs values of equal width. A bracket balance
``frac_prevs(open) - frac_prevs(close)`` then takes the ~6,000 values
``(a - b) / w`` at max_seq_len 100 instead of the ~6 million differences of
any two fractions, and everything downstream (numerical MLPs, validation)
is built for the values that can occur.

Functions that raise: a Map's or SequenceMap's function is read as
`errors.ignoring_arithmetic_errors` reads it. Where it raises an
ArithmeticError (``1 // (x - 2)`` at 2) the SOp has no value: a categorical
SOp writes no direction there (decoded None), and a numerical SOp, which
cannot say "no value", is refused naming the input. Any other exception, or
an unhashable result, is an `errors.TracrUserError` naming the expression.

`infer_value_sets` returns the result (`BasisInference`, read-only);
`infer_bases` also writes it onto the graph as Tracr's VALUE_SET and
OUTPUT_BASIS node attributes.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
from typing import (
    AbstractSet,
    Any,
    Callable,
    Dict,
    Hashable,
    Iterable,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
)

import networkx as nx
import numpy as np

from tracr.compiler import nodes
from tracr.craft import bases
from tracr.rasp import rasp
from tracr.utils import errors
from tracr.utils.value_sets import SortedNumbers

Node = nodes.Node

# A numerical Aggregate's value set (the means of up to max_seq_len values) is
# enumerated exactly; past this size we refuse rather than build a huge MLP.
MAX_NUMERICAL_VALUE_SET = 200_000


@dataclasses.dataclass
class InferBasesOutput:
    graph: nx.DiGraph


def _apply_all(
    f: Callable[..., Any], *value_sets: Iterable[Any], raised: Optional[List[tuple]] = None
) -> Set[Any]:
    """Every non-None output of f over the product of the value sets.

    Inputs where f raises an ArithmeticError are skipped, with a warning (as with
    `errors.ignoring_arithmetic_errors`); the first of them, with the error, is
    appended to `raised` as `(args, error)`. f runs once per element of the
    product, millions of times for SOps over numerical means, so the usual
    case (f raises nothing) maps f in C, and only a raise falls back to a loop.
    """
    value_sets = tuple(
        v if isinstance(v, (set, frozenset, list, tuple)) else list(v) for v in value_sets
    )
    try:
        if len(value_sets) == 1:
            out = set(map(f, value_sets[0]))
        else:
            out = set(itertools.starmap(f, itertools.product(*value_sets)))
    except ArithmeticError:
        pass
    else:
        out.discard(None)
        return out
    out = set()
    add = out.add
    logged = False
    single = len(value_sets) == 1
    arg_tuples = ((x,) for x in value_sets[0]) if single else itertools.product(*value_sets)
    for args in arg_tuples:
        try:
            y = f(*args)
        except ArithmeticError as e:
            if not logged:  # once per function: it may run millions of times
                errors.log_ignored_arithmetic_error(f, args, e)
                logged = True
            _note(raised, args, e)
            continue
        if y is not None:
            add(y)
    return out


def _note(raised: Optional[List[tuple]], args: tuple, error: ArithmeticError) -> None:
    if raised is not None and not raised:
        raised.append((args, error))


# Below this magnitude every int is a float64 and every product and sum of the
# values below is computed exactly or rounded as Python rounds it.
_EXACT_INT = 2.0**52


def _plain_numbers(values: Iterable[Any]) -> Optional[np.ndarray]:
    """The values as float64 if all are finite ints/floats of modest size, else None."""
    values = list(values)
    if not all(type(v) in (int, float) for v in values):
        return None
    try:
        array = np.array(values, dtype=np.float64)
    except OverflowError:
        return None
    if not np.isfinite(array).all() or (len(array) and np.abs(array).max() >= _EXACT_INT):
        return None
    return array


def _sorted_unique(array: np.ndarray) -> np.ndarray:
    """np.unique for a 1-d float array without NaN (sort, keep the first of each run)."""
    array = np.sort(array)
    keep = np.ones(len(array), dtype=bool)
    keep[1:] = array[1:] != array[:-1]
    return array[keep]


def _exact_linear_inputs(
    expr: rasp.LinearSequenceMap, fst: Iterable[Any], snd: Iterable[Any]
) -> Optional[tuple]:
    """Both value sets as float64 arrays if `a x + b y` is exact in numpy, else None."""
    x, y = _plain_numbers(fst), _plain_numbers(snd)
    if x is None or y is None or _plain_numbers([expr.fst_fac, expr.snd_fac]) is None:
        return None
    a, b = abs(expr.fst_fac), abs(expr.snd_fac)
    if not a * np.abs(x).max(initial=0.0) + b * np.abs(y).max(initial=0.0) < _EXACT_INT:
        return None
    return x, y


def linear_combination_is_total(
    expr: rasp.LinearSequenceMap, fst: Iterable[Any], snd: Iterable[Any]
) -> bool:
    """Whether `a x + b y` gives a number (never None, never raises) on every pair.

    True when both value sets are plain, modest numbers (see `_linear_value_set`),
    so that checking it costs no call of the function per pair.
    """
    return _exact_linear_inputs(expr, fst, snd) is not None


def _linear_value_set(
    expr: rasp.LinearSequenceMap, fst: Set[Any], snd: Set[Any], raised: Optional[List[tuple]] = None
) -> Set[Any]:
    """`{a x + b y}` over all pairs, vectorised when it is exact.

    For finite ints and floats numpy's float64 arithmetic gives the same number
    as Python's for every pair (ints below 2**52 are exact floats; a product or
    sum involving a float is rounded the same way). The result is a
    `SortedNumbers`, which reads as the Python set of these numbers (whole
    ones as ints, as in `mean_value_set`).
    """
    arrays = _exact_linear_inputs(expr, fst, snd)
    if arrays is None:
        return _apply_all(expr.f, fst, snd, raised=raised)
    x, y = arrays
    sums = _sorted_unique(np.add.outer(expr.fst_fac * x, expr.snd_fac * y).ravel())
    # Millions of values at max_seq_len 100: kept sorted in numpy, not hashed.
    return SortedNumbers(sums)


def means_by_width(values: Set[float], max_seq_len: int) -> Dict[int, Set[float]]:
    """The means of exactly w values drawn (with repetition) from `values`, for w = 0..max_seq_len.

    Width 0 (nothing selected) holds the numerical Aggregate's 0. For 0/1
    inputs width w holds {k/w}. Sums with exactly w terms are built one term
    at a time (a set per w), so the cost is the number of distinct sums, not
    the number of multisets.

    Raises:
      NotImplementedError: the union would exceed MAX_NUMERICAL_VALUE_SET values.
    """
    big = [v for v in values if isinstance(v, int) and abs(v) >= _EXACT_INT]
    if big:
        raise NotImplementedError(
            f"A numerical Aggregate over values such as {big[0]!r}: integers of magnitude 2**52 "
            f"or more are summed exactly by RASP but not by a float model. Scale them down."
        )
    values = {float(v) for v in values}
    by_width: Dict[int, Set[float]] = {0: {0}}
    means = {0}
    sums = {0.0}
    for width in range(1, max_seq_len + 1):
        sums = {s + v for s in sums for v in values}
        by_width[width] = {_canonical(s / width) for s in sums}
        means.update(by_width[width])
        if len(means) > MAX_NUMERICAL_VALUE_SET:
            raise NotImplementedError(
                f"A numerical Aggregate over values {sorted(values)[:10]}... can take more than "
                f"{MAX_NUMERICAL_VALUE_SET} different means at max_seq_len={max_seq_len}."
            )
    return by_width


def mean_value_set(values: Set[float], max_seq_len: int, include_zero: bool = True) -> Set[float]:
    """All means of 1..max_seq_len values drawn (with repetition) from `values`.

    For 0/1 inputs this is {k/w}; 0 is included unless `include_zero` is False
    and 0 is no such mean.

    Raises:
      NotImplementedError: the set would exceed MAX_NUMERICAL_VALUE_SET values.
    """
    by_width = means_by_width(values, max_seq_len)
    if not include_zero:
        del by_width[0]
    return set().union(*by_width.values())


def _canonical(x: float) -> float:
    """Whole numbers as ints (1.0 -> 1); every other mean exactly as computed.

    Not rounded: the evaluator's mean is ``sum(selected) / len(selected)``,
    summed left to right, and the sums above are exactly the left-to-right
    float sums of every sequence of values, so this set holds exactly the
    floats the evaluator can produce. A Map's function is applied to these
    values at compile time; a rounded stand-in (0.333333333333 for 1/3) could
    give a different result than the real value (``x == 1 / 3``).
    """
    return int(x) if x == int(x) else x


@dataclasses.dataclass(frozen=True)
class _ByWidth:
    """An SOp's values split by the width of one selector at the same position.

    `selector` identifies the selected positions (`_selector_key`); `values`
    maps each width w to the values the SOp can take where w positions are
    selected. Every value of the SOp lies in one of them.
    """

    selector: Hashable
    values: Mapping[int, Set[Any]]


def _selector_key(selector: rasp.Selector) -> Optional[Hashable]:
    """What decides which positions `selector` selects, or None if unknown.

    Two selectors with the same key select the same positions on every input,
    whatever their labels: the same keys and queries SOps (by label) and equal
    predicates, combined the same way. This assumes, as the whole compiler
    does, that predicates are pure functions and that equal predicates (the
    same object, the same `Comparison`, or lowered predicates built from equal
    parts) select the same pairs.
    """
    if isinstance(selector, rasp.Select):
        key: Hashable = ("select", selector.keys.label, selector.queries.label, selector.predicate)
    elif isinstance(selector, rasp.SelectorNot):
        inner = _selector_key(selector.inner)
        key = None if inner is None else ("not", inner)
    elif isinstance(selector, (rasp.SelectorAnd, rasp.SelectorOr)):
        fst, snd = _selector_key(selector.fst), _selector_key(selector.snd)
        key = None if fst is None or snd is None else (type(selector).__name__, fst, snd)
    else:
        return None
    try:
        hash(key)
    except TypeError:  # a predicate object that can't be hashed: no joint values
        return None
    return key


class ValueSetInference:
    """The value set of each SOp, computed from its children's (children first).

    Keeps, besides each SOp's value set, its values split by selector width
    where known (see the module docstring), so that combinations of SOps that
    share a selector get exactly the values that can occur together.
    """

    def __init__(self, vocab: Set[Any], max_seq_len: int):
        self.vocab = set(vocab)
        self.max_seq_len = max_seq_len
        self.value_sets: Dict[str, Set[Any]] = {}
        self._by_width: Dict[str, _ByWidth] = {}
        self._by_position: Dict[str, Dict[int, Set[Any]]] = {}

    def add(self, expr: rasp.SOp) -> Set[Any]:
        """Infers, records and returns the value set of `expr`.

        Raises:
          NotImplementedError: as `mean_value_set`, for a numerical Aggregate
            with too many possible means, for an unknown kind of SOp, or for a
            numerical Map/SequenceMap whose function raises an ArithmeticError
            on a value its inputs can take (see `_refuse_raising`).
          errors.TracrUserError: a Map's or SequenceMap's function raised
            another exception or returned an unhashable value.
        """
        raised: List[Tuple[tuple, ArithmeticError]] = []
        try:
            value_set = self._infer(expr, raised)
        except (NotImplementedError, ArithmeticError):
            raise
        except Exception as e:  # noqa: BLE001 - the user's function: name it
            if not isinstance(expr, (rasp.Map, rasp.SequenceMap)):
                raise
            raise _function_error(expr, [self.value_sets[c.label] for c in expr.children], e) from e
        if raised and rasp.is_numerical(expr):
            _refuse_raising(expr, *raised[0])
        if rasp.is_numerical(expr) and not isinstance(value_set, SortedNumbers):
            _refuse_non_numbers(expr, value_set)
        self.value_sets[expr.label] = value_set
        return value_set

    def _infer(self, expr: rasp.SOp, raised: List[tuple]) -> Set[Any]:
        by_width = self._joint(expr, raised)
        by_position = self._positional(expr, raised)
        if by_width is not None:
            self._by_width[expr.label] = by_width
            value_set = _union(expr, by_width.values.values())
            if by_position is not None and not isinstance(value_set, SortedNumbers):
                value_set = value_set & _union(expr, by_position.values())
        elif by_position is not None:
            value_set = _union(expr, by_position.values())
        else:
            value_set = self._value_set(expr, raised)
        if by_position is not None:
            self._by_position[expr.label] = by_position
        return value_set

    def _positional(self, expr: rasp.SOp, raised: List[tuple]) -> Optional[Dict[int, Set[Any]]]:
        """`expr`'s values at each position i (0-based), where that is known.

        indices is i at position i, and the length (the width of a Select of
        tokens or indices with Comparison.TRUE, which are never None) is at
        least i + 1 there, causal or not. Maps and SequenceMaps of such SOps
        keep the split, so make_reverse's `length - indices - 1` takes the
        values 0..n-1 rather than every difference, -n..n.
        """
        n = self.max_seq_len
        if isinstance(expr, rasp.IndicesType):
            return {i: {i} for i in range(n)}
        if isinstance(expr, rasp.SelectorWidth) and _counts_every_position(expr.selector):
            return {i: set(range(i + 1, n + 1)) for i in range(n)}
        if isinstance(expr, (rasp.Map, rasp.SequenceMap)):
            if any(child.label not in self._by_position for child in expr.children):
                return None
            return _propagate(expr, self._by_position, raised)
        return None

    def _joint(self, expr: rasp.SOp, raised: List[tuple]) -> Optional[_ByWidth]:
        """`expr`'s values split by selector width, if its inputs allow it."""
        n = self.max_seq_len
        if isinstance(expr, rasp.Aggregate) and rasp.is_numerical(expr):
            key = _selector_key(expr.selector)
            if key is None:
                return None
            return _ByWidth(key, means_by_width(self.value_sets[expr.sop.label], n))
        if isinstance(expr, rasp.SelectorWidth):
            key = _selector_key(expr.selector)
            return None if key is None else _ByWidth(key, {w: {w} for w in range(n + 1)})
        if isinstance(expr, (rasp.Map, rasp.SequenceMap)):
            parts = [self._by_width.get(child.label) for child in expr.children]
            if any(p is None for p in parts) or len({p.selector for p in parts}) != 1:
                return None
            splits = {c.label: p.values for c, p in zip(expr.children, parts)}
            values = _propagate(expr, splits, raised)
            return None if values is None else _ByWidth(parts[0].selector, values)
        return None

    def _value_set(self, expr: rasp.SOp, raised: List[tuple]) -> Set[Any]:
        def of(child: rasp.RASPExpr) -> Set[Any]:
            return self.value_sets[child.label]

        max_seq_len = self.max_seq_len
        if isinstance(expr, rasp.TokensType):
            return set(self.vocab)
        if isinstance(expr, rasp.IndicesType):
            return set(range(max_seq_len))
        if isinstance(expr, rasp.LengthType):
            return set(range(1, max_seq_len + 1))
        if isinstance(expr, rasp.Map):
            return _apply_all(expr.f, of(expr.inner), raised=raised)
        if isinstance(expr, rasp.SequenceMap) and expr.fst.label == expr.snd.label:
            return _diagonal(expr, of(expr.fst), raised)
        if isinstance(expr, rasp.SequenceMap):
            return _pair_values(expr, of(expr.fst), of(expr.snd), raised)
        if isinstance(expr, rasp.Full):
            return {expr.fill}
        if isinstance(expr, rasp.ConstantSOp):
            return {v for v in expr.value if v is not None}
        if isinstance(expr, rasp.SelectorWidth):
            return set(range(0, max_seq_len + 1))
        if isinstance(expr, rasp.Aggregate):
            sop_values = of(expr.sop)
            if rasp.is_numerical(expr):
                return mean_value_set(sop_values, max_seq_len)
            out = set(sop_values)
            if expr.default is not None:
                out.add(expr.default)
            return out
        raise NotImplementedError(
            f"Cannot infer the value set of {expr.label} ({type(expr).__name__})."
        )


def _refuse_non_numbers(expr: rasp.SOp, value_set: AbstractSet[Any]) -> None:
    """A numerical SOp is one residual direction holding its value: a number."""
    for value in value_set:
        if value is not None and not isinstance(value, (int, float, np.number)):
            raise NotImplementedError(
                f"{expr.label} is numerical but can take the value {value!r}, which is not a "
                "number (a numerical SOp is one residual direction holding its value). Make it "
                "categorical (rasp.categorical), or make its function return numbers."
            )


def _refuse_raising(expr: rasp.SOp, args: tuple, error: ArithmeticError) -> None:
    """A numerical SOp has no 'no value': where f raises, the model would answer.

    The compiler reads a function as `errors.ignoring_arithmetic_errors` does:
    where it raises an ArithmeticError there is no value (None). A categorical
    SOp then has no active direction; a numerical one would hold a number (0 or
    a neighbour's value) where RASP raises, so it is refused.
    """
    shown = ", ".join(repr(a) for a in args)
    raise NotImplementedError(
        f"{expr.label}: its function raises {type(error).__name__} ({error}) on ({shown}), a "
        f"value its inputs can take, and a numerical SOp has no 'no value' to give there. "
        f"Return a number for every input, or make the SOp categorical (None there)."
    )


def _function_error(
    expr: rasp.SOp, value_sets: List[Set[Any]], error: Exception
) -> errors.TracrUserError:
    """The user-facing error for a Map/SequenceMap whose function failed in basis inference.

    Finds the first input on which the function raises or returns an
    unhashable value (a value set holds hashable values only).
    """
    if isinstance(expr, rasp.SequenceMap) and expr.fst.label == expr.snd.label:
        pairs: Iterable[tuple] = ((x, x) for x in value_sets[0])
    else:
        pairs = itertools.product(*value_sets)
    for args in pairs:
        shown = ", ".join(repr(a) for a in args)
        try:
            y = expr.f(*args)
        except ArithmeticError:
            continue
        except Exception as e:  # noqa: BLE001
            return errors.TracrUserError(
                f"{expr.label}: its function raised {type(e).__name__}: {e} on ({shown}), a value "
                f"its inputs can take. Make it return a value (or None) for every input."
            )
        try:
            hash(y)
        except TypeError:
            return errors.TracrUserError(
                f"{expr.label}: its function returned {y!r} (a {type(y).__name__}, unhashable) on "
                f"({shown}); values must be hashable, e.g. a tuple instead of a list."
            )
    return errors.TracrUserError(f"{expr.label}: computing its value set failed: {error}")


def _counts_every_position(selector: rasp.Selector) -> bool:
    """Whether `selector` selects every (visible) key: its width is the length."""
    inputs = {rasp.tokens.label, rasp.indices.label}
    return (
        isinstance(selector, rasp.Select)
        and selector.predicate is rasp.Comparison.TRUE
        and selector.keys.label in inputs
        and selector.queries.label in inputs
    )


def _propagate(
    expr: rasp.SOp,
    splits: Mapping[str, Mapping[Any, Set[Any]]],
    raised: Optional[List[tuple]] = None,
) -> Optional[Dict[Any, Set[Any]]]:
    """A Map's or SequenceMap's values split as its inputs' are (by width, by position).

    `splits[label]` maps each part (a selector width, a position) to the values
    that input takes there; inputs in one part occur together, so the result
    in a part comes from the inputs' values in that part only. None if the
    inputs are split into different parts.
    """
    if isinstance(expr, rasp.Map):
        return {
            k: _apply_all(expr.f, v, raised=raised) for k, v in splits[expr.inner.label].items()
        }
    fst, snd = splits[expr.fst.label], splits[expr.snd.label]
    if expr.fst.label == expr.snd.label:
        return {k: _diagonal(expr, v, raised) for k, v in fst.items()}
    if fst.keys() != snd.keys():
        return None
    return {k: _pair_values(expr, fst[k], snd[k], raised) for k in fst}


def _pair_values(
    expr: rasp.SequenceMap, fst: Set[Any], snd: Set[Any], raised: Optional[List[tuple]] = None
) -> Set[Any]:
    """f over every pair of values (vectorised for a LinearSequenceMap)."""
    if isinstance(expr, rasp.LinearSequenceMap):
        return _linear_value_set(expr, fst, snd, raised)
    return _apply_all(expr.f, fst, snd, raised=raised)


def _diagonal(
    expr: rasp.SequenceMap, values: Set[Any], raised: Optional[List[tuple]] = None
) -> Set[Any]:
    """{f(x, x)}: a SequenceMap of one SOp with itself sees the same value twice.

    (The compiler builds it as a Map of f(x, x), see expr_to_craft_graph.)
    """
    f = expr.f
    return _apply_all(lambda x: f(x, x), values, raised=raised)


def _union(expr: rasp.SOp, parts: Iterable[Set[Any]]) -> Set[Any]:
    """The union of value sets; numbers from `_linear_value_set` stay a SortedNumbers."""
    parts = list(parts)
    if isinstance(expr, rasp.LinearSequenceMap) and all(
        isinstance(p, SortedNumbers) for p in parts
    ):
        return SortedNumbers(_sorted_unique(np.concatenate([p.array for p in parts])))
    return set().union(*parts)


@dataclasses.dataclass(frozen=True)
class BasisInference:
    """What basis inference found: every SOp's value set and output basis, by label.

    The pass's return value. Read-only (mappings are proxies, value sets
    frozensets or `SortedNumbers`); the graph attributes `nodes.VALUE_SET` and
    `nodes.OUTPUT_BASIS` that `infer_bases` writes are a view of it.
    """

    value_sets: Mapping[str, AbstractSet[Any]]
    output_bases: Mapping[str, Tuple[bases.BasisDirection, ...]]

    def value_set(self, expr: rasp.SOp) -> AbstractSet[Any]:
        """The values `expr` can take."""
        return self.value_sets[expr.label]

    def output_basis(self, expr: rasp.SOp) -> Tuple[bases.BasisDirection, ...]:
        """The residual directions `expr` owns (sorted)."""
        return self.output_bases[expr.label]


def infer_value_sets(graph: nx.DiGraph, vocab: Set[rasp.Value], max_seq_len: int) -> BasisInference:
    """The value set and output basis of every SOp of `graph` (which is not modified).

    Raises:
      NotImplementedError, errors.TracrUserError: as `ValueSetInference.add`.
    """
    inference = ValueSetInference(vocab, max_seq_len)
    value_sets: Dict[str, AbstractSet[Any]] = {}
    output_bases: Dict[str, Tuple[bases.BasisDirection, ...]] = {}
    for label in nx.topological_sort(graph):
        expr = graph.nodes[label][nodes.EXPR]
        if not isinstance(expr, rasp.SOp):
            continue
        value_set = inference.add(expr)
        if not isinstance(value_set, SortedNumbers):
            value_set = frozenset(value_set)
        value_sets[label] = value_set
        output_bases[label] = tuple(output_basis(expr, value_set))
    return BasisInference(types.MappingProxyType(value_sets), types.MappingProxyType(output_bases))


def infer_bases(
    graph: nx.DiGraph, sink: Node, vocab: Set[rasp.Value], max_seq_len: int
) -> BasisInference:
    """Annotates every SOp node with VALUE_SET and OUTPUT_BASIS (in place), as Tracr does.

    The annotations are a view of the returned `infer_value_sets` result.
    """
    del sink  # every node of the graph is annotated
    result = infer_value_sets(graph, vocab, max_seq_len)
    for label, value_set in result.value_sets.items():
        node = graph.nodes[label]
        node[nodes.VALUE_SET] = value_set
        node[nodes.OUTPUT_BASIS] = list(result.output_bases[label])
    return result


def output_basis(expr: rasp.SOp, value_set: AbstractSet[Any]) -> list:
    """One direction for a numerical SOp, one per value (sorted) for a categorical one."""
    if rasp.is_numerical(expr):
        return [bases.BasisDirection(expr.label)]
    return sorted(bases.BasisDirection(expr.label, v) for v in value_set)
