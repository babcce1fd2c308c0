"""compile_rasp_to_model: the compiler's passes, in order.

program
  -> validating.static_validate                    (structure; refuse with reasons)
  -> combined_selectors.lower_combined_selectors   (And/Or/Not -> one Select)
  -> rasp_to_graph.extract_rasp_graph              (networkx graph)
  -> basis_inference.infer_bases                   (value sets, bases)
  -> validating.value_set_validate                 (None RASP has but a model can't)
  -> expr_to_craft_graph.add_craft_components...   (a craft block per expr)
  -> craft_graph_to_model.craft_graph_to_model     (layer allocation)
  -> craft_model_to_transformer                    (params, encoders)
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import time
from typing import Dict, Iterator, Optional, Set, Tuple

import numpy as np

from tracr.compiler import (
    assemble,
    basis_inference,
    combined_selectors,
    craft_graph_to_model,
    craft_model_to_transformer,
    expr_to_craft_graph,
    invariants,
    rasp_to_graph,
    validating,
)
from tracr.craft import bases
from tracr.rasp import rasp
from tracr.utils import errors

COMPILER_BOS = "compiler_bos"
COMPILER_PAD = "compiler_pad"


# mlp_exactness x max_seq_len at most this: float32 holds about 7 digits, and a
# discretising MLP's hidden values grow with its sharpness times the input values.
# Measured on reverse and sort_freq: exact at 1e7 (1e6 x 10), wrong at 1.5e7 (3e6 x 5).
MLP_EXACTNESS_BUDGET = 1e6


def _check_arguments(
    program, vocab, max_seq_len, causal, compiler_bos, compiler_pad, mlp_exactness
) -> Set[rasp.Value]:
    """Refuses arguments that cannot give an exact model; returns the vocab as a set.

    Raises TracrUserError (a ValueError, as in Tracr) or TypeError.
    """
    if not isinstance(program, rasp.SOp):
        raise TypeError(f"program must be a rasp.SOp, got {type(program).__name__}: {program!r}.")
    if isinstance(vocab, (str, bytes)) or not hasattr(vocab, "__iter__"):
        raise TypeError(f"vocab must be a set of tokens, got {type(vocab).__name__}: {vocab!r}.")
    try:
        tokens = set(vocab)  # once: an iterator would be used up by the checks
    except TypeError:
        bad = next(t for t in vocab if not _hashable(t))
        raise TypeError(
            f"vocab tokens must be hashable (str, int, float, bool, ...); got "
            f"{type(bad).__name__}: {bad!r}."
        ) from None
    if not tokens:
        raise errors.TracrUserError(
            "vocab is empty: give the set of tokens the model should accept."
        )
    if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 1:
        raise errors.TracrUserError(f"max_seq_len must be a positive int, got {max_seq_len!r}.")
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be True or False, got {type(causal).__name__}: {causal!r}.")
    if compiler_bos is None:
        raise errors.TracrUserError(
            "compiler_bos is None; the model needs a BOS token (every input starts with it, "
            "and attention falls back to it). Pass a token that is not in the vocab."
        )
    for name, token in (("compiler_bos", compiler_bos), ("compiler_pad", compiler_pad)):
        if not _hashable(token):
            raise TypeError(f"{name} must be hashable, got {type(token).__name__}: {token!r}.")
    if compiler_bos == compiler_pad:
        raise errors.TracrUserError(
            f"compiler_bos and compiler_pad must differ, both are {compiler_bos!r}."
        )
    for name, token in (("compiler_bos", compiler_bos), ("compiler_pad", compiler_pad)):
        if token is not None and token in tokens:
            raise errors.TracrUserError(
                f"The {name} token {token!r} is also in the vocab; pass a different {name}= "
                "or remove it from the vocab."
            )
    if None in tokens:
        raise errors.TracrUserError(
            "vocab contains None, which RASP uses for 'no value'; remove it."
        )
    if mlp_exactness is not None:
        if isinstance(mlp_exactness, bool) or not isinstance(mlp_exactness, numbers.Real):
            raise TypeError(
                f"mlp_exactness must be a number (or None for the default), got "
                f"{type(mlp_exactness).__name__}: {mlp_exactness!r}."
            )
        if not 1 <= mlp_exactness <= MLP_EXACTNESS_BUDGET / max_seq_len:
            raise errors.TracrUserError(
                f"mlp_exactness must be between 1 and {MLP_EXACTNESS_BUDGET:g} / max_seq_len "
                f"= {MLP_EXACTNESS_BUDGET / max_seq_len:g} for exact steps in float32, got "
                f"{mlp_exactness!r}. Leave it None (the default, 2) unless you need Tracr's 100."
            )
    return tokens


def _hashable(token) -> bool:
    try:
        hash(token)
    except TypeError:
        return False
    return True


def compile_rasp_to_model(
    program: rasp.SOp,
    vocab: Set[rasp.Value],
    max_seq_len: int,
    causal: bool = False,
    compiler_bos: str = COMPILER_BOS,
    compiler_pad: str = COMPILER_PAD,
    mlp_exactness: Optional[float] = None,
) -> assemble.AssembledTransformerModel:
    """Compiles a RASP program into a transformer.

    Args:
      program: the RASP SOp whose value the model outputs.
      vocab: the tokens the model accepts (not including BOS/PAD).
      max_seq_len: the longest input, not counting BOS.
      causal: compile a causally-masked model (position i sees positions <= i).
      compiler_bos, compiler_pad: the BOS and PAD tokens; neither may be in vocab.
      mlp_exactness: sharpness of the discretising MLPs, in units of the gap
        between neighbouring input values. None (the default) uses 2, the
        best input tolerance per unit of float error; softmax coldness is
        derived per head from max_seq_len and the value sets. Both are
        explained in `tracr.compiler.precision`; `certificate.certify`
        measures the margins they give. Tracr-style values (100) still work.

    Returns:
      The assembled model, with `apply`, params and encoders.

    Raises:
      ValueError: bad arguments (BOS/PAD in vocab, empty vocab, ...).
      NotImplementedError: the program uses constructs the compiler cannot
        turn into exact weights; the message lists each expression and reason.
    """
    model, _ = compile_rasp_to_model_with_report(
        program,
        vocab,
        max_seq_len,
        causal=causal,
        compiler_bos=compiler_bos,
        compiler_pad=compiler_pad,
        mlp_exactness=mlp_exactness,
    )
    return model


@dataclasses.dataclass
class CompileReport:
    """How long each pass of one compilation took.

    Attributes:
      pass_seconds: wall-clock seconds per pass, keyed by pass name, in the
        order the passes ran (`validate`, `lower_combined_selectors`,
        `rasp_to_graph`, `basis_inference`, `expr_to_craft_graph`,
        `craft_graph_to_model`, `craft_model_to_transformer`).
    """

    pass_seconds: Dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.pass_seconds.values())

    @contextlib.contextmanager
    def timing(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.pass_seconds[name] = self.pass_seconds.get(name, 0.0) + (
                time.perf_counter() - start
            )


def compile_rasp_to_model_with_report(
    program: rasp.SOp,
    vocab: Set[rasp.Value],
    max_seq_len: int,
    causal: bool = False,
    compiler_bos: str = COMPILER_BOS,
    compiler_pad: str = COMPILER_PAD,
    mlp_exactness: Optional[float] = None,
    *,
    check_invariants: Optional[bool] = None,
) -> Tuple[assemble.AssembledTransformerModel, CompileReport]:
    """`compile_rasp_to_model`, also returning the seconds spent in each pass.

    Arguments, result and errors are those of `compile_rasp_to_model`; the
    second result is a `CompileReport` (used by benchmarks/compile_time.py).
    `check_invariants` runs `tracr.compiler.invariants` between passes (default:
    the TRACR_CHECK_INVARIANTS environment variable, which the tests set).
    """
    check = invariants.enabled(check_invariants)
    report = CompileReport()
    with report.timing("validate"):
        vocab = _check_arguments(
            program, vocab, max_seq_len, causal, compiler_bos, compiler_pad, mlp_exactness
        )
        unsupported = validating.static_validate(program)
    if unsupported:
        reasons = "\n".join(f"  - {u.expr.label}: {u.reason}" for u in unsupported)
        raise NotImplementedError(f"The program cannot be compiled:\n{reasons}")

    original = program
    with report.timing("lower_combined_selectors"):
        program = combined_selectors.lower_combined_selectors(program)
    with report.timing("rasp_to_graph"):
        extracted = rasp_to_graph.extract_rasp_graph(program)
    graph, sources, sink = extracted.graph, extracted.sources, extracted.sink
    with report.timing("basis_inference"):
        basis_inference.infer_bases(graph, sink, vocab, max_seq_len)
    if check:
        invariants.check_bases(graph)
    with report.timing("validate"):
        # Where RASP has None but the model would select a value; needs the
        # value sets, and reads the program before its selectors were lowered.
        unsupported = validating.value_set_validate(original, graph)
    if unsupported:
        reasons = "\n".join(f"  - {u.expr.label}: {u.reason}" for u in unsupported)
        raise NotImplementedError(f"The program cannot be compiled:\n{reasons}")
    bos_dir = bases.BasisDirection(rasp.tokens.label, compiler_bos)
    one_dir = bases.BasisDirection("one")
    with report.timing("expr_to_craft_graph"):
        expr_to_craft_graph.add_craft_components_to_rasp_graph(
            graph,
            bos_dir=bos_dir,
            one_dir=one_dir,
            causal=causal,
            mlp_exactness=mlp_exactness,
            max_seq_len=max_seq_len,
        )
    if check:
        invariants.check_blocks(graph, bos_dir, one_dir)
    with report.timing("craft_graph_to_model"):
        del sources  # allocation needs only the graph
        allocation = craft_graph_to_model.allocate_layers(graph)
    if check:
        invariants.check_layer_order(graph, allocation)
    with report.timing("craft_model_to_transformer"):
        model = craft_model_to_transformer.craft_model_to_transformer(
            craft_model=allocation.craft_model,
            graph=graph,
            sink=sink,
            max_seq_len=max_seq_len,
            compiler_bos=compiler_bos,
            compiler_pad=compiler_pad,
            causal=causal,
            vocab=vocab,
            allocation=allocation,
        )
    if check:
        invariants.check_spec(model)
    model.program = original  # as the user wrote it (before lowering); saving writes it
    return model, report
