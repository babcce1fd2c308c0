"""Exact compression: the subspace the residual stream actually occupies.

A compiled residual has one dimension per value of every variable, but the
states it takes are far from filling that space: the categorical directions
of a variable sum to the `one` direction at every real position, BOS writes
few of them, some values are never produced together. This module runs the
model on inputs (every input of its domain when that is small enough, else a
seeded sample), collects every residual state (the embeddings and the
residual after every sublayer, at every real position), and takes an
orthonormal basis of their span from the Gram matrix::

    exact = exact_compression(model)          # all inputs up to max_seq_len
    exact.d_exact, exact.residual_size        # e.g. 14 of 20 for sort_unique
    small = running.CompressedModel(model, exact.w)

Because every state lies in the span of `w`'s rows, reading `x_d @ w`
recovers it exactly and the compressed model computes what the uncompressed
one does, on every input whose states were collected. The rows are ordered
by decreasing singular value, so `exact.truncated(d)` is the best rank-d
(principal) subspace of the states, a good start for learned compression.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from tracr.compression import running
from tracr.transformer import assembled, model
from tracr.transformer import inputs as inputs_lib

# Singular values below this fraction of the largest count as zero. Residual
# states are O(1) and exact up to float32 rounding (~1e-7) and soft-attention
# leakage (~e^-100), so any threshold between ~1e-5 and ~1e-2 gives one rank.
DEFAULT_TOLERANCE = 1e-4
DEFAULT_MAX_INPUTS = 20_000  # above this many inputs in the domain, sample


@dataclasses.dataclass(frozen=True, eq=False)
class ExactCompression:
    """An orthonormal basis of the residual states of a compiled model.

    Attributes:
      basis: [D, D] orthonormal rows, ordered by decreasing singular value of
        the residual states; the first `d_exact` span them.
      singular_values: [D] singular values of the stacked states, decreasing.
      d_exact: the number of singular values above `tolerance` * the largest.
      num_states: residual states collected (positions x layers x inputs).
      num_inputs: inputs the model ran on.
      exhaustive: whether those were every input of the model's domain.
      tolerance: the relative threshold used for `d_exact`.
    """

    basis: np.ndarray
    singular_values: np.ndarray
    d_exact: int
    num_states: int
    num_inputs: int
    exhaustive: bool
    tolerance: float

    @property
    def w(self) -> np.ndarray:
        """[d_exact, D]: the exact compression matrix (orthonormal rows)."""
        return self.basis[: self.d_exact]

    @property
    def residual_size(self) -> int:
        """D, the uncompressed residual width."""
        return self.basis.shape[1]

    @property
    def ratio(self) -> float:
        """d_exact / D."""
        return self.d_exact / self.residual_size

    def truncated(self, d: int) -> np.ndarray:
        """[d, D]: the d leading basis rows (the best rank-d subspace of the states).

        Raises:
          ValueError: d outside 1..D.
        """
        if not 1 <= d <= self.residual_size:
            raise ValueError(f"d must be in 1..D = 1..{self.residual_size}, got {d}.")
        return self.basis[:d]


def domain_size(vocab_size: int, max_seq_len: int) -> int:
    """The number of inputs of length 1..max_seq_len over vocab_size tokens."""
    return sum(vocab_size**n for n in range(1, max_seq_len + 1))


def domain_inputs(
    compiled: assembled.AssembledTransformerModel,
    max_inputs: int = DEFAULT_MAX_INPUTS,
    seed: int = 0,
    max_seq_len: Optional[int] = None,
) -> tuple[List[tuple], bool]:
    """(inputs, exhaustive): every input of the model's domain, or a sample.

    Args:
      compiled: the model; its vocab and max_seq_len define the domain.
      max_inputs: enumerate when the domain has at most this many inputs,
        else draw this many at random (uniform length, then uniform tokens).
      seed: seed of the sample.
      max_seq_len: the longest input (default: the model's max_seq_len).
    """
    interface = running.model_interface(compiled)
    vocab = interface.vocab
    if max_seq_len is None:
        max_seq_len = interface.max_seq_len
    exhaustive = domain_size(len(vocab), max_seq_len) <= max_inputs
    sample = None if exhaustive else max_inputs
    return list(inputs_lib.sequences(vocab, max_seq_len, sample=sample, seed=seed)), exhaustive


def run_padded(
    compiled: assembled.AssembledTransformerModel,
    inputs: Sequence[Sequence[Any]],
    batch_size: int = 1024,
) -> Iterator[Tuple[model.CompiledTransformerModelOutput, np.ndarray]]:
    """Yields (model output, real-position mask [B, T]) over batches of inputs.

    Every batch has the same shape [batch_size, max_seq_len + 1] (short
    batches are filled with copies of an input marked unreal), so the
    model's forward pass compiles once whatever the number of inputs.
    """
    for start in range(0, len(inputs), batch_size):
        chunk = list(inputs[start : start + batch_size])
        num_real = len(chunk)
        chunk += [chunk[0]] * (batch_size - num_real)
        ids = running.encode_padded(compiled, chunk)
        valid = np.zeros(ids.shape, dtype=bool)
        for row, x in enumerate(chunk[:num_real]):
            valid[row, : len(x) + 1] = True
        yield compiled.forward(compiled.params, jnp.asarray(ids)), valid


def residual_states(
    compiled: assembled.AssembledTransformerModel,
    inputs: Sequence[Sequence[Any]],
    batch_size: int = 1024,
) -> Iterator[np.ndarray]:
    """Yields [N, D] float64 blocks of residual states at real positions.

    The states are the input embeddings and the residual after every
    sublayer; positions are BOS and the input tokens, never padding.
    """
    for out, valid in run_padded(compiled, inputs, batch_size):
        states = out.transformer_output
        for block in (states.input_embeddings, *states.residuals):
            yield np.asarray(block, dtype=np.float64)[valid]


def exact_compression(
    compiled: assembled.AssembledTransformerModel,
    inputs: Optional[Sequence[Sequence[Any]]] = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    max_inputs: int = DEFAULT_MAX_INPUTS,
    seed: int = 0,
) -> ExactCompression:
    """The orthonormal basis of the residual states on `inputs`.

    Args:
      compiled: the compiled model.
      inputs: token sequences without BOS; by default every input of the
        model's domain (or a seeded sample of `max_inputs` when larger).
      tolerance: singular values <= tolerance * the largest count as zero.
      max_inputs: see `domain_inputs`.
      seed: seed of that sample.

    Returns:
      The basis; `w` is exact on every input whose states were collected.

    Raises:
      ValueError: no inputs, or a tolerance outside (0, 1).
    """
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}.")
    exhaustive = False
    if inputs is None:
        inputs, exhaustive = domain_inputs(compiled, max_inputs=max_inputs, seed=seed)
    inputs = [tuple(x) for x in inputs]
    if not inputs:
        raise ValueError("inputs is empty: give at least one input sequence (without BOS).")
    residual_size = len(compiled.residual_labels)
    # The Gram matrix (D x D, float64) accumulates in one pass with constant
    # memory; its eigenvalues are the squared singular values of the states.
    gram = np.zeros((residual_size, residual_size))
    num_states = 0
    for block in residual_states(compiled, inputs):
        gram += block.T @ block
        num_states += block.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1]
    singular_values = np.sqrt(np.clip(eigenvalues[order], 0.0, None))
    basis = eigenvectors[:, order].T  # rows
    # Fix each row's sign (eigh's is arbitrary): largest entry positive.
    signs = np.sign(basis[np.arange(residual_size), np.argmax(np.abs(basis), axis=1)])
    basis = basis * np.where(signs == 0, 1.0, signs)[:, None]
    largest = singular_values[0] if singular_values.size else 0.0
    d_exact = int(np.sum(singular_values > tolerance * largest)) if largest > 0 else 0
    return ExactCompression(
        basis=basis.astype(np.float32),
        singular_values=singular_values,
        d_exact=max(d_exact, 1),
        num_states=num_states,
        num_inputs=len(inputs),
        exhaustive=exhaustive,
        tolerance=tolerance,
    )


def spectrum_gap(exact: ExactCompression) -> float:
    """log10 of (last kept / first dropped) singular value: how clear the rank is."""
    kept = exact.singular_values[exact.d_exact - 1]
    if exact.d_exact >= exact.residual_size:
        return math.inf
    dropped = exact.singular_values[exact.d_exact]
    return math.inf if dropped <= 0 else math.log10(kept / dropped)
