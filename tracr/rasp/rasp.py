"""RASP: the Restricted Access Sequence Processing language.

A RASP program is a graph of expressions. *SOps* (sequence operations) map an
input sequence to a sequence of the same length; *selectors* map it to a
boolean matrix saying which key positions each query position attends to.
``tokens`` and ``indices`` are the inputs; everything else is built from them::

    from tracr.rasp import rasp

    # length - indices - 1 is the position each token should move to.
    length = rasp.SelectorWidth(
        rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE))
    opp_idx = (length - rasp.indices - 1).named("opp_idx")
    flip = rasp.Select(rasp.indices, opp_idx, rasp.Comparison.EQ)
    reverse = rasp.Aggregate(flip, rasp.tokens).named("reverse")

    reverse(["a", "b", "c"])   # -> ["c", "b", "a"]

Every expression has a ``name`` (the kind, e.g. ``map``, unless set with
``.named``), a ``label`` ``<name>_<unique_id>`` (``tokens``, ``indices`` and
``length`` keep their bare names), ``children`` and immutable ``annotations``; SOps carry an
``encoding`` annotation (categorical by default, see ``numerical``) that tells
the compiler whether a value is stored as a one-hot or as a magnitude.

Semantics of the reference evaluator (``evaluate`` / calling an expression):

* ``Map`` and ``SequenceMap`` give ``None`` wherever an input is ``None``.
* ``Select(keys, queries, predicate)`` evaluates to ``m[q][k] =
  predicate(keys[k], queries[q])`` (``False`` where a key or query is ``None``).
* ``Aggregate`` returns, per query, the mean of the selected values (as
  Tracr: a categorical aggregate that selects several different values also
  averages them, or joins strings; the compiler refuses that), or ``default``
  where nothing is selected.
* ``SelectorWidth`` counts the selected keys of each query.

Expressions should be treated as immutable: ``named``/``annotated`` return
copies.
"""

from __future__ import annotations

import abc
import copy as _copy
import enum
import functools
import itertools
import logging
import re
import threading
import types
from collections.abc import Iterator
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    TypeVar,
    Union,
)

SelectorValue = List[List[bool]]
NumericValue = Union[int, float]
Value = Union[None, int, float, str, bool]
VT = TypeVar("VT", bound=Value)
RASPExprT = TypeVar("RASPExprT", bound="RASPExpr")
SOpT = TypeVar("SOpT", bound="SOp")
T = TypeVar("T")

# Tracr registers default annotators here at import time; we compute defaults
# in ``RASPExpr.annotations`` instead, so this stays an empty read-only mapping
# kept only for code that looks it up.
DEFAULT_ANNOTATORS: Mapping[str, "Annotator"] = types.MappingProxyType({})

_LOG = logging.getLogger(__name__)

_NAME_KEY = "name"
_ENCODING_KEY = "encoding"


class Annotator(Protocol):
    def __call__(self, expr: "RASPExpr") -> Any:
        """Returns the annotation value for ``expr``."""


class Annotations(Mapping[str, Any]):
    """An immutable mapping of annotation names to values."""

    __slots__ = ("_data",)

    def __init__(self, data: Optional[Mapping[str, Any]] = None, **kwargs: Any):
        merged = dict(data or {})
        merged.update(kwargs)
        object.__setattr__(self, "_data", merged)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Annotations are immutable; use expr.annotated(...) instead.")

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Annotations({self._data!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # values may be unhashable

    def __reduce__(self):
        return (Annotations, (self._data,))


# ----------------------------------------------------------------------------
# Base classes
# ----------------------------------------------------------------------------


class RASPExpr(abc.ABC):
    """Base class of all RASP expressions (SOps and selectors)."""

    # The default name of the kind; set by each concrete class.
    _kind: str = ""
    # Tracr's process-wide id source (kept for compatibility: users reset it with
    # ``rasp.RASPExpr._ids = itertools.count(1)`` to get reproducible labels).
    _ids = itertools.count(1)

    def __init__(self):
        self._annotations: Annotations = Annotations()

    def __call__(self, xs: Sequence[Value]) -> Union[Sequence[Value], SelectorValue]:
        """Evaluates this expression on the input sequence ``xs``."""
        return evaluate(self, xs)

    @property
    def annotations(self) -> Mapping[str, Any]:
        """Explicit annotations merged over the defaults (name, encoding)."""
        explicit = self._annotations
        if _NAME_KEY in explicit and (_ENCODING_KEY in explicit or default_encoding(self) is None):
            return explicit
        defaults: Dict[str, Any] = dict(default_name(self))
        encoding = default_encoding(self)
        if encoding is not None:
            defaults[_ENCODING_KEY] = encoding
        defaults.update(explicit)
        return Annotations(defaults)

    @annotations.setter
    def annotations(self, annotations: Mapping[str, Any]) -> None:
        # Kept for Tracr compatibility; prefer ``annotated``, which copies.
        if not isinstance(annotations, Mapping):
            raise TypeError(f"annotations must be a mapping, got {type(annotations).__name__}.")
        self._annotations = Annotations(annotations)

    @property
    def name(self) -> str:
        return self.annotations[_NAME_KEY]

    @property
    @abc.abstractmethod
    def children(self) -> Sequence["RASPExpr"]:
        """Direct sub-expressions this expression reads from."""

    @functools.cached_property
    def unique_id(self) -> int:
        """An id unique among the expressions of this process, drawn on first use (as Tracr)."""
        return next(RASPExpr._ids)

    def copy(self: RASPExprT) -> RASPExprT:
        """Returns a shallow copy with the same name and annotations and a new ``unique_id``."""
        new = _copy.copy(self)
        new.__dict__.pop("unique_id", None)
        return new

    @property
    def label(self) -> str:
        """``<name>_<unique_id>``, so that expressions named alike stay apart."""
        return f"{self.name}_{self.unique_id}"

    def named(self: RASPExprT, name: str) -> RASPExprT:
        """Returns a copy of this expression called ``name``."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"named() expects a non-empty str, got {name!r}.")
        return annotate(self, name=name)

    def annotated(self: RASPExprT, **annotations: Any) -> RASPExprT:
        """Returns a copy with ``annotations`` merged over the current ones."""
        return annotate(self, **annotations)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r})"


def annotate(expr: RASPExprT, **annotations: Any) -> RASPExprT:
    """Returns a copy of ``expr`` with ``annotations`` merged in.

    The copy keeps the name of ``expr`` (default names included) unless a new
    ``name`` is given, so it takes the original's place in a program.
    """
    if not isinstance(expr, RASPExpr):
        raise TypeError(f"annotate() expects a RASP expression, got {type(expr).__name__}.")
    new = expr.copy()
    new._annotations = Annotations({**expr.annotations, **annotations})
    return new


# ----------------------------------------------------------------------------
# SOps
# ----------------------------------------------------------------------------


def _check_sop(value: Any, what: str) -> "SOp":
    if not isinstance(value, SOp):
        hint = ""
        if isinstance(value, Selector):
            hint = " Selectors can't be used here; aggregate them first (Aggregate/SelectorWidth)."
        raise TypeError(f"{what} must be an SOp, got {value!r}.{hint}")
    return value


def _check_selector(value: Any, what: str) -> "Selector":
    if not isinstance(value, Selector):
        raise TypeError(
            f"{what} must be a Selector (e.g. rasp.Select(keys, queries, predicate)), "
            f"got {value!r}."
        )
    return value


def _check_callable(value: Any, what: str) -> Callable[..., Any]:
    if not callable(value):
        raise TypeError(f"{what} must be callable, got {value!r}.")
    return value


class SOp(RASPExpr):
    """A sequence operation: maps an input sequence to a same-length sequence.

    Arithmetic, comparison and boolean operators build ``Map``s (with a
    constant) or ``SequenceMap``s (with another SOp).
    """

    def __call__(self, xs: Sequence[Value]) -> Sequence[Value]:
        return evaluate(self, xs)  # type: ignore[return-value]

    # Overloading __eq__ would otherwise make SOps unhashable.
    __hash__ = RASPExpr.__hash__

    def _binary(self, other: Any, op: Callable[[Any, Any], Any]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(op, self, other)
        if isinstance(other, Selector):
            raise TypeError(f"Can't combine the SOp {self!r} with the selector {other!r}.")
        return Map(lambda x: op(x, other), self)

    def _rbinary(self, other: Any, op: Callable[[Any, Any], Any]) -> "SOp":
        if isinstance(other, SOp):
            return SequenceMap(op, other, self)
        if isinstance(other, Selector):
            raise TypeError(f"Can't combine the selector {other!r} with the SOp {self!r}.")
        return Map(lambda x: op(other, x), self)

    def __lt__(self, other: Value) -> "SOp":  # type: ignore[override]
        return self._binary(other, lambda x, y: x < y)

    def __le__(self, other: Value) -> "SOp":  # type: ignore[override]
        return self._binary(other, lambda x, y: x <= y)

    def __eq__(self, other: Value) -> "SOp":  # type: ignore[override]
        return self._binary(other, lambda x, y: x == y)

    def __ne__(self, other: Value) -> "SOp":  # type: ignore[override]
        return self._binary(other, lambda x, y: x != y)

    def __gt__(self, other: Value) -> "SOp":  # type: ignore[override]
        return self._binary(other, lambda x, y: x > y)

    def __ge__(self, other: Value) -> "SOp":  # type: ignore[override]
        return self._binary(other, lambda x, y: x >= y)

    def __add__(self, other: Union["SOp", Value]) -> "SOp":
        return self._binary(other, lambda x, y: x + y)

    def __radd__(self, other: Union["SOp", Value]) -> "SOp":
        return self._rbinary(other, lambda x, y: x + y)

    def __sub__(self, other: Union["SOp", NumericValue]) -> "SOp":
        return self._binary(other, lambda x, y: x - y)

    def __rsub__(self, other: Union["SOp", NumericValue]) -> "SOp":
        return self._rbinary(other, lambda x, y: x - y)

    def __mul__(self, other: Union["SOp", NumericValue]) -> "SOp":
        return self._binary(other, lambda x, y: x * y)

    def __rmul__(self, other: Union["SOp", NumericValue]) -> "SOp":
        return self._rbinary(other, lambda x, y: x * y)

    def __truediv__(self, other: Union["SOp", NumericValue]) -> "SOp":
        return self._binary(other, lambda x, y: x / y)

    def __rtruediv__(self, other: Union["SOp", NumericValue]) -> "SOp":
        return self._rbinary(other, lambda x, y: x / y)

    def __invert__(self) -> "SOp":
        return Map(lambda x: not x, self)

    def __and__(self, other: Union["SOp", NumericValue]) -> "SOp":
        return self._binary(other, lambda x, y: x and y)

    def __or__(self, other: Union["SOp", NumericValue]) -> "SOp":
        return self._binary(other, lambda x, y: x or y)

    def __rand__(self, other: Union["SOp", NumericValue]) -> "SOp":
        return self._rbinary(other, lambda x, y: x and y)

    def __ror__(self, other: Union["SOp", NumericValue]) -> "SOp":
        return self._rbinary(other, lambda x, y: x or y)


class TokensType(SOp):
    """The input tokens."""

    _kind = "tokens"

    @property
    def children(self) -> Sequence[RASPExpr]:
        return []

    @property
    def label(self) -> str:
        return "tokens"

    def __repr__(self):
        return "tokens"


class IndicesType(SOp):
    """The position of each token: 0, 1, ..., n-1."""

    _kind = "indices"

    @property
    def children(self) -> Sequence[RASPExpr]:
        return []

    @property
    def label(self) -> str:
        return "indices"

    def __repr__(self):
        return "indices"


class LengthType(SOp):
    """The input length at every position (evaluation only; see lib.make_length)."""

    _kind = "length"

    @property
    def children(self) -> Sequence[RASPExpr]:
        return []

    @property
    def label(self) -> str:
        return "length"

    def __repr__(self):
        return "length"


tokens = TokensType()
indices = IndicesType()
length = LengthType()


class _ComposedMap:
    """``f`` after ``g``, skipping ``f`` where ``g`` gives None (like two Maps)."""

    def __init__(self, f: Callable[[Value], Value], g: Callable[[Value], Value]):
        self.f = f
        self.g = g

    def __call__(self, x: Value) -> Value:
        y = self.g(x)
        return None if y is None else self.f(y)

    def __repr__(self) -> str:
        return f"<{self.f!r} after {self.g!r}>"


class Map(SOp):
    """Applies ``f`` to every element: ``Map(f, x)(xs)[i] == f(x(xs)[i])``.

    With ``simplify=True`` a Map of a Map folds into one Map of the composed
    function, which compiles to a single MLP.
    """

    _kind = "map"

    def __init__(self, f: Callable[[Value], Value], inner: SOp, simplify: bool = True):
        super().__init__()
        self.f = _check_callable(f, "Map's f")
        self.inner = _check_sop(inner, "Map's inner")
        if simplify and isinstance(self.inner, Map):
            self.f = _ComposedMap(self.f, self.inner.f)
            self.inner = self.inner.inner

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.inner]


class SequenceMap(SOp):
    """Combines two SOps elementwise: ``out[i] = f(fst[i], snd[i])``."""

    _kind = "sequence_map"

    def __init__(self, f: Callable[[Value, Value], Value], fst: SOp, snd: SOp):
        super().__init__()
        self.f = _check_callable(f, "SequenceMap's f")
        self.fst = _check_sop(fst, "SequenceMap's fst")
        self.snd = _check_sop(snd, "SequenceMap's snd")
        if self.fst is self.snd:
            _LOG.warning(
                "Creating a SequenceMap with both inputs being the same SOp is discouraged. "
                "You should use a Map instead (rasp.Map(lambda x: f(x, x), sop))."
            )

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.fst, self.snd]


class _LinearCombination:
    def __init__(self, fst_fac: float, snd_fac: float):
        self.fst_fac = fst_fac
        self.snd_fac = snd_fac

    def __call__(self, x: Value, y: Value) -> Value:
        return self.fst_fac * x + self.snd_fac * y  # type: ignore[operator]

    def __repr__(self) -> str:
        return f"<{self.fst_fac} * x + {self.snd_fac} * y>"


class LinearSequenceMap(SequenceMap):
    """``fst_fac * fst + snd_fac * snd``; compiles without an MLP lookup table."""

    _kind = "linear_sequence_map"

    def __init__(self, fst: SOp, snd: SOp, fst_fac: float, snd_fac: float):
        for what, fac in (("fst_fac", fst_fac), ("snd_fac", snd_fac)):
            if isinstance(fac, bool) or not isinstance(fac, (int, float)):
                raise TypeError(f"LinearSequenceMap's {what} must be a number, got {fac!r}.")
        super().__init__(_LinearCombination(fst_fac, snd_fac), fst, snd)
        self.fst_fac = fst_fac
        self.snd_fac = snd_fac


class Full(SOp):
    """The constant ``fill`` at every position."""

    _kind = "full"

    def __init__(self, fill: Value):
        super().__init__()
        self.fill = fill

    @property
    def children(self) -> Sequence[RASPExpr]:
        return []


def sop_not(sop: SOp) -> SOp:
    """Elementwise boolean negation."""
    return Map(lambda x: not x, _check_sop(sop, "sop_not's argument"))


class ConstantSOp(SOp, Generic[VT]):
    """A fixed sequence; with ``check_length`` the input must have its length."""

    _kind = "constant_sop"

    def __init__(self, value: Sequence[VT], check_length: bool = True):
        super().__init__()
        try:
            self.value = tuple(value)
        except TypeError:
            raise TypeError(
                f"ConstantSOp's value must be a sequence of values, got {value!r}."
            ) from None
        self.check_length = check_length

    @property
    def children(self) -> Sequence[RASPExpr]:
        return []


# ----------------------------------------------------------------------------
# Selectors
# ----------------------------------------------------------------------------


class Predicate(Protocol):
    def __call__(self, key: Value, query: Value) -> bool:
        """Whether ``query`` attends to ``key``."""


class Comparison(enum.Enum):
    """Predicates for ``Select``, called as ``predicate(key, query)``.

    ``Comparison.LT`` selects the keys smaller than the query.
    """

    EQ = "=="
    LT = "<"
    LEQ = "<="
    GT = ">"
    GEQ = ">="
    NEQ = "!="
    TRUE = "True"
    FALSE = "False"

    @classmethod
    def _missing_(cls, value: object) -> "Comparison":
        valid = ", ".join(repr(c.value) for c in cls)
        raise ValueError(f"Unknown comparison {value!r}; expected one of {valid}.")

    def __call__(self, key: Value, query: Value) -> bool:
        return _COMPARISON_FNS[self](key, query)

    def __str__(self) -> str:
        return self.value


_COMPARISON_FNS: Dict[Comparison, Callable[[Any, Any], bool]] = {
    Comparison.EQ: lambda key, query: key == query,
    Comparison.LT: lambda key, query: key < query,
    Comparison.LEQ: lambda key, query: key <= query,
    Comparison.GT: lambda key, query: key > query,
    Comparison.GEQ: lambda key, query: key >= query,
    Comparison.NEQ: lambda key, query: key != query,
    Comparison.TRUE: lambda key, query: True,
    Comparison.FALSE: lambda key, query: False,
}

_NEGATED_COMPARISON = {
    Comparison.EQ: Comparison.NEQ,
    Comparison.NEQ: Comparison.EQ,
    Comparison.LT: Comparison.GEQ,
    Comparison.GEQ: Comparison.LT,
    Comparison.LEQ: Comparison.GT,
    Comparison.GT: Comparison.LEQ,
    Comparison.TRUE: Comparison.FALSE,
    Comparison.FALSE: Comparison.TRUE,
}


class Selector(RASPExpr):
    """A boolean attention pattern: ``sel(xs)[query][key]``."""

    def __call__(self, xs: Sequence[Value]) -> SelectorValue:
        return evaluate(self, xs)  # type: ignore[return-value]

    def __and__(self, other: "Selector") -> "Selector":
        return selector_and(self, other)

    def __rand__(self, other: "Selector") -> "Selector":
        return selector_and(other, self)

    def __or__(self, other: "Selector") -> "Selector":
        return selector_or(self, other)

    def __ror__(self, other: "Selector") -> "Selector":
        return selector_or(other, self)

    def __invert__(self) -> "Selector":
        return selector_not(self)


class Select(Selector):
    """Query position q attends to key position k iff ``predicate(keys[k], queries[q])``."""

    _kind = "select"

    def __init__(self, keys: SOp, queries: SOp, predicate: Predicate):
        super().__init__()
        self.keys = _check_sop(keys, "Select's keys")
        self.queries = _check_sop(queries, "Select's queries")
        self.predicate = _check_callable(predicate, "Select's predicate")

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.keys, self.queries]


class ConstantSelector(Selector):
    """A fixed selector matrix ``value[query][key]``."""

    _kind = "constant_selector"

    def __init__(self, value: SelectorValue, check_length: bool = True):
        super().__init__()
        try:
            self.value = tuple(tuple(bool(v) for v in row) for row in value)
        except TypeError:
            raise TypeError(
                f"ConstantSelector's value must be a list of lists of bools, got {value!r}."
            ) from None
        self.check_length = check_length

    @property
    def children(self) -> Sequence[RASPExpr]:
        return []


class SelectorWidth(SOp):
    """The number of keys each query selects."""

    _kind = "selector_width"

    def __init__(self, selector: Selector):
        super().__init__()
        self.selector = _check_selector(selector, "SelectorWidth's selector")

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.selector]


class SelectorAnd(Selector):
    """Selects where both selectors select."""

    _kind = "selector_and"

    def __init__(self, fst: Selector, snd: Selector):
        super().__init__()
        self.fst = _check_selector(fst, "SelectorAnd's fst")
        self.snd = _check_selector(snd, "SelectorAnd's snd")

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.fst, self.snd]


class SelectorOr(Selector):
    """Selects where either selector selects."""

    _kind = "selector_or"

    def __init__(self, fst: Selector, snd: Selector):
        super().__init__()
        self.fst = _check_selector(fst, "SelectorOr's fst")
        self.snd = _check_selector(snd, "SelectorOr's snd")

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.fst, self.snd]


class SelectorNot(Selector):
    """Selects where the inner selector does not."""

    _kind = "selector_not"

    def __init__(self, inner: Selector):
        super().__init__()
        self.inner = _check_selector(inner, "SelectorNot's inner")

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.inner]


class _NotPredicate:
    def __init__(self, inner: Predicate):
        self.inner = inner

    def __call__(self, key: Value, query: Value) -> bool:
        return not self.inner(key, query)

    def __repr__(self) -> str:
        return f"<not {self.inner!r}>"


class _AndPredicate:
    def __init__(self, fst: Predicate, snd: Predicate):
        self.fst = fst
        self.snd = snd

    def __call__(self, key: Value, query: Value) -> bool:
        return bool(self.fst(key, query)) and bool(self.snd(key, query))

    def __repr__(self) -> str:
        return f"<{self.fst!r} and {self.snd!r}>"


class _OrPredicate:
    def __init__(self, fst: Predicate, snd: Predicate):
        self.fst = fst
        self.snd = snd

    def __call__(self, key: Value, query: Value) -> bool:
        return bool(self.fst(key, query)) or bool(self.snd(key, query))

    def __repr__(self) -> str:
        return f"<{self.fst!r} or {self.snd!r}>"


class _FixedKey:
    """``predicate`` with the key fixed to a ``Full``'s fill (the key no longer matters)."""

    def __init__(self, predicate: Predicate, key: Value):
        self.predicate = predicate
        self.key = key

    def __call__(self, key: Value, query: Value) -> bool:
        return self.predicate(self.key, query)

    def __repr__(self) -> str:
        return f"<{self.predicate!r} with key {self.key!r}>"


class _FixedQuery:
    """``predicate`` with the query fixed to a ``Full``'s fill."""

    def __init__(self, predicate: Predicate, query: Value):
        self.predicate = predicate
        self.query = query

    def __call__(self, key: Value, query: Value) -> bool:
        return self.predicate(key, self.query)

    def __repr__(self) -> str:
        return f"<{self.predicate!r} with query {self.query!r}>"


def _attempt_simplify(
    fst: Selector, snd: Selector, combine: Callable[[Predicate, Predicate], Predicate]
) -> Optional[Selector]:
    """One ``Select`` for two, as Tracr: shared keys and queries, or a ``Full`` on one side.

    A ``Full`` operand has the same value everywhere, so its predicate only depends on
    the other side and the result can read the other operand's keys (or queries).
    """
    if not (isinstance(fst, Select) and isinstance(snd, Select)):
        return None
    fst_pred, snd_pred = fst.predicate, snd.predicate
    keys: Optional[SOp] = None
    queries: Optional[SOp] = None
    if isinstance(fst.keys, Full):
        keys, fst_pred = snd.keys, _FixedKey(fst_pred, fst.keys.fill)
    if isinstance(snd.keys, Full):
        keys, snd_pred = fst.keys, _FixedKey(snd_pred, snd.keys.fill)
    if isinstance(fst.queries, Full):
        queries, fst_pred = snd.queries, _FixedQuery(fst_pred, fst.queries.fill)
    if isinstance(snd.queries, Full):
        queries, snd_pred = fst.queries, _FixedQuery(snd_pred, snd.queries.fill)
    if fst.keys is snd.keys:
        keys = fst.keys
    if fst.queries is snd.queries:
        queries = fst.queries
    if keys is None or queries is None:
        return None
    return Select(keys, queries, combine(fst_pred, snd_pred))


def selector_not(inner: Selector, simplify: bool = True) -> Selector:
    """Negates a selector; a ``Select`` becomes a ``Select`` of the negated predicate."""
    _check_selector(inner, "selector_not's argument")
    if simplify and isinstance(inner, Select):
        pred = inner.predicate
        negated = _NEGATED_COMPARISON[pred] if isinstance(pred, Comparison) else _NotPredicate(pred)
        return Select(inner.keys, inner.queries, negated)
    return SelectorNot(inner)


def selector_and(fst: Selector, snd: Selector, simplify: bool = True) -> Selector:
    """Both selectors; two ``Select``s fold into one as in Tracr (see _attempt_simplify)."""
    _check_selector(fst, "selector_and's fst")
    _check_selector(snd, "selector_and's snd")
    simplified = _attempt_simplify(fst, snd, _AndPredicate) if simplify else None
    return simplified if simplified is not None else SelectorAnd(fst, snd)


def selector_or(fst: Selector, snd: Selector, simplify: bool = True) -> Selector:
    """Either selector; two ``Select``s fold into one as in Tracr (see _attempt_simplify)."""
    _check_selector(fst, "selector_or's fst")
    _check_selector(snd, "selector_or's snd")
    simplified = _attempt_simplify(fst, snd, _OrPredicate) if simplify else None
    return simplified if simplified is not None else SelectorOr(fst, snd)


class Aggregate(SOp, Generic[VT]):
    """Reads ``sop`` at the selected keys of each query.

    Numerical aggregates (``numerical(Aggregate(...))``) average the selected
    values; categorical ones (the default) require every query to select at
    most one value. Queries that select nothing get ``default``.
    """

    _kind = "aggregate"

    def __init__(self, selector: Selector, sop: SOp, default: Optional[VT] = None):
        super().__init__()
        self.selector = _check_selector(selector, "Aggregate's selector")
        self.sop = _check_sop(sop, "Aggregate's sop")
        self.default = default

    @property
    def children(self) -> Sequence[RASPExpr]:
        return [self.selector, self.sop]


# ----------------------------------------------------------------------------
# Encodings and default annotations
# ----------------------------------------------------------------------------


class Encoding(enum.Enum):
    """How an SOp's value is stored in the residual stream."""

    CATEGORICAL = "categorical"  # one basis direction per value (one-hot)
    NUMERICAL = "numerical"  # one direction holding the value as a magnitude
    # Lower-case aliases, as used in the Tracr paper's notebooks.
    categorical = "categorical"
    numerical = "numerical"


def numerical(sop: SOpT) -> SOpT:
    """Returns a copy of ``sop`` annotated as numerically encoded."""
    return annotate(_check_sop(sop, "numerical()'s argument"), encoding=Encoding.NUMERICAL)  # type: ignore[return-value]


def categorical(sop: SOpT) -> SOpT:
    """Returns a copy of ``sop`` annotated as categorically encoded (the default)."""
    return annotate(_check_sop(sop, "categorical()'s argument"), encoding=Encoding.CATEGORICAL)  # type: ignore[return-value]


def get_encoding(sop: SOp) -> Encoding:
    """The encoding annotation of ``sop``."""
    _check_sop(sop, "get_encoding()'s argument")
    encoding = sop.annotations[_ENCODING_KEY]
    if isinstance(encoding, Encoding):
        return encoding
    try:
        return Encoding(encoding)
    except ValueError:
        raise ValueError(
            f"{sop.label} has the encoding annotation {encoding!r}; expected "
            f"rasp.Encoding.CATEGORICAL or rasp.Encoding.NUMERICAL."
        ) from None


def is_numerical(sop: SOp) -> bool:
    """Whether ``sop`` is numerically encoded (False for selectors)."""
    return isinstance(sop, SOp) and get_encoding(sop) is Encoding.NUMERICAL


def is_categorical(sop: SOp) -> bool:
    """Whether ``sop`` is categorically encoded (False for selectors)."""
    return isinstance(sop, SOp) and get_encoding(sop) is Encoding.CATEGORICAL


def default_encoding(expr: RASPExpr) -> Optional[Encoding]:
    """SOps are categorical unless annotated otherwise; selectors have no encoding."""
    return Encoding.CATEGORICAL if isinstance(expr, SOp) else None


def _kind_of(expr: RASPExpr) -> str:
    for cls in type(expr).__mro__:
        kind = cls.__dict__.get("_kind")
        if kind:
            return kind
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(expr).__name__).lower()


def default_name(expr: RASPExpr) -> Dict[str, str]:
    """``{"name": <kind>}``, e.g. ``map`` or ``select``; the label adds the id."""
    return {_NAME_KEY: _kind_of(expr)}


# ----------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------


class RASPEvaluator(abc.ABC):
    """Something that can run a RASP expression on an input."""

    @abc.abstractmethod
    def evaluate(
        self, expr: RASPExpr, xs: Sequence[Value]
    ) -> Union[Sequence[Value], SelectorValue]:
        """Evaluates ``expr`` on the input sequence ``xs``."""


def _as_input(xs: Any) -> tuple:
    if isinstance(xs, tuple):
        return xs
    if isinstance(xs, Sequence):  # a str is the sequence of its characters, as in Tracr
        return tuple(xs)
    if getattr(xs, "ndim", None) == 1 and hasattr(xs, "tolist"):
        return tuple(xs.tolist())
    raise TypeError(
        f"RASP programs take a list of tokens such as ['a', 'b'], got {type(xs).__name__} {xs!r}."
    )


def _distinct(values: Sequence[Value]) -> List[Value]:
    out: List[Value] = []
    for v in values:
        if not any(v is u or v == u for u in out):
            out.append(v)
    return out


def _categorical_mean(sop: Aggregate, selected: List[Value], query: int) -> Value:
    """Tracr's categorical Aggregate: the one selected value, else the mean (strings: joined).

    Selecting several different values is not compilable (``validating`` reports it),
    but the evaluator computes what Tracr computes.
    """
    distinct = _distinct(selected)
    if len(distinct) == 1:
        return distinct[0]
    if any(v is None for v in selected):
        return None
    if all(isinstance(v, str) for v in selected):
        return "".join(selected)  # type: ignore[arg-type]
    if all(isinstance(v, (int, float)) for v in selected):
        return sum(selected) / len(selected)  # type: ignore[arg-type]
    raise ValueError(
        f"Unsupported type for aggregation: {selected!r}. The categorical aggregate "
        f"{sop.label} selects several different values at query position {query}; narrow "
        f"the selector so that each query selects one value."
    )


class DefaultRASPEvaluator(RASPEvaluator):
    """The reference evaluator: gives every expression its RASP meaning.

    Results are cached per top-level ``evaluate`` call, so shared
    sub-expressions are computed once.
    """

    def __init__(self):
        self._local = threading.local()
        self._eval_fn_by_type: Dict[type, Callable[[Any, Sequence[Value]], Any]] = {
            TokensType: self.eval_tokens,
            IndicesType: self.eval_indices,
            LengthType: self.eval_length,
            Map: self.eval_map,
            SequenceMap: self.eval_sequence_map,
            Full: self.eval_full,
            ConstantSOp: self.eval_constant_sop,
            SelectorWidth: self.eval_selector_width,
            Aggregate: self.eval_aggregate,
            Select: self.eval_select,
            ConstantSelector: self.eval_constant_selector,
            SelectorAnd: self.eval_selector_and,
            SelectorOr: self.eval_selector_or,
            SelectorNot: self.eval_selector_not,
        }

    def _state(self) -> threading.local:
        local = self.__dict__.get("_local")
        if local is None:  # a subclass skipped __init__
            local = self.__dict__.setdefault("_local", threading.local())
        return local

    def _eval_fn(self, expr: RASPExpr) -> Callable[[Any, Sequence[Value]], Any]:
        table = self.__dict__.get("_eval_fn_by_type")
        if table is None:
            DefaultRASPEvaluator.__init__(self)
            table = self._eval_fn_by_type
        for cls in type(expr).__mro__:
            if cls in table:
                return table[cls]
        raise NotImplementedError(
            f"{type(self).__name__} can't evaluate {type(expr).__name__} ({expr.label}); "
            f"subclass it and handle this expression type in evaluate()."
        )

    def evaluate(
        self, expr: RASPExpr, xs: Sequence[Value]
    ) -> Union[Sequence[Value], SelectorValue]:
        if not isinstance(expr, RASPExpr):
            raise TypeError(f"evaluate() expects a RASP expression, got {expr!r}.")
        xs = _as_input(xs)
        state = self._state()
        outer = getattr(state, "memo", None) is None
        if outer:
            state.memo, state.xs = {}, xs
        try:
            use_memo = state.xs is xs
            if use_memo and id(expr) in state.memo:
                return state.memo[id(expr)][1]
            try:
                result = self._eval_fn(expr)(expr, xs)
            except Exception as e:
                if not getattr(e, "_tracr_noted", False) and hasattr(e, "add_note"):
                    e.add_note(f"(while evaluating the RASP expression {expr.label})")
                    try:
                        e._tracr_noted = True  # type: ignore[attr-defined]
                    except AttributeError:
                        pass
                raise
            if use_memo:
                state.memo[id(expr)] = (expr, result)  # keep expr alive: ids stay unique
            return result
        finally:
            if outer:
                state.memo, state.xs = None, None

    def eval_tokens(self, sop: TokensType, xs: Sequence[Value]) -> Sequence[Value]:
        return list(xs)

    def eval_indices(self, sop: IndicesType, xs: Sequence[Value]) -> Sequence[Value]:
        return list(range(len(xs)))

    def eval_length(self, sop: LengthType, xs: Sequence[Value]) -> Sequence[int]:
        return [len(xs)] * len(xs)

    def eval_sequence_map(self, sop: SequenceMap, xs: Sequence[Value]) -> Sequence[Value]:
        fst = self.evaluate(sop.fst, xs)
        snd = self.evaluate(sop.snd, xs)
        return [
            None if x is None or y is None else sop.f(x, y) for x, y in zip(fst, snd, strict=False)
        ]

    def eval_map(self, sop: Map, xs: Sequence[Value]) -> Sequence[Value]:
        return [None if x is None else sop.f(x) for x in self.evaluate(sop.inner, xs)]

    def eval_full(self, sop: Full, xs: Sequence[Value]) -> Sequence[Value]:
        return [sop.fill] * len(xs)

    def eval_constant_sop(self, sop: ConstantSOp, xs: Sequence[Value]) -> Sequence[Value]:
        if sop.check_length and len(sop.value) != len(xs):
            raise ValueError(
                f"Constant len {len(sop.value)} doesn't match input len {len(xs)}. "
                f"{sop.label} is a ConstantSOp; evaluate it on inputs of that length or build "
                f"it with check_length=False."
            )
        return list(sop.value)

    def eval_selector_width(self, sop: SelectorWidth, xs: Sequence[Value]) -> Sequence[Value]:
        return [sum(row) for row in self.evaluate(sop.selector, xs)]

    def eval_aggregate(self, sop: Aggregate, xs: Sequence[Value]) -> Sequence[Value]:
        selector = self.evaluate(sop.selector, xs)
        values = self.evaluate(sop.sop, xs)
        numeric = is_numerical(sop)
        out: List[Value] = []
        for query, row in enumerate(selector):
            selected = [v for v, s in zip(values, row, strict=False) if s]
            if not selected:
                out.append(sop.default)
            elif numeric:
                if any(v is None for v in selected):
                    out.append(None)
                else:
                    out.append(sum(selected) / len(selected))  # type: ignore[arg-type]
            else:
                out.append(_categorical_mean(sop, selected, query))
        return out

    def eval_select(self, sel: Select, xs: Sequence[Value]) -> SelectorValue:
        keys = self.evaluate(sel.keys, xs)
        queries = self.evaluate(sel.queries, xs)
        return [
            [False if k is None or q is None else bool(sel.predicate(k, q)) for k in keys]
            for q in queries
        ]

    def eval_constant_selector(self, sel: ConstantSelector, xs: Sequence[Value]) -> SelectorValue:
        n = len(xs)
        if sel.check_length and (len(sel.value) != n or any(len(row) != n for row in sel.value)):
            shape = f"{len(sel.value)}x{len(sel.value[0]) if sel.value else 0}"
            raise ValueError(
                f"Constant len {len(sel.value)} doesn't match input len {n}. "
                f"{sel.label} is a {shape} ConstantSelector; it must be {n}x{n} "
                f"(or built with check_length=False)."
            )
        return [list(row) for row in sel.value]

    def eval_selector_and(self, sel: SelectorAnd, xs: Sequence[Value]) -> SelectorValue:
        fst = self.evaluate(sel.fst, xs)
        snd = self.evaluate(sel.snd, xs)
        return [
            [a and b for a, b in zip(r1, r2, strict=False)]
            for r1, r2 in zip(fst, snd, strict=False)
        ]

    def eval_selector_or(self, sel: SelectorOr, xs: Sequence[Value]) -> SelectorValue:
        fst = self.evaluate(sel.fst, xs)
        snd = self.evaluate(sel.snd, xs)
        return [
            [a or b for a, b in zip(r1, r2, strict=False)] for r1, r2 in zip(fst, snd, strict=False)
        ]

    def eval_selector_not(self, sel: SelectorNot, xs: Sequence[Value]) -> SelectorValue:
        return [[not a for a in row] for row in self.evaluate(sel.inner, xs)]


evaluate = DefaultRASPEvaluator().evaluate
