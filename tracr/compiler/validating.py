"""Finds the parts of a RASP program that the compiler can't turn into weights.

The compiler's promise: a compiled model agrees with the RASP evaluator (the
causal one for causal models) at every position where the evaluator gives a
value, on every input where the evaluator gives a result; otherwise the
compiler refuses the program. Two checks keep it:

* ``static_validate`` looks at the program without an input: its structure,
  and, given the vocab and max_seq_len, where RASP has no value (None) but a
  compiled model would hold and select one. ``compile_rasp_to_model`` runs
  the same checks (the second part as ``value_set_validate``, on the value
  sets of basis inference) and raises NotImplementedError listing what they
  find.
* ``dynamic_validate`` runs the program on one input and reports why the
  compiled model can't reproduce the evaluator there: a categorical Aggregate
  that selects several different values (the evaluator averages them, as
  Tracr's does), a ConstantSOp of another length, a function that raises an
  ArithmeticError. These depend on the input, so the compiler
  can't refuse them; such inputs are outside the program's meaning and the
  model's output there is arbitrary. An empty list means the evaluator (and
  so the model) has a result for that input.

Both return every problem at once, as a list of
``TracrUnsupportedExpr(expr, reason)``::

    from tracr.compiler import validating
    from tracr.rasp import rasp

    select_all = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE)
    first = rasp.Aggregate(select_all, rasp.tokens)     # categorical, selects many
    validating.validate(first, ["a", "a"])   # -> [] (both keys hold "a")
    validating.validate(first, ["a", "b"])
    # -> [TracrUnsupportedExpr(expr=Aggregate('aggregate_7'), reason='Categorical
    #     aggregate does not support Selectors with width > 1 that require aggregation
    #     (eg. averaging). aggregate_7 selects 2 keys with different values ...')]

The checks live in ``static_validating`` (structure), ``none_flow`` (value
sets), ``dynamic_validating`` (one input) and ``tracr.rasp.traversal`` (walking
a program); this module keeps Tracr's names importable in one place.

See docs/fuzzing.md for how this promise is tested.
"""

from __future__ import annotations

from typing import Sequence

from tracr.compiler.dynamic_validating import (
    CausalDynamicValidationEvaluator,
    DynamicValidationEvaluator,
    dynamic_validate,
)
from tracr.compiler.static_validating import static_validate, value_set_validate
from tracr.compiler.unsupported import TracrUnsupportedExpr
from tracr.rasp import rasp
from tracr.rasp.traversal import same_expression, walk

__all__ = [
    "CausalDynamicValidationEvaluator",
    "DynamicValidationEvaluator",
    "TracrUnsupportedExpr",
    "dynamic_validate",
    "same_expression",
    "static_validate",
    "validate",
    "value_set_validate",
    "walk",
]


def validate(
    program: rasp.RASPExpr, xs: Sequence[rasp.Value] | None = None, causal: bool = False
) -> list[TracrUnsupportedExpr]:
    """``static_validate`` plus, when ``xs`` is given, ``dynamic_validate``."""
    found = static_validate(program)
    for item in dynamic_validate(program, xs, causal=causal):
        if item not in found:
            found.append(item)
    return found
