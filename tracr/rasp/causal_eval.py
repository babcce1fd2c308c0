"""Causal evaluation of RASP: position i sees only positions 0..i.

This is the meaning a program has when compiled with ``causal=True`` (a
decoder with a causal attention mask)::

    from tracr.rasp import causal_eval, rasp

    frac_a = rasp.numerical(rasp.Aggregate(
        rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE),
        rasp.numerical(rasp.tokens == "a"), default=0))
    causal_eval.evaluate(frac_a, ["a", "b", "a", "b"])  # -> [1.0, 0.5, 0.666..., 0.5]
    rasp.evaluate(frac_a, ["a", "b", "a", "b"])         # -> [0.5, 0.5, 0.5, 0.5]

Every selector is masked so that query i never selects a key k > i (so
``SelectorWidth`` and ``Aggregate`` only see visible keys), and ``length`` at
position i is i + 1, the length of the prefix that position can see.
"""

from __future__ import annotations

from typing import Sequence, Union

from tracr.rasp import rasp


def _mask(selector: rasp.SelectorValue) -> rasp.SelectorValue:
    return [
        [bool(selected) and key <= query for key, selected in enumerate(row)]
        for query, row in enumerate(selector)
    ]


class CausalEvaluator(rasp.DefaultRASPEvaluator):
    """Evaluates RASP with a causal mask: query i only selects keys 0..i."""

    def evaluate(
        self, expr: rasp.RASPExpr, xs: Sequence[rasp.Value]
    ) -> Union[Sequence[rasp.Value], rasp.SelectorValue]:
        return super().evaluate(expr, xs)

    def eval_length(self, sop: rasp.LengthType, xs: Sequence[rasp.Value]) -> Sequence[int]:
        return list(range(1, len(xs) + 1))

    def eval_select(self, sel: rasp.Select, xs: Sequence[rasp.Value]) -> rasp.SelectorValue:
        return _mask(super().eval_select(sel, xs))

    def eval_constant_selector(
        self, sel: rasp.ConstantSelector, xs: Sequence[rasp.Value]
    ) -> rasp.SelectorValue:
        return _mask(super().eval_constant_selector(sel, xs))

    def eval_selector_not(
        self, sel: rasp.SelectorNot, xs: Sequence[rasp.Value]
    ) -> rasp.SelectorValue:
        # Negation would otherwise select the hidden future keys.
        return _mask(super().eval_selector_not(sel, xs))


evaluate = CausalEvaluator().evaluate
