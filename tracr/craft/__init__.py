"""craft: the intermediate representation between RASP and transformer weights.

`bases` names the residual stream's directions, `vectorspace_fns` holds the
linear maps between named spaces, `transformers` the blocks (attention heads,
MLPs, series with residuals), and `chamber` the library of blocks that
implement RASP operations.
"""

from tracr.craft import bases, chamber, transformers, vectorspace_fns
from tracr.craft.bases import (
    BasisDirection,
    VectorInBasis,
    VectorSpaceWithBasis,
    direct_sum,
    ensure_dims,
    join_vector_spaces,
)
from tracr.craft.transformers import (
    MLP,
    AttentionHead,
    Block,
    MultiAttentionHead,
    SeriesWithResiduals,
)
from tracr.craft.vectorspace_fns import Linear, ScalarBilinear, project

__all__ = [
    "bases",
    "transformers",
    "vectorspace_fns",
    "chamber",
    "BasisDirection",
    "VectorInBasis",
    "VectorSpaceWithBasis",
    "direct_sum",
    "ensure_dims",
    "join_vector_spaces",
    "MLP",
    "AttentionHead",
    "Block",
    "MultiAttentionHead",
    "SeriesWithResiduals",
    "Linear",
    "ScalarBilinear",
    "project",
]
