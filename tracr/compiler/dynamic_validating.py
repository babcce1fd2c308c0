"""Dynamic validation: why the program has no compilable result on one input.

A categorical Aggregate that selects several different values (the evaluator
averages them, as Tracr's does, but a compiled head can't), a ConstantSOp of
another length, a function raising an ArithmeticError: these depend on the
input, so the compiler can't refuse them; ``dynamic_validate`` reports them.
"""

from __future__ import annotations

from typing import List, Sequence, Union

from tracr.compiler.unsupported import TracrUnsupportedExpr
from tracr.rasp import causal_eval, rasp


def _some(values: Sequence[rasp.Value], limit: int = 5) -> str:
    distinct: List[rasp.Value] = []
    for v in values:
        if not any(v is u or v == u for u in distinct):
            distinct.append(v)
    more = ", ..." if len(distinct) > limit else ""
    return "[" + ", ".join(repr(v) for v in distinct[:limit]) + more + "]"


class DynamicValidationEvaluator(rasp.DefaultRASPEvaluator):
    """Evaluates a program and records why it has no result on this input.

    Where the reference evaluator raises -- a categorical aggregate that
    selects several different values, a ConstantSOp of another length, a
    function raising an ArithmeticError -- the program has no meaning, and the
    compiled model's output there is arbitrary. This evaluator records each
    such problem instead (and continues with None there), so that one run
    reports every problem.
    """

    def __init__(self):
        super().__init__()
        self.unsupported_exprs: List[TracrUnsupportedExpr] = []

    def _report(self, expr: rasp.RASPExpr, reason: str) -> None:
        item = TracrUnsupportedExpr(expr, reason)
        if item not in self.unsupported_exprs:
            self.unsupported_exprs.append(item)

    def evaluate(
        self, expr: rasp.RASPExpr, xs: Sequence[rasp.Value]
    ) -> Union[Sequence[rasp.Value], rasp.SelectorValue]:
        return super().evaluate(expr, xs)

    def _apply(self, sop: rasp.SOp, f, args: Sequence[tuple], xs) -> List[rasp.Value]:
        """f at every position; an ArithmeticError is reported and gives None."""
        out: List[rasp.Value] = []
        for pos, a in enumerate(args):
            if any(v is None for v in a):
                out.append(None)
                continue
            try:
                out.append(f(*a))
            except ArithmeticError as e:
                shown = ", ".join(repr(v) for v in a)
                self._report(
                    sop,
                    f"The function of {sop.label} raises {type(e).__name__} ({e}) on {shown} "
                    f"at position {pos} (input {list(xs)!r}): the program has no value there, "
                    f"and the compiled model, which skips such values, outputs an arbitrary "
                    f"one. Make the function total, e.g. return a value for that case.",
                )
                out.append(None)
        return out

    def eval_map(self, sop: rasp.Map, xs: Sequence[rasp.Value]) -> Sequence[rasp.Value]:
        return self._apply(sop, sop.f, [(x,) for x in self.evaluate(sop.inner, xs)], xs)

    def eval_sequence_map(
        self, sop: rasp.SequenceMap, xs: Sequence[rasp.Value]
    ) -> Sequence[rasp.Value]:
        pairs = list(zip(self.evaluate(sop.fst, xs), self.evaluate(sop.snd, xs), strict=False))
        return self._apply(sop, sop.f, pairs, xs)

    def eval_constant_sop(
        self, sop: rasp.ConstantSOp, xs: Sequence[rasp.Value]
    ) -> Sequence[rasp.Value]:
        if len(sop.value) != len(xs):
            self._report(
                sop,
                f"{sop.label} is a ConstantSOp of length {len(sop.value)}, but the input "
                f"{list(xs)!r} has length {len(xs)}: the program only has a meaning for inputs "
                f"of length {len(sop.value)}. Build the constant from rasp.indices with a Map "
                f"to support every length.",
            )
            # Position i reads value[i], as in the compiled model (None past the end).
            return [sop.value[i] if i < len(sop.value) else None for i in range(len(xs))]
        return super().eval_constant_sop(sop, xs)

    def eval_aggregate(self, sop: rasp.Aggregate, xs: Sequence[rasp.Value]) -> Sequence[rasp.Value]:
        # A numerical Aggregate is compiled exactly for any values: the head
        # averages them and basis inference enumerates every mean.
        if rasp.is_numerical(sop):
            return super().eval_aggregate(sop, xs)
        selector = self.evaluate(sop.selector, xs)
        values = self.evaluate(sop.sop, xs)
        out: List[rasp.Value] = []
        reported = False
        for query, row in enumerate(selector):
            selected = [v for v, s in zip(values, row, strict=False) if s]
            distinct: List[rasp.Value] = []
            for v in selected:
                if not any(v is u or v == u for u in distinct):
                    distinct.append(v)
            if len(distinct) <= 1:
                out.append(distinct[0] if distinct else sop.default)
                continue
            # Averaging one-hots of equal values gives that one-hot again, so only
            # different values (None included) break the compiled head.
            if not reported:
                self._report(
                    sop,
                    f"Categorical aggregate does not support Selectors with width > 1 that "
                    f"require aggregation (eg. averaging). {sop.label} selects {len(selected)} "
                    f"keys with different values {_some(distinct)} at query position {query} "
                    f"(input {list(xs)!r}): the evaluator averages them, as Tracr's does, but a "
                    f"compiled categorical Aggregate averages the one-hots. Narrow the "
                    f"selector so that it selects one value per query, or make the aggregate "
                    f"numerical.",
                )
                reported = True
            out.append(None)
        return out


class CausalDynamicValidationEvaluator(causal_eval.CausalEvaluator, DynamicValidationEvaluator):
    """DynamicValidationEvaluator with the causal mask (for models compiled with causal=True)."""


def dynamic_validate(
    program: rasp.RASPExpr, xs: Sequence[rasp.Value] | None = None, causal: bool = False
) -> list[TracrUnsupportedExpr]:
    """Runs ``program`` on ``xs`` and reports aggregates the compiler can't reproduce.

    Args:
      program: the program's output expression.
      xs: an input sequence; with None there is nothing to run and the result
        is empty.
      causal: evaluate as a causally compiled model sees it (query i selects
        only keys <= i).

    Returns:
      Every problem seen on ``xs``, in evaluation order.

    Raises:
      TypeError: if ``xs`` is not a list of tokens.
    """
    if xs is None:
        return []
    evaluator = CausalDynamicValidationEvaluator() if causal else DynamicValidationEvaluator()
    evaluator.evaluate(program, xs)
    return list(evaluator.unsupported_exprs)
