"""The compiled circuit: ground truth for interpretability, emitted and verified.

    from tracr.circuits import circuit, verify
    c = circuit(model)                  # nodes, edges, RASP correspondence
    assert verify(model, c).ok          # every edge matters, nothing else does

See docs/circuits.md.
"""

from tracr.circuits.domain import Domain, make_domain
from tracr.circuits.graph import Circuit, Edge, Node, circuit
from tracr.circuits.metrics import (
    certified_temperature,
    default_metric,
    kl_divergence,
    logits,
    mse,
)
from tracr.circuits.patching import patching_pairs
from tracr.circuits.verify import Verification, verify

__all__ = [
    "Circuit",
    "Domain",
    "Edge",
    "Node",
    "Verification",
    "certified_temperature",
    "circuit",
    "default_metric",
    "kl_divergence",
    "logits",
    "make_domain",
    "mse",
    "patching_pairs",
    "verify",
]
