"""Every library program, compiled, equals the RASP evaluator on EVERY input."""

import pytest

from tracr.compiler import compiling, equivalence
from tracr.compiler.library_cases import LIBRARY_CASES

MAX_SEQ_LEN = 5


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=lambda c: c.name)
def test_library_program_matches_evaluator_exhaustively(case):
    program = case.program(MAX_SEQ_LEN)
    model = compiling.compile_rasp_to_model(program, set(case.vocab), MAX_SEQ_LEN)
    inputs = list(equivalence.all_inputs(case.vocab, MAX_SEQ_LEN))
    mismatches = equivalence.find_mismatches(model, program, inputs)
    assert not mismatches, equivalence.first_mismatches(mismatches)


@pytest.mark.parametrize(
    "case", [c for c in LIBRARY_CASES if c.supports_causal], ids=lambda c: c.name
)
def test_causal_library_program_matches_causal_evaluator(case):
    program = case.program(MAX_SEQ_LEN)
    model = compiling.compile_rasp_to_model(program, set(case.vocab), MAX_SEQ_LEN, causal=True)
    inputs = list(equivalence.all_inputs(case.vocab, MAX_SEQ_LEN))
    mismatches = equivalence.find_mismatches(model, program, inputs, causal=True)
    assert not mismatches, equivalence.first_mismatches(mismatches)
