"""The ledger enforcement probe: what the database accepts and rejects when journals are posted.

``probe(run, dsn, layout, convention)`` runs in a rehearsal's scratch
database only, after the migrations created a ledger (``layout``, as the
audit detected it; ``convention``, its sign convention). It posts test
journals the way applications post them, each case in its own transaction
that is always rolled back:

- ``balanced_two_legs``: a balanced journal, one ``INSERT`` per leg (the
  way a posting function or an ORM writes it);
- ``balanced_three_legs``: a balanced journal of three legs, likewise;
- ``posting_function``: each function of the ledger's schema whose
  signature is a transfer's (``from``/``to`` account arguments, then an
  integer ``amount``), called from one test account to another;
- ``unbalanced``: two legs that do not sum to zero;
- ``one_leg``: a journal of a single leg.

Every case first creates its own test accounts (type ``user`` where the
account type has it) with an opening balance of ``OPENING_CENTS``, then its
journal and legs (each leg's balance before read from its account, its
balance after by the convention), then ``SET CONSTRAINTS ALL IMMEDIATE`` so
that deferred constraint triggers fire before the rollback (PostgreSQL
documentation, "SET CONSTRAINTS": deferred checks run when the mode turns
immediate). The outcome is ``accepted``, ``rejected`` (the statement,
SQLSTATE and message) or ``not run`` (the test accounts could not be
created, or a column could not be filled).

Findings: a rejected balanced case is ``ledger_rejects_balanced``, an
accepted unbalanced or one-leg case ``ledger_accepts_unbalanced`` (both
errors); cases not run are ``ledger_rule_not_checked`` (a warning naming
them). Nothing outlives a case's transaction.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from verifier.config.ledger import Layout
from verifier.findings import Finding, rule
from verifier.ledger.invariants import Convention
from verifier.pg import conninfo
from verifier.pg.snapshot import configure, timeout_ms
from verifier.run import Run

OPENING_CENTS = 100_000  # each test account's opening balance (1,000.00 in a two-decimal currency)
TRANSFER_CENTS = 100
STATEMENT_TIMEOUT_S = 30.0  # per probe statement: a trigger that spins is a rejection, not a hang
LOCK_TIMEOUT_S = 5.0
MESSAGE_CHARS_MAX = 500
FUNCTIONS_MAX = 3  # posting functions probed
# The labels preferred for the test accounts' and journals' types, first that exists.
ACCOUNT_TYPES = ("user", "wallet", "customer")
JOURNAL_TYPES = ("token_transfer", "transfer", "adjustment")

# Each column of a table: name, whether an INSERT must supply it, its type and the type's kind.
COLUMNS_SQL = """
SELECT a.attname, a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '',
       t.typname, t.typtype, t.typcategory, a.atttypmod, t.oid::bigint
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""
ENUM_SQL = "SELECT enumlabel FROM pg_enum WHERE enumtypid = %s::oid ORDER BY enumsortorder"
# Functions of the schema shaped like a transfer: (from account, to account, amount, ...).
FUNCTIONS_SQL = """
SELECT n.nspname, p.proname, p.pronargs, p.pronargdefaults, p.proargnames,
       ARRAY(SELECT t FROM unnest(p.proargtypes::oid[]) t)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %s AND p.prokind = 'f' AND p.pronargs >= 3
  AND p.proargnames[1] ILIKE '%%from%%' AND p.proargnames[2] ILIKE '%%to%%'
  AND p.proargnames[3] ILIKE '%%amount%%'
  AND p.proargtypes[2] IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'numeric'::regtype)
ORDER BY p.proname, p.oid LIMIT %s
"""
TYPE_SQL = "SELECT n.nspname, t.typname, t.typtype, t.typcategory FROM pg_type t " \
           "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = %s::oid"


class NotRun(Exception):
    """A case could not be set up (its test accounts, or a column no value fits)."""


@dataclass
class Case:
    name: str
    how: str
    balanced: bool
    legs: tuple[tuple[int, str, int], ...] = ()  # (test account, "debit"/"credit", cents)
    function: tuple[Any, ...] | None = None  # a FUNCTIONS_SQL row
    outcome: str = ""
    statement: str = ""
    sqlstate: str | None = None
    message: str = ""

    @property
    def expected(self) -> str:
        return "accepted" if self.balanced else "rejected"

    def as_json(self) -> dict[str, Any]:
        return {"case": self.name, "how": self.how, "expected": self.expected,
                "outcome": self.outcome, "statement": self.statement or None,
                "sqlstate": self.sqlstate, "message": self.message or None}


@dataclass(frozen=True)
class Column:
    name: str
    required: bool
    typname: str
    typtype: str
    category: str
    typmod: int
    oid: int


@dataclass
class Table:
    """A ledger table as the probe writes it: its name and its columns."""

    ident: sql.Composable
    name: str
    columns: dict[str, Column] = field(default_factory=dict)


def cases(functions: list[tuple[Any, ...]]) -> list[Case]:
    """The probe's cases, in order (see the module docstring)."""
    found = [
        Case("balanced_two_legs", "a balanced journal, one INSERT per leg, in one transaction", True,
             ((0, "debit", TRANSFER_CENTS), (1, "credit", TRANSFER_CENTS))),
        Case("balanced_three_legs", "a balanced journal of three legs, one INSERT per leg", True,
             ((0, "debit", TRANSFER_CENTS), (1, "credit", 60), (2, "credit", TRANSFER_CENTS - 60))),
    ]
    found += [Case("posting_function", f"the posting function {f[1]}(from, to, amount, ...)", True,
                   function=f) for f in functions]
    found += [
        Case("unbalanced", "two legs that do not sum to zero (100 cents debit, 90 credit)", False,
             ((0, "debit", TRANSFER_CENTS), (1, "credit", 90))),
        Case("one_leg", "a journal of a single leg", False, ((0, "debit", TRANSFER_CENTS),)),
    ]
    return found


def probe(run: Run, dsn: str, layout: Layout, convention: Convention) -> list[Case]:
    """The "ledger probe" stage: every case run and rolled back; their findings added to ``run``.

    Raises ``DatabaseUnreachable`` when the scratch database cannot be reached.
    """
    with run.stage("ledger probe") as detail, conninfo.connect(dsn, what="scratch database",
                                                               autocommit=True) as conn:
        configure(conn, {"statement_timeout": timeout_ms(STATEMENT_TIMEOUT_S),
                         "lock_timeout": timeout_ms(LOCK_TIMEOUT_S)})
        tables = {t: _table(conn, layout, t) for t in ("accounts", "journals", "entries")}
        functions = conn.execute(FUNCTIONS_SQL, (layout.schema, FUNCTIONS_MAX)).fetchall()
        done = cases(functions)
        for case in done:
            _run_case(conn, case, layout, convention, tables)
        detail.update(opening_cents=OPENING_CENTS, cases=[c.as_json() for c in done],
                      posting_functions=[str(f[1]) for f in functions])
    run.add(*findings(done))
    return done


def findings(done: list[Case]) -> list[Finding]:
    """The findings of the probe's cases: wrong outcomes (errors), cases not run (a warning)."""
    out = []
    for name, balanced, wrong in (("ledger_rejects_balanced", True, "rejected"),
                                  ("ledger_accepts_unbalanced", False, "accepted")):
        bad = [c for c in done if c.balanced is balanced and c.outcome == wrong]
        if bad:
            out.append(Finding(
                rule=name, severity="error", table=None, count=len(bad), cents_impact=0,
                sample=tuple({"id": c.name, "cents_impact": 0,
                              "detail": f"{c.how}: {c.statement}: SQLSTATE {c.sqlstate}: {c.message}"
                              if c.outcome == "rejected" else f"{c.how}: accepted"} for c in bad),
                message=f"The ledger {wrong} {len(bad)} test journal(s) it must not have: "
                        + "; ".join(f"{c.name} ({c.how})" + (f", at {c.statement}: {c.message}"
                                                             if c.outcome == "rejected" else "")
                                    for c in bad) + f" ({rule(name).meaning})",
                detail={"check": "ledger probe", "cases": [c.name for c in bad]}))
    skipped = [c for c in done if c.outcome == "not run"]
    if skipped:
        out.append(Finding(
            rule="ledger_rule_not_checked", severity="warning", table=None, count=len(skipped),
            cents_impact=0,
            sample=tuple({"id": c.name, "cents_impact": 0, "detail": c.message} for c in skipped),
            message=f"{len(skipped)} ledger probe case(s) not run: "
                    + "; ".join(f"{c.name} ({c.message})" for c in skipped)
                    + f" ({rule('ledger_rule_not_checked').meaning})",
            detail={"check": "ledger probe",
                    "rules": ["ledger_rejects_balanced", "ledger_accepts_unbalanced"]}))
    return out


def _table(conn: psycopg.Connection, layout: Layout, logical: str) -> Table:
    name = layout.table(logical)
    table = Table(sql.Identifier(layout.schema, layout.tables[logical]), name)
    regclass = table.ident.as_string(conn)
    for col, required, typname, typtype, category, typmod, oid in conn.execute(COLUMNS_SQL, (regclass,)):
        table.columns[str(col)] = Column(str(col), bool(required), str(typname), str(typtype),
                                         str(category), int(typmod), int(oid))
    return table


def _run_case(conn: psycopg.Connection, case: Case, layout: Layout, convention: Convention,
              tables: dict[str, Table]) -> None:
    """Run ``case`` in a transaction that is always rolled back; record its outcome in it."""
    with conn.transaction(force_rollback=True):
        try:
            try:
                accounts = [_account(conn, layout, tables["accounts"])
                            for _ in range(1 + max((leg[0] for leg in case.legs), default=1))]
            except psycopg.Error as exc:
                raise NotRun(f"the test accounts could not be created: {_message(exc)}") from None
            if case.function is not None:
                _call(conn, case, accounts)
            else:
                _post(conn, case, layout, convention, tables, accounts)
            case.statement = "SET CONSTRAINTS ALL IMMEDIATE (the deferred checks, before the rollback)"
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        except NotRun as exc:
            case.outcome, case.message = "not run", str(exc)
            return
        except psycopg.Error as exc:
            case.outcome, case.sqlstate, case.message = "rejected", exc.sqlstate, _message(exc)
            return
        case.outcome, case.statement = "accepted", ""


def _message(exc: psycopg.Error) -> str:
    text = (exc.diag.message_primary or str(exc)).strip()
    return text if len(text) <= MESSAGE_CHARS_MAX else text[:MESSAGE_CHARS_MAX] + "..."


def _enum_labels(conn: psycopg.Connection, type_oid: int) -> list[str]:
    return [str(r[0]) for r in conn.execute(ENUM_SQL, (type_oid,))]


def _value(conn: psycopg.Connection, column: Column, where: str) -> str:
    """A plain value of ``column``'s type, as text (sent untyped: PostgreSQL casts it to the column's
    type on INSERT). Raises ``NotRun`` for a type no plain value fits."""
    return _typed_value(conn, column.typname, column.typtype, column.category, column.typmod, column.oid,
                        f"{where}.{column.name}")


def _typed_value(conn: psycopg.Connection, typname: str, typtype: str, category: str, typmod: int,
                 oid: int, what: str) -> str:
    if typtype == "e":
        labels = _enum_labels(conn, oid)
        if labels:
            return labels[0]
    elif typname == "uuid":
        return str(uuid.uuid4())
    elif category == "N":
        return "0"
    elif category == "B":
        return "false"
    elif typname in ("json", "jsonb"):
        return "{}"
    elif category == "D":
        return "now"  # PostgreSQL documentation, "Date/Time Input": a special value of every date/time type
    elif category == "A":
        return "{}"
    elif category == "S":
        token = "verifier-probe-" + secrets.token_hex(8)
        return token[:typmod - 4] if typname in ("varchar", "bpchar") and typmod > 4 else token
    elif category == "I":
        return "127.0.0.1"
    raise NotRun(f"no plain value fits {what} (type {typname}), which has no default")


def _choose(conn: psycopg.Connection, column: Column, preferred: tuple[str, ...]) -> str:
    labels = _enum_labels(conn, column.oid) if column.typtype == "e" else []
    if not labels:
        return preferred[0]
    return next((p for p in preferred if p in labels), labels[0])


def _insert(conn: psycopg.Connection, table: Table, values: dict[str, str], returning: str) -> Any:
    """INSERT one row of ``values`` (and a plain value for each other column that needs one);
    the ``returning`` column of the new row."""
    row = dict(values)
    for column in table.columns.values():
        if column.required and column.name not in row:
            row[column.name] = _value(conn, column, table.name)
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
        table.ident, sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)), sql.Identifier(returning))
    found = conn.execute(query, list(row.values())).fetchone()
    assert found is not None
    return found[0]


def _account(conn: psycopg.Connection, layout: Layout, table: Table) -> tuple[Any, str, str]:
    """A new test account with the opening balance: (id, its type, its currency)."""
    def col(role: str) -> str:
        return layout.column("accounts", role)

    kind = _choose(conn, table.columns[col("type")], ACCOUNT_TYPES)
    found = conn.execute(sql.SQL("SELECT {}::text FROM {} WHERE {} IS NOT NULL LIMIT 1").format(
        sql.Identifier(col("currency")), table.ident, sql.Identifier(col("currency")))).fetchone()
    currency = str(found[0]) if found else "USD"
    values = {col("type"): kind, col("currency"): currency, col("balance"): str(OPENING_CENTS)}
    owner = layout.columns["accounts"]["owner"]
    if owner:
        values[owner] = _value(conn, table.columns[owner], table.name)
        if table.columns[owner].category == "N":
            values[owner] = str(secrets.randbelow(2**31 - 1) + 1)
    return _insert(conn, table, values, col("id")), kind, currency


def _post(conn: psycopg.Connection, case: Case, layout: Layout, convention: Convention,
          tables: dict[str, Table], accounts: list[tuple[Any, str, str]]) -> None:
    """The journal of ``case``, then each of its legs, one INSERT each (``case.statement`` says which)."""
    jcols, ecols = layout.columns["journals"], layout.columns["entries"]

    def col(role: str) -> str:
        return layout.column("entries", role)

    journal_values: dict[str, str] = {}
    if jcols["type"]:
        journal_values[jcols["type"]] = _choose(conn, tables["journals"].columns[jcols["type"]],
                                                JOURNAL_TYPES)
    if jcols["currency"]:
        journal_values[jcols["currency"]] = accounts[0][2]
    case.statement = f"INSERT INTO {tables['journals'].name}"
    journal = _insert(conn, tables["journals"], journal_values, layout.column("journals", "id"))
    for n, (index, side, cents) in enumerate(case.legs, start=1):
        account, kind, currency = accounts[index]
        case.statement = f"SELECT the balance of test account {account}"
        row = conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} = %s").format(
            sql.Identifier(layout.column("accounts", "balance")), tables["accounts"].ident,
            sql.Identifier(layout.column("accounts", "id"))), (account,)).fetchone()
        before = int(row[0]) if row and row[0] is not None else OPENING_CENTS
        amount = (convention.debit_sign if side == "debit" else -convention.debit_sign) * cents
        direction = convention.direction * (-1 if kind in layout.debit_normal_account_types else 1)
        values = {col("journal"): str(journal), col("account"): str(account), col("amount"): str(amount),
                  col("type"): layout.debit_value if side == "debit" else layout.credit_value,
                  col("before"): str(before), col("after"): str(before + direction * amount)}
        if ecols["currency"]:
            values[ecols["currency"]] = currency
        case.statement = (f"INSERT INTO {tables['entries'].name} (leg {n} of {len(case.legs)}: "
                          f"{side} {cents} cents)")
        _insert(conn, tables["entries"], values, col("id"))


def _call(conn: psycopg.Connection, case: Case, accounts: list[tuple[Any, str, str]]) -> None:
    """Call the posting function of ``case`` to move TRANSFER_CENTS from the first test account to the
    second; its other required arguments get plain values of their types."""
    assert case.function is not None
    schema, name, nargs, ndefaults, argnames, argtypes = case.function
    names = list(argnames or [])
    args: list[sql.Composable] = []
    for i, type_oid in enumerate(list(argtypes)[:max(3, int(nargs) - int(ndefaults))]):
        row = conn.execute(TYPE_SQL, (type_oid,)).fetchone()
        assert row is not None
        nsp, typname, typtype, category = (str(v) for v in row)
        if i < 2:
            value = str(accounts[i][0])
        elif i == 2:
            value = str(TRANSFER_CENTS)
        else:
            value = _typed_value(conn, typname, typtype, category, -1, int(type_oid),
                                 f"argument {names[i] if i < len(names) else i + 1} of {name}")
        args.append(sql.SQL("{}::{}").format(sql.Literal(value), sql.Identifier(nsp, typname)))
    query = sql.SQL("SELECT {}({})").format(sql.Identifier(str(schema), str(name)),
                                           sql.SQL(", ").join(args))
    case.statement = f"SELECT {name}(test account {accounts[0][0]}, test account {accounts[1][0]}, " \
                     f"{TRANSFER_CENTS}, ...)"
    conn.execute(query)

