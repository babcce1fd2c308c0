"""Proof by ablation that a circuit is the model's: every edge matters, nothing else does.

`verify(model, circuit)` takes every pair (A, B.slot) with A earlier than B
and ablates it on every input of the domain, by zero and by resampling (see
`ablation`), comparing B's output with the clean one at the positions after
BOS. A pair whose only local effect is at BOS (which decoding never reads) is
ablated end to end and counts only if the model's output then changes after
BOS. The circuit is right when every edge matters in this sense on some input
(by more than `atol`) and no other pair does on any input. For each pair from
`embed` the two parts of the embedding (token, position) are also ablated
alone: those an edge lists (`Circuit.parts_of`, what the hook-level formats
export) must matter, every other part must not::

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
    """What ablating parent -> child.slot did (see `ablation.Effect`).

    With `part` (one of `graph.EMBED_PARTS`), only that part of the embedding
    was ablated, and `in_circuit` says whether the circuit exports it.
    """

    parent: str
    child: str
    slot: str
    in_circuit: bool
    effect: ablation.Effect
    part: Optional[str] = None

    @property
    def has_effect(self) -> bool:
        return self.effect.any

    @property
    def name(self) -> str:
        part = f" ({self.part} part)" if self.part else ""
        return f"{self.parent} -> {self.child}.{self.slot}{part}"


@dataclasses.dataclass(frozen=True)
class Verification:
    """The result of `verify`: one `PairCheck` per candidate pair, and what was compared."""

    checks: Tuple[PairCheck, ...]
    num_inputs: int
    exhaustive: bool
    atol: float
    # The token and the position part of every pair from embed, ablated alone.
    part_checks: Tuple[PairCheck, ...] = ()

    @property
    def edges_checked(self) -> int:
        return sum(c.in_circuit for c in self.checks)

    @property
    def non_edges_checked(self) -> int:
        return sum(not c.in_circuit for c in self.checks)

    @property
    def comparisons(self) -> int:
        """(pair or part, ablation, input) triples whose child outputs were compared."""
        checked = len(self.checks) + len(self.part_checks)
        return checked * len(ablation.ABLATIONS) * self.num_inputs

    @property
    def ineffective_edges(self) -> List[PairCheck]:
        """Edges of the circuit that changed nothing (should be none)."""
        return [c for c in self.checks if c.in_circuit and not c.has_effect]

    @property
    def leaking_pairs(self) -> List[PairCheck]:
        """Pairs outside the circuit that changed something (should be none)."""
        return [c for c in self.checks if not c.in_circuit and c.has_effect]

    @property
    def ineffective_parts(self) -> List[PairCheck]:
        """Embedding parts the circuit exports that changed nothing alone (should be none)."""
        return [c for c in self.part_checks if c.in_circuit and not c.has_effect]

    @property
    def leaking_parts(self) -> List[PairCheck]:
        """Embedding parts the circuit does not export that changed something (should be none)."""
        return [c for c in self.part_checks if not c.in_circuit and c.has_effect]

    @property
    def ok(self) -> bool:
        return (
            self.num_inputs > 0
            and self.edges_checked > 0
            and not self.ineffective_edges
            and not self.leaking_pairs
            and not self.ineffective_parts
            and not self.leaking_parts
        )

    def summary(self) -> str:
        kind = "all" if self.exhaustive else "a sample of"
        from_embed = len({(c.child, c.slot) for c in self.part_checks})
        parts = f" ({from_embed} from embed also per embedding part)" if from_embed else ""
        lines = [
            f"{self.edges_checked} edges and {self.non_edges_checked} other pairs{parts}, "
            f"{len(ablation.ABLATIONS)} ablations, on {kind} {self.num_inputs} inputs: "
            + ("verified" if self.ok else "NOT verified")
        ]
        for c in self.ineffective_edges + self.ineffective_parts:
            where = " (its output only at BOS)" if any(c.effect.bos_changed) else ""
            lines.append(f"  edge {c.name} changed nothing{where}")
        for c in self.leaking_pairs + self.leaking_parts:
            if c.effect.through_bos:
                lines.append(
                    f"  non-edge {c.name} changed the model's output "
                    f"on {c.effect.output_changed} inputs through BOS"
                )
            else:
                lines.append(
                    f"  non-edge {c.name} changed {c.effect.changed} "
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
    # Each part of the embedding alone, for every pair from embed: (part, child, slot).
    parts = [(part, c, s) for p, c, s in pairs if p == forward.EMBED for part in graph.EMBED_PARTS]
    part_pairs = [(forward.embed_part(part), c, s) for part, c, s in parts]
    found = ablation.effects(weights, domain, pairs + part_pairs, atol=atol, seed=seed)
    edges = circuit.edge_keys()
    checks = tuple(
        PairCheck(parent=p, child=c, slot=s, in_circuit=(p, c, s) in edges, effect=found[(p, c, s)])
        for p, c, s in pairs
    )
    exported = {(part, e.child, e.slot) for e in circuit.edges for part in circuit.parts_of(e)}
    part_checks = tuple(
        PairCheck(
            parent=forward.EMBED,
            child=c,
            slot=s,
            in_circuit=(part, c, s) in exported,
            effect=found[key],
            part=part,
        )
        for (part, c, s), key in zip(parts, part_pairs)
    )
    return Verification(
        checks=checks,
        num_inputs=len(domain),
        exhaustive=domain.exhaustive,
        atol=atol,
        part_checks=part_checks,
    )
