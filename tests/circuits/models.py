"""Compiled library models shared by the circuit tests (compiled once per session)."""

import functools

import pytest

from tracr import circuits
from tracr.compiler import compiling, library_cases

# Small domains: every input up to this length is checked.
MAX_SEQ_LEN = 3
BOS = "BOS"


@functools.lru_cache(maxsize=None)
def compiled(name: str, causal: bool):
    case = library_cases.CASES_BY_NAME[name]
    program = case.program(MAX_SEQ_LEN)
    model = compiling.compile_rasp_to_model(
        program, case.vocab, MAX_SEQ_LEN, compiler_bos=BOS, causal=causal
    )
    return program, model


@functools.lru_cache(maxsize=None)
def circuit_of(name: str, causal: bool):
    """The circuit of `compiled(name, causal)` (a frozen value, built once)."""
    return circuits.circuit(compiled(name, causal)[1])


LIBRARY_PARAMS = [
    pytest.param(case.name, causal, id=f"{case.name}-{'causal' if causal else 'full'}")
    for case in library_cases.LIBRARY_CASES
    for causal in ((False, True) if case.supports_causal else (False,))
]
