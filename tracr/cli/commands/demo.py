"""`tracr demo` (README's first command: keep its output stable)."""

from __future__ import annotations


def demo() -> int:
    """Compiles lib.make_sort_unique and runs it on one input."""
    from tracr.compiler import compiling, lib
    from tracr.rasp import rasp

    program = lib.make_sort_unique(rasp.tokens, rasp.tokens)
    model = compiling.compile_rasp_to_model(program, vocab={1, 2, 3, 4, 5}, max_seq_len=5)
    tokens = ["compiler_bos", 3, 1, 5, 2]
    out = model.apply(tokens)
    print(f"program: sort_unique  input: {tokens}")
    print(f"model output:     {out.decoded}")
    print(f"RASP evaluator:   {program(tokens[1:])}")
    return 0
