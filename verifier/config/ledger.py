"""The ledger's configuration: where it lives (table and column names) and its conventions.

The defaults are the platform's 400 layout (DESIGN.md), which is also our
own ``migrations/400``. ``[tool.verifier.ledger]`` renames any table or
column, lists the account types that must never go negative, states the
sign convention (or leaves it to detection from the data) and lists the
legacy balance columns to reconcile with the ledger's accounts.

Names are data: they reach SQL only through ``psycopg.sql.Identifier``.
``parse`` raises ``UsageError`` naming the file and key for anything
malformed; ``verifier.ledger.layout.check_exists`` holds a layout against
the database's catalog.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from verifier.errors import UsageError

# Logical table -> logical column -> default name. Every check reads these.
DEFAULT_TABLES = {
    "accounts": "accounts",
    "journals": "journals",
    "entries": "entries",
    "snapshots": "ledger_snapshots",
    "pending": "pending_transactions",
}
DEFAULT_COLUMNS = {
    "accounts": {"id": "id", "type": "account_type", "owner": "owner_user_id", "currency": "currency",
                 "balance": "balance_cents"},
    "journals": {"id": "id", "type": "journal_type", "currency": "currency",
                 "reverses": "reverses_journal_id", "idempotency_key": "idempotency_key"},
    "entries": {"id": "id", "journal": "journal_id", "account": "account_id", "type": "entry_type",
                "amount": "amount_cents", "currency": "currency", "before": "balance_before_cents",
                "after": "balance_after_cents"},
    "snapshots": {"id": "id", "account": "account_id", "last_entry": "last_entry_id",
                  "balance": "balance_cents"},
    "pending": {"id": "id", "status": "status", "journal": "journal_id", "expires": "expires_at"},
}
# The keys of [tool.verifier.ledger] (the README documents each).
KEYS = ("schema", "tables", "columns", "non_negative_account_types", "balance_rule", "positive_is",
        "debit_value", "credit_value", "reconcile", "workers")
# The two halves of a sign convention. "detect" reads them from the entries.
BALANCE_RULES = ("after_is_before_minus_amount", "after_is_before_plus_amount")
POSITIVE_IS = ("debit", "credit")


@dataclass(frozen=True)
class Reconcile:
    """A legacy balance column that must equal the balance of its owner's ledger account."""

    schema: str
    table: str
    key: str  # the owner's id in that table (accounts.owner matches it)
    column: str  # the legacy balance, in cents
    account_type: str


@dataclass(frozen=True)
class Layout:
    schema: str = "public"
    tables: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TABLES))
    columns: dict[str, dict[str, str]] = field(
        default_factory=lambda: {t: dict(c) for t, c in DEFAULT_COLUMNS.items()})
    non_negative_account_types: tuple[str, ...] = ("user", "escrow")
    balance_rule: str = "detect"
    positive_is: str = "detect"
    debit_value: str = "debit"  # what entries' type column says for a debit
    credit_value: str = "credit"
    reconcile: tuple[Reconcile, ...] = (Reconcile("public", "users", "id", "balance_cents", "user"),)
    workers: int = 3  # connections reading the one exported snapshot in parallel

    def __post_init__(self) -> None:
        assert set(self.tables) == set(DEFAULT_TABLES)
        assert all(set(self.columns[t]) == set(c) for t, c in DEFAULT_COLUMNS.items())
        assert self.balance_rule in (*BALANCE_RULES, "detect")
        assert self.positive_is in (*POSITIVE_IS, "detect")
        assert 1 <= self.workers <= 32

    def table(self, logical: str) -> str:
        """``schema.table`` of a logical table, for messages and findings."""
        return f"{self.schema}.{self.tables[logical]}"


def parse(section: Any, where: str) -> Layout:
    """The ``[tool.verifier.ledger]`` table of a config file (``where`` names it in errors)."""
    if not isinstance(section, dict):
        raise UsageError(f"{where}: [tool.verifier.ledger] must be a table.")
    unknown = sorted(set(section) - set(KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) in [tool.verifier.ledger]: {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(KEYS))}).")
    layout = Layout()
    schema = section.get("schema", "public")
    if not isinstance(schema, str) or not schema:
        raise UsageError(f"{where}: ledger.schema must be a schema name.")
    tables = dict(layout.tables)
    for logical, name in _str_table(section, "tables", where).items():
        if logical not in DEFAULT_TABLES:
            raise UsageError(f"{where}: ledger.tables.{logical} is not one of "
                             f"{', '.join(DEFAULT_TABLES)}.")
        tables[logical] = name
    columns = {t: dict(c) for t, c in layout.columns.items()}
    for dotted, name in _str_table(section, "columns", where).items():
        table, _, logical = dotted.partition(".")
        if logical not in DEFAULT_COLUMNS.get(table, {}):
            raise UsageError(f"{where}: ledger.columns.{dotted!r} should be TABLE.COLUMN with TABLE one of "
                             f"{', '.join(DEFAULT_COLUMNS)} and COLUMN one of its logical columns "
                             f"(for entries: {', '.join(DEFAULT_COLUMNS['entries'])}).")
        columns[table][logical] = name
    types = section.get("non_negative_account_types", list(layout.non_negative_account_types))
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise UsageError(f"{where}: ledger.non_negative_account_types must be a list of account types.")
    choices = {"balance_rule": (*BALANCE_RULES, "detect"), "positive_is": (*POSITIVE_IS, "detect")}
    chosen = {}
    for key, allowed in choices.items():
        value = section.get(key, "detect")
        if value not in allowed:
            raise UsageError(f"{where}: ledger.{key} {value!r} is not one of {', '.join(allowed)}.")
        chosen[key] = value
    values = {}
    for key in ("debit_value", "credit_value"):
        value = section.get(key, getattr(layout, key))
        if not isinstance(value, str) or not value:
            raise UsageError(f"{where}: ledger.{key} must be a non-empty string.")
        values[key] = value
    workers = section.get("workers", layout.workers)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 32:
        raise UsageError(f"{where}: ledger.workers must be an integer from 1 to 32.")
    reconcile = layout.reconcile
    if "reconcile" in section:
        reconcile = tuple(_reconcile(item, f"{where}: ledger.reconcile[{i}]", schema)
                          for i, item in enumerate(_list(section, "reconcile", where)))
    return replace(layout, schema=schema, tables=tables, columns=columns,
                   non_negative_account_types=tuple(types), reconcile=reconcile, workers=workers,
                   **chosen, **values)


def _str_table(section: dict[str, Any], key: str, where: str) -> dict[str, str]:
    value = section.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise UsageError(f"{where}: ledger.{key} must be a table of names.")
    return value


def _list(section: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = section.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise UsageError(f"{where}: ledger.{key} must be an array of tables "
                         f"([[tool.verifier.ledger.{key}]]).")
    return value


def _reconcile(item: dict[str, Any], at: str, schema: str) -> Reconcile:
    keys = {"table", "key", "column", "account_type"}
    if set(item) != keys or not all(isinstance(v, str) and v for v in item.values()):
        raise UsageError(f"{at} needs exactly {', '.join(sorted(keys))} (strings).")
    table_schema, _, table = item["table"].rpartition(".")
    return Reconcile(table_schema or schema, table, item["key"], item["column"], item["account_type"])
