"""Proof by ablation that a circuit is the model's: every edge matters, nothing else does.

`verify(model, circuit)` takes every pair (A, B.slot) with A earlier than B
and ablates it on every input of the domain, by zero and by resampling (see
`ablation`), comparing B's output with the clean one at the positions after
BOS. A pair whose only local effect is at BOS (which decoding never reads) is
ablated end to end and counts only if the model's output then changes after
BOS. The circuit is right when every edge matters in this sense on some input
(by more than `atol`) and no other pair does on any input::

    result = verify(model, circuit(model))
    assert result.ok, result.summary()
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

from tracr.circuits import ablation, forward, graph
from tracr.circuits import domain as domain_lib
from tracr.transformer import assembled


@dataclasses.dataclass(frozen=True)
class PairCheck:
    """What ablating parent -> child.slot did (see `ablation.Effect`)."""

    parent: str
    child: str
    slot: str
    in_circuit: bool
    effect: ablation.Effect

    @property
    def has_effect(self) -> bool:
        return self.effect.any


@dataclasses.dataclass(frozen=True)
class Verification:
    """The result of `verify`: one `PairCheck` per candidate pair, and what was compared."""

    checks: Tuple[PairCheck, ...]
    num_inputs: int
    exhaustive: bool
    atol: float

    @property
    def edges_checked(self) -> int:
        return sum(c.in_circuit for c in self.checks)

    @property
    def non_edges_checked(self) -> int:
        return sum(not c.in_circuit for c in self.checks)

    @property
    def comparisons(self) -> int:
        """(pair, ablation, input) triples whose child outputs were compared."""
        return len(self.checks) * len(ablation.ABLATIONS) * self.num_inputs

    @property
    def ineffective_edges(self) -> List[PairCheck]:
        """Edges of the circuit that changed nothing (should be none)."""
        return [c for c in self.checks if c.in_circuit and not c.has_effect]

    @property
    def leaking_pairs(self) -> List[PairCheck]:
        """Pairs outside the circuit that changed something (should be none)."""
        return [c for c in self.checks if not c.in_circuit and c.has_effect]

    @property
    def ok(self) -> bool:
        return (
            self.num_inputs > 0
            and self.edges_checked > 0
            and not self.ineffective_edges
            and not self.leaking_pairs
        )

    def summary(self) -> str:
        kind = "all" if self.exhaustive else "a sample of"
        lines = [
            f"{self.edges_checked} edges and {self.non_edges_checked} other pairs, "
            f"{len(ablation.ABLATIONS)} ablations, on {kind} {self.num_inputs} inputs: "
            + ("verified" if self.ok else "NOT verified")
        ]
        for c in self.ineffective_edges:
            where = " (its output only at BOS)" if any(c.effect.bos_changed) else ""
            lines.append(f"  edge {c.parent} -> {c.child}.{c.slot} changed nothing{where}")
        for c in self.leaking_pairs:
            if c.effect.through_bos:
                lines.append(
                    f"  non-edge {c.parent} -> {c.child}.{c.slot} changed the model's output "
                    f"on {c.effect.output_changed} inputs through BOS"
                )
            else:
                lines.append(
                    f"  non-edge {c.parent} -> {c.child}.{c.slot} changed {c.effect.changed} "
                    f"inputs (max {c.effect.max_effect:.3g})"
                )
        return "\n".join(lines)


def verify(
    model: assembled.AssembledTransformerModel,
    circuit: graph.Circuit,
    *,
    domain: Optional[domain_lib.Domain] = None,
    atol: float = 1e-4,
    seed: int = 0,
) -> Verification:
    """Ablates every candidate pair of `circuit` on `domain` (default: `domain.make_domain(spec)`).

    Returns:
      A `Verification`; `.ok` says whether the circuit is exactly the model's.
    """
    weights = forward.weights_of(model, numpy=True)
    if domain is None:
        domain = domain_lib.make_domain(weights.spec, seed=seed)
    pairs = list(circuit.candidate_pairs())
    found = ablation.effects(weights, domain, pairs, atol=atol, seed=seed)
    edges = circuit.edge_keys()
    checks = tuple(
        PairCheck(parent=p, child=c, slot=s, in_circuit=(p, c, s) in edges, effect=found[(p, c, s)])
        for p, c, s in pairs
    )
    return Verification(
        checks=checks, num_inputs=len(domain), exhaustive=domain.exhaustive, atol=atol
    )
