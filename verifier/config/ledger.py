"""The ledger's configuration: where it lives (table and column names) and its conventions.

A ledger is a set of roles (``ROLES``: an entry's amount, a journal's
reversal link, ...), each filled by a column. By default every role is
detected from the catalog (``verifier.ledger.layout.detect``): the
platform's 400 layout (../shared/platform-400.md, also our own
``migrations/400``) and our earlier layout are recognised with no
configuration. ``[tool.verifier.ledger]`` names any table or column, or
declares an optional role absent (``""``), lists the account types that
must never go negative and those kept debit-normal, states the sign
convention (or leaves it to detection from the data), lists the legacy
balance columns to reconcile with the ledger's accounts and the columns
that may change after posting.

Names are data: they reach SQL only through ``psycopg.sql.Identifier``.
``parse`` raises ``UsageError`` naming the file and key for anything
malformed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from verifier.errors import UsageError

# The ledger's roles: logical table -> role -> (required, the column names
# that fill it, in order of preference). ``verifier.ledger.layout.detect``
# fills each role from the columns the database has, unless it is
# configured; a configured "" declares a role absent. The first names are the
# platform's 400 layout (../shared/platform-400.md), the second our own
# earlier layout. entries.seq orders the entries (entries.id when that is an
# integer).
ROLES: dict[str, dict[str, tuple[bool, tuple[str, ...]]]] = {
    "accounts": {"id": (True, ("id",)), "type": (True, ("type", "account_type")),
                 "owner": (False, ("owner_id", "owner_user_id")), "currency": (True, ("currency",)),
                 "balance": (True, ("balance_cents",))},
    "journals": {"id": (True, ("id",)), "type": (False, ("ref_type", "journal_type")),
                 "currency": (False, ("currency",)),
                 "reverses": (False, ("reverses_journal_id",)), "reversed_by": (False, ("reversed_by",)),
                 "is_reversed": (False, ("is_reversed",)),
                 "idempotency_key": (False, ("idempotency_key",))},
    "entries": {"id": (True, ("id",)), "seq": (True, ("seq", "sequence", "position")),
                "journal": (True, ("journal_id",)), "account": (True, ("account_id",)),
                "type": (True, ("entry_type",)), "amount": (True, ("amount_cents",)),
                "currency": (False, ("currency",)), "before": (True, ("balance_before_cents",)),
                "after": (True, ("balance_after_cents",))},
    "snapshots": {"id": (True, ("id",)), "account": (True, ("account_id",)),
                  "last_entry": (True, ("last_entry_id",)), "balance": (True, ("balance_cents",))},
    "pending": {"id": (True, ("id",)), "status": (True, ("status",)), "journal": (True, ("journal_id",)),
                "expires": (True, ("expires_at",))},
}
# Logical table -> (required, default name). A missing optional table skips its rules, said so.
TABLES = {"accounts": (True, "accounts"), "journals": (True, "journals"), "entries": (True, "entries"),
          "snapshots": (False, "ledger_snapshots"), "pending": (False, "pending_transactions")}
DEFAULT_TABLES = {t: name for t, (_, name) in TABLES.items()}
# Columns left out of the history digests by default (--state): they legitimately change after
# posting (a refund sets the original's reversal link and flag; updated_at follows any update).
MUTABLE_BY_DEFAULT = ("updated_at",)
# The keys of [tool.verifier.ledger] (the README documents each).
KEYS = ("schema", "tables", "columns", "non_negative_account_types", "debit_normal_account_types",
        "balance_rule", "positive_is", "debit_value", "credit_value", "reconcile", "mutable_columns",
        "workers", "chain_ranges", "unsettled_audits_max", "audit_in_rehearsal")
# The two halves of a sign convention. "detect" reads them from the entries.
BALANCE_RULES = ("after_is_before_minus_amount", "after_is_before_plus_amount")
POSITIVE_IS = ("debit", "credit")
ALL_TYPES = "*"  # non_negative_account_types: every account type


@dataclass(frozen=True)
class Reconcile:
    """A legacy balance column that must equal the balance of its owner's ledger account."""

    schema: str
    table: str
    key: str  # the owner's id in that table (accounts.owner matches it)
    column: str  # the legacy balance, in cents
    account_type: str
    configured: bool = True  # False: the default, skipped (and said so) where it does not fit


def _unset() -> dict[str, dict[str, str | None]]:
    return {t: dict.fromkeys(roles) for t, roles in ROLES.items()}


@dataclass(frozen=True)
class Layout:
    """Where the ledger lives and how it reads.

    ``columns[table][role]``: a column name, ``""`` (the role is absent) or
    ``None`` (not configured: ``verifier.ledger.layout.detect`` fills it from
    the catalog). ``tables`` likewise holds a name, or ``""`` for an optional
    table the database does not have. ``name`` is the layout detected
    ("platform 400", "verifier 400 (earlier)", or "custom"), ``""`` before.
    """

    schema: str = "public"
    tables: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TABLES))
    columns: dict[str, dict[str, str | None]] = field(default_factory=_unset)
    # None: by layout (every type where balances may never go negative, the platform's; else user, escrow).
    non_negative_account_types: tuple[str, ...] | None = None
    debit_normal_account_types: tuple[str, ...] = ()  # balances kept in the other sign (assets)
    balance_rule: str = "detect"
    positive_is: str = "detect"
    debit_value: str = "debit"  # what entries' type column says for a debit
    credit_value: str = "credit"
    reconcile: tuple[Reconcile, ...] = (
        Reconcile("public", "users", "id", "balance_cents", "user", configured=False),)
    mutable_columns: tuple[str, ...] = ()  # "table.column": left out of the history digests too
    workers: int = 3  # connections reading the one exported snapshot in parallel
    # Account ranges the full chain pass is split into (None: up to ``workers``, on a ledger large
    # enough for it to pay; 1: not split).
    chain_ranges: int | None = None
    # --state: audits in a row that may prove nothing new (a transaction held history back) before
    # that is an error rather than a warning.
    unsettled_audits_max: int = 3
    # A rehearsal audits the ledger its migrations reached; false says the tables named as the
    # ledger's are no ledger (their own money columns are still verified as cents).
    audit_in_rehearsal: bool = True
    name: str = ""
    snapshot_entry: str = "id"  # the entries' role that snapshots.last_entry names: id, or seq (detected)

    def __post_init__(self) -> None:
        assert set(self.tables) == set(TABLES)
        assert all(set(self.columns[t]) == set(c) for t, c in ROLES.items())
        assert self.balance_rule in (*BALANCE_RULES, "detect")
        assert self.positive_is in (*POSITIVE_IS, "detect")
        assert 1 <= self.workers <= 32

    def table(self, logical: str) -> str:
        """``schema.table`` of a logical table, for messages and findings."""
        return f"{self.schema}.{self.tables[logical]}"

    def has(self, logical: str, role: str | None = None) -> bool:
        """Whether a (detected) layout has the table, or the table and the role's column."""
        if not self.tables[logical]:
            return False
        return role is None or bool(self.columns[logical][role])

    def column(self, logical: str, role: str) -> str:
        """The column that fills a role of a detected layout (a ``KeyError`` if absent: a bug)."""
        name = self.columns[logical][role]
        if not name:
            raise KeyError(f"{logical}.{role}")
        return name


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
        if logical not in TABLES:
            raise UsageError(f"{where}: ledger.tables.{logical} is not one of "
                             f"{', '.join(TABLES)}.")
        tables[logical] = name
    columns = {t: dict(c) for t, c in layout.columns.items()}
    for dotted, name in _str_table(section, "columns", where, empty=True).items():
        table, _, logical = dotted.partition(".")
        if logical not in ROLES.get(table, {}):
            raise UsageError(f"{where}: ledger.columns.{dotted!r} should be TABLE.ROLE with TABLE one of "
                             f"{', '.join(ROLES)} and ROLE one of its roles "
                             f"(for entries: {', '.join(ROLES['entries'])}).")
        if not name and ROLES[table][logical][0]:
            raise UsageError(f"{where}: ledger.columns.{dotted!r} is a role every ledger needs; it cannot "
                             "be declared absent (\"\").")
        columns[table][logical] = name
    types = section.get("non_negative_account_types")
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
        raise UsageError(f"{where}: ledger.non_negative_account_types must be a list of account types "
                         f"(\"{ALL_TYPES}\": every type).")
    normal = section.get("debit_normal_account_types", [])
    if not isinstance(normal, list) or not all(isinstance(t, str) and t for t in normal):
        raise UsageError(f"{where}: ledger.debit_normal_account_types must be a list of account types.")
    mutable = section.get("mutable_columns", [])
    if not isinstance(mutable, list) or not all(
            isinstance(c, str) and c.partition(".")[0] in ("entries", "journals") and c.partition(".")[2]
            for c in mutable):
        raise UsageError(f"{where}: ledger.mutable_columns must be a list of \"entries.COLUMN\" or "
                         "\"journals.COLUMN\" names.")
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
    chain_ranges = section.get("chain_ranges", layout.chain_ranges)
    if chain_ranges is not None and (isinstance(chain_ranges, bool) or not isinstance(chain_ranges, int)
                                     or not 1 <= chain_ranges <= 64):
        raise UsageError(f"{where}: ledger.chain_ranges must be an integer from 1 to 64.")
    audit_in_rehearsal = section.get("audit_in_rehearsal", layout.audit_in_rehearsal)
    if not isinstance(audit_in_rehearsal, bool):
        raise UsageError(f"{where}: ledger.audit_in_rehearsal must be true or false.")
    unsettled = section.get("unsettled_audits_max", layout.unsettled_audits_max)
    if isinstance(unsettled, bool) or not isinstance(unsettled, int) or not 1 <= unsettled <= 1000:
        raise UsageError(f"{where}: ledger.unsettled_audits_max must be an integer from 1 to 1000.")
    reconcile = layout.reconcile
    if "reconcile" in section:
        reconcile = tuple(_reconcile(item, f"{where}: ledger.reconcile[{i}]", schema)
                          for i, item in enumerate(_list(section, "reconcile", where)))
    return replace(layout, schema=schema, tables=tables, columns=columns,
                   non_negative_account_types=None if types is None else tuple(types),
                   debit_normal_account_types=tuple(normal), mutable_columns=tuple(mutable),
                   reconcile=reconcile, workers=workers, chain_ranges=chain_ranges,
                   unsettled_audits_max=unsettled, audit_in_rehearsal=audit_in_rehearsal, **chosen, **values)


def _str_table(section: dict[str, Any], key: str, where: str, *, empty: bool = False) -> dict[str, str]:
    value = section.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) and (v or empty) for v in value.values()):
        absent = ' ("" declares an optional role absent)' if empty else ""
        raise UsageError(f"{where}: ledger.{key} must be a table of names{absent}.")
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
