"""chamber: craft blocks that implement RASP operations.

* `categorical_attn`: Select + Aggregate as one attention head.
* `categorical_mlp`: Map / SequenceMap on categorical inputs (lookup tables).
* `numerical_mlp`: Map on numerical inputs (discretising MLPs) and
  LinearSequenceMap.
* `selector_width`: SelectorWidth as an attention head plus an MLP.

The names `categorical_attn` and `selector_width` stay bound to the modules
(as in Tracr: `selector_width.selector_width(...)`); the other functions are
re-exported here too.
"""

from tracr.craft.chamber import categorical_attn, categorical_mlp, numerical_mlp, selector_width
from tracr.craft.chamber.categorical_attn import QueryKeyToAttnLogit
from tracr.craft.chamber.categorical_mlp import (
    map_categorical_mlp,
    map_categorical_to_numerical_mlp,
    sequence_map_categorical_mlp,
)
from tracr.craft.chamber.numerical_mlp import (
    DiscretisingLayerMaterials,
    linear_sequence_map_numerical_mlp,
    map_numerical_mlp,
    map_numerical_to_categorical_mlp,
)

__all__ = [
    "categorical_attn",
    "categorical_mlp",
    "numerical_mlp",
    "selector_width",
    "QueryKeyToAttnLogit",
    "map_categorical_mlp",
    "map_categorical_to_numerical_mlp",
    "sequence_map_categorical_mlp",
    "DiscretisingLayerMaterials",
    "linear_sequence_map_numerical_mlp",
    "map_numerical_mlp",
    "map_numerical_to_categorical_mlp",
]
