"""MLPs that compute Map / SequenceMap on categorical (one-hot) inputs.

A categorical SOp's value is a one-hot over its space, so any function of it
is a table lookup: one hidden neuron per input value copies the one-hot
(`relu(onehot) = onehot`), and the second layer writes the table entry.

For a SequenceMap of two one-hots x and y, the neuron for the pair (i, j) is
`relu(x_i + y_j - one)`: 1 exactly when x is value i and y is value j, else
0 (the sum is at most 1 otherwise). Its output row is the one-hot of
`operation(i, j)`.

Hidden directions are named so that MLPs placed in the same layer do not
collide: `map_categorical_mlp` and `map_categorical_to_numerical_mlp` use
`_hidden_{output name}_`, `sequence_map_categorical_mlp` uses its
`hidden_name` argument verbatim.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np

from tracr.craft import bases, transformers, vectorspace_fns

_ONE_SPACE = bases.VectorSpaceWithBasis.from_names(["one"])


def _hidden_name_for(output_space: bases.VectorSpaceWithBasis) -> bases.Name:
    """A hidden name unique to the block writing `output_space`."""
    if output_space.num_dims == 0:
        return "__hidden__"
    return f"_hidden_{output_space.basis[0].name}_"


def _labels(space: bases.VectorSpaceWithBasis) -> List[bases.Value]:
    """Short, unique labels for hidden directions: the values, if distinct."""
    values = [d.value for d in space.basis]
    try:
        if len(set(values)) == len(values):
            return values
    except TypeError:
        pass
    return [(d.name, d.value) for d in space.basis]


def _output_columns(
    outputs: List[Optional[bases.BasisDirection]], output_space: bases.VectorSpaceWithBasis
) -> np.ndarray:
    """Output column per hidden neuron; -1 where the neuron writes nothing."""
    index = output_space.index_by_direction
    return np.fromiter(
        (index.get(o, -1) if isinstance(o, bases.BasisDirection) else -1 for o in outputs),
        dtype=np.intp,
        count=len(outputs),
    )


def _lookup_matrix(columns: np.ndarray, num_outputs: int) -> np.ndarray:
    matrix = np.zeros((len(columns), num_outputs))
    rows = np.flatnonzero(columns >= 0)
    matrix[rows, columns[rows]] = 1.0
    return matrix


def map_categorical_mlp(
    input_space: bases.VectorSpaceWithBasis,
    output_space: bases.VectorSpaceWithBasis,
    operation: Callable[[bases.BasisDirection], bases.BasisDirection],
) -> transformers.MLP:
    """An MLP computing a categorical -> categorical Map as a lookup table.

    Args:
      input_space: the input SOp's one-hot space.
      output_space: the output SOp's one-hot space.
      operation: maps an input direction to an output direction. Returning None
        or a direction outside `output_space` writes nothing (all zeros).

    Returns:
      An MLP with one hidden neuron per input direction, named
      `_hidden_{output name}_:{input value}`.
    """
    hidden_name = _hidden_name_for(output_space)
    hidden_space = bases.VectorSpaceWithBasis(
        [bases.BasisDirection(hidden_name, label) for label in _labels(input_space)]
    )
    fst = vectorspace_fns.Linear(input_space, hidden_space, np.eye(input_space.num_dims))
    columns = _output_columns([operation(d) for d in input_space.basis], output_space)
    snd = vectorspace_fns.Linear(
        hidden_space, output_space, _lookup_matrix(columns, output_space.num_dims)
    )
    return transformers.MLP(fst, snd)


def map_categorical_to_numerical_mlp(
    input_space: bases.VectorSpaceWithBasis,
    output_space: bases.VectorSpaceWithBasis,
    operation: Callable[[bases.Value], float],
) -> transformers.MLP:
    """An MLP computing a categorical -> numerical Map.

    Args:
      input_space: the input SOp's one-hot space.
      output_space: the single direction that receives `operation(value)`.
      operation: maps an input *value* (not direction) to a number; None
        writes 0.

    Raises:
      ValueError: if `output_space` is not one-dimensional.
    """
    bases.ensure_dims(output_space, 1, "map_categorical_to_numerical_mlp: output_space")
    hidden_name = _hidden_name_for(output_space)
    hidden_space = bases.VectorSpaceWithBasis(
        [bases.BasisDirection(hidden_name, label) for label in _labels(input_space)]
    )
    fst = vectorspace_fns.Linear(input_space, hidden_space, np.eye(input_space.num_dims))
    outputs = [operation(d.value) for d in input_space.basis]
    column = np.array([0.0 if o is None else float(o) for o in outputs])
    snd = vectorspace_fns.Linear(hidden_space, output_space, column[:, None])
    return transformers.MLP(fst, snd)


def sequence_map_categorical_mlp(
    input1_space: bases.VectorSpaceWithBasis,
    input2_space: bases.VectorSpaceWithBasis,
    output_space: bases.VectorSpaceWithBasis,
    operation: Callable[[bases.BasisDirection, bases.BasisDirection], bases.BasisDirection],
    one_space: bases.VectorSpaceWithBasis = _ONE_SPACE,
    hidden_name: bases.Name = "__hidden__",
) -> transformers.MLP:
    """An MLP computing a categorical SequenceMap as a lookup over value pairs.

    Hidden neuron (i, j) (index `i * |input2| + j`) is
    `relu(x_i + y_j - one)`, which is 1 exactly when the first input is
    direction i and the second is direction j. The input spaces must be
    disjoint, as in Tracr (SequenceMap(f, x, x) is a Map of f(x, x)).

    Args:
      input1_space: the first SOp's one-hot space.
      input2_space: the second SOp's one-hot space.
      output_space: the output SOp's one-hot space.
      operation: maps (direction of input 1, direction of input 2) to an output
        direction; None or a direction outside `output_space` writes nothing.
      one_space: the single always-one direction.
      hidden_name: name of the hidden directions (used verbatim; give each MLP
        of a layer its own, e.g. derived from the expression label).

    Returns:
      An MLP with |input1| * |input2| hidden neurons
      `hidden_name:(label1, label2)`.

    Raises:
      ValueError: if the input spaces share a direction.
    """
    if not set(input1_space.basis).isdisjoint(input2_space.basis):
        raise ValueError(
            "Input spaces to a SequenceMap must be disjoint. If input spaces are the same, "
            "use Map instead! (sequence_map_categorical_mlp: input1_space and input2_space "
            "share a direction; build a map_categorical_mlp of f(x, x).)"
        )
    bases.ensure_dims(one_space, 1, "sequence_map_categorical_mlp: one_space")
    n1, n2 = input1_space.num_dims, input2_space.num_dims
    input_space = bases.join_vector_spaces(input1_space, input2_space, one_space)
    index = input_space.index_by_direction
    rows1 = bases._index_array(index, input1_space.basis)
    rows2 = bases._index_array(index, input2_space.basis)
    num_hidden = n1 * n2
    hidden_cols = np.arange(num_hidden)

    fst_matrix = np.zeros((input_space.num_dims, num_hidden))
    fst_matrix[np.repeat(rows1, n2), hidden_cols] += 1.0
    fst_matrix[np.tile(rows2, n1), hidden_cols] += 1.0
    fst_matrix[index[one_space.basis[0]], :] -= 1.0

    labels1, labels2 = _labels(input1_space), _labels(input2_space)
    hidden_space = bases.VectorSpaceWithBasis(
        [bases.BasisDirection(hidden_name, (l1, l2)) for l1 in labels1 for l2 in labels2]
    )
    outputs = [operation(d1, d2) for d1 in input1_space.basis for d2 in input2_space.basis]
    columns = _output_columns(outputs, output_space)

    fst = vectorspace_fns.Linear(input_space, hidden_space, fst_matrix)
    snd = vectorspace_fns.Linear(
        hidden_space, output_space, _lookup_matrix(columns, output_space.num_dims)
    )
    return transformers.MLP(fst, snd)
