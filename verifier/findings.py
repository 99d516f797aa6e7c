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
    "missing_backfill": "the original is not zero but the cents are 0 (the default was never replaced)",
    "null_coerced_to_zero": "the original is NULL but the cents are 0",
    "null_introduced": "the original is set but the cents are NULL",
    "rounding_mode": "the cents follow another rounding rule (ties, truncation, floor or ceiling)",
    "sub_cent_loss": "the original had a fraction of a cent, lost by the (correct) rounding",
    "float_artifact": "the cents come from float arithmetic, or the source column is a float type",
    "scale_error": "the cents are the original times 1, 10, 1000 or 10000 instead of 100",
    "sign_flip": "the cents have the opposite sign",
    "overflow": "the original times 100 does not fit in a BIGINT",
    "non_finite_original": "the original is NaN, Infinity or -Infinity: no cents can stand for it",
    "value_mismatch": "the cents differ from the original in any other way",
    "row_missing": "a row of the original is gone",
    "row_added": "a row appeared that the original did not have",
    "sum_mismatch": "a column's cents do not add up to its originals times 100",
    "identity_violation": "a configured identity (amount = fee + net) does not hold in cents",
    "constraint_violation": "rows that a pending (NOT VALID) CHECK constraint will reject",
    "unpaired_column": "a money column without cents, or cents without a money column",
    "expectation_failed": "an expectation of a Great Expectations suite (--gx) failed",
    "migration_failed": "a migration failed or was cancelled; the series stopped there",
    "not_idempotent": "applying a migration a second time fails or changes schema or data",
    "down_mismatch": "up, then the down block, does not restore the schema",
    "down_missing": "a migration has no -- Down Migration block",
    "journal_unbalanced": "a journal's entries do not sum to zero",
    "journal_too_few_entries": "a journal has a single entry",
    "journal_mixed_currency": "a journal's entries are not all in the journal's currency",
    "entry_sign_mismatch": "an entry's sign does not match its type (debit or credit)",
    "running_balance_break": "an entry's balance before is not its account's previous balance after, "
                             "or its balance after does not follow from before and amount",
    "account_balance_drift": "an account's balance is not its last entry's balance after (0 without entries)",
    "negative_balance": "an account of a type that must not go negative did, at some entry",
    "trial_balance_nonzero": "the entries of a currency do not sum to zero",
    "reversal_mismatch": "a reversal does not exactly negate its journal, names none, or reverses it again",
    "orphan_entry": "an entry names a journal or an account that does not exist",
    "empty_journal": "a journal has no entries",
    "snapshot_mismatch": "a ledger snapshot's balance is not its last entry's balance after",
    "pending_stale": "a pending transaction is still pending after it expired",
    "pending_unlinked": "a completed pending transaction names no journal, or one that does not exist",
    "idempotency_conflict": "an idempotency key was used by a second journal (posted twice, or reused)",
    "history_tampered": "an entry or journal that an earlier audit proved (--state) was changed, deleted, "
                        "or inserted among proven ids, or a proven journal gained entries",
    "reconciliation_mismatch": "a legacy balance column differs from its owner's ledger account",
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
