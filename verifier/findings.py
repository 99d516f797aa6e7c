"""Findings: what a run found wrong, as data (never exceptions), and the one registry of their rules.

Each finding is a frozen value named by the rule it breaks (the vocabulary
of DESIGN.md); ``severity`` ``error`` fails the run, ``warning`` is
reported (and fails it under ``--strict``). ``as_json`` is the shape
summary.json carries.

``REGISTRY`` holds every rule this version can report, in order: its
name, its kind, the severities it is reported with and its one-line
meaning. The order of the ``row`` rules is their precedence: the
classification of a row of a pair (``verifier.cents.sql``) tests them in
this order and the first that matches explains the row. The README's rule
tables list the same rules, in the same order, with the same severities
and meanings (``tests/test_docs.py``); the report and junit.xml read them
from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import ROUND_UP, Decimal
from typing import Any

SEVERITIES = ("error", "warning")
KINDS = ("row", "table", "migration", "ledger")



def whole_cents(impact: Decimal) -> int:
    """A cents impact as a finding holds it, a whole number of cents: a fraction rounded away from
    zero (a drift of half a cent in a ``numeric`` balance column is 1 cent, not 0: a finding of money
    does not say it moved none); 0 for NaN or Infinity, which no cents can stand for (it made audits
    an internal error: found by break-it runs). The rows stay named, with their values, in the
    sample and offenders.csv."""
    return int(impact.to_integral_value(rounding=ROUND_UP)) if impact.is_finite() else 0


@dataclass(frozen=True)
class Rule:
    """One rule of the vocabulary.

    ``kind``: ``row`` (a row of a decimal/cents pair), ``table`` (a table or
    a run), ``migration`` (a migration file), ``ledger`` (the ledger audit).
    ``severities``: what its findings may be, the first for its offending
    rows (``float_artifact`` is an error for a row, a warning for a float
    source column).
    """

    name: str
    kind: str
    severities: tuple[str, ...]
    meaning: str

    def __post_init__(self) -> None:
        assert self.kind in KINDS
        assert self.severities and set(self.severities) <= set(SEVERITIES)
        assert self.meaning and "\n" not in self.meaning


def _rules(kind: str, *rules: tuple[str, str, str]) -> tuple[Rule, ...]:
    return tuple(Rule(name, kind, tuple(severities.split(" / ")), meaning)
                 for name, severities, meaning in rules)


REGISTRY: tuple[Rule, ...] = (
    # Per row of a pair, in precedence: the first that fits explains the row.
    *_rules(
        "row",
        ("unparsable_original", "error",
         "the original is text that its [[text_amounts]] rule cannot read as an amount"),
        ("unknown_currency", "error",
         "the row's currency is NULL, not an ISO 4217 code, or one without a minor unit: its minor "
         "units cannot be told"),
        ("null_coerced_to_zero", "error", "the original is NULL, the cents are 0"),
        ("non_finite_original", "error",
         "the original is NaN, Infinity or -Infinity: no cents can stand for it"),
        ("overflow", "error", "the original times 100 does not fit in a BIGINT"),
        ("null_introduced", "error", "the original is set, the cents are NULL"),
        ("sub_cent_loss", "warning", "the cents are right, but the original had a fraction of a cent"),
        ("missing_backfill", "error",
         "the original is not zero, the cents are 0 (the default was never replaced); a half-cent tie "
         "that a tie rule rounds to 0 is rounding_mode"),
        ("sign_flip", "error", "the cents have the opposite sign"),
        ("rounding_mode", "error",
         "the cents follow another rounding rule (half-even, truncation, floor, ceiling)"),
        ("float_artifact", "error / warning",
         "the cents come from float arithmetic or a float's binary value (error); a real/double source "
         "column itself (warning)"),
        ("scale_error", "error",
         "the cents are the original times another power of ten (1, 10, 1000 or 10000 for cents)"),
        ("value_mismatch", "error", "anything else (also: cents set where the original is NULL)"),
    ),
    # Per table and run.
    *_rules(
        "table",
        ("sum_mismatch", "error", "a column's cents do not add up to its rows' expected cents"),
        ("identity_violation", "error", "a configured identity does not hold in cents"),
        ("constraint_violation", "error", "rows a pending NOT VALID CHECK constraint will reject"),
        ("unverified_minor_units", "error",
         "a column of minor units (named, typed or commented as cents) that nothing verified: no "
         "source, two possible sources, or a source of a type that cannot be read (the finding says "
         "which); exclude it by name to accept that"),
        ("unpaired_column", "warning",
         "an amount column (numeric, real, double precision, money) that no minor-units column is "
         "verified against"),
        ("narrow_minor_units", "warning",
         "a minor-units column of type integer or smallint: its largest value against the type's limit"),
        ("expectation_failed", "error", "(--gx) an expectation of a Great Expectations suite failed"),
        ("baseline_stale", "warning",
         "the baseline (--baseline) accepts a finding that the run no longer finds: remove it from the "
         "baseline"),
        ("row_missing", "error", "(rehearsal) a row of the originals is gone after the migrations"),
        ("row_added", "error", "(rehearsal) a row the originals did not have"),
        ("row_duplicated", "error",
         "(rehearsal) a row of the originals appears more than once after the migrations (its key is "
         "no longer unique): each copy beyond the first is counted, with the cents it adds"),
        ("originals_not_recorded", "warning",
         "(rehearsal) a table with amounts but neither a primary key nor a unique NOT NULL key: its "
         "rows cannot be matched with their originals, and its cents are verified against the "
         "decimals the migrations left"),
        ("original_changed", "error",
         "(rehearsal) an amount that no cents column replaced, or a row's currency code, differs from "
         "its recorded original after the migrations"),
        ("original_dropped", "error",
         "(rehearsal) the migrations dropped a recorded amount column and no minor-units column is "
         "verified against it: its amounts are in no column the run verified"),
        ("originals_unmatched", "error",
         "(rehearsal) a table whose amounts were recorded cannot be matched with them after the "
         "migrations: the table or a key column was dropped, or a key column changed type (a table "
         "renamed or moved is followed); its cents cannot be verified"),
    ),
    *_rules(
        "migration",
        ("migration_failed", "error",
         "a migration failed or was cancelled (migration_timeout_s, --migration-timeout); the series "
         "stopped there"),
        ("not_idempotent", "error",
         "applying a migration a second time fails or changes the schema or a table's rows"),
        ("down_mismatch", "error",
         "up, then the down block, does not restore the schema (or the down block fails)"),
        ("down_missing", "warning", "a migration has no -- Down Migration block"),
        ("migration_version_ambiguous", "warning",
         "the tracker records a number once that several files share: all of them are taken as "
         "applied, and which really ran cannot be told"),
    ),
    # The ledger audit (verify-ledger); the meanings are part of each finding's message.
    *_rules(
        "ledger",
        ("journal_unbalanced", "error", "a journal's entries do not sum to zero"),
        ("journal_too_few_entries", "error", "a journal has a single entry"),
        ("journal_mixed_currency", "error",
         "a journal's entries are not all in one currency (the journal's, where it has one; an entry's "
         "currency is its account's where entries carry none)"),
        ("entry_currency_mismatch", "error",
         "an entry carries a currency other than its account's"),
        ("account_currency_missing", "error",
         "an account has no currency (NULL): its entries belong to no currency's trial balance, and "
         "no journal with its entries can be shown to be in one currency"),
        ("empty_journal", "error", "a journal has no entries"),
        ("orphan_entry", "error", "an entry names a journal or an account that does not exist"),
        ("trial_balance_nonzero", "error", "the entries of a currency do not sum to zero"),
        ("entry_sign_mismatch", "error", "an entry's sign does not match its type (debit or credit)"),
        ("running_balance_break", "error",
         "an entry's balance before is not its account's previous balance after (an account's first "
         "entry starts from its opening balance), or its balance after does not follow from before "
         "and amount"),
        ("negative_balance", "error", "an account of a type that must not go negative did, at some entry"),
        ("account_balance_drift", "error",
         "an account's balance is not its last entry's balance after"),
        ("balance_not_finite", "error",
         "an account's balance is NaN, Infinity or -Infinity: no cents can stand for it"),
        ("account_id_duplicate", "error",
         "two or more accounts share an id (the accounts' id column has no unique index): each of the "
         "id's entries and its balance are counted once per row"),
        ("reversal_mismatch", "error",
         "a reversal does not exactly negate its journal, names none or one that does not exist, "
         "reverses it again, or a reversal link and the reversed flag disagree"),
        ("snapshot_mismatch", "error", "a ledger snapshot's balance is not its last entry's balance after"),
        ("pending_stale", "error", "a pending transaction is still pending after it expired"),
        ("pending_unlinked", "error",
         "a completed pending transaction names no journal, or one that does not exist"),
        ("idempotency_conflict", "error",
         "an idempotency key was used by a second journal (posted twice, or reused)"),
        ("reconciliation_mismatch", "error",
         "a legacy balance column differs from its owner's ledger account"),
        ("ledger_rule_not_checked", "warning",
         "a ledger rule could not be checked: the ledger lacks a table or column it needs, a "
         "reconciliation's key does not fit, or a probe case could not be set up (each named in the "
         "finding)"),
        ("ledger_not_audited", "error",
         "(rehearsal) tables named as the ledger's are there after the migrations, but they are not a "
         "ledger the audit can read (the finding says what is missing); configure the ledger's layout, "
         "or exclude its entries table by name if those tables are not a ledger"),
        ("history_not_settled", "warning / error",
         "(--state) the audit could not prove the entries the previous audit saw: a transaction still "
         "running holds them back (the finding names the oldest, its age, pid and application where "
         "visible); an error once ledger.unsettled_audits_max audits in a row proved nothing new"),
        ("history_tampered", "error",
         "an entry or journal that an earlier audit proved (--state) was changed, deleted, "
         "or inserted among proven ids where no gap was, or a proven journal gained entries, or an "
         "account whose entries were proven was deleted or moved to another currency or to a type held "
         "to other rules"),
        ("id_beyond_sequence", "warning",
         "(--state) rows of the entries or journals have ids beyond the last value their id column's "
         "sequence handed out (inserted with explicit ids): they are checked as new on every audit and "
         "proven only once the sequence passes them; the insert that draws such an id from the sequence "
         "will fail on a unique key"),
        ("ledger_rejects_balanced", "error",
         "(rehearsal probe) the database rejects a balanced journal posted the way applications post "
         "it (leg by leg, or through its posting function)"),
        ("ledger_accepts_unbalanced", "error",
         "(rehearsal probe) the database accepts a journal that does not balance, or one of a single "
         "leg"),
        ("ledger_transfer_wrong", "error",
         "(rehearsal probe) a posting function accepted a transfer but its entries did not move the "
         "amount from one test account to the other"),
    ),
)
_BY_NAME = {r.name: r for r in REGISTRY}
assert len(_BY_NAME) == len(REGISTRY), "a rule registered twice"

# The classes of a row of a pair, in precedence order (the classification SQL tests them so).
ROW_RULES = tuple(r.name for r in REGISTRY if r.kind == "row")


def rule(name: str) -> Rule:
    """The registered rule called ``name`` (a ``KeyError`` for any other: a bug)."""
    return _BY_NAME[name]


def rules_of(kind: str) -> tuple[str, ...]:
    """The names of the rules of ``kind``, in registry order."""
    assert kind in KINDS
    return tuple(r.name for r in REGISTRY if r.kind == kind)


@dataclass(frozen=True)
class Finding:
    """One broken rule. ``count``: the rows (or journals, cases, files) that break it;
    ``cents_impact``: the absolute impact, the sum of each row's |difference| in minor units
    (cents); ``cents_impact_net``: the signed sum, where the rule has one (None where it has not).
    ``restates``: set on a finding that restates others (a column's ``sum_mismatch`` restates its
    row findings): the run's totals do not count it again.
    """

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
    cents_impact_net: int | None = None
    restates: str | None = None

    def __post_init__(self) -> None:
        assert self.rule in _BY_NAME, f"unknown rule {self.rule}"
        assert self.severity in _BY_NAME[self.rule].severities, (self.rule, self.severity)
        assert self.count >= 0
        assert self.cents_impact >= 0, "the absolute impact is never negative"
        assert self.cents_impact_net is None or abs(self.cents_impact_net) <= self.cents_impact

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sample"] = list(self.sample)
        return data


def money(cents: int | Decimal) -> str:
    """Cents as an amount in major units with two decimals and thousands separators: 123456 ->
    "1,234.56", -5 -> "-0.05" (exact: Decimal, never float)."""
    value = Decimal(cents) / 100
    sign = "-" if value < 0 else ""
    return f"{sign}{abs(value):,.2f}"
