"""The one kind of finding every validation pass reports: an expression and why."""

from __future__ import annotations

import dataclasses

from tracr.rasp import rasp


@dataclasses.dataclass(frozen=True, eq=False)
class TracrUnsupportedExpr:
    """An expression the compiler can't compile, and why."""

    expr: rasp.RASPExpr
    reason: str

    # SOps overload ``==``, so compare expressions by identity.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TracrUnsupportedExpr):
            return NotImplemented
        return self.expr is other.expr and self.reason == other.reason

    def __hash__(self) -> int:
        return hash((id(self.expr), self.reason))

    def __str__(self) -> str:
        return f"{self.expr.label}: {self.reason}"
