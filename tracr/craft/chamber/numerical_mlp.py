"""MLPs that compute Map / LinearSequenceMap on numerical inputs.

A numerical SOp is one direction whose magnitude is the value x. An MLP can
compute an arbitrary f on the finitely many values x may take with a
*discretising* hidden layer, a sum of sharp steps placed between neighbouring
values.

Derivation. Let v_0 < v_1 < ... < v_n be the distinct input values (values
where f raises ArithmeticError or returns None are dropped), with outputs
o_i = f(v_i). Put a breakpoint between each pair of neighbours,

    b_i = (v_{i-1} + v_i) / 2,    s_i = L / (v_i - v_{i-1})     (i = 1..n),

where L = `large_number` is the sharpness *in units of the local gap*.
Two ReLUs make a clamped ramp,

    step_i(x) = relu(s_i (x - b_i) + 1/2) - relu(s_i (x - b_i) - 1/2)
              = clamp(s_i (x - b_i) + 1/2, 0, 1).

At x = v_j, s_i (x - b_i) is >= L/2 for j >= i and <= -L/2 for j < i, so
for L >= 1 the step is exactly 1 or 0: step_i(v_j) = [j >= i]. Hence

    f(v_j) = o_0 + sum_{i=1..n} (o_i - o_{i-1}) step_i(v_j)

exactly, for every value set, and a categorical output is produced the same
way with one-hots: onehot(o_0) + sum_i (onehot(o_i) - onehot(o_{i-1})) step_i.
A breakpoint where f does not change (o_i = o_{i-1}) has no jump, so it gets
no neurons: the hidden layer grows with the number of changes of f, not with
the number of input values.
The constant term comes from a hidden neuron relu(one) = 1. The step
saturates within gap / (2L) of its breakpoint, so an input off by up to
(1/2 - 1/(2L)) of the local gap still gives the exact output. One value
(n = 0) gives a constant.

Float32 note: a ReLU's activation grows with its distance from its kink, and
float32 rounds it with relative error ~6e-8, so neurons active far from
their breakpoint add error. Since clamp(t + 1/2) = 1 - clamp(1/2 - t), each
step can equally be built from the mirrored pair relu(-s_i (x - b_i) ± 1/2)
(active below b_i) with its 1 moved into the constant neuron. We pick, per
breakpoint, the side whose active region holds the smaller |x|, which keeps
activations ~L b_i / gap instead of ~L v_n / gap for values clustered near 0
(e.g. 1/(w+1) in SelectorWidth). The function computed is identical.

Choosing L. Two things depend on it, both in units of the local gap g_i:

* tolerance: an input off by less than T(L) = (g/2)(1 - 1/L) still gives the
  exact output (L = 1 tolerates nothing, L -> infinity half the gap);
* float error: a step's pre-activations are sums of terms of size
  s_i |x| and s_i |b_i|, each rounded with relative error u (the unit
  roundoff, 2^-24 in float32), so an active pair's output, exactly 0 or 1
  in exact arithmetic, is off by ~u s_i (|x| + |b_i|). Summed over the pairs
  active at x, the output error is

      E(x) <~ 4 u L sum_{i active} |o_i - o_{i-1}| max(|x|, |b_i|) / g_i,

  proportional to L.

The ratio T(L) / E(L) is proportional to (1 - 1/L) / L, which is largest at
L = 2 (`OPTIMAL_LARGE_NUMBER`), for every value set: the step then tolerates
input errors up to a quarter of the local gap, and its float error bound is
50 times smaller than at L = 100 (numerical SelectorWidth at max_seq_len 100,
measured in float32: output error 3.7e-3 at L = 100, beyond the 1e-3
decoding tolerance, and 2.9e-4 at L = 2). The compiler uses
L = 2 unless `mlp_exactness` says otherwise, and budgets at most g/8 (half of
T(2)) for upstream errors (see `tracr.compiler.precision`).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Callable, Iterable, List, Tuple

import numpy as np

from tracr.craft import bases, transformers, vectorspace_fns
from tracr.utils.value_sets import SortedNumbers

# The sharpness that maximises input tolerance per unit of float error (see the
# module docstring); `large_number` arguments default to Tracr's 100.
OPTIMAL_LARGE_NUMBER = 2.0


@dataclasses.dataclass
class DiscretisingLayerMaterials:
    """The first layer of a discretising MLP and what it discretises.

    Attributes:
      action: maps the input direction or the `one` direction to its row of the
        first layer (a vector in `hidden_space`).
      hidden_space: the hidden neurons: `hidden_name:start` (the constant), then
        `hidden_name:(i, 0)` and `hidden_name:(i, 1)` for each breakpoint i in
        `steps`.
      output_values: f(v_0), ..., f(v_n) for the sorted kept input values.
      input_values: v_0 < ... < v_n.
      mirrored: per step, whether it is built from the mirrored pair (active
        below its breakpoint); see the module docstring.
      steps: the breakpoints i (between v_{i-1} and v_i) that have a step:
        those where f(v_{i-1}) != f(v_i).
    """

    action: Callable[[bases.BasisDirection], bases.VectorInBasis]
    hidden_space: bases.VectorSpaceWithBasis
    output_values: List[float]
    input_values: List[float] = dataclasses.field(default_factory=list)
    mirrored: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, bool))
    steps: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.intp))


def _distinct_sorted(values: List[object]) -> Tuple[List[float], List[object]]:
    """The distinct float(v), sorted, each with the first value v that gives it."""
    if set(map(type, values)) <= {int, float}:
        # The common case (value sets of means: millions of ints and floats),
        # sorted and deduplicated in numpy. float64 holds float(v) exactly.
        try:
            array = np.array(values, dtype=np.float64)
        except OverflowError:  # an int too large for a float: let float() report it
            array = None
        if array is not None and not np.isnan(array).any():
            # A stable sort keeps equal values in input order, so the first of
            # each run of equal keys is the first value that gives it.
            order = np.argsort(array, kind="stable")
            ordered = array[order]
            first = np.ones(len(ordered), dtype=bool)
            first[1:] = ordered[1:] != ordered[:-1]
            return ordered[first].tolist(), [values[i] for i in order[first].tolist()]
    by_float = {}
    for value in values:
        try:
            key = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"numerical MLP: input value {value!r} is not a number; a "
                "numerical SOp's value set must hold numbers."
            ) from None
        by_float.setdefault(key, value)
    keys = sorted(by_float)
    return keys, [by_float[key] for key in keys]


def _sorted_values_and_outputs(input_value_set: Iterable[float], f: Callable[[float], object]):
    """Distinct numeric input values, sorted, with f of each (failures dropped)."""
    if isinstance(input_value_set, SortedNumbers):  # already distinct and sorted
        keys, firsts = input_value_set.array.tolist(), input_value_set.tolist()
    else:
        keys, firsts = _distinct_sorted([v for v in input_value_set if v is not None])
    try:  # fast path: f gives a value everywhere (mapped in C)
        outputs = list(map(f, firsts))
    except ArithmeticError:
        outputs = None
    if outputs is not None and not _has_none(outputs):
        return keys, outputs
    values, outputs = [], []
    for key, value in zip(keys, firsts):
        try:
            out = f(value)
        except ArithmeticError:
            continue
        if out is None:
            continue
        values.append(key)
        outputs.append(out)
    return values, outputs


def _get_discretising_layer(
    input_value_set: Iterable[float],
    f: Callable[[float], object],
    hidden_name: bases.Name,
    one_direction: bases.BasisDirection,
    large_number: float,
) -> DiscretisingLayerMaterials:
    """Builds the hidden layer of steps described in the module docstring."""
    if not large_number >= 1:
        raise ValueError(
            f"large_number must be >= 1 for the steps to be exact, got "
            f"{large_number}; it is the step sharpness in units of the gap "
            "between neighbouring input values (default 100)."
        )
    values, outputs = _sorted_values_and_outputs(input_value_set, f)
    v = np.asarray(values, dtype=np.float64)
    # Only breakpoints where f changes get a step: a step whose jump
    # o_i - o_{i-1} is zero has zero output weights, so leaving it out computes
    # the same function everywhere, with fewer neurons (f = x < 0 over a
    # million values needs one step, not a million).
    steps = 1 + np.flatnonzero(_changes(outputs))
    breakpoints = (v[steps - 1] + v[steps]) / 2
    slopes = large_number / (v[steps] - v[steps - 1])
    lowest = abs(v[0]) if len(v) else 0.0
    highest = abs(v[-1]) if len(v) else 0.0
    # Largest |x| seen while the neuron is active: [b, v_n] normally, [v_0, b] mirrored.
    mirrored = np.maximum(lowest, np.abs(breakpoints)) < np.maximum(highest, np.abs(breakpoints))
    sign = np.where(mirrored, -1.0, 1.0)

    hidden = [bases.BasisDirection(hidden_name, "start")]
    for i in steps.tolist():
        hidden.append(bases.BasisDirection(hidden_name, (i, 0)))
        hidden.append(bases.BasisDirection(hidden_name, (i, 1)))
    hidden_space = bases.VectorSpaceWithBasis(hidden)

    # Pre-activations: sign * s (x - b) + 1/2 for (i, 0), ... - 1/2 for (i, 1).
    slope_row = np.zeros(len(hidden))
    slope_row[1::2] = sign * slopes
    slope_row[2::2] = sign * slopes
    bias_row = np.zeros(len(hidden))
    bias_row[0] = 1.0
    bias_row[1::2] = -sign * slopes * breakpoints + 0.5
    bias_row[2::2] = -sign * slopes * breakpoints - 0.5

    def action(direction: bases.BasisDirection) -> bases.VectorInBasis:
        if direction == one_direction:
            return hidden_space.make_vector(bias_row)
        return hidden_space.make_vector(slope_row)

    return DiscretisingLayerMaterials(
        action=action,
        hidden_space=hidden_space,
        output_values=outputs,
        input_values=values,
        mirrored=mirrored,
        steps=steps,
    )


def _same(a: object, b: object) -> bool:
    """Whether two outputs of f are certainly equal (then their step has no jump)."""
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # e.g. arrays, whose == is elementwise
        return False


def _has_none(outputs: List[object]) -> bool:
    try:
        return None in outputs  # compares in C: `is` first, then ==
    except (TypeError, ValueError):  # an output whose == is elementwise
        return any(out is None for out in outputs)


_PLAIN_OUTPUTS = {bool, int, float, str, tuple, type(None)}


def _changes(outputs: List[object]) -> List[bool]:
    """For each pair of neighbouring outputs, whether f may change between them."""
    try:
        if set(map(type, outputs)) <= _PLAIN_OUTPUTS:  # != is `not ==` for these
            return list(map(operator.ne, outputs, outputs[1:]))
        return [not (a == b) for a, b in zip(outputs, outputs[1:])]
    except (TypeError, ValueError):
        return [not _same(a, b) for a, b in zip(outputs, outputs[1:])]


def _second_layer(materials: DiscretisingLayerMaterials, table: np.ndarray) -> np.ndarray:
    """Second-layer matrix `[hidden, K]` given the output table `[n+1, K]`.

    Row `start` gets table[0] plus the jumps of mirrored steps (whose "1 -"
    lives in the constant); pair rows get +-jump, signed by orientation.
    """
    all_jumps = np.diff(table, axis=0)  # [n, K]
    jumps = all_jumps[materials.steps - 1]  # [steps, K]
    skipped = np.ones(len(all_jumps), dtype=bool)
    skipped[materials.steps - 1] = False
    assert not all_jumps[skipped].any(), "a breakpoint without a step has a jump"
    orientation = np.where(materials.mirrored, -1.0, 1.0)[:, None]
    matrix = np.zeros((materials.hidden_space.num_dims, table.shape[1]))
    if len(table):
        matrix[0] = table[0] + jumps[materials.mirrored].sum(axis=0)
    matrix[1::2] = orientation * jumps
    matrix[2::2] = -orientation * jumps
    return matrix


def _first_layer(
    materials: DiscretisingLayerMaterials,
    input_space: bases.VectorSpaceWithBasis,
    one_space: bases.VectorSpaceWithBasis,
) -> vectorspace_fns.Linear:
    return vectorspace_fns.Linear.from_action(
        bases.join_vector_spaces(input_space, one_space), materials.hidden_space, materials.action
    )


def _check_spaces(input_space, one_space, fn_name):
    bases.ensure_dims(input_space, 1, f"{fn_name}: input_space")
    bases.ensure_dims(one_space, 1, f"{fn_name}: one_space")
    if input_space.basis[0] == one_space.basis[0]:
        raise ValueError(
            f"{fn_name}: input_space and one_space must differ, both are {input_space.basis[0]}."
        )


def map_numerical_mlp(
    f: Callable[[float], float],
    input_space: bases.VectorSpaceWithBasis,
    output_space: bases.VectorSpaceWithBasis,
    input_value_set: Iterable[float],
    one_space: bases.VectorSpaceWithBasis,
    large_number: float = 100,
    hidden_name: bases.Name = "__hidden__",
) -> transformers.MLP:
    """An MLP computing a numerical -> numerical Map exactly on `input_value_set`.

    Args:
      f: the function; inputs where it raises ArithmeticError or returns None
        are left out (such inputs read as their nearest kept neighbour).
      input_space: the single input direction.
      output_space: the single output direction.
      input_value_set: every value the input may take.
      one_space: the single always-one direction.
      large_number: step sharpness in units of the local gap (>= 1).
      hidden_name: name of the hidden directions, used verbatim; give each MLP
        of a layer its own.

    Returns:
      An MLP reading `input_space + one_space` and writing `output_space`, with
      hidden directions `hidden_name:start`, `hidden_name:(i, 0|1)`.
    """
    _check_spaces(input_space, one_space, "map_numerical_mlp")
    bases.ensure_dims(output_space, 1, "map_numerical_mlp: output_space")
    materials = _get_discretising_layer(
        input_value_set, f, hidden_name, one_space.basis[0], large_number
    )
    table = np.asarray([float(o) for o in materials.output_values]).reshape(-1, 1)
    snd = vectorspace_fns.Linear(
        materials.hidden_space, output_space, _second_layer(materials, table)
    )
    return transformers.MLP(_first_layer(materials, input_space, one_space), snd)


def map_numerical_to_categorical_mlp(
    f: Callable[[float], float],
    input_space: bases.VectorSpaceWithBasis,
    output_space: bases.VectorSpaceWithBasis,
    input_value_set: Iterable[float],
    one_space: bases.VectorSpaceWithBasis,
    large_number: float = 100,
    hidden_name: bases.Name = "__hidden__",
) -> transformers.MLP:
    """An MLP computing a numerical -> categorical Map: writes the one-hot of f(x).

    Arguments as `map_numerical_mlp`, except that `output_space` holds one
    direction per output value, matched by `direction.value == f(x)`.

    Raises:
      ValueError: if some f(x) has no direction in `output_space`.
    """
    _check_spaces(input_space, one_space, "map_numerical_to_categorical_mlp")
    materials = _get_discretising_layer(
        input_value_set, f, hidden_name, one_space.basis[0], large_number
    )
    column_of_value = {}
    for j, d in enumerate(output_space.basis):
        column_of_value.setdefault(d.value, j)
    columns = list(map(column_of_value.get, materials.output_values))
    if None in columns:
        i = columns.index(None)
        raise ValueError(
            f"map_numerical_to_categorical_mlp: f({materials.input_values[i]}) = "
            f"{materials.output_values[i]!r} has no direction in output_space "
            f"{bases._describe(output_space.basis)}; add a direction with that value."
        )
    table = np.zeros((len(columns), output_space.num_dims))
    table[np.arange(len(columns)), np.asarray(columns, dtype=np.intp)] = 1.0
    snd = vectorspace_fns.Linear(
        materials.hidden_space, output_space, _second_layer(materials, table)
    )
    return transformers.MLP(_first_layer(materials, input_space, one_space), snd)


def linear_sequence_map_numerical_mlp(
    input1_basis_direction: bases.BasisDirection,
    input2_basis_direction: bases.BasisDirection,
    output_basis_direction: bases.BasisDirection,
    input1_factor: float,
    input2_factor: float,
    hidden_name: bases.Name = "__hidden__",
) -> transformers.MLP:
    """An MLP computing `input1_factor * x + input2_factor * y` exactly.

    Each input passes through the pair relu(x) - relu(-x) = x. The two inputs
    may be the same direction.

    Returns:
      An MLP with hidden directions `hidden_name:(k, sign)` for k in
      {"fst", "snd"} and sign in {"+", "-"}.
    """
    input_space = bases.join_vector_spaces(
        bases.VectorSpaceWithBasis([input1_basis_direction]),
        bases.VectorSpaceWithBasis([input2_basis_direction]),
    )
    output_space = bases.VectorSpaceWithBasis([output_basis_direction])
    hidden_space = bases.VectorSpaceWithBasis(
        [
            bases.BasisDirection(hidden_name, ("fst", "+")),
            bases.BasisDirection(hidden_name, ("fst", "-")),
            bases.BasisDirection(hidden_name, ("snd", "+")),
            bases.BasisDirection(hidden_name, ("snd", "-")),
        ]
    )
    index = input_space.index_by_direction
    fst = np.zeros((input_space.num_dims, 4))
    fst[index[input1_basis_direction], 0:2] += [1.0, -1.0]
    fst[index[input2_basis_direction], 2:4] += [1.0, -1.0]
    snd = np.array(
        [[input1_factor], [-input1_factor], [input2_factor], [-input2_factor]], dtype=np.float64
    )
    return transformers.MLP(
        vectorspace_fns.Linear(input_space, hidden_space, fst),
        vectorspace_fns.Linear(hidden_space, output_space, snd),
    )
