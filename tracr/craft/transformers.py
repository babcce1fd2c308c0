"""Transformer blocks over named residual spaces (the craft IR).

A block reads named subspaces of the residual stream and returns what it
writes, as a vector over its own `residual_space`:

* `AttentionHead`: scores queries against keys with a `ScalarBilinear`
  `w_qk`, softmaxes over keys, and moves values through a `Linear` `w_ov`.
* `MultiAttentionHead`: heads that run in the same attention sublayer.
* `MLP`: `relu(x @ fst) @ snd` (no biases; the constant `one` direction in the
  residual plays that role).
* `SeriesWithResiduals`: blocks applied one after another, each adding its
  output to the residual stream; `apply` returns the final stream.

Blocks are applied by the compiler to the *whole* residual stream, so
`apply` tolerates (and ignores) directions outside the block's spaces.
Magnitudes are `[..., T, D]`: optional batch dims, positions T, directions D.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

from tracr.craft import bases, vectorspace_fns

project = vectorspace_fns.project


def relu(x: bases.VectorInBasis) -> bases.VectorInBasis:
    """Elementwise max(x, 0)."""
    return x.copy_with_new_magnitudes(np.maximum(x.magnitudes, 0))


def _check_subspace(
    space: bases.VectorSpaceWithBasis, residual: bases.VectorSpaceWithBasis, block: str, what: str
) -> None:
    if not space.issubspace(residual):
        missing = [d for d in space.basis if d not in residual.basis_set]
        raise ValueError(
            f"{block}: {what} has directions missing from residual_space: "
            f"{bases._describe(missing)}. Pass a residual_space that contains them, "
            "or residual_space=None to derive it."
        )


def _embed(out: bases.VectorInBasis, residual: bases.VectorSpaceWithBasis) -> bases.VectorInBasis:
    return out.project(residual)


class Block(abc.ABC):
    """A part of a transformer acting on a named residual space."""

    residual_space: bases.VectorSpaceWithBasis

    @abc.abstractmethod
    def apply(self, x: bases.VectorInBasis) -> bases.VectorInBasis:
        """What the block writes, given the residual stream `x`."""


@dataclasses.dataclass(frozen=True, eq=False)
class AttentionHead(Block):
    """One attention head.

    `residual_space` defaults to the join of the four spaces of `w_qk` and
    `w_ov`. With `causal=True`, position q attends only to keys k <= q.
    """

    w_qk: vectorspace_fns.ScalarBilinear
    w_ov: vectorspace_fns.Linear
    residual_space: Optional[bases.VectorSpaceWithBasis] = None
    causal: bool = False

    def __post_init__(self):
        spaces = {
            "w_qk.left_space": self.w_qk.left_space,
            "w_qk.right_space": self.w_qk.right_space,
            "w_ov.input_space": self.w_ov.input_space,
            "w_ov.output_space": self.w_ov.output_space,
        }
        if self.residual_space is None:
            object.__setattr__(self, "residual_space", bases.join_vector_spaces(*spaces.values()))
        else:
            for what, space in spaces.items():
                _check_subspace(space, self.residual_space, "AttentionHead", what)

    def apply(self, x: bases.VectorInBasis) -> bases.VectorInBasis:
        """Runs the head on a residual stream `x` with magnitudes `[..., T, D]`.

        Returns:
          The head's output over `residual_space`, magnitudes `[..., T, D_res]`;
          only `w_ov.output_space` is non-zero.
        """
        if x.magnitudes.ndim < 2:
            raise ValueError(
                f"AttentionHead.apply needs magnitudes [..., T, D] (a sequence of "
                f"positions), got shape {x.magnitudes.shape}; add a position axis."
            )
        queries = x.project(self.w_qk.left_space).magnitudes  # [..., T, L]
        keys = x.project(self.w_qk.right_space).magnitudes  # [..., T, R]
        logits = (queries @ self.w_qk.matrix) @ np.swapaxes(keys, -1, -2)  # [..., T, T]
        if self.causal:
            num_positions = logits.shape[-1]
            future = np.triu(np.ones((num_positions, num_positions), dtype=bool), k=1)
            logits = np.where(future, -np.inf, logits)
        logits = logits - logits.max(axis=-1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=-1, keepdims=True)
        values = x.project(self.w_ov.input_space).magnitudes @ self.w_ov.matrix  # [..., T, O]
        out = self.w_ov.output_space.make_vector(weights @ values)
        return _embed(out, self.residual_space)

    def w_ov_residual(self, x: bases.VectorInBasis) -> bases.VectorInBasis:
        """`w_ov` as a map from and to the residual space."""
        out = self.w_ov(x.project(self.w_ov.input_space))
        return _embed(out, self.residual_space)

    @property
    def num_heads(self) -> int:
        return 1

    def as_multi(self) -> "MultiAttentionHead":
        return MultiAttentionHead([self])


@dataclasses.dataclass(frozen=True, eq=False)
class MultiAttentionHead(Block):
    """Heads of one attention sublayer; the output is the sum of the heads'."""

    sub_blocks: List[Union[AttentionHead, "MultiAttentionHead"]]
    residual_space: bases.VectorSpaceWithBasis = dataclasses.field(init=False)

    def __post_init__(self):
        sub_blocks = list(self.sub_blocks)
        for block in sub_blocks:
            if not isinstance(block, (AttentionHead, MultiAttentionHead)):
                raise TypeError(
                    f"MultiAttentionHead: sub_blocks must be attention heads, got "
                    f"{type(block).__name__}."
                )
        object.__setattr__(self, "sub_blocks", sub_blocks)
        object.__setattr__(
            self,
            "residual_space",
            bases.join_vector_spaces(*[b.residual_space for b in sub_blocks]),
        )

    def apply(self, x: bases.VectorInBasis) -> bases.VectorInBasis:
        lead = x.magnitudes.shape[:-1]
        total = np.zeros(lead + (self.residual_space.num_dims,), dtype=x.magnitudes.dtype)
        for head in self.heads():
            out = head.apply(x)
            cols = bases._index_array(self.residual_space.index_by_direction, out.basis_directions)
            total[..., cols] += out.magnitudes
        return self.residual_space.make_vector(total)

    @property
    def num_heads(self) -> int:
        return sum(block.num_heads for block in self.sub_blocks)

    def heads(self) -> Iterable[AttentionHead]:
        """All heads, with nested MultiAttentionHeads flattened."""
        for block in self.sub_blocks:
            if isinstance(block, AttentionHead):
                yield block
            else:
                yield from block.heads()

    def as_multi(self) -> "MultiAttentionHead":
        return self


@dataclasses.dataclass(frozen=True, eq=False)
class MLP(Block):
    """`relu(x @ fst) @ snd`; the hidden space is `fst.output_space`."""

    fst: vectorspace_fns.Linear
    snd: vectorspace_fns.Linear
    residual_space: Optional[bases.VectorSpaceWithBasis] = None

    def __post_init__(self):
        if self.fst.output_space.basis_set != self.snd.input_space.basis_set:
            raise ValueError(
                "MLP: fst.output_space and snd.input_space must be the same hidden space; "
                f"fst writes {bases._describe(self.fst.output_space.basis)}, snd reads "
                f"{bases._describe(self.snd.input_space.basis)}."
            )
        if self.residual_space is None:
            object.__setattr__(
                self,
                "residual_space",
                bases.join_vector_spaces(self.fst.input_space, self.snd.output_space),
            )
        else:
            _check_subspace(self.fst.input_space, self.residual_space, "MLP", "fst.input_space")
            _check_subspace(self.snd.output_space, self.residual_space, "MLP", "snd.output_space")

    def apply(self, x: bases.VectorInBasis) -> bases.VectorInBasis:
        """The MLP's output over `residual_space` for a residual stream `x`."""
        hidden = relu(self.fst(x.project(self.fst.input_space)))
        return _embed(self.snd(hidden), self.residual_space)

    @classmethod
    def combine_in_parallel(cls, mlps: Sequence["MLP"]) -> "MLP":
        """One MLP computing all of `mlps` side by side.

        Its hidden space is the union of theirs, which must be disjoint: a shared
        hidden direction would mix two MLPs' neurons.

        Raises:
          ValueError: if two MLPs share a hidden direction.
        """
        mlps = list(mlps)
        if not mlps:
            raise ValueError("MLP.combine_in_parallel needs at least one MLP.")
        try:
            bases.direct_sum(*[m.fst.output_space for m in mlps])
        except ValueError as e:
            raise ValueError(
                f"MLP.combine_in_parallel: hidden directions collide ({e}). Give each MLP "
                "its own hidden_name (the compiler uses one derived from the expression "
                "label)."
            ) from None
        fst = vectorspace_fns.Linear.combine_in_parallel([m.fst for m in mlps])
        snd = vectorspace_fns.Linear.combine_in_parallel([m.snd for m in mlps])
        residual_space = bases.join_vector_spaces(*[m.residual_space for m in mlps])
        return cls(fst, snd, residual_space)


HalfLayerBlock = Union[MLP, AttentionHead, MultiAttentionHead]


@dataclasses.dataclass(frozen=True, eq=False)
class SeriesWithResiduals(Block):
    """Blocks applied in sequence, each adding its output to the residual."""

    blocks: List[HalfLayerBlock]
    residual_space: bases.VectorSpaceWithBasis = dataclasses.field(init=False)

    def __post_init__(self):
        blocks = list(self.blocks)
        for block in blocks:
            if not isinstance(block, (MLP, AttentionHead, MultiAttentionHead, SeriesWithResiduals)):
                raise TypeError(
                    f"SeriesWithResiduals: blocks must be MLP, AttentionHead, "
                    f"MultiAttentionHead or SeriesWithResiduals, got "
                    f"{type(block).__name__}."
                )
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(
            self, "residual_space", bases.join_vector_spaces(*[b.residual_space for b in blocks])
        )

    def apply(self, x: bases.VectorInBasis) -> bases.VectorInBasis:
        """The residual stream after all blocks.

        The result lists `residual_space`'s directions first (missing ones start
        at zero), then any extra directions of `x`, which pass through unchanged.
        """
        extra = [d for d in x.basis_directions if d not in self.residual_space.basis_set]
        if extra:
            stream = x.project(list(self.residual_space.basis) + extra)
        else:
            stream = x.project(self.residual_space)
        magnitudes = stream.magnitudes.copy()
        index = stream.index_by_direction
        for block in self.blocks:
            current = stream.copy_with_new_magnitudes(magnitudes)
            out = block.apply(current)
            cols = bases._index_array(index, out.basis_directions)
            # `out` is freshly computed, so updating in place cannot alias it.
            if isinstance(block, SeriesWithResiduals):
                # A nested series returns the whole stream, not a delta.
                magnitudes[..., cols] = out.magnitudes
            else:
                magnitudes[..., cols] += out.magnitudes
        return stream.copy_with_new_magnitudes(magnitudes)


__all__ = (
    "Block",
    "AttentionHead",
    "MultiAttentionHead",
    "MLP",
    "SeriesWithResiduals",
    "HalfLayerBlock",
    "relu",
    "project",
)
