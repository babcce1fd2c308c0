"""Certified precision margins: how far a compiled model is from a wrong answer.

`equivalence.find_mismatches` says whether a model agrees with the RASP
evaluator; `certify` also says by how much. For every input it checks
(all of them when the domain is small, a seeded sample otherwise) and every
position where the evaluator gives a value, it reads the model's final
residual stream and records

* for a categorical SOp, the **margin**: the residual coordinate of the
  evaluator's value minus the largest coordinate of any other value of that
  SOp. The unembedding of a categorical output is exactly these coordinates,
  so for the output this is the gap between the winning logit and the
  runner-up, signed so that a wrong argmax gives a margin <= 0. A perfectly
  clean one-hot has margin 1;
* for a numerical SOp, the **error** |model value - evaluator value|.

It does this for the program's output and, with `intermediates=True`, for
every computed SOp of the program that owns directions in the residual
stream (found through `model.spec`): each block writes only its
own directions, so the final residual still holds every intermediate value.
A certificate is a measurement on the inputs it saw; on an exhaustive run it
covers the whole domain::

    from tracr.compiler import certificate, compiling, lib

    program = lib.make_hist()
    model = compiling.compile_rasp_to_model(program, {"a", "b", "c"}, max_seq_len=5)
    cert = certificate.certify(model, program)      # 363 inputs: exhaustive
    cert.exact                                       # True
    cert.output.min_margin                           # ~1.0
    print(cert.summary())

A certificate that compared nothing (no input, or every input outside the
program's domain) is not exact. For a categorical output it also certifies
the "active" decision (`ActiveMargin`): where RASP has None every output
magnitude stays below `spec.ACTIVE_THRESHOLD` by `REQUIRED_ACTIVE_MARGIN`,
and where it has a value the largest one stays above it by as much, so that
decoding "no active direction" as None agrees with the evaluator.

Inputs are run in fixed-size batches padded to max_seq_len + 1 with the PAD
token (masked out of attention, so padding changes no real position), which
costs one jit compilation per call. Pass `dtype=jnp.bfloat16` to run with the
parameters cast to another float type (the residual stream then carries that
type too).
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tracr.compiler import assemble, equivalence, validating
from tracr.rasp import rasp
from tracr.transformer import spec as spec_lib

# Inputs whose evaluation raises these, or that dynamic validation flags (e.g. a
# categorical Aggregate that selects two different values), are outside the
# program's domain and are skipped.
_EVALUATION_ERRORS = (ValueError, ArithmeticError, TypeError)


@dataclasses.dataclass(frozen=True)
class SOpMargin:
    """What one SOp's values look like across every checked position.

    Attributes:
      label: the SOp's label.
      numerical: whether the SOp is numerical (one direction holding the value).
      positions: how many (input, position) pairs were compared.
      wrong: positions decoded wrongly: argmax != evaluator (categorical), or
        error > `equivalence.NUMERICAL_TOLERANCE` (numerical).
      min_margin: categorical only (NaN otherwise): the smallest margin, see the
        module docstring; > 0 iff every compared position decodes correctly.
      max_error: numerical: the largest |model - evaluator|; categorical: the
        largest deviation of any coordinate of the SOp from the exact one-hot.
      worst_input, worst_position: where the smallest margin (categorical) or
        the largest error (numerical) occurred; position 0 is the first token
        after BOS.
    """

    label: str
    numerical: bool
    positions: int
    wrong: int
    min_margin: float
    max_error: float
    worst_input: Optional[tuple] = None
    worst_position: int = -1

    @property
    def exact(self) -> bool:
        if self.wrong:
            return False
        return self.numerical or self.positions == 0 or self.min_margin > 0

    def describe(self) -> str:
        if self.numerical:
            measure = f"max error {self.max_error:.3g}"
        else:
            measure = f"min margin {self.min_margin:.6g} (max one-hot error {self.max_error:.3g})"
        verdict = "exact" if self.exact else f"{self.wrong} WRONG"
        return f"{self.label}: {measure} over {self.positions} positions, {verdict}"


# How far from `spec.ACTIVE_THRESHOLD` a categorical output must stay to be
# certified: every output magnitude at most 0.25 where RASP has None, the
# largest at least 0.75 where it has a value (a clean one-hot: 0 and 1).
REQUIRED_ACTIVE_MARGIN = 0.25


@dataclasses.dataclass(frozen=True)
class ActiveMargin:
    """How clearly a categorical output says "a value" or "no value" (None).

    A categorical output position decodes as None when no output magnitude
    reaches `threshold` (`spec.ACTIVE_THRESHOLD`). Where RASP gives None (a
    categorical Aggregate that selects nothing, a Map returning None) every
    output magnitude must be well below it; where RASP gives a value, the
    largest one well above it.

    Attributes:
      threshold: `spec.ACTIVE_THRESHOLD`.
      value_positions, none_positions: positions compared where RASP has a
        value / None.
      min_active: the smallest largest output magnitude where RASP has a
        value (inf if there is no such position).
      max_inactive: the largest |output magnitude| where RASP has None (0 if
        there is no such position).
    """

    threshold: float
    value_positions: int
    none_positions: int
    min_active: float
    max_inactive: float

    @property
    def margin(self) -> float:
        """The distance of the nearer side from the threshold (> 0: decodes correctly)."""
        return min(self.min_active - self.threshold, self.threshold - self.max_inactive)

    @property
    def certified(self) -> bool:
        return self.margin >= REQUIRED_ACTIVE_MARGIN

    def describe(self) -> str:
        verdict = "certified" if self.certified else "NOT certified"
        return (
            f"active: min {self.min_active:.6g} over {self.value_positions} positions with a "
            f"value, max {self.max_inactive:.3g} over {self.none_positions} None positions "
            f"(threshold {self.threshold}), {verdict}"
        )


@dataclasses.dataclass(frozen=True)
class Certificate:
    """The margins of a compiled model on a set of inputs.

    Attributes:
      program: the output SOp's label.
      max_seq_len: the longest input the model accepts.
      causal: whether the causal evaluator was the reference.
      dtype: the float type the model ran in.
      num_inputs: inputs checked (those the evaluator rejects excluded).
      exhaustive: whether these were all inputs up to max_seq_len.
      skipped_inputs: inputs on which the evaluator raised (outside the
        program's domain), not checked.
      output: the program's output.
      intermediates: every computed SOp found in the residual stream (the
        output excluded), in evaluation order; empty unless requested.
      active: for a categorical output, the margin of its "active" decision
        (see `ActiveMargin`); None for a numerical output.
    """

    program: str
    max_seq_len: int
    causal: bool
    dtype: str
    num_inputs: int
    exhaustive: bool
    skipped_inputs: int
    output: SOpMargin
    intermediates: Tuple[SOpMargin, ...] = ()
    active: Optional[ActiveMargin] = None

    @property
    def compared(self) -> int:
        """Output positions compared with the evaluator (where it gives a value)."""
        return self.output.positions

    @property
    def exact(self) -> bool:
        """The output decodes to the evaluator's value at every checked position.

        Comparing nothing (every input skipped, or no position with a value)
        certifies nothing, so it is not exact; nor is a categorical output
        whose active/None decision is not certified (`ActiveMargin`).
        """
        if not self.compared:
            return False
        return self.output.exact and (self.active is None or self.active.certified)

    def why_not_exact(self) -> str:
        """One line saying why the certificate is not exact ("" when it is)."""
        if not self.compared:
            return f"nothing was compared ({self.skipped_inputs} inputs outside the domain)"
        if not self.output.exact:
            return self.output.describe()
        if self.active is not None and not self.active.certified:
            return self.active.describe()
        return ""

    @property
    def weakest_intermediate(self) -> Optional[SOpMargin]:
        """The categorical intermediate with the smallest margin (None if there is none)."""
        categorical = [m for m in self.intermediates if not m.numerical and m.positions]
        return min(categorical, key=lambda m: m.min_margin, default=None)

    def summary(self) -> str:
        kind = "all" if self.exhaustive else "a sample of"
        lines = [
            f"certificate for {self.program} (max_seq_len={self.max_seq_len}, "
            f"causal={self.causal}, {self.dtype}) on {kind} {self.num_inputs} inputs"
            + (
                f" ({self.skipped_inputs} outside the domain skipped)"
                if self.skipped_inputs
                else ""
            ),
            "  output " + self.output.describe(),
        ]
        if self.active is not None:
            lines.append("  output " + self.active.describe())
        if not self.compared:
            lines.append("  NOTHING COMPARED: no input in the domain, not exact")
        lines += ["  " + m.describe() for m in self.intermediates]
        return "\n".join(lines)


def default_inputs(
    vocab: Iterable[Any],
    max_seq_len: int,
    *,
    max_exhaustive: int = 20_000,
    num_samples: int = 200,
    seed: int = 0,
) -> Tuple[List[tuple], bool]:
    """All inputs if there are at most `max_exhaustive`, else a seeded sample.

    Long inputs decide the margins (more keys to leak into, wider selector
    widths, smaller gaps), so half of the sample has length max_seq_len and the
    rest has uniformly random lengths.

    Returns:
      (inputs, exhaustive).
    """
    tokens = sorted(set(vocab), key=repr)
    total = sum(len(tokens) ** n for n in range(1, max_seq_len + 1))
    if total <= max_exhaustive:
        return list(equivalence.all_inputs(tokens, max_seq_len)), True
    rng = random.Random(seed)
    inputs = []
    for i in range(num_samples):
        length = max_seq_len if i % 2 == 0 else rng.randint(1, max_seq_len)
        inputs.append(tuple(rng.choice(tokens) for _ in range(length)))
    return inputs, False


class _Recorder:
    """Evaluates a program once per input and keeps every SOp's value by label."""

    def __init__(self, causal: bool):
        # The evaluator averages what a categorical Aggregate selects, as Tracr's does;
        # this one reports it instead (the input is then outside the domain).
        base = (
            validating.CausalDynamicValidationEvaluator
            if causal
            else validating.DynamicValidationEvaluator
        )
        values: Dict[str, list] = {}

        class Recording(base):  # type: ignore[misc, valid-type]
            def evaluate(self, expr, xs):
                out = super().evaluate(expr, xs)
                if isinstance(expr, rasp.SOp):
                    values[expr.label] = out
                return out

        self._evaluator = Recording()
        self.values = values

    def __call__(self, program: rasp.SOp, xs: Sequence[Any]) -> Dict[str, list]:
        self.values.clear()
        self._evaluator.unsupported_exprs.clear()
        self._evaluator.evaluate(program, list(xs))
        if self._evaluator.unsupported_exprs:
            raise ValueError(str(self._evaluator.unsupported_exprs[0]))
        return dict(self.values)


def _sops(program: rasp.SOp) -> List[rasp.SOp]:
    """The computed SOps of a program (not tokens/indices), children first."""
    inputs = (rasp.TokensType, rasp.IndicesType, rasp.LengthType)
    return [
        expr
        for expr in validating.walk(program)
        if isinstance(expr, rasp.SOp) and not isinstance(expr, inputs)
    ]


@dataclasses.dataclass
class _Reader:
    """Where one SOp lives in the residual stream."""

    sop: rasp.SOp
    numerical: bool
    columns: np.ndarray  # residual indices of the SOp's directions
    column_of: Dict[Any, int]  # value -> position in `columns` (categorical)


def _readers(sops: Sequence[rasp.SOp], spec: spec_lib.ModelSpec) -> List[_Reader]:
    """The residual columns of each SOp, read from the spec (names and values).

    Categorical columns are keyed by value, so the evaluator's 1.0 or True finds
    the direction of the value 1 (equal values are one direction; their strings
    `x:1.0`, `x:True` and `x:1` differ).
    """
    readers = []
    for sop in sops:
        mine = spec.directions_of(sop.label)
        if not mine:
            continue
        values = [spec.residual_values[i] for i in mine]
        numerical = rasp.is_numerical(sop)
        column_of = {} if numerical else {v: j for j, v in enumerate(values)}
        readers.append(
            _Reader(sop, numerical, np.array(mine[:1] if numerical else mine), column_of)
        )
    return readers


class _Accumulator:
    """Running minimum margin / maximum error of one SOp."""

    def __init__(self, label: str, numerical: bool):
        self.label, self.numerical = label, numerical
        self.positions = self.wrong = 0
        self.min_margin, self.max_error = math.inf, 0.0
        self.worst: Tuple[Optional[tuple], int] = (None, -1)

    def categorical(self, where: List[Tuple[tuple, int]], rows: np.ndarray, cols: np.ndarray):
        """rows: [P, K] the SOp's coordinates; cols: [P] the evaluator's column (-1: none)."""
        if not len(where):
            return
        self.positions += len(where)
        p = np.arange(len(cols))
        known = cols >= 0
        safe = np.where(known, cols, 0)
        win = rows[p, safe]
        others = rows.copy()
        others[p, safe] = -np.inf
        # A single-direction SOp has no runner-up; compare with an absent one (0).
        runner = others.max(axis=1) if rows.shape[1] > 1 else np.zeros(len(cols))
        margin = np.where(known, win - runner, -np.inf)
        exact = np.zeros_like(rows)
        exact[p, safe] = 1.0
        error = np.where(known, np.abs(rows - exact).max(axis=1), np.inf)
        self.wrong += int(np.sum(~(margin > 0)))
        self.max_error = max(self.max_error, float(error.max()))
        k = int(np.argmin(margin))
        if margin[k] < self.min_margin:
            self.min_margin, self.worst = float(margin[k]), where[k]

    def numeric(self, where: List[Tuple[tuple, int]], got: np.ndarray, want: np.ndarray):
        if not len(where):
            return
        self.positions += len(where)
        error = np.abs(got - want)
        error = np.where(np.isnan(error), np.inf, error)
        self.wrong += int(np.sum(~(error <= equivalence.NUMERICAL_TOLERANCE)))
        k = int(np.argmax(error))
        if error[k] >= self.max_error:
            self.max_error, self.worst = float(error[k]), where[k]

    def result(self) -> SOpMargin:
        return SOpMargin(
            label=self.label,
            numerical=self.numerical,
            positions=self.positions,
            wrong=self.wrong,
            min_margin=math.nan if self.numerical else self.min_margin,
            max_error=self.max_error,
            worst_input=self.worst[0],
            worst_position=self.worst[1],
        )


class _Activity:
    """Running extremes of the output magnitudes, split by whether RASP has a value."""

    def __init__(self, reads: np.ndarray):
        self.reads = reads  # residual index of each output column
        self.value_positions = self.none_positions = 0
        self.min_active, self.max_inactive = math.inf, 0.0

    def add(self, residual: np.ndarray, outputs: Sequence[Optional[list]]) -> None:
        """residual: [B, T, D] (BOS first); outputs: the evaluator's output per input."""
        for b, want in enumerate(outputs):
            if want is None:
                continue
            magnitudes = residual[b, 1 : len(want) + 1][:, self.reads]  # [n, O]
            none = np.array([v is None for v in want], dtype=bool)
            if none.any():
                self.none_positions += int(none.sum())
                inactive = float(np.abs(magnitudes[none]).max(initial=0.0))
                self.max_inactive = max(self.max_inactive, inactive)
            if (~none).any():
                self.value_positions += int((~none).sum())
                active = float(magnitudes[~none].max(axis=1, initial=-math.inf).min())
                self.min_active = min(self.min_active, active)

    def result(self) -> ActiveMargin:
        return ActiveMargin(
            threshold=spec_lib.ACTIVE_THRESHOLD,
            value_positions=self.value_positions,
            none_positions=self.none_positions,
            min_active=self.min_active,
            max_inactive=self.max_inactive,
        )


def _column(reader: _Reader, value: Any) -> int:
    """The index in `reader.columns` of the direction for `value` (-1: none).

    Value sets hold exactly the values the evaluator produces (basis_inference
    does not round), so a value without a direction is a wrong answer.
    """
    return reader.column_of.get(value, -1)


def _targets(reader: _Reader, chunk: Sequence[tuple], expected: Sequence[Dict[str, list]]):
    """Where the evaluator gives this SOp a value: (where, batch idx, position idx, target).

    Positions count from 1 (0 is BOS). The target is the value (numerical) or
    the index into `reader.columns` of the value's direction, -1 if it has none.
    """
    where, batch, pos, target = [], [], [], []
    for b, (x, values) in enumerate(zip(chunk, expected)):
        want = values.get(reader.sop.label)
        if want is None:
            continue
        for i, value in enumerate(want):
            if value is None:
                continue
            where.append((x, i))
            batch.append(b)
            pos.append(i + 1)
            if reader.numerical:
                target.append(float(value))
            else:
                target.append(_column(reader, value))
    return where, np.asarray(batch, dtype=np.intp), np.asarray(pos, dtype=np.intp), target


def _max_seq_len(model: assemble.AssembledTransformerModel) -> int:
    pos_rows = np.asarray(model.params["pos_embed"]["embeddings"]).shape[0]
    return pos_rows - 1


def certify(
    model: assemble.AssembledTransformerModel,
    program: rasp.SOp,
    inputs: Optional[Iterable[Sequence[Any]]] = None,
    *,
    causal: Optional[bool] = None,
    max_exhaustive: int = 20_000,
    num_samples: int = 200,
    seed: int = 0,
    intermediates: bool = True,
    dtype: Any = None,
    batch_size: int = 64,
) -> Certificate:
    """Measures the margins that decide a compiled model's outputs.

    Args:
      model: a model compiled from `program`.
      program: the RASP program (the reference is its evaluator).
      inputs: token sequences without BOS; by default every input up to the
        model's max_seq_len over its vocabulary when there are at most
        `max_exhaustive` of them, else `num_samples` seeded samples (see
        `default_inputs`).
      causal: compare with the causal evaluator; defaults to the model's
        configuration.
      max_exhaustive: the largest domain checked exhaustively.
      num_samples: how many inputs to sample otherwise.
      seed: the sampling seed.
      intermediates: also report every computed SOp in the residual stream.
      dtype: run with the parameters cast to this float type (e.g.
        `jnp.bfloat16`); None keeps the model's own (float32).
      batch_size: inputs per forward pass.

    Returns:
      A `Certificate`.

    Raises:
      ValueError: an input is longer than the model's max_seq_len or holds a
        token outside its vocabulary, or `program`'s output is not in the
        residual stream (a model compiled from another program).
    """
    if causal is None:
        causal = bool(model.model_config.causal)
    max_seq_len = _max_seq_len(model)
    encoder = model.input_encoder
    vocab = [v for v in encoder.encoding_map if v not in (encoder.bos_token, encoder.pad_token)]
    exhaustive = False
    if inputs is None:
        inputs, exhaustive = default_inputs(
            vocab, max_seq_len, max_exhaustive=max_exhaustive, num_samples=num_samples, seed=seed
        )
    inputs = [tuple(x) for x in inputs]

    recorder = _Recorder(causal)
    checked: List[tuple] = []
    expected: List[Dict[str, list]] = []
    skipped = 0
    for x in inputs:
        try:
            expected.append(recorder(program, x))
        except _EVALUATION_ERRORS:
            skipped += 1
            continue
        checked.append(x)

    sops = _sops(program) if intermediates else []
    if not any(sop is program for sop in sops):  # `in` would call SOp.__eq__
        sops.append(program)
    readers = _readers(sops, model.spec)
    output_reader = next((r for r in readers if r.sop is program), None)
    if output_reader is None:
        raise ValueError(
            f"certify: the output {program.label!r} has no direction in the model's residual "
            "stream; pass the program the model was compiled from."
        )
    accumulators = {id(r.sop): _Accumulator(r.sop.label, r.numerical) for r in readers}
    activity = _Activity(np.array(model.spec.output.reads, dtype=np.intp))

    params = model.params
    if dtype is not None:
        params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, dtype=dtype), params)
    dtype_name = str(jnp.dtype(dtype)) if dtype is not None else "float32"
    bos, pad = encoder.bos_token, encoder.pad_token
    width = max_seq_len + 1
    batch_size = max(1, min(batch_size, len(checked)))
    for start in range(0, len(checked), batch_size):
        chunk = checked[start : start + batch_size]
        ids = np.full((batch_size, width), encoder.encoding_map[pad], dtype=np.int32)
        for b, x in enumerate(chunk):
            row = encoder.encode([bos, *x])
            ids[b, : len(row)] = row
        ids[len(chunk) :] = ids[0]  # fill the batch: one jit shape per call
        out = model.forward(params, jnp.asarray(ids))
        residual = np.asarray(out.transformer_output.output, dtype=np.float64)  # [B, T, D]
        decoded = np.asarray(out.unembedded_output)
        if not output_reader.numerical:
            activity.add(
                residual, [e.get(program.label) for e in expected[start : start + len(chunk)]]
            )
        for reader in readers:
            acc = accumulators[id(reader.sop)]
            where, batch, pos, target = _targets(
                reader, chunk, expected[start : start + len(chunk)]
            )
            if reader.numerical:
                got = (
                    decoded[batch, pos]
                    if reader.sop is program
                    else residual[batch, pos, reader.columns[0]]
                )
                acc.numeric(where, got.astype(np.float64), np.asarray(target, dtype=np.float64))
            else:
                rows = residual[batch, pos][:, reader.columns]
                acc.categorical(where, rows, np.asarray(target, dtype=np.intp))

    output = accumulators[id(program)].result()
    active = None if output_reader.numerical else activity.result()
    rest = tuple(accumulators[id(r.sop)].result() for r in readers if r.sop is not program)
    return Certificate(
        program=program.label,
        max_seq_len=max_seq_len,
        causal=causal,
        dtype=dtype_name,
        num_inputs=len(checked),
        exhaustive=exhaustive,
        skipped_inputs=skipped,
        output=output,
        intermediates=rest,
        active=active,
    )
