"""program.json: a compiled RASP program written without lambdas, and read back.

A RASP program holds Python functions (a Map's `f`, a Select's predicate),
which JSON cannot hold and which loading must never execute. A *compiled*
program, though, only ever sees finitely many values: basis inference knows
the value set of every SOp at the model's vocabulary and max_seq_len. So each
function is written as its table over those values::

    from tracr.io import program as program_io
    doc = program_io.program_to_json(lib.make_hist(), vocab={"a", "b"}, max_seq_len=4)
    again = program_io.program_from_json(doc)       # a rasp.SOp, lambda-free
    again(["a", "b", "a"])                          # [2, 1, 2], as the original

The document::

    {"format": "tracr-program", "format_version": 1,
     "vocab": [<typed value>, ...], "max_seq_len": 4, "output": <id>,
     "exprs": [{"id": 0, "kind": "tokens", "name": "tokens", "encoding": "categorical"},
               {"id": 1, "kind": "map", "inner": 0, "table": [[x, f(x)], ...],
                "no_value": [x, ...]}, ...]}

Expressions are listed children first and refer to their children by id, so
shared sub-expressions stay shared. Values are typed as everywhere in tracr
(`tracr.io.values`; None is null). Per kind:

- `tokens`, `indices`, `length`: no fields.
- `map`: `inner`, `table` (`[x, f(x)]` for every x in the inner value set),
  `no_value` (the x where f raises an ArithmeticError, which the compiler
  reads as "no value").
- `sequence_map`: `fst`, `snd`, `table` (`[x, y, f(x, y)]`), `no_value` (`[x, y]`).
- `linear_sequence_map`: `fst`, `snd`, `fst_fac`, `snd_fac` (no table).
- `full`: `fill`; `constant_sop`: `value`, `check_length`.
- `select`: `keys`, `queries`, `predicate`: `{"comparison": "<"}` for a
  `rasp.Comparison`, else `{"keys": [...], "queries": [...], "true": [[k, q], ...]}`
  over the key and query value sets.
- `constant_selector`: `value` (rows of bools), `check_length`.
- `selector_and`, `selector_or`: `fst`, `snd`; `selector_not`: `inner`.
- `selector_width`: `selector`; `aggregate`: `selector`, `sop`, `default`.

Every SOp has `name` and `encoding`, every selector `name`; other annotations
go in `annotations` when their values are plain.

A rebuilt table function raises `ValueError` for a value outside its table
(the program was saved for another vocabulary or max_seq_len) rather than
guess. The writer refuses (`ProgramNotWritable`, with the reason) a program
whose value sets are unknown or too large, an expression type it does not
know, or a value JSON cannot hold; with `verify` it also checks the rebuilt
program against the original on inputs of the domain before returning.
Loading checks every field and builds only rasp expressions from tables:
nothing is evaluated, imported or unpickled.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import pathlib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Sequence, Tuple, Union

from tracr.io import values as values_lib
from tracr.rasp import rasp, traversal

FORMAT_NAME = "tracr-program"
FORMAT_VERSION = 1
PROGRAM_FILE = "program.json"

# A Map or SequenceMap table, or a predicate's domain, larger than this is refused
# (the file would be large, and so is the model: one MLP row per entry or so).
MAX_TABLE_ROWS = 200_000
# Loader bounds, so that a hostile file cannot make us build huge objects.
_MAX_EXPRS = 100_000
# Inputs the writer's check evaluates both programs on (all of them, if fewer).
_VERIFY_INPUTS = 512

PathLike = Union[str, os.PathLike]


class ProgramNotWritable(ValueError):
    """The program has no lambda-free form here; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(f"program.json cannot describe this program: {reason}")
        self.reason = reason


# --------------------------------------------------------------------------
# Table functions: what the loader puts where the original had a lambda.


class _Lookup:
    """Exact lookup of typed values, then by equality (1.0 finds 1; 1 and True stay apart)."""

    def __init__(self, pairs: Iterable[Tuple[Any, Any]]):
        self._exact: Dict[Any, Any] = {}
        self._plain: Dict[Any, Any] = {}
        ambiguous = set()
        for x, y in pairs:
            self._exact[values_lib.typed_key(x)] = y
            if x in self._plain and values_lib.typed_key(self._plain[x]) != values_lib.typed_key(y):
                ambiguous.add(x)
            self._plain.setdefault(x, y)
        for x in ambiguous:
            del self._plain[x]
        self._size = len(self._exact)

    def get(self, x: Any, missing: Any) -> Any:
        try:
            key = values_lib.typed_key(x)
            if key in self._exact:
                return self._exact[key]
            return self._plain.get(x, missing)
        except TypeError:  # unhashable: in no table
            return missing

    def __len__(self) -> int:
        return self._size


_MISSING = object()


class NoValue(ArithmeticError):
    """The original function raised an ArithmeticError here (the compiler's "no value")."""


class TableMap:
    """A Map's function given by its table over the inner value set."""

    def __init__(self, table: Sequence[Tuple[Any, Any]], no_value: Sequence[Any], label: str):
        self._table = _Lookup(table)
        self._no_value = _Lookup((x, True) for x in no_value)
        self._label = label

    def __call__(self, x: Any) -> Any:
        y = self._table.get(x, _MISSING)
        if y is not _MISSING:
            return y
        if self._no_value.get(x, _MISSING) is not _MISSING:
            raise NoValue(f"{self._label} has no value at {x!r} (the original raised there).")
        raise ValueError(
            f"{self._label}'s table (from program.json) has no entry for {x!r}: the program was "
            "saved for another vocabulary or max_seq_len; evaluate it on that domain."
        )

    def __repr__(self) -> str:
        return f"<table of {len(self._table)} values ({self._label})>"


class TableSequenceMap:
    """A SequenceMap's function given by its table over pairs of input values."""

    def __init__(
        self, table: Sequence[Tuple[Any, Any, Any]], no_value: Sequence[Tuple[Any, Any]], label: str
    ):
        pairs = [((x, y), z) for x, y, z in table]
        self._map = TableMap(pairs, [tuple(p) for p in no_value], label)

    def __call__(self, x: Any, y: Any) -> Any:
        return self._map((x, y))

    def __repr__(self) -> str:
        return repr(self._map)


class TablePredicate:
    """A Select predicate given by the (key, query) pairs it selects.

    Equal tables compare equal, so that basis inference sees selectors with
    the same keys, queries and table as one selector, as it does for the
    original's shared predicate object.
    """

    def __init__(
        self, keys: Sequence[Any], queries: Sequence[Any], true: Iterable[Tuple[Any, Any]]
    ):
        self._keys = _Lookup((k, True) for k in keys)
        self._queries = _Lookup((q, True) for q in queries)
        self._true = _Lookup(((k, q), True) for k, q in true)
        self._id = (
            frozenset(values_lib.typed_key(k) for k in keys),
            frozenset(values_lib.typed_key(q) for q in queries),
            frozenset(values_lib.typed_key((k, q)) for k, q in true),
        )

    def __call__(self, key: Any, query: Any) -> bool:
        for what, value, domain in (("key", key, self._keys), ("query", query, self._queries)):
            if domain.get(value, _MISSING) is _MISSING:
                raise ValueError(
                    f"A Select predicate from program.json has no entry for the {what} "
                    f"{value!r}: the program was saved for another vocabulary or max_seq_len."
                )
        return self._true.get((key, query), False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TablePredicate) and self._id == other._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"<predicate selecting {len(self._true)} (key, query) pairs>"


# --------------------------------------------------------------------------
# Writing.


def _sorted(values: Iterable[Any]) -> List[Any]:
    values = list(values)
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=lambda v: repr(values_lib.typed_key(v)))


def _encode(value: Any, what: str) -> Any:
    try:
        return values_lib.encode_optional(value)
    except ValueError as e:
        raise ProgramNotWritable(f"{what}: {e}") from None


_PLAIN_KINDS = {
    rasp.TokensType: "tokens",
    rasp.IndicesType: "indices",
    rasp.LengthType: "length",
    rasp.Map: "map",
    rasp.SequenceMap: "sequence_map",
    rasp.LinearSequenceMap: "linear_sequence_map",
    rasp.Full: "full",
    rasp.ConstantSOp: "constant_sop",
    rasp.Select: "select",
    rasp.ConstantSelector: "constant_selector",
    rasp.SelectorAnd: "selector_and",
    rasp.SelectorOr: "selector_or",
    rasp.SelectorNot: "selector_not",
    rasp.SelectorWidth: "selector_width",
    rasp.Aggregate: "aggregate",
}


_CHILD_FIELDS = {
    rasp.Map: ("inner",),
    rasp.SequenceMap: ("fst", "snd"),
    rasp.Select: ("keys", "queries"),
    rasp.SelectorAnd: ("fst", "snd"),
    rasp.SelectorOr: ("fst", "snd"),
    rasp.SelectorNot: ("inner",),
    rasp.SelectorWidth: ("selector",),
    rasp.Aggregate: ("selector", "sop"),
}


class _Recorder:
    """Calls `f`, remembering every argument tuple it was called with."""

    def __init__(self, f: Callable[..., Any], seen: set):
        self.f, self.seen = f, seen

    def __call__(self, *args: Any) -> Any:
        self.seen.add(args)
        return self.f(*args)


def _value_sets(
    program: rasp.SOp, vocab: Iterable[Any], max_seq_len: int
) -> Tuple[Mapping[str, Any], Dict[str, set]]:
    """Every SOp's value set, and every input each Map/SequenceMap function was called on.

    The compiler's own basis inference gives both, so the tables cover all it
    looks at: besides the final value sets, it applies a function to values it
    then rules out (split by selector width before intersecting with the values
    by position). It runs on a copy of the program whose functions record
    their calls (same labels, so the same value sets).
    """
    from tracr.compiler import basis_inference, rasp_to_graph
    from tracr.utils import errors

    calls: Dict[str, set] = {}
    copies: Dict[int, rasp.RASPExpr] = {}
    for expr in traversal.walk(program):
        _ = expr.label  # draws the id now, so that the copy shares it
        new = copy.copy(expr)  # keeps unique_id, hence the label
        for field in next((v for k, v in _CHILD_FIELDS.items() if isinstance(expr, k)), ()):
            setattr(new, field, copies[id(getattr(expr, field))])
        if isinstance(expr, (rasp.Map, rasp.SequenceMap)):
            new.f = _Recorder(expr.f, calls.setdefault(expr.label, set()))
        copies[id(expr)] = new
    try:
        graph = rasp_to_graph.extract_rasp_graph(copies[id(program)]).graph
        value_sets = basis_inference.infer_value_sets(graph, set(vocab), max_seq_len).value_sets
    except (NotImplementedError, ValueError, errors.TracrUserError) as e:
        raise ProgramNotWritable(f"the value sets of its SOps are unknown ({e})") from None
    return value_sets, calls


def _check_size(n: int, label: str) -> None:
    if n > MAX_TABLE_ROWS:
        raise ProgramNotWritable(
            f"{label} would need a table of {n} entries, more than {MAX_TABLE_ROWS}; compile "
            "with a smaller vocabulary or max_seq_len."
        )


def _table(
    f: Callable[..., Any], domain: Iterable[Tuple[Any, ...]], label: str
) -> Tuple[List[list], List[Any]]:
    table, no_value = [], []
    for args in domain:
        where = [_encode(a, f"an input of {label}") for a in args]
        try:
            y = f(*args)
        except ArithmeticError:  # the compiler's "no value" (see basis_inference)
            no_value.append(where[0] if len(where) == 1 else where)
            continue
        except Exception as e:  # noqa: BLE001 - a function the compiler would also refuse
            raise ProgramNotWritable(f"{label}'s function raised {e!r} at {args!r}") from None
        table.append([*where, _encode(y, f"the value of {label} at {args!r}")])
    return table, no_value


def _expr_fields(
    expr: rasp.RASPExpr,
    ids: Mapping[int, int],
    value_sets: Mapping[str, Any],
    calls: Mapping[str, set],
) -> Dict[str, Any]:
    def ref(child: rasp.RASPExpr) -> int:
        return ids[id(child)]

    def values_of(sop: rasp.SOp) -> List[Any]:
        if sop.label not in value_sets:
            raise ProgramNotWritable(f"the value set of {sop.label} is unknown")
        return _sorted(value_sets[sop.label])

    label = expr.label
    if isinstance(expr, (rasp.TokensType, rasp.IndicesType, rasp.LengthType)):
        return {}
    if isinstance(expr, rasp.Map):
        xs = _sorted({(x,) for x in values_of(expr.inner)} | calls.get(label, set()))
        _check_size(len(xs), label)
        table, no_value = _table(expr.f, xs, label)
        return {"inner": ref(expr.inner), "table": table, "no_value": no_value}
    if isinstance(expr, rasp.LinearSequenceMap):
        facs = {}
        for name in ("fst_fac", "snd_fac"):
            fac = getattr(expr, name)
            if not math.isfinite(fac):
                raise ProgramNotWritable(f"{label}'s {name} {fac!r} is not finite")
            facs[name] = fac
        return {"fst": ref(expr.fst), "snd": ref(expr.snd), **facs}
    if isinstance(expr, rasp.SequenceMap):
        xs, ys = values_of(expr.fst), values_of(expr.snd)
        _check_size(len(xs) * len(ys), label)
        # The compiler's MLP reads f at every pair of input values (and inference at some more).
        pairs = _sorted(set(itertools.product(xs, ys)) | calls.get(label, set()))
        table, no_value = _table(expr.f, pairs, label)
        return {"fst": ref(expr.fst), "snd": ref(expr.snd), "table": table, "no_value": no_value}
    if isinstance(expr, rasp.Full):
        return {"fill": _encode(expr.fill, f"{label}'s fill")}
    if isinstance(expr, rasp.ConstantSOp):
        value = [_encode(v, f"{label}'s value") for v in expr.value]
        return {"value": value, "check_length": bool(expr.check_length)}
    if isinstance(expr, rasp.Select):
        fields: Dict[str, Any] = {"keys": ref(expr.keys), "queries": ref(expr.queries)}
        if isinstance(expr.predicate, rasp.Comparison):
            fields["predicate"] = {"comparison": expr.predicate.value}
            return fields
        keys, queries = values_of(expr.keys), values_of(expr.queries)
        _check_size(len(keys) * len(queries), label)
        true = []
        for k, q in itertools.product(keys, queries):
            try:
                selected = bool(expr.predicate(k, q))
            except Exception as e:  # noqa: BLE001 - the compiler calls it on the same pairs
                raise ProgramNotWritable(
                    f"{label}'s predicate raised {e!r} at key {k!r}, query {q!r}"
                ) from None
            if selected:
                true.append([_encode(k, label), _encode(q, label)])
        fields["predicate"] = {
            "keys": [_encode(k, label) for k in keys],
            "queries": [_encode(q, label) for q in queries],
            "true": true,
        }
        return fields
    if isinstance(expr, rasp.ConstantSelector):
        value = [[bool(v) for v in row] for row in expr.value]
        return {"value": value, "check_length": bool(expr.check_length)}
    if isinstance(expr, (rasp.SelectorAnd, rasp.SelectorOr)):
        return {"fst": ref(expr.fst), "snd": ref(expr.snd)}
    if isinstance(expr, rasp.SelectorNot):
        return {"inner": ref(expr.inner)}
    if isinstance(expr, rasp.SelectorWidth):
        return {"selector": ref(expr.selector)}
    if isinstance(expr, rasp.Aggregate):
        return {
            "selector": ref(expr.selector),
            "sop": ref(expr.sop),
            "default": _encode(expr.default, f"{label}'s default"),
        }
    raise AssertionError(f"unhandled kind {type(expr).__name__}")  # _PLAIN_KINDS is checked


def _annotations(expr: rasp.RASPExpr) -> Dict[str, Any]:
    fields: Dict[str, Any] = {"name": expr.name}
    if isinstance(expr, rasp.SOp):
        fields["encoding"] = rasp.get_encoding(expr).value
    extra = {k: v for k, v in expr.annotations.items() if k not in ("name", "encoding")}
    if extra:
        fields["annotations"] = {
            k: _encode(v, f"{expr.label}'s annotation {k!r}") for k, v in sorted(extra.items())
        }
    return fields


def program_to_json(
    program: rasp.SOp, vocab: Iterable[Any], max_seq_len: int, *, verify: bool = True
) -> Dict[str, Any]:
    """The lambda-free JSON document of `program`, compiled for `vocab` and `max_seq_len`.

    Args:
      program: the RASP SOp a model was compiled from.
      vocab: the model's tokens (without BOS and PAD).
      max_seq_len: the model's max_seq_len (without BOS).
      verify: rebuild the program from the document and check that it gives
        the original's outputs on inputs of the domain (all of them if there
        are at most 512, else 512 drawn with a fixed seed).

    Returns:
      A JSON-able dict (see the module docstring).

    Raises:
      ProgramNotWritable (a ValueError): the program cannot be written; the
        message says why (value sets unknown or too large, an expression type
        other than rasp's own, a value JSON cannot hold, or a rebuilt program
        that differs).
    """
    if not isinstance(program, rasp.SOp):
        raise TypeError(f"program must be a rasp.SOp, got {type(program).__name__}: {program!r}.")
    vocab = set(vocab)
    exprs = traversal.walk(program)
    unknown = sorted({type(e).__name__ for e in exprs if type(e) not in _PLAIN_KINDS})
    if unknown:
        raise ProgramNotWritable(
            f"it uses expression types {unknown}, which are not rasp's own (their meaning "
            "lives in Python code)"
        )
    value_sets, calls = _value_sets(program, vocab, max_seq_len)
    ids: Dict[int, int] = {}
    items = []
    for i, expr in enumerate(exprs):
        ids[id(expr)] = i
        items.append(
            {
                "id": i,
                "kind": _PLAIN_KINDS[type(expr)],
                **_annotations(expr),
                **_expr_fields(expr, ids, value_sets, calls),
            }
        )
    doc = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "vocab": [_encode(v, "the vocabulary") for v in _sorted(vocab)],
        "max_seq_len": int(max_seq_len),
        "output": ids[id(program)],
        "exprs": items,
    }
    if verify:
        _verify(program, program_from_json(doc), vocab, max_seq_len)
    return doc


def _run(program: rasp.SOp, xs: Sequence[Any]) -> Tuple[str, Any]:
    try:
        return "ok", [values_lib.typed_key(v) for v in rasp.evaluate(program, xs)]
    except Exception:  # noqa: BLE001 - both programs must fail alike
        return "raises", None


def _verify(original: rasp.SOp, rebuilt: rasp.SOp, vocab: set, max_seq_len: int) -> None:
    from tracr.transformer import inputs

    tokens = _sorted(vocab)
    total = sum(len(tokens) ** n for n in range(1, max_seq_len + 1))
    sample = None if total <= _VERIFY_INPUTS else _VERIFY_INPUTS
    for xs in inputs.sequences(tokens, max_seq_len, sample=sample):
        want, got = _run(original, xs), _run(rebuilt, xs)
        if want != got:
            raise ProgramNotWritable(
                f"the program rebuilt from its tables differs from the original on {list(xs)!r} "
                "(a function that is not pure, or values outside the inferred value sets?)"
            )


def write_program(
    program: rasp.SOp, path: PathLike, *, vocab: Iterable[Any], max_seq_len: int
) -> pathlib.Path:
    """Writes `program_to_json(program, vocab, max_seq_len)` to `path` (a file or directory).

    Raises:
      ProgramNotWritable: as `program_to_json`; nothing is written then.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / PROGRAM_FILE
    doc = program_to_json(program, vocab, max_seq_len)
    text = json.dumps(doc, indent=None, separators=(",", ":"), allow_nan=False) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="ascii")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------
# Reading.


class _Reader:
    """Builds rasp expressions from a validated document, one expression at a time."""

    def __init__(self, where: str):
        self.where = where
        self.built: List[rasp.RASPExpr] = []

    def fail(self, what: str) -> None:
        raise ValueError(f"{self.where}: {what}")

    def keys(self, item: Dict[str, Any], want: set, at: str) -> None:
        common = {"id", "kind", "name", "encoding", "annotations"}
        unknown = sorted(set(item) - want - common)
        missing = sorted(want - set(item))
        if unknown:
            self.fail(f"{at} has unknown keys {unknown}; expected {sorted(want | common)}.")
        if missing:
            self.fail(f"{at} is missing keys {missing}.")

    def ref(self, item: Dict[str, Any], key: str, at: str, kind: type) -> Any:
        index = item[key]
        if not values_lib.is_int(index) or not 0 <= index < len(self.built):
            self.fail(f"{at}.{key} must be the id of an earlier expression, got {index!r}.")
        child = self.built[index]
        if not isinstance(child, kind):
            self.fail(f"{at}.{key} refers to {child.label}, which is not a {kind.__name__}.")
        return child

    def value(self, item: Any, at: str) -> Any:
        return values_lib.decode_optional(item, f"{self.where} {at}")

    def values(self, items: Any, at: str, width: int = 0) -> List[Any]:
        if not isinstance(items, list):
            self.fail(f"{at} must be a list, got {type(items).__name__}.")
        if width and not all(isinstance(row, list) and len(row) == width for row in items):
            self.fail(f"{at} must be a list of [{', '.join('v' * width)}] rows.")
        if width:
            return [tuple(self.value(v, f"{at}[{i}]") for v in row) for i, row in enumerate(items)]
        return [self.value(v, f"{at}[{i}]") for i, v in enumerate(items)]

    def number(self, value: Any, at: str) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value):
            self.fail(f"{at} must be a finite number, got {value!r}.")
        return value

    def flag(self, value: Any, at: str) -> bool:
        if not isinstance(value, bool):
            self.fail(f"{at} must be true or false, got {value!r}.")
        return value

    def build(self, item: Any, index: int) -> rasp.RASPExpr:
        at = f"exprs[{index}]"
        if not isinstance(item, dict):
            self.fail(f"{at} must be a JSON object, got {type(item).__name__}.")
        if item.get("id") != index or not values_lib.is_int(item.get("id")):
            self.fail(f"{at}.id must be {index} (expressions are listed in order).")
        kind = item.get("kind")
        builder = _BUILDERS.get(kind) if isinstance(kind, str) else None
        if builder is None:
            self.fail(f"{at}.kind {kind!r} is not one of {sorted(_BUILDERS)}.")
        fields, make = builder
        self.keys(item, fields, at)
        expr = make(self, item, at)
        return self.annotate(expr, item, at)

    def annotate(self, expr: rasp.RASPExpr, item: Dict[str, Any], at: str) -> rasp.RASPExpr:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            self.fail(f"{at}.name must be a non-empty string, got {name!r}.")
        annotations: Dict[str, Any] = {}
        if isinstance(expr, rasp.SOp):
            encoding = item.get("encoding")
            if encoding not in ("categorical", "numerical"):
                self.fail(f"{at}.encoding must be 'categorical' or 'numerical', got {encoding!r}.")
            annotations["encoding"] = rasp.Encoding(encoding)
        elif "encoding" in item:
            self.fail(f"{at} is a selector, which has no encoding.")
        extra = item.get("annotations", {})
        if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
            self.fail(f"{at}.annotations must map strings to typed values.")
        for key, value in extra.items():
            if key in ("name", "encoding"):
                self.fail(f"{at}.annotations may not hold {key!r} (it is a field of its own).")
            annotations[key] = self.value(value, f"{at}.annotations[{key!r}]")
        if isinstance(expr, (rasp.TokensType, rasp.IndicesType, rasp.LengthType)):
            if name != expr.name or annotations != {"encoding": rasp.Encoding.CATEGORICAL}:
                return rasp.annotate(expr, name=name, **annotations)
            return expr  # the shared rasp.tokens / indices / length
        return rasp.annotate(expr, name=name, **annotations)


def _make_map(r: _Reader, item: Dict[str, Any], at: str) -> rasp.RASPExpr:
    inner = r.ref(item, "inner", at, rasp.SOp)
    table = r.values(item["table"], f"{at}.table", width=2)
    no_value = r.values(item["no_value"], f"{at}.no_value")
    _refuse_repeated_inputs(r, at, "map", [x for x, _ in table] + list(no_value))
    label = f"{item.get('name')!s} ({at})"
    return rasp.Map(TableMap(table, no_value, label), inner, simplify=False)


def _make_sequence_map(r: _Reader, item: Dict[str, Any], at: str) -> rasp.RASPExpr:
    fst, snd = r.ref(item, "fst", at, rasp.SOp), r.ref(item, "snd", at, rasp.SOp)
    table = r.values(item["table"], f"{at}.table", width=3)
    no_value = r.values(item["no_value"], f"{at}.no_value", width=2)
    inputs = [(x, y) for x, y, _ in table] + [tuple(pair) for pair in no_value]
    _refuse_repeated_inputs(r, at, "sequence_map", inputs)
    label = f"{item.get('name')!s} ({at})"
    return rasp.SequenceMap(TableSequenceMap(table, no_value, label), fst, snd)


def _refuse_repeated_inputs(r: _Reader, at: str, kind: str, inputs: Sequence[Any]) -> None:
    """A table gives one value per input: an input listed twice (in the table,
    or in it and in no_value) is a corrupt or edited file, not a last-one-wins."""
    seen = set()
    for x in inputs:
        key = values_lib.typed_key(x)
        if key in seen:
            r.fail(
                f"{at} ({kind}) lists the input {x!r} more than once (a table must give one "
                "value per input: the file is corrupt or was edited)."
            )
        seen.add(key)


def _make_linear(r: _Reader, item: Dict[str, Any], at: str) -> rasp.RASPExpr:
    fst, snd = r.ref(item, "fst", at, rasp.SOp), r.ref(item, "snd", at, rasp.SOp)
    fst_fac = r.number(item["fst_fac"], f"{at}.fst_fac")
    return rasp.LinearSequenceMap(fst, snd, fst_fac, r.number(item["snd_fac"], f"{at}.snd_fac"))


def _make_select(r: _Reader, item: Dict[str, Any], at: str) -> rasp.RASPExpr:
    keys, queries = r.ref(item, "keys", at, rasp.SOp), r.ref(item, "queries", at, rasp.SOp)
    pred = item["predicate"]
    if isinstance(pred, dict) and set(pred) == {"comparison"}:
        names = [c.value for c in rasp.Comparison]
        if pred["comparison"] not in names:
            r.fail(f"{at}.predicate.comparison must be one of {names}, got {pred['comparison']!r}.")
        return rasp.Select(keys, queries, rasp.Comparison(pred["comparison"]))
    if not isinstance(pred, dict) or set(pred) != {"keys", "queries", "true"}:
        r.fail(
            f"{at}.predicate must be {{'comparison': ...}} or {{'keys': [...], 'queries': "
            f"[...], 'true': [[k, q], ...]}}, got {pred!r:.200}."
        )
    return rasp.Select(
        keys,
        queries,
        TablePredicate(
            r.values(pred["keys"], f"{at}.predicate.keys"),
            r.values(pred["queries"], f"{at}.predicate.queries"),
            r.values(pred["true"], f"{at}.predicate.true", width=2),
        ),
    )


def _make_constant_selector(r: _Reader, item: Dict[str, Any], at: str) -> rasp.RASPExpr:
    value = item["value"]
    if not isinstance(value, list) or not all(
        isinstance(row, list) and all(isinstance(v, bool) for v in row) for row in value
    ):
        r.fail(f"{at}.value must be a list of rows of true/false.")
    return rasp.ConstantSelector(value, r.flag(item["check_length"], f"{at}.check_length"))


_BUILDERS: Dict[str, Tuple[set, Callable[[_Reader, Dict[str, Any], str], rasp.RASPExpr]]] = {
    "tokens": (set(), lambda r, item, at: rasp.tokens),
    "indices": (set(), lambda r, item, at: rasp.indices),
    "length": (set(), lambda r, item, at: rasp.length),
    "map": ({"inner", "table", "no_value"}, _make_map),
    "sequence_map": ({"fst", "snd", "table", "no_value"}, _make_sequence_map),
    "linear_sequence_map": ({"fst", "snd", "fst_fac", "snd_fac"}, _make_linear),
    "full": ({"fill"}, lambda r, item, at: rasp.Full(r.value(item["fill"], f"{at}.fill"))),
    "constant_sop": (
        {"value", "check_length"},
        lambda r, item, at: rasp.ConstantSOp(
            r.values(item["value"], f"{at}.value"),
            r.flag(item["check_length"], f"{at}.check_length"),
        ),
    ),
    "select": ({"keys", "queries", "predicate"}, _make_select),
    "constant_selector": ({"value", "check_length"}, _make_constant_selector),
    "selector_and": (
        {"fst", "snd"},
        lambda r, item, at: rasp.SelectorAnd(
            r.ref(item, "fst", at, rasp.Selector), r.ref(item, "snd", at, rasp.Selector)
        ),
    ),
    "selector_or": (
        {"fst", "snd"},
        lambda r, item, at: rasp.SelectorOr(
            r.ref(item, "fst", at, rasp.Selector), r.ref(item, "snd", at, rasp.Selector)
        ),
    ),
    "selector_not": (
        {"inner"},
        lambda r, item, at: rasp.SelectorNot(r.ref(item, "inner", at, rasp.Selector)),
    ),
    "selector_width": (
        {"selector"},
        lambda r, item, at: rasp.SelectorWidth(r.ref(item, "selector", at, rasp.Selector)),
    ),
    "aggregate": (
        {"selector", "sop", "default"},
        lambda r, item, at: rasp.Aggregate(
            r.ref(item, "selector", at, rasp.Selector),
            r.ref(item, "sop", at, rasp.SOp),
            r.value(item["default"], f"{at}.default"),
        ),
    ),
}

_TOP_KEYS = {"format", "format_version", "vocab", "max_seq_len", "output", "exprs"}


def program_from_json(doc: Any, where: str = PROGRAM_FILE) -> rasp.SOp:
    """Rebuilds the program of a `program_to_json` document.

    Args:
      doc: the parsed JSON document.
      where: how error messages name the document (a file path).

    Returns:
      The output SOp of a program whose functions are tables (`TableMap`,
      `TableSequenceMap`, `TablePredicate`) or `rasp.Comparison`s.

    Raises:
      ValueError: the document is not a well-formed program.json (unknown or
        missing keys, another format version, a bad reference, a malformed
        value, a table input listed twice), naming the field.
    """
    return program_with_domain_from_json(doc, where)[0]


def program_with_domain_from_json(
    doc: Any, where: str = PROGRAM_FILE
) -> Tuple[rasp.SOp, List[Any], int]:
    """`program_from_json`, also returning the vocabulary and max_seq_len it was written for."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where} must hold a JSON object, got {type(doc).__name__}.")
    if doc.get("format") != FORMAT_NAME:
        raise ValueError(f"{where}: 'format' is {doc.get('format')!r}, expected {FORMAT_NAME!r}.")
    version = doc.get("format_version")
    if version != FORMAT_VERSION or not values_lib.is_int(version):
        raise ValueError(
            f"{where}: format_version {doc.get('format_version')!r} is not supported; this "
            f"tracr reads version {FORMAT_VERSION}."
        )
    unknown, missing = sorted(set(doc) - _TOP_KEYS), sorted(_TOP_KEYS - set(doc))
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {unknown}, missing keys {missing}.")
    exprs = doc["exprs"]
    if not isinstance(exprs, list) or not exprs or len(exprs) > _MAX_EXPRS:
        raise ValueError(f"{where}: exprs must be a non-empty list of at most {_MAX_EXPRS}.")
    reader = _Reader(where)
    vocab = reader.values(doc["vocab"], "vocab")
    max_seq_len = doc["max_seq_len"]
    if not values_lib.is_int(max_seq_len) or max_seq_len < 1:
        raise ValueError(f"{where}: max_seq_len must be a positive int, got {max_seq_len!r}.")
    for index, item in enumerate(exprs):
        try:
            reader.built.append(reader.build(item, index))
        except (TypeError, ValueError) as e:
            message = str(e)
            if not message.startswith(where):
                message = f"{where}: exprs[{index}]: {message}"
            raise ValueError(message) from None
    output = doc["output"]
    if not values_lib.is_int(output) or not 0 <= output < len(exprs):
        raise ValueError(f"{where}: output must be the id of an expression, got {output!r}.")
    program = reader.built[output]
    if not isinstance(program, rasp.SOp):
        raise ValueError(f"{where}: output refers to a selector; a program's output is an SOp.")
    return program, vocab, max_seq_len


def load_program(path: PathLike) -> rasp.SOp:
    """Reads program.json (`path` is the file or the folder holding it).

    Raises:
      FileNotFoundError: there is no such file.
      ValueError: the file is not valid JSON or not a well-formed program.json.
    """
    return load_program_with_domain(path)[0]


def load_program_with_domain(path: PathLike) -> Tuple[rasp.SOp, List[Any], int]:
    """`load_program`, also returning the vocabulary and max_seq_len it was written for."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / PROGRAM_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; save the model with its program.")
    return program_with_domain_from_json(values_lib.read_json_file(path), str(path))
