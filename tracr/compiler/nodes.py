"""Keys of the node attributes that compiler passes attach to the RASP graph.

Nodes of the networkx graph are keyed by expression label; their attribute
dicts hold the expression (EXPR), its possible values (VALUE_SET), its
residual subspace (OUTPUT_BASIS) and the craft block computing it
(MODEL_BLOCK).
"""

from typing import Any, Dict

Node = Dict[str, Any]
NodeID = str

ID = "ID"
EXPR = "EXPR"
VALUE_SET = "VALUE_SET"
OUTPUT_BASIS = "OUTPUT_BASIS"
MODEL_BLOCK = "MODEL_BLOCK"
