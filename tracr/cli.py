"""Command line entry point (a placeholder until the CLI issue lands)."""

from __future__ import annotations

import sys
from typing import Optional, Sequence


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] == "demo":
        return demo()
    print(f"tracr: unknown command {argv[0]!r}; try `tracr demo`.", file=sys.stderr)
    return 2
