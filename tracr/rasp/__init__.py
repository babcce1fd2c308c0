"""The RASP language (``rasp``) and its causal evaluator (``causal_eval``).

Tracr-style code imports the modules: ``from tracr.rasp import rasp``.
"""

from tracr.rasp import causal_eval, rasp

__all__ = ["causal_eval", "rasp"]
