"""Random, typed RASP programs for differential testing of the compiler.

The generator builds a program bottom-up from ``tokens`` and ``indices``. It
keeps, for every SOp it has made, the set of values the SOp can take (computed
the way the compiler's basis inference does), its encoding and its depth, and
only combines SOps in ways the compiler supports structurally: categorical
keys and queries for selectors, numerical SOps for numerical aggregates and
linear maps, comparable values for ordering comparisons. What remains for the
compiler to get right (or to refuse) is the *meaning*: None defaults,
selectors that pick several keys, numerical values in categorical MLPs and so
on. A program is reproducible from its seed::

    from tracr.fuzz import generator

    case = generator.generate(seed=7)
    case.program, case.vocab, case.max_seq_len, case.causal
    print(case.source)   # how it was built, one expression per line

Expressions get the default labels (``map_12``, ...), which differ between
runs; the structure, functions and constants depend only on the seed.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from tracr.compiler import basis_inference, lib
from tracr.rasp import rasp, traversal
from tracr.utils import errors

Value = Any
Fn = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """What kind of programs to generate.

    Attributes:
      vocabs: the vocabularies to draw from (small: every input is checked).
      max_seq_lens: the max_seq_len values to draw from.
      min_depth, max_depth: the number of SOp operations on the longest path
        from an input to the output is drawn uniformly from this range.
      causal_probability: the share of programs compiled causally.
      max_categorical_values: the largest value set a categorical SOp may have.
      max_numerical_values: the largest value set a numerical SOp may have.
      deep_share: the share of programs drawn with a depth from `deep_depths`
        instead (models of more than 8 layers).
      deep_depths: (min, max) depth of those programs.
    """

    vocabs: Tuple[FrozenSet[Value], ...] = (
        frozenset({0, 1, 2}),
        frozenset({1, 2, 3}),
        frozenset({"a", "b", "c"}),
        frozenset({"a", "b"}),
        frozenset({0, 1}),
        frozenset({True, 2, 0.5}),  # mixed bool/int/float (True == 1 collides downstream)
        frozenset({"ab", "c", "xyz"}),  # strings of several characters
    )
    max_seq_lens: Tuple[int, ...] = (3, 4, 5)
    min_depth: int = 1
    max_depth: int = 6
    causal_probability: float = 0.3
    max_categorical_values: int = 12
    max_numerical_values: int = 80
    deep_share: float = 0.1
    deep_depths: Tuple[int, int] = (12, 16)

    def __post_init__(self):
        if not self.vocabs or any(not v for v in self.vocabs):
            raise ValueError(f"vocabs must be non-empty vocabularies, got {self.vocabs!r}.")
        if not self.max_seq_lens or min(self.max_seq_lens) < 1:
            raise ValueError(f"max_seq_lens must be positive ints, got {self.max_seq_lens!r}.")
        if not 1 <= self.min_depth <= self.max_depth:
            raise ValueError(
                f"Need 1 <= min_depth <= max_depth, got {self.min_depth} and {self.max_depth}."
            )
        if not 0 <= self.deep_share <= 1 or not 1 <= self.deep_depths[0] <= self.deep_depths[1]:
            raise ValueError(
                f"Need 0 <= deep_share <= 1 and 1 <= deep_depths[0] <= deep_depths[1], got "
                f"{self.deep_share} and {self.deep_depths}."
            )


# Small and fast settings for tests run in CI.
CI_CONFIG = GeneratorConfig(max_seq_lens=(3, 4), deep_share=0.0)


@dataclasses.dataclass(frozen=True)
class FuzzCase:
    """One generated program and the settings to compile it with."""

    seed: int
    program: rasp.SOp
    vocab: FrozenSet[Value]
    max_seq_len: int
    causal: bool
    depth: int
    source: str  # one line per expression, children first

    def __str__(self) -> str:
        return (
            f"seed={self.seed} vocab={sorted(self.vocab, key=repr)} "
            f"max_seq_len={self.max_seq_len} causal={self.causal} depth={self.depth}\n"
            f"{self.source}"
        )


@dataclasses.dataclass(frozen=True)
class _Node:
    """An SOp made so far, with what the generator knows about it."""

    sop: rasp.SOp
    values: FrozenSet[Value]  # every non-None value it can take
    depth: int
    text: str  # how it was made

    @property
    def numerical(self) -> bool:
        return rasp.is_numerical(self.sop)

    @property
    def kind(self) -> str:
        return _kind(self.values)

    @property
    def binary(self) -> bool:
        return all(v in (0, 1) for v in self.values)


def _kind(values: FrozenSet[Value]) -> str:
    """'bool', 'int', 'num' (floats too), 'str', 'tuple', 'empty' or 'mixed'."""
    if not values:
        return "empty"
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if all(isinstance(v, (int, float)) for v in values):
        return "num"
    if all(isinstance(v, str) for v in values):
        return "str"
    if all(isinstance(v, tuple) for v in values):
        return "tuple"
    return "mixed"


_NUMBER_KINDS = ("bool", "int", "num")


def _orderable(a: str, b: str) -> bool:
    """Whether values of kinds a and b can be compared with < (without TypeError)."""
    return (a in _NUMBER_KINDS and b in _NUMBER_KINDS) or (a == b == "str")


class _Fn:
    """A named function, so that generated programs print readably."""

    def __init__(self, fn: Fn, text: str):
        self.fn = fn
        self.text = text

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __repr__(self) -> str:
        return self.text


def _apply_all(f: Fn, *value_sets: FrozenSet[Value]) -> Optional[FrozenSet[Value]]:
    """f over every combination (None and arithmetic errors dropped, as basis inference does)."""
    safe = errors.ignoring_arithmetic_errors(f)
    out = set()
    try:
        if len(value_sets) == 1:
            combos = [(v,) for v in value_sets[0]]
        else:
            combos = [(a, b) for a in value_sets[0] for b in value_sets[1]]
        for args in combos:
            y = safe(*args)
            if y is not None:
                out.add(y)
    except (TypeError, ValueError, IndexError, KeyError):
        return None  # the function doesn't fit these values; the generator tries another
    return frozenset(out)


# ---------------------------------------------------------------------------
# Function tables: each maker draws a _Fn that fits the kind of the operands'
# values (numbers, strings, bools, tuples).
# ---------------------------------------------------------------------------


def _pick(rng: random.Random, values: FrozenSet[Value]) -> Value:
    return rng.choice(sorted(values, key=repr))


def _unary_categorical(rng: random.Random, node: _Node) -> _Fn:
    kind, values = node.kind, node.values
    c = _pick(rng, values) if values else 0
    if kind in ("int", "num"):
        k = rng.randint(1, 3)
        options = [
            _Fn(lambda x, k=k: x + k, f"x + {k}"),
            _Fn(lambda x, k=k: x - k, f"x - {k}"),
            _Fn(lambda x: 2 * x, "2 * x"),
            _Fn(lambda x, k=k: x % (k + 1), f"x % {k + 1}"),
            _Fn(lambda x: x // 2, "x // 2"),
            _Fn(lambda x, c=c: min(x, c), f"min(x, {c!r})"),
            _Fn(lambda x, c=c: x > c, f"x > {c!r}"),
            _Fn(lambda x, c=c: x == c, f"x == {c!r}"),
            _Fn(lambda x: x % 2 == 0, "x % 2 == 0"),
            _Fn(lambda x: "abc"[int(x) % 3], '"abc"[x % 3]'),
            _Fn(lambda x, c=c: None if x == c else x, f"None if x == {c!r} else x"),
            _Fn(lambda x: 6 // x, "6 // x"),  # partial: raises on 0
            _Fn(lambda x: x / 2, "x / 2"),
            # Mixed types: ints with floats (2 and 2.0) and bools (True and 1).
            _Fn(lambda x, c=c: x if x > c else x / 2, f"x if x > {c!r} else x / 2"),
            _Fn(lambda x, c=c: x == c or x, f"x == {c!r} or x"),
        ]
        weights = [4, 3, 2, 3, 2, 2, 4, 3, 2, 2, 1, 0.5, 1, 1.5, 1]
    elif kind == "str":
        options = [
            _Fn(lambda x, c=c: x == c, f"x == {c!r}"),
            _Fn(lambda x, c=c: x < c, f"x < {c!r}"),
            _Fn(lambda x: {"a": "b", "b": "c", "c": "a"}.get(x, x), "rotate(x)"),
            _Fn(lambda x: "abc".find(x), '"abc".find(x)'),
            _Fn(lambda x, c=c: "z" if x == c else x, f'"z" if x == {c!r} else x'),
            _Fn(lambda x, c=c: None if x == c else x, f"None if x == {c!r} else x"),
            _Fn(lambda x: x + x, "x + x"),
        ]
        weights = [4, 2, 3, 3, 2, 1, 1]
    elif kind == "bool":
        options = [
            _Fn(lambda x: not x, "not x"),
            _Fn(lambda x: int(x), "int(x)"),
            _Fn(lambda x: 2 if x else -1, "2 if x else -1"),
            _Fn(lambda x: "t" if x else "f", '"t" if x else "f"'),
        ]
        weights = [3, 3, 2, 1]
    elif kind == "tuple":
        options = [
            _Fn(lambda x: x[0], "x[0]"),
            _Fn(lambda x: x[0] == x[1], "x[0] == x[1]"),
        ]
        weights = [1, 1]
    else:
        options = [_Fn(lambda x, c=c: x == c, f"x == {c!r}"), _Fn(lambda x: repr(x), "repr(x)")]
        weights = [2, 1]
    return rng.choices(options, weights)[0]


def _unary_to_number(rng: random.Random, node: _Node) -> _Fn:
    """A function from node's values to numbers (for numerical outputs)."""
    kind, values = node.kind, node.values
    c = _pick(rng, values) if values else 0
    options = [_Fn(lambda x, c=c: 1 if x == c else 0, f"1 if x == {c!r} else 0")]
    weights = [5.0]
    if kind in _NUMBER_KINDS:
        options += [
            _Fn(lambda x: x, "x"),
            _Fn(lambda x, c=c: 1 if x > c else 0, f"1 if x > {c!r} else 0"),
            _Fn(lambda x: x / 2 + 1, "x / 2 + 1"),
            _Fn(lambda x: x * x, "x * x"),
            _Fn(lambda x, c=c: None if x == c else 1, f"None if x == {c!r} else 1"),
        ]
        weights += [3, 3, 1, 1, 0.5]
    elif kind == "str":
        options += [_Fn(lambda x: "abc".find(x), '"abc".find(x)')]
        weights += [2]
    return rng.choices(options, weights)[0]


def _unary_numerical_to_categorical(rng: random.Random, node: _Node) -> _Fn:
    values = sorted(node.values) if node.values else [0]
    t = rng.choice(values)
    options = [
        _Fn(lambda x, t=t: x > t, f"x > {t!r}"),
        _Fn(lambda x, t=t: x == t, f"x == {t!r}"),
        _Fn(lambda x: round(2 * x), "round(2 * x)"),
        _Fn(lambda x: int(x), "int(x)"),
        _Fn(lambda x, t=t: None if x == t else x > 0.5, f"None if x == {t!r} else x > 0.5"),
    ]
    return rng.choices(options, [4, 3, 2, 2, 0.5])[0]


def _unary_numerical(rng: random.Random, node: _Node) -> _Fn:
    values = sorted(node.values) if node.values else [0]
    t = rng.choice(values)
    options = [
        _Fn(lambda x: x + 1, "x + 1"),
        _Fn(lambda x: 2 * x, "2 * x"),
        _Fn(lambda x, t=t: 1 if x > t else 0, f"1 if x > {t!r} else 0"),
        _Fn(lambda x: x * x, "x * x"),
        _Fn(lambda x: 1 - x, "1 - x"),
        _Fn(lambda x: 1 / x, "1 / x"),  # partial: raises on 0
    ]
    return rng.choices(options, [3, 2, 4, 1, 2, 0.3])[0]


def _binary_categorical(rng: random.Random, a: _Node, b: _Node) -> _Fn:
    ka, kb = a.kind, b.kind
    options: List[_Fn] = [
        _Fn(lambda x, y: x == y, "x == y"),
        _Fn(lambda x, y: (x, y), "(x, y)"),
    ]
    weights = [3.0, 0.5]
    if ka in _NUMBER_KINDS and kb in _NUMBER_KINDS:
        options += [
            _Fn(lambda x, y: x + y, "x + y"),
            _Fn(lambda x, y: x - y, "x - y"),
            _Fn(lambda x, y: x * y, "x * y"),
            _Fn(lambda x, y: max(x, y), "max(x, y)"),
            _Fn(lambda x, y: x < y, "x < y"),
            _Fn(lambda x, y: (x + y) % 3, "(x + y) % 3"),
            _Fn(lambda x, y: x if y else 0, "x if y else 0"),
            _Fn(lambda x, y: x if x > y else y / 2, "x if x > y else y / 2"),  # int/float mix
        ]
        weights += [4, 3, 2, 2, 3, 2, 1, 2]
    if ka == kb == "str":
        options += [
            _Fn(lambda x, y: min(x, y), "min(x, y)"),
            _Fn(lambda x, y: x + y, "x + y"),
            _Fn(lambda x, y: x < y, "x < y"),
        ]
        weights += [3, 1, 3]
    if ka == "str" and kb in _NUMBER_KINDS:
        options += [_Fn(lambda x, y: x if y else "z", 'x if y else "z"')]
        weights += [2]
    if ka == kb == "bool":
        options += [
            _Fn(lambda x, y: x and y, "x and y"),
            _Fn(lambda x, y: x or y, "x or y"),
            _Fn(lambda x, y: x != y, "x != y"),
        ]
        weights += [3, 3, 2]
    return rng.choices(options, weights)[0]


def _predicate(rng: random.Random, keys: _Node, queries: _Node) -> Any:
    """A Comparison or a custom predicate that fits the key and query values."""
    comparisons = [rasp.Comparison.EQ, rasp.Comparison.NEQ, rasp.Comparison.TRUE]
    comparisons.append(rasp.Comparison.FALSE)
    if _orderable(keys.kind, queries.kind):
        comparisons += [
            rasp.Comparison.LT,
            rasp.Comparison.LEQ,
            rasp.Comparison.GT,
            rasp.Comparison.GEQ,
        ]
    weights = [4 if c is rasp.Comparison.EQ else 1.5 for c in comparisons]
    weights[comparisons.index(rasp.Comparison.FALSE)] = 0.3
    if keys.kind in ("int", "num") and queries.kind in ("int", "num") and rng.random() < 0.25:
        d = rng.choice([1, 2, -1])
        if rng.random() < 0.5:
            return _Fn(lambda k, q, d=d: k == q - d, f"k == q - {d}")
        return _Fn(lambda k, q, d=d: abs(k - q) <= d, f"abs(k - q) <= {d}")
    return rng.choices(comparisons, weights)[0]


# ---------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------


class _Builder:
    """Grows a pool of typed SOps until one reaches the target depth."""

    def __init__(
        self,
        rng: random.Random,
        config: GeneratorConfig,
        vocab,
        max_seq_len: int,
        target_depth: Optional[int] = None,
    ):
        self.rng = rng
        self.target_depth = config.max_depth if target_depth is None else target_depth
        self.config = config
        self.max_seq_len = max_seq_len
        self.pool: List[_Node] = [
            _Node(rasp.tokens, frozenset(vocab), 0, "tokens"),
            _Node(rasp.indices, frozenset(range(max_seq_len)), 0, "indices"),
        ]
        self.lines: Dict[str, str] = {}

    # -- choosing operands ------------------------------------------------

    def _choose(self, ok: Callable[[_Node], bool] = lambda n: True) -> Optional[_Node]:
        candidates = [n for n in self.pool if ok(n)]
        if not candidates:
            return None
        if self.rng.random() < 0.45:  # prefer deep operands, so that depth grows
            deepest = max(n.depth for n in candidates)
            candidates = [n for n in candidates if n.depth == deepest]
        return self.rng.choice(candidates)

    def _categorical(self) -> Optional[_Node]:
        return self._choose(lambda n: not n.numerical and n.kind != "empty")

    def _numerical(self, binary: Optional[bool] = None) -> Optional[_Node]:
        return self._choose(
            lambda n: n.numerical and n.kind != "empty" and (binary is None or n.binary == binary)
        )

    # -- adding nodes -----------------------------------------------------

    def _add(self, sop: rasp.SOp, values: Optional[FrozenSet[Value]], text: str) -> bool:
        if values is None:
            return False
        limit = (
            self.config.max_numerical_values
            if rasp.is_numerical(sop)
            else self.config.max_categorical_values
        )
        if len(values) > limit:
            return False
        depth = _depth(sop)
        self.pool.append(_Node(sop, values, depth, text))
        self.lines[sop.label] = f"{sop.label} = {text}"
        return True

    # -- selectors ----------------------------------------------------------

    def _select(self) -> Optional[Tuple[rasp.Selector, str]]:
        keys, queries = self._categorical(), self._categorical()
        if keys is None or queries is None:
            return None
        predicate = _predicate(self.rng, keys, queries)
        select = rasp.Select(keys.sop, queries.sop, predicate)
        return select, f"Select({keys.sop.label}, {queries.sop.label}, {predicate})"

    def _selector(self) -> Optional[Tuple[rasp.Selector, str]]:
        base = self._select()
        if base is None or self.rng.random() < 0.6:
            return base
        selector, text = base
        op = self.rng.choice(["and", "or", "not", "and", "or"])
        explicit = self.rng.random() < 0.5  # classes (no simplification) or operators
        if op == "not":
            if explicit:
                return rasp.SelectorNot(selector), f"SelectorNot({text})"
            return ~selector, f"~{text}"
        other = self._select() if self.rng.random() < 0.7 else self._selector()
        if other is None:
            return base
        other_sel, other_text = other
        if op == "and":
            if explicit:
                return rasp.SelectorAnd(selector, other_sel), f"SelectorAnd({text}, {other_text})"
            return selector & other_sel, f"({text} & {other_text})"
        if explicit:
            return rasp.SelectorOr(selector, other_sel), f"SelectorOr({text}, {other_text})"
        return selector | other_sel, f"({text} | {other_text})"

    def _one_key_selector(self) -> Optional[Tuple[rasp.Selector, str]]:
        """A selector that picks at most one key: keys are the indices (unique per position)."""
        rng = self.rng
        style = rng.choice(["shift", "shift", "reverse", "query"])
        if style == "shift":
            d = rng.choice([1, 2, -1])
            pred = _Fn(lambda k, q, d=d: q == k + d, f"q == k + {d}")
            return rasp.Select(
                rasp.indices, rasp.indices, pred
            ), f"Select(indices, indices, {pred})"
        if style == "reverse":
            n = self.max_seq_len
            length = lib.make_length()
            self._add(length, frozenset(range(n + 1)), "make_length()")
            f = _Fn(lambda m, i: m - i - 1, "m - i - 1")
            opp = rasp.SequenceMap(f, length, rasp.indices)
            self._add(
                opp,
                _apply_all(f, frozenset(range(n + 1)), frozenset(range(n))),
                f"SequenceMap({f}, length, indices)",
            )
            select = rasp.Select(rasp.indices, opp, rasp.Comparison.EQ)
            return select, f"Select(indices, {opp.label}, EQ)"
        queries = self._choose(lambda n: not n.numerical and n.kind in ("int", "bool"))
        if queries is None:
            return None
        select = rasp.Select(rasp.indices, queries.sop, rasp.Comparison.EQ)
        return select, f"Select(indices, {queries.sop.label}, EQ)"

    # -- operations -----------------------------------------------------------

    def step(self) -> bool:
        ops = {
            "map": 14,
            "map_to_numerical": 6,
            "numerical_map": 4,
            "numerical_to_categorical": 4,
            "sequence_map": 10,
            "sequence_map_to_numerical": 2,
            "linear_sequence_map": 4,
            "aggregate_one_key": 8,
            "aggregate_categorical": 5,
            "aggregate_numerical": 8,
            "aggregate_numerical_any": 2,
            "twin_means": 3,
            "selector_width": 8,
            "full": 2,
            "constant_sop": 0.7,
        }
        op = self.rng.choices(list(ops), list(ops.values()))[0]
        return getattr(self, f"_op_{op}")()

    def _op_map(self) -> bool:
        node = self._categorical()
        if node is None:
            return False
        f = _unary_categorical(self.rng, node)
        if self.rng.random() < 0.3:
            sop = rasp.Map(f, node.sop)  # may fold into the inner Map
        else:
            sop = rasp.Map(f, node.sop, simplify=False)
        values = _apply_all(sop.f, _values_of(self, sop.inner))
        return self._add(sop, values, f"Map({f}, {sop.inner.label})")

    def _op_map_to_numerical(self) -> bool:
        node = self._categorical()
        if node is None:
            return False
        f = _unary_to_number(self.rng, node)
        sop = rasp.numerical(rasp.Map(f, node.sop, simplify=False))
        return self._add(sop, _apply_all(f, node.values), f"numerical(Map({f}, {node.sop.label}))")

    def _op_numerical_map(self) -> bool:
        node = self._numerical()
        if node is None:
            return False
        f = _unary_numerical(self.rng, node)
        sop = rasp.numerical(rasp.Map(f, node.sop, simplify=False))
        return self._add(sop, _apply_all(f, node.values), f"numerical(Map({f}, {node.sop.label}))")

    def _op_numerical_to_categorical(self) -> bool:
        node = self._numerical()
        if node is None:
            return False
        f = _unary_numerical_to_categorical(self.rng, node)
        sop = rasp.Map(f, node.sop, simplify=False)
        return self._add(sop, _apply_all(f, node.values), f"Map({f}, {node.sop.label})")

    def _op_sequence_map(self, numerical: bool = False) -> bool:
        a, b = self._categorical(), self._categorical()
        if a is None or b is None:
            return False
        if self.rng.random() < 0.25 and a.kind in _NUMBER_KINDS and b.kind in _NUMBER_KINDS:
            # The operator sugar users write: a + b is a SequenceMap.
            sop, f = a.sop + b.sop, _Fn(lambda x, y: x + y, "x + y")
        else:
            f = _binary_categorical(self.rng, a, b)
            raw = _apply_all(f, a.values, b.values)
            if numerical and (raw is None or _kind(raw) not in _NUMBER_KINDS):
                g = f  # not numbers (a tuple, a string): make them numbers
                f = _Fn(lambda x, y, g=g: float(g(x, y)), f"float({g})")
            sop = rasp.SequenceMap(f, a.sop, b.sop)
        if numerical:
            sop = rasp.numerical(sop)
        values = _apply_all(f, a.values, b.values)
        if (
            numerical
            and values is not None
            and not all(isinstance(v, (int, float)) for v in values)
        ):
            return False
        prefix, suffix = ("numerical(", ")") if numerical else ("", "")
        return self._add(
            sop, values, f"{prefix}SequenceMap({f}, {a.sop.label}, {b.sop.label}){suffix}"
        )

    def _op_sequence_map_to_numerical(self) -> bool:
        return self._op_sequence_map(numerical=True)

    def _op_linear_sequence_map(self) -> bool:
        fac1, fac2 = self.rng.choice([1, -1, 2, 0.5]), self.rng.choice([1, -1, 1, 3])
        if self.rng.random() < 0.7:
            a, b = self._numerical(), self._numerical()
            if a is None or b is None:
                return False
            sop = rasp.numerical(rasp.LinearSequenceMap(a.sop, b.sop, fac1, fac2))
            text = f"numerical(LinearSequenceMap({a.sop.label}, {b.sop.label}, {fac1}, {fac2}))"
        else:
            ok = lambda n: not n.numerical and n.kind in ("int", "bool")  # noqa: E731
            a, b = self._choose(ok), self._choose(ok)
            if a is None or b is None:
                return False
            sop = rasp.LinearSequenceMap(a.sop, b.sop, fac1, fac2)
            text = f"LinearSequenceMap({a.sop.label}, {b.sop.label}, {fac1}, {fac2})"
        values = _apply_all(lambda x, y: fac1 * x + fac2 * y, a.values, b.values)
        return self._add(sop, values, text)

    def _aggregate_categorical(self, selector) -> bool:
        node = self._categorical()
        if selector is None or node is None:
            return False
        sel, sel_text = selector
        sop = rasp.Aggregate(sel, node.sop)
        return self._add(sop, node.values, f"Aggregate({sel_text}, {node.sop.label})")

    def _op_aggregate_one_key(self) -> bool:
        return self._aggregate_categorical(self._one_key_selector())

    def _op_aggregate_categorical(self) -> bool:
        return self._aggregate_categorical(self._selector())

    def _op_aggregate_numerical(self, binary: Optional[bool] = True) -> bool:
        selector = self._selector()
        node = self._numerical(binary)
        if selector is None or node is None:
            return False
        sel, sel_text = selector
        default = 0 if self.rng.random() < 0.85 else None
        sop = rasp.numerical(rasp.Aggregate(sel, node.sop, default=default))
        try:
            values = basis_inference.mean_value_set(set(node.values), self.max_seq_len)
        except NotImplementedError:
            return False
        return self._add(
            sop,
            frozenset(values),
            f"numerical(Aggregate({sel_text}, {node.sop.label}, default={default}))",
        )

    def _op_twin_means(self) -> bool:
        """Two numerical means over equal but separate selectors, combined linearly.

        As in a bracket balance, basis inference pairs the two means' values
        only at equal selector widths (`basis_inference.ValueSetInference`);
        such programs check that the model agrees with the evaluator where the
        compiler relies on that. Sometimes a comparison reads the result.
        """
        base = self._select()
        a, b = self._numerical(binary=True), self._numerical()
        if base is None or a is None or b is None:
            return False
        select, sel_text = base
        twin = rasp.Select(select.keys, select.queries, select.predicate)
        fac1, fac2 = self.rng.choice([(1, -1), (1, 1), (2, -1), (0.5, 0.5)])
        means = [
            rasp.numerical(rasp.Aggregate(sel, node.sop, default=0))
            for sel, node in ((select, a), (twin, b))
        ]
        combined = rasp.numerical(rasp.LinearSequenceMap(*means, fac1, fac2))
        if _depth(combined) > self.target_depth:  # three operations at once: don't overshoot
            return False
        inference = basis_inference.ValueSetInference(set(), self.max_seq_len)
        inference.value_sets.update({a.sop.label: set(a.values), b.sop.label: set(b.values)})
        texts = [
            f"numerical(Aggregate({sel_text}, {a.sop.label}, default=0))",
            f"numerical(Aggregate({sel_text}, {b.sop.label}, default=0))  # a separate Select",
            f"numerical(LinearSequenceMap({means[0].label}, {means[1].label}, {fac1}, {fac2}))",
        ]
        for sop, text in zip((*means, combined), texts):
            try:
                values = frozenset(inference.add(sop))
            except NotImplementedError:
                return False
            if not self._add(sop, values, text):
                return False
        combined_values = values
        if self.rng.random() < 0.5 and _depth(combined) < self.target_depth:
            t = self.rng.choice([0, 0, 0.5])
            f = _Fn(lambda x, t=t: x < t, f"x < {t!r}")
            sop = rasp.Map(f, combined, simplify=False)
            return self._add(sop, _apply_all(f, combined_values), f"Map({f}, {combined.label})")
        return True

    def _op_aggregate_numerical_any(self) -> bool:
        return self._op_aggregate_numerical(binary=None)

    def _op_selector_width(self) -> bool:
        selector = self._selector()
        if selector is None:
            return False
        sel, sel_text = selector
        sop = rasp.SelectorWidth(sel)
        text = f"SelectorWidth({sel_text})"
        if self.rng.random() < 0.25:
            sop, text = rasp.numerical(sop), f"numerical({text})"
        return self._add(sop, frozenset(range(self.max_seq_len + 1)), text)

    def _op_full(self) -> bool:
        if self.rng.random() < 0.3:
            fill = self.rng.choice([0, 1, 2, 0.5])
            return self._add(
                rasp.numerical(rasp.Full(fill)), frozenset({fill}), f"numerical(Full({fill}))"
            )
        fill = self.rng.choice([0, 1, 2, "a", "b", True])
        return self._add(rasp.Full(fill), frozenset({fill}), f"Full({fill!r})")

    def _op_constant_sop(self) -> bool:
        values = [self.rng.choice([0, 1, 2, 3]) for _ in range(self.max_seq_len)]
        check_length = self.rng.random() < 0.5
        sop = rasp.ConstantSOp(values, check_length=check_length)
        if self.rng.random() < 0.3:
            sop = rasp.numerical(sop)
        text = f"ConstantSOp({values}, check_length={check_length})"
        return self._add(sop, frozenset(values), text)


def _values_of(builder: _Builder, sop: rasp.SOp) -> FrozenSet[Value]:
    for node in builder.pool:
        if node.sop is sop:
            return node.values
    raise AssertionError(f"{sop.label} is not in the generator's pool")


def _depth(expr: rasp.RASPExpr, memo: Optional[Dict[int, int]] = None) -> int:
    """Operations on the longest path from an input; selectors add nothing themselves."""
    memo = {} if memo is None else memo
    if id(expr) in memo:
        return memo[id(expr)]
    below = max((_depth(c, memo) for c in expr.children), default=-1)
    if isinstance(expr, rasp.SOp):
        depth = (
            0
            if not expr.children and not isinstance(expr, (rasp.Full, rasp.ConstantSOp))
            else max(below, 0) + 1
        )
    else:
        depth = max(below, 0)
    memo[id(expr)] = depth
    return depth


def _reachable_labels(program: rasp.RASPExpr) -> List[str]:
    return [expr.label for expr in traversal.walk(program)]


def generate(seed: int, config: GeneratorConfig = GeneratorConfig()) -> FuzzCase:
    """Builds the random program for ``seed`` (the same seed gives the same program).

    Args:
      seed: any int.
      config: vocabularies, lengths and depths to draw from.

    Returns:
      A FuzzCase with the program, its vocab, max_seq_len, causality, depth
      and a readable listing of how it was built.
    """
    rng = random.Random(seed)
    vocab = rng.choice(config.vocabs)
    max_seq_len = rng.choice(config.max_seq_lens)
    causal = rng.random() < config.causal_probability
    target = rng.randint(config.min_depth, config.max_depth)
    if config.deep_share and rng.random() < config.deep_share:
        target = rng.randint(*config.deep_depths)
    builder = _Builder(rng, config, vocab, max_seq_len, target)
    for _ in range(60 * target):
        if max(n.depth for n in builder.pool) >= target:
            break
        builder.step()
    deepest = max(n.depth for n in builder.pool)
    output = [n for n in builder.pool if n.depth == deepest][-1]
    lines = [
        builder.lines[label] for label in _reachable_labels(output.sop) if label in builder.lines
    ]
    return FuzzCase(
        seed=seed,
        program=output.sop,
        vocab=frozenset(vocab),
        max_seq_len=max_seq_len,
        causal=causal,
        depth=output.depth,
        source="\n".join(lines),
    )


def generate_many(
    seeds: Sequence[int], config: GeneratorConfig = GeneratorConfig()
) -> List[FuzzCase]:
    """``generate`` for each seed."""
    return [generate(seed, config) for seed in seeds]
