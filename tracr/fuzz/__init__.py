"""Differential testing of the compiler: random RASP programs vs the evaluator.

``generator`` builds seeded, typed random programs; ``checker`` compiles each
one and compares the model with the RASP evaluator on every input.
"""

from tracr.fuzz.generator import CI_CONFIG, FuzzCase, GeneratorConfig, generate, generate_many

__all__ = ["CI_CONFIG", "FuzzCase", "GeneratorConfig", "generate", "generate_many"]
