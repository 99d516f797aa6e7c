"""Findings: what a run found wrong, as data (never exceptions).

Each finding is a frozen value named by the rule it breaks (the vocabulary
of DESIGN.md and the README); ``severity`` ``error`` fails the run,
``warning`` is reported. ``as_json`` is the shape summary.json carries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Rules this version can report, with what each means (the README lists them).
RULES = {
    "migration_failed": "a migration failed or was cancelled; the series stopped there",
    "not_idempotent": "applying a migration a second time fails or changes schema or data",
    "down_mismatch": "up, then the down block, does not restore the schema",
    "down_missing": "a migration has no -- Down Migration block",
}
SEVERITIES = ("error", "warning")


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    message: str
    table: str | None = None
    column: str | None = None
    count: int = 1
    cents_impact: int = 0
    migration: str | None = None
    sample: tuple[dict[str, Any], ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.rule in RULES, f"unknown rule {self.rule}"
        assert self.severity in SEVERITIES
        assert self.count >= 0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sample"] = list(self.sample)
        return data
