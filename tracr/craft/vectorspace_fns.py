"""Linear and bilinear maps between named vector spaces.

A `Linear` holds a dense matrix `[input dims, output dims]` whose rows and
columns follow the bases of its input and output spaces; applying it is
`x @ matrix`. A `ScalarBilinear` holds `[left dims, right dims]` and computes
`x @ matrix @ y` (the attention score of a query `x` and a key `y`).

Matrices are built with numpy index arrays (direction -> row), so that spaces
with thousands of directions cost a few numpy calls rather than thousands of
Python objects.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np

from tracr.craft import bases

VectorSpaceWithBasis = bases.VectorSpaceWithBasis
VectorInBasis = bases.VectorInBasis
BasisDirection = bases.BasisDirection


def _check_in_space(x: VectorInBasis, space: VectorSpaceWithBasis, what: str) -> None:
    if not isinstance(x, VectorInBasis):
        raise TypeError(f"{what}: expected a VectorInBasis, got {type(x).__name__}.")
    if x.basis_directions is space.basis or x.basis_set <= space.basis_set:
        return
    outside = [d for d in x.basis_directions if d not in space.basis_set]
    raise bases.BasisMismatchError(
        f"{what}: the vector has directions outside the input space: "
        f"{bases._describe(outside)}. Project it first with x.project(space)."
    )


def _check_matrix(
    matrix: np.ndarray,
    rows: VectorSpaceWithBasis,
    cols: VectorSpaceWithBasis,
    what: str,
    row_name: str,
    col_name: str,
) -> np.ndarray:
    matrix = np.asarray(matrix)
    if not np.issubdtype(matrix.dtype, np.floating):
        matrix = matrix.astype(np.float64)
    expected = (rows.num_dims, cols.num_dims)
    if matrix.shape != expected:
        raise ValueError(
            f"{what}: matrix has shape {matrix.shape} but must be "
            f"[{row_name}.num_dims, {col_name}.num_dims] = {list(expected)}; build "
            f"it with rows in {row_name}.basis order and columns in "
            f"{col_name}.basis order."
        )
    return matrix


class VectorFunction(abc.ABC):
    """A function from one named vector space to another."""

    input_space: VectorSpaceWithBasis
    output_space: VectorSpaceWithBasis

    @abc.abstractmethod
    def __call__(self, x: VectorInBasis) -> VectorInBasis:
        """Evaluates the function at `x`, a vector in `input_space`."""


@dataclasses.dataclass(frozen=True, eq=False)
class Linear(VectorFunction):
    """A linear map `x -> x @ matrix`, matrix `[input dims, output dims]`."""

    input_space: VectorSpaceWithBasis
    output_space: VectorSpaceWithBasis
    matrix: np.ndarray

    def __post_init__(self) -> None:
        matrix = _check_matrix(
            self.matrix,
            self.input_space,
            self.output_space,
            "Linear",
            "input_space",
            "output_space",
        )
        object.__setattr__(self, "matrix", matrix)

    def __call__(self, x: VectorInBasis) -> VectorInBasis:
        """Applies the map to `x` (magnitudes `[..., input dims]`).

        Raises:
          ValueError: if `x` has directions outside `input_space`. Blocks applied
            to a whole residual stream project first; a bare Linear does not guess.
        """
        _check_in_space(x, self.input_space, "Linear")
        x = x.project(self.input_space)
        return self.output_space.make_vector(x.magnitudes @ self.matrix)

    @classmethod
    def from_action(
        cls,
        input_space: VectorSpaceWithBasis,
        output_space: VectorSpaceWithBasis,
        action: Callable[[BasisDirection], Optional[VectorInBasis]],
    ) -> "Linear":
        """Builds the map sending each input direction `d` to `action(d)`.

        `action(d)` returns a vector whose directions lie in `output_space`, or
        None (or 0) for "maps to zero".
        """
        matrix = np.zeros((input_space.num_dims, output_space.num_dims))
        out_index = output_space.index_by_direction
        for i, direction in enumerate(input_space.basis):
            out = action(direction)
            if out is None or (
                not isinstance(out, VectorInBasis) and np.isscalar(out) and out == 0
            ):
                continue
            if not isinstance(out, VectorInBasis):
                raise TypeError(
                    f"Linear.from_action: action({direction}) returned "
                    f"{type(out).__name__}; return a VectorInBasis or None."
                )
            if out.magnitudes.ndim != 1:
                raise ValueError(
                    f"Linear.from_action: action({direction}) returned a batch "
                    f"of shape {out.magnitudes.shape}; return a single vector."
                )
            if out.basis_directions is output_space.basis:
                matrix[i] = out.magnitudes
                continue
            cols = bases._index_array(out_index, out.basis_directions)
            if (cols < 0).any():
                outside = [d for d, c in zip(out.basis_directions, cols, strict=True) if c < 0]
                raise bases.BasisMismatchError(
                    f"Linear.from_action: action({direction}) has directions outside "
                    f"output_space: {bases._describe(outside)}."
                )
            matrix[i, cols] = out.magnitudes
        return cls(input_space, output_space, matrix)

    @classmethod
    def combine_in_parallel(cls, fns: Sequence["Linear"]) -> "Linear":
        """The sum of `fns`, each acting on its own part of the joined spaces."""
        fns = list(fns)
        input_space = bases.join_vector_spaces(*[fn.input_space for fn in fns])
        output_space = bases.join_vector_spaces(*[fn.output_space for fn in fns])
        matrix = np.zeros((input_space.num_dims, output_space.num_dims))
        for fn in fns:
            rows = bases._index_array(input_space.index_by_direction, fn.input_space.basis)
            cols = bases._index_array(output_space.index_by_direction, fn.output_space.basis)
            matrix[np.ix_(rows, cols)] += fn.matrix
        return cls(input_space, output_space, matrix)


def project(from_space: VectorSpaceWithBasis, to_space: VectorSpaceWithBasis) -> Linear:
    """The linear map keeping the directions both spaces share and dropping the rest."""
    matrix = np.zeros((from_space.num_dims, to_space.num_dims))
    cols = bases._index_array(to_space.index_by_direction, from_space.basis)
    rows = np.flatnonzero(cols >= 0)
    matrix[rows, cols[rows]] = 1.0
    return Linear(from_space, to_space, matrix)


@dataclasses.dataclass(frozen=True, eq=False)
class ScalarBilinear:
    """A bilinear form `(x, y) -> x @ matrix @ y`, matrix `[left dims, right dims]`."""

    left_space: VectorSpaceWithBasis
    right_space: VectorSpaceWithBasis
    matrix: np.ndarray

    def __post_init__(self):
        matrix = _check_matrix(
            self.matrix,
            self.left_space,
            self.right_space,
            "ScalarBilinear",
            "left_space",
            "right_space",
        )
        object.__setattr__(self, "matrix", matrix)

    def __call__(self, x: VectorInBasis, y: VectorInBasis) -> float:
        """`x @ matrix @ y`; with batch dimensions, one score per batch entry."""
        _check_in_space(x, self.left_space, "ScalarBilinear (left argument)")
        _check_in_space(y, self.right_space, "ScalarBilinear (right argument)")
        x = x.project(self.left_space).magnitudes
        y = y.project(self.right_space).magnitudes
        result = np.einsum("...l,lr,...r->...", x, self.matrix, y)
        return float(result) if result.ndim == 0 else result

    @classmethod
    def from_action(
        cls,
        left_space: VectorSpaceWithBasis,
        right_space: VectorSpaceWithBasis,
        action: Callable[[BasisDirection, BasisDirection], float],
    ) -> "ScalarBilinear":
        """Builds the form whose entry for directions (l, r) is `action(l, r)`."""
        matrix = np.array(
            [[float(action(lft, rgt)) for rgt in right_space.basis] for lft in left_space.basis],
            dtype=np.float64,
        )
        matrix = matrix.reshape(left_space.num_dims, right_space.num_dims)
        return cls(left_space, right_space, matrix)


__all__ = (
    "VectorFunction",
    "Linear",
    "ScalarBilinear",
    "project",
    "VectorSpaceWithBasis",
    "VectorInBasis",
    "BasisDirection",
)
