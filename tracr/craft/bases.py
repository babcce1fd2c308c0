"""Named vector spaces: the coordinate system of the residual stream.

Every dimension of a compiled transformer's residual stream has a name, a
`BasisDirection`. Categorical values get one direction per value
(`tokens:a`, `tokens:b`), numerical values a single direction whose magnitude
is the value (`frac_prevs`). Blocks read and write named subspaces, so they
can be built independently and assembled later in any order.

Worked example::

    >>> from tracr.craft import bases
    >>> tokens = bases.VectorSpaceWithBasis.from_values("tokens", ["a", "b"])
    >>> one = bases.VectorSpaceWithBasis.from_names(["one"])
    >>> residual = bases.join_vector_spaces(tokens, one)
    >>> [str(d) for d in residual.basis]
    ['one', 'tokens:a', 'tokens:b']
    >>> x = residual.vector_from_basis_direction(bases.BasisDirection("tokens", "b"))
    >>> x = x + residual.vector_from_basis_direction(bases.BasisDirection("one"))
    >>> x.project(tokens).magnitudes
    array([0., 1.])

Vectors carry leading batch dimensions: `magnitudes` has shape `[..., D]` where
`D = len(basis_directions)`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

Name = Union[int, str]
Value = Union[int, float, bool, str, tuple]

# How many offending directions an error message lists before eliding.
_MAX_LISTED = 8


class BasisMismatchError(ValueError, TypeError):
    """Vectors or spaces whose bases do not fit together.

    A `ValueError` (what this project raises for bad arguments) that is also a
    `TypeError` (what Tracr raised in these places), so callers written for
    either keep working.
    """


def _describe(directions: Iterable["BasisDirection"]) -> str:
    directions = list(directions)
    shown = ", ".join(str(d) for d in directions[:_MAX_LISTED])
    if len(directions) > _MAX_LISTED:
        shown += f", ... ({len(directions) - _MAX_LISTED} more)"
    return "[" + shown + "]"


def _order_key(x) -> tuple:
    """A total order over the values a direction may hold.

    Within a kind (numbers, strings, tuples) this is Python's own order; across
    kinds it is None < numbers < NaN < strings < tuples < anything else, so that
    sorting a space whose values mix ints, strings and None never raises and
    always gives the same result.
    """
    if x is None:
        return (0,)
    if isinstance(x, (numbers.Real, np.bool_)):
        if isinstance(x, float) and math.isnan(x):
            return (2,)
        return (1, x)
    if isinstance(x, str):
        return (3, x)
    if isinstance(x, tuple):
        return (4, tuple(_order_key(e) for e in x))
    return (5, type(x).__name__, repr(x))


def _direction_key(d: "BasisDirection") -> tuple:
    # Cached on the (immutable) direction: residual and hidden spaces are sorted
    # again every time blocks are joined, and the key of a tuple value is itself
    # a tuple built in Python.
    try:
        return d.__dict__["_sort_key"]
    except KeyError:
        key = (_order_key(d.name), _order_key(d.value))
        d.__dict__["_sort_key"] = key
        return key


@functools.total_ordering
@dataclasses.dataclass(frozen=True)
class BasisDirection:
    """One named dimension: `name` alone (numerical) or `name:value` (categorical)."""

    name: Name
    value: Optional[Value] = None

    def __str__(self) -> str:
        if self.value is None:
            return str(self.name)
        return f"{self.name}:{self.value}"

    def __lt__(self, other: "BasisDirection") -> bool:
        if not isinstance(other, BasisDirection):
            return NotImplemented
        # Agrees with comparing (name, value) tuples whenever Python can, and
        # stays total when it cannot (e.g. values 1 and "a" under one name).
        return _direction_key(self) < _direction_key(other)


def sort_directions(directions: Iterable[BasisDirection]) -> List[BasisDirection]:
    """Sorts directions in the canonical (deterministic, total) order."""
    return sorted(directions, key=_direction_key)


def _check_unique(directions: Sequence[BasisDirection], what: str) -> None:
    if len(set(directions)) != len(directions):
        seen: Set[BasisDirection] = set()
        dups = []
        for d in directions:
            if d in seen and d not in dups:
                dups.append(d)
            seen.add(d)
        raise ValueError(
            f"{what} lists these directions more than once: {_describe(dups)}. "
            "A basis must name each direction once; remove the duplicates."
        )


def _index_array(
    index: Dict[BasisDirection, int], directions: Sequence[BasisDirection]
) -> np.ndarray:
    """Positions of `directions` under `index`; -1 where a direction is absent."""
    get = index.get
    return np.fromiter((get(d, -1) for d in directions), dtype=np.intp, count=len(directions))


@dataclasses.dataclass(frozen=True, eq=False)
class VectorInBasis:
    """Magnitudes `[..., D]` over a list of `D` named directions.

    Arithmetic between vectors requires the same set of directions (the order
    may differ; the result uses the left operand's order). Use `project` or
    `add_directions` to combine vectors over different directions.
    """

    basis_directions: Sequence[BasisDirection]
    magnitudes: np.ndarray

    def __post_init__(self):
        basis = list(self.basis_directions)
        magnitudes = np.asarray(self.magnitudes)
        if not np.issubdtype(magnitudes.dtype, np.floating):
            magnitudes = magnitudes.astype(np.float64)
        if magnitudes.ndim == 0 or magnitudes.shape[-1] != len(basis):
            raise ValueError(
                f"VectorInBasis: magnitudes must have shape [..., {len(basis)}] (one "
                f"entry per basis direction), got shape {magnitudes.shape}."
            )
        _check_unique(basis, "VectorInBasis.basis_directions")
        object.__setattr__(self, "basis_directions", basis)
        object.__setattr__(self, "magnitudes", magnitudes)

    @classmethod
    def _trusted(
        cls, basis: List[BasisDirection], magnitudes: np.ndarray, like=None
    ) -> "VectorInBasis":
        """Builds a vector over an already validated basis, sharing its caches.

        Blocks create many vectors over the same large residual basis; skipping
        re-validation and re-indexing keeps each operation O(D) in numpy.
        """
        vec = object.__new__(cls)
        object.__setattr__(vec, "basis_directions", basis)
        object.__setattr__(vec, "magnitudes", magnitudes)
        if like is not None:
            for cache in ("basis_set", "index_by_direction"):
                if cache in like.__dict__:
                    vec.__dict__[cache] = like.__dict__[cache]
        return vec

    @functools.cached_property
    def basis_set(self) -> Set[BasisDirection]:
        return set(self.basis_directions)

    @functools.cached_property
    def index_by_direction(self) -> Dict[BasisDirection, int]:
        return {d: i for i, d in enumerate(self.basis_directions)}

    def _like(self, magnitudes: np.ndarray) -> "VectorInBasis":
        return VectorInBasis._trusted(self.basis_directions, magnitudes, like=self)

    def _aligned_magnitudes(self, other: "VectorInBasis", op: str) -> np.ndarray:
        """`other`'s magnitudes reordered to this vector's basis order."""
        if other.basis_directions is self.basis_directions:
            return other.magnitudes
        if len(other.basis_directions) == len(self.basis_directions):
            if other.basis_directions == self.basis_directions:
                return other.magnitudes
            idx = _index_array(other.index_by_direction, self.basis_directions)
            if (idx >= 0).all():
                return other.magnitudes[..., idx]
        only_self = [d for d in self.basis_directions if d not in other.basis_set]
        only_other = [d for d in other.basis_directions if d not in self.basis_set]
        raise BasisMismatchError(
            f"Cannot {op} vectors over different directions: only the left has "
            f"{_describe(only_self)}, only the right has {_describe(only_other)}. "
            "Project both onto a common space first (v.project(space)) or use "
            "v.add_directions(w) to add over the union."
        )

    def __add__(self, other: "VectorInBasis") -> "VectorInBasis":
        if not isinstance(other, VectorInBasis):
            return NotImplemented
        return self._like(self.magnitudes + self._aligned_magnitudes(other, "add"))

    def __radd__(self, other: "VectorInBasis") -> "VectorInBasis":
        # Lets the builtin sum() start from 0.
        if isinstance(other, numbers.Number) and other == 0:
            return self
        if not isinstance(other, VectorInBasis):
            return NotImplemented
        return other.__add__(self)

    def __sub__(self, other: "VectorInBasis") -> "VectorInBasis":
        if not isinstance(other, VectorInBasis):
            return NotImplemented
        return self._like(self.magnitudes - self._aligned_magnitudes(other, "subtract"))

    def __rsub__(self, other: "VectorInBasis") -> "VectorInBasis":
        if isinstance(other, numbers.Number) and other == 0:
            return -self
        if not isinstance(other, VectorInBasis):
            return NotImplemented
        return other.__sub__(self)

    def __mul__(self, scalar: float) -> "VectorInBasis":
        if isinstance(scalar, VectorInBasis):
            return NotImplemented
        return self._like(self.magnitudes * scalar)

    def __rmul__(self, scalar: float) -> "VectorInBasis":
        return self.__mul__(scalar)

    def __truediv__(self, scalar: float) -> "VectorInBasis":
        if isinstance(scalar, VectorInBasis):
            return NotImplemented
        return self._like(self.magnitudes / scalar)

    def __neg__(self) -> "VectorInBasis":
        return self._like(-self.magnitudes)

    def __eq__(self, other: "VectorInBasis") -> bool:
        """Same set of directions and magnitudes equal up to `np.allclose`."""
        if not isinstance(other, VectorInBasis):
            return NotImplemented
        if self.basis_set != other.basis_set:
            return False
        theirs = self._aligned_magnitudes(other, "compare")
        if self.magnitudes.shape != theirs.shape:
            return False
        return bool(np.allclose(self.magnitudes, theirs))

    __hash__ = None  # Mutable numpy payload; compare with ==, do not hash.

    @classmethod
    def sum(cls, vectors: Sequence["VectorInBasis"]) -> "VectorInBasis":
        """Sums vectors over the same set of directions."""
        vectors = list(vectors)
        if not vectors:
            raise ValueError(
                "VectorInBasis.sum needs at least one vector (an empty "
                "sum has no basis); pass space.null_vector() instead."
            )
        first = vectors[0]
        total = (
            first.magnitudes.copy()
            if len(vectors) == 1
            else sum(first._aligned_magnitudes(v, "sum") for v in vectors)
        )
        return first._like(np.asarray(total))

    @classmethod
    def stack(cls, vectors: Sequence["VectorInBasis"], axis: int = 0) -> "VectorInBasis":
        """Stacks vectors over the same directions along a new leading axis."""
        vectors = list(vectors)
        if not vectors:
            raise ValueError("VectorInBasis.stack needs at least one vector.")
        first = vectors[0]
        ndim = first.magnitudes.ndim + 1
        if not -ndim <= axis < ndim or axis % ndim == ndim - 1:
            raise ValueError(
                f"VectorInBasis.stack: axis={axis} must be a batch axis in "
                f"[{-ndim}, {ndim - 2}]; the last axis is the basis."
            )
        stacked = np.stack([first._aligned_magnitudes(v, "stack") for v in vectors], axis=axis)
        return first._like(stacked)

    def project(
        self, basis_container: Union["VectorSpaceWithBasis", Sequence[BasisDirection]]
    ) -> "VectorInBasis":
        """This vector expressed over another basis.

        Directions of the target that this vector lacks get magnitude 0;
        directions of this vector outside the target are dropped.
        """
        if isinstance(basis_container, VectorSpaceWithBasis):
            target, like = basis_container.basis, basis_container
        else:
            target, like = list(basis_container), None
            _check_unique(target, "project(): the target basis")
        if target is self.basis_directions or (
            len(target) == len(self.basis_directions) and target == self.basis_directions
        ):
            return VectorInBasis._trusted(target, self.magnitudes, like=like or self)
        src = _index_array(self.index_by_direction, target)
        present = src >= 0
        if present.all():
            magnitudes = self.magnitudes[..., src]
        else:
            magnitudes = np.zeros(
                self.magnitudes.shape[:-1] + (len(target),), dtype=self.magnitudes.dtype
            )
            magnitudes[..., present] = self.magnitudes[..., src[present]]
        return VectorInBasis._trusted(target, magnitudes, like=like)

    def add_directions(self, vector: "VectorInBasis") -> "VectorInBasis":
        """Adds `vector` over the union of both bases.

        The result lists this vector's directions first, then `vector`'s new ones;
        with disjoint bases this concatenates the two vectors.
        """
        new = [d for d in vector.basis_directions if d not in self.basis_set]
        basis = self.basis_directions + new
        shape = np.broadcast_shapes(self.magnitudes.shape[:-1], vector.magnitudes.shape[:-1])
        dtype = np.result_type(self.magnitudes, vector.magnitudes)
        magnitudes = np.zeros(shape + (len(basis),), dtype=dtype)
        magnitudes[..., : len(self.basis_directions)] = self.magnitudes
        idx = {d: i for i, d in enumerate(basis)}
        magnitudes[..., _index_array(idx, vector.basis_directions)] += vector.magnitudes
        return VectorInBasis._trusted(basis, magnitudes)

    def copy_with_new_magnitudes(self, new_magnitudes: np.ndarray) -> "VectorInBasis":
        """A vector over the same basis with other magnitudes `[..., D]`."""
        new_magnitudes = np.asarray(new_magnitudes)
        if new_magnitudes.ndim == 0 or new_magnitudes.shape[-1] != len(self.basis_directions):
            raise ValueError(
                f"copy_with_new_magnitudes: expected shape [..., "
                f"{len(self.basis_directions)}], got {new_magnitudes.shape}."
            )
        if not np.issubdtype(new_magnitudes.dtype, np.floating):
            new_magnitudes = new_magnitudes.astype(np.float64)
        return self._like(new_magnitudes)


@dataclasses.dataclass(frozen=True)
class VectorSpaceWithBasis:
    """A space spanned by named, orthonormal directions (in a fixed order)."""

    basis: Sequence[BasisDirection]

    def __post_init__(self):
        basis = list(self.basis)
        for d in basis:
            if not isinstance(d, BasisDirection):
                raise TypeError(
                    f"VectorSpaceWithBasis: basis entries must be "
                    f"BasisDirection, got {d!r} ({type(d).__name__})."
                )
        _check_unique(basis, "VectorSpaceWithBasis.basis")
        object.__setattr__(self, "basis", basis)

    def __hash__(self) -> int:
        return hash(tuple(self.basis))

    def make_vector(self, magnitudes: np.ndarray) -> VectorInBasis:
        """A vector in this space from magnitudes `[..., num_dims]`."""
        magnitudes = np.asarray(magnitudes)
        if not np.issubdtype(magnitudes.dtype, np.floating):
            magnitudes = magnitudes.astype(np.float64)
        if magnitudes.ndim == 0 or magnitudes.shape[-1] != self.num_dims:
            raise ValueError(
                f"make_vector: expected magnitudes of shape [..., "
                f"{self.num_dims}], got {magnitudes.shape}."
            )
        return VectorInBasis._trusted(self.basis, magnitudes, like=self)

    @property
    def num_dims(self) -> int:
        return len(self.basis)

    @functools.cached_property
    def basis_set(self) -> Set[BasisDirection]:
        return set(self.basis)

    @functools.cached_property
    def index_by_direction(self) -> Dict[BasisDirection, int]:
        return {d: i for i, d in enumerate(self.basis)}

    def __contains__(self, item: Union[VectorInBasis, BasisDirection]) -> bool:
        """Whether a direction is in the basis, or all of a vector's directions are."""
        if isinstance(item, BasisDirection):
            return item in self.basis_set
        if isinstance(item, VectorInBasis):
            if item.basis_directions is self.basis:
                return True
            return item.basis_set <= self.basis_set
        raise TypeError(
            f"`in VectorSpaceWithBasis` expects a BasisDirection or "
            f"VectorInBasis, got {type(item).__name__}."
        )

    def issubspace(self, other: "VectorSpaceWithBasis") -> bool:
        """Whether every direction of this space is a direction of `other`."""
        return self.basis_set <= other.basis_set

    def basis_vectors(self) -> Sequence[VectorInBasis]:
        eye = np.eye(self.num_dims)
        return [self.make_vector(row) for row in eye]

    def vector_from_basis_direction(self, basis_direction: BasisDirection) -> VectorInBasis:
        """The unit vector along `basis_direction`."""
        i = self.index_by_direction.get(basis_direction)
        if i is None:
            raise ValueError(
                f"vector_from_basis_direction: {basis_direction} is not a "
                f"direction of this space {_describe(self.basis)}."
            )
        magnitudes = np.zeros(self.num_dims)
        magnitudes[i] = 1.0
        return self.make_vector(magnitudes)

    def null_vector(self) -> VectorInBasis:
        return self.make_vector(np.zeros(self.num_dims))

    @classmethod
    def from_names(cls, names: Sequence[Name]) -> "VectorSpaceWithBasis":
        """One direction per name, without values (e.g. numerical SOps, `one`)."""
        return cls([BasisDirection(name) for name in names])

    @classmethod
    def from_values(cls, name: Name, values: Iterable[Value]) -> "VectorSpaceWithBasis":
        """One direction `name:value` per value (a categorical SOp's space)."""
        return cls([BasisDirection(name, value) for value in values])


def direct_sum(*vs: VectorSpaceWithBasis) -> VectorSpaceWithBasis:
    """Concatenates disjoint spaces, keeping their order.

    Raises:
      ValueError: if two of the spaces share a direction (use
        `join_vector_spaces` to take a union instead).
    """
    basis: List[BasisDirection] = []
    for space in vs:
        basis.extend(space.basis)
    if len(set(basis)) != len(basis):
        seen: Set[BasisDirection] = set()
        overlap = []
        for d in basis:
            if d in seen and d not in overlap:
                overlap.append(d)
            seen.add(d)
        raise ValueError(
            f"direct_sum: the spaces overlap in {_describe(overlap)}; a direct "
            "sum needs disjoint spaces. Use join_vector_spaces for a union."
        )
    return VectorSpaceWithBasis(basis)


def join_vector_spaces(*vs: VectorSpaceWithBasis) -> VectorSpaceWithBasis:
    """The union of spaces, with directions in the canonical sorted order."""
    seen: Dict[BasisDirection, None] = {}
    for space in vs:
        seen.update(dict.fromkeys(space.basis))
    return VectorSpaceWithBasis(sort_directions(seen))


def ensure_dims(vs: VectorSpaceWithBasis, num_dims: int, name: str = "vector space") -> None:
    """Raises ValueError unless `vs` has exactly `num_dims` directions."""
    if vs.num_dims != num_dims:
        raise ValueError(
            f"{name} must have exactly {num_dims} dimension(s), but has "
            f"{vs.num_dims}: {_describe(vs.basis)}."
        )


__all__: Tuple[str, ...] = (
    "Name",
    "Value",
    "BasisDirection",
    "VectorInBasis",
    "VectorSpaceWithBasis",
    "BasisMismatchError",
    "direct_sum",
    "join_vector_spaces",
    "ensure_dims",
    "sort_directions",
)
