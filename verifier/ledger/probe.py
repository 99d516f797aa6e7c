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
accepted unbalanced or one-leg case ``ledger_accepts_unbalanced``, a
posting function whose entries did not move the amount asked from the first
test account to the second ``ledger_transfer_wrong`` (all errors); cases not
run are ``ledger_rule_not_checked`` (a warning naming them), among them a
case the database refused for the probe's own test values (a plain value
breaking a constraint on a column the probe filled, an argument of a type
it cannot give). Nothing outlives a case's transaction.
"""

from __future__ import annotations

import secrets
import threading
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
CASE_LIMIT_S = 60.0  # per case: past it its backend is terminated (the statement timeout can be caught)
LOCK_TIMEOUT_S = 5.0
MESSAGE_CHARS_MAX = 500
FUNCTIONS_MAX = 3  # posting functions probed
# The labels preferred for the test accounts' and journals' types, first that exists.
ACCOUNT_TYPES = ("user", "wallet", "customer")
JOURNAL_TYPES = ("token_transfer", "transfer", "adjustment")

# Each column of a table: name, whether an INSERT must supply it, its type and the type's kind.
COLUMNS_SQL = """
SELECT a.attname, a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '',
       t.typname, t.typtype, t.typcategory, a.atttypmod, t.oid::bigint,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisunique
                 AND a.attnum = ANY(i.indkey))
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
    # Columns (table, column) the probe filled with a plain value of their type: a constraint on one
    # of them that rejects the row rejects the probe's value, not the journal.
    filled: set[tuple[str, str]] = field(default_factory=set)
    wrong: str = ""  # an accepted transfer that moved other amounts than asked

    @property
    def expected(self) -> str:
        return "accepted" if self.balanced else "rejected"

    def as_json(self) -> dict[str, Any]:
        return {"case": self.name, "how": self.how, "expected": self.expected,
                "outcome": self.outcome, "statement": self.statement or None,
                "sqlstate": self.sqlstate, "message": self.message or None, "wrong": self.wrong or None}


@dataclass(frozen=True)
class Column:
    name: str
    required: bool
    typname: str
    typtype: str
    category: str
    typmod: int
    oid: int
    unique: bool = False  # part of a unique index or primary key


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
    with run.stage("ledger probe") as detail, \
            conninfo.connect(dsn, what="scratch database", autocommit=True) as observer:
        conn = _session(dsn)
        try:
            tables = {t: _table(conn, layout, t) for t in ("accounts", "journals", "entries")}
            functions = conn.execute(FUNCTIONS_SQL, (layout.schema, FUNCTIONS_MAX)).fetchall()
            done = cases(functions)
            for n, case in enumerate(done):
                run.advanced("ledger probe", n, len(done), "cases", now=case.name)
                conn = _watched(conn, observer, dsn, case, lambda c, case=case: _run_case(
                    c, case, layout, convention, tables))
        finally:
            conn.close()
        detail.update(opening_cents=OPENING_CENTS, cases=[c.as_json() for c in done],
                      posting_functions=[str(f[1]) for f in functions])
    run.add(*findings(done))
    return done


def _session(dsn: str) -> psycopg.Connection:
    conn = conninfo.connect(dsn, what="scratch database", autocommit=True)
    configure(conn, {"statement_timeout": timeout_ms(STATEMENT_TIMEOUT_S),
                     "lock_timeout": timeout_ms(LOCK_TIMEOUT_S)})
    return conn


def _watched(conn: psycopg.Connection, observer: psycopg.Connection, dsn: str, case: Case,
             run_case: Any) -> psycopg.Connection:
    """Run one case on ``conn``, its backend terminated after ``CASE_LIMIT_S`` (a function that
    catches the statement timeout's cancel would run for ever); the connection to go on with (a new
    one when the case's was lost: terminated by us, or by what the ledger ran)."""
    pid = conn.info.backend_pid
    fired = threading.Event()

    def terminate() -> None:
        fired.set()
        observer.execute("SELECT pg_terminate_backend(%s)", (pid,))

    timer = threading.Timer(CASE_LIMIT_S, terminate)
    timer.daemon = True
    timer.start()
    try:
        run_case(conn)
    except psycopg.OperationalError as exc:
        if not conn.broken:
            raise
        case.sqlstate, case.message = exc.sqlstate, _message(exc)
    finally:
        timer.cancel()
    if not conn.broken:
        return conn
    case.outcome = "rejected"
    case.message = (f"did not finish in {CASE_LIMIT_S:g} s and was terminated" if fired.is_set()
                    else f"the session was lost: {case.message}")
    conn.close()
    return _session(dsn)


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
    misposted = [c for c in done if c.outcome == "accepted" and c.wrong]
    if misposted:
        out.append(Finding(
            rule="ledger_transfer_wrong", severity="error", table=None, count=len(misposted),
            cents_impact=0,
            sample=tuple({"id": c.name, "cents_impact": 0, "detail": f"{c.how}: {c.wrong}"}
                         for c in misposted),
            message="; ".join(f"{c.how}: {c.wrong}" for c in misposted)
                    + f" ({rule('ledger_transfer_wrong').meaning})",
            detail={"check": "ledger probe", "cases": [c.name for c in misposted]}))
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
    for col, required, typname, typtype, category, typmod, oid, unique in conn.execute(
            COLUMNS_SQL, (regclass,)):
        table.columns[str(col)] = Column(str(col), bool(required), str(typname), str(typtype),
                                         str(category), int(typmod), int(oid), bool(unique))
    return table


def _run_case(conn: psycopg.Connection, case: Case, layout: Layout, convention: Convention,
              tables: dict[str, Table]) -> None:
    """Run ``case`` in a transaction that is always rolled back; record its outcome in it.

    An error raised by the probe's own statement (no PL/pgSQL context) for a value it chose (a data
    exception, or a constraint on a column it filled with a plain value) makes the case "not run":
    the database rejected the probe's test values, not the journal.
    """
    failed: psycopg.Error | None = None
    with conn.transaction(force_rollback=True):
        try:
            try:
                accounts = [_account(conn, layout, tables["accounts"], case)
                            for _ in range(1 + max((leg[0] for leg in case.legs), default=1))]
            except psycopg.Error as exc:
                raise NotRun(f"the test accounts could not be created: {_message(exc)}") from None
            if case.function is not None:
                _call(conn, case, accounts)
                case.wrong = _moved(conn, layout, convention, tables, accounts)
            else:
                _post(conn, case, layout, convention, tables, accounts)
            case.statement = "SET CONSTRAINTS ALL IMMEDIATE (the deferred checks, before the rollback)"
            conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        except NotRun as exc:
            case.outcome, case.message = "not run", str(exc)
            return
        except psycopg.Error as exc:
            failed = exc
    if failed is None:
        case.outcome, case.statement = "accepted", ""
        return
    own = _probes_own_value(conn, case, failed)
    if own is not None:
        case.outcome, case.message = "not run", f"the database refused the probe's test value: {own}"
        return
    case.outcome, case.sqlstate, case.message = "rejected", failed.sqlstate, _message(failed)


# SQLSTATE classes of errors that a value itself causes ("Appendix A. PostgreSQL Error Codes"): a
# data exception (22), a constraint broken (23), a type or function that does not fit (42).
OWN_VALUE_CLASSES = ("22", "23", "42")
CONSTRAINT_COLUMNS_SQL = """
SELECT a.attname FROM pg_catalog.pg_constraint c
JOIN pg_catalog.pg_class r ON r.oid = c.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
WHERE c.conname = %s AND r.relname = %s AND n.nspname = %s
"""


def _probes_own_value(conn: psycopg.Connection, case: Case, exc: psycopg.Error) -> str | None:
    """Why ``exc`` is the probe's own doing (see ``_run_case``), or None when it is the ledger's:
    an error raised inside a trigger or function (it has a context) is always the ledger's."""
    diag = exc.diag
    state = exc.sqlstate or ""
    if diag.context or state[:2] not in OWN_VALUE_CLASSES:
        return None
    if state[:2] != "23":  # a value of ours that does not parse or fit its column or argument
        return f"{_message(exc)} (SQLSTATE {state})"
    table = diag.table_name or ""
    if diag.column_name:
        columns = {diag.column_name}
    else:
        columns = {str(r[0]) for r in conn.execute(
            CONSTRAINT_COLUMNS_SQL, (diag.constraint_name or "", table, diag.schema_name or "")).fetchall()}
    ours = sorted(c for t, c in case.filled if t.rsplit(".", 1)[-1] == table and c in columns)
    if not ours:
        return None
    return (f"{_message(exc)} (SQLSTATE {state}), on {table}.{', '.join(ours)}, which the probe filled with "
            "a plain value")


def _moved(conn: psycopg.Connection, layout: Layout, convention: Convention, tables: dict[str, Table],
           accounts: list[tuple[Any, str, str]]) -> str:
    """What an accepted transfer got wrong ("" when nothing): the test accounts are new, so every entry
    on them is the transfer's; the first must have a net debit of TRANSFER_CENTS, the second a net
    credit of as much."""
    def col(role: str) -> str:
        return layout.column("entries", role)

    query = sql.SQL("SELECT {a}, sum({m})::bigint FROM {e} WHERE {a} IN ({x}, {y}) GROUP BY {a}").format(
        a=sql.Identifier(col("account")), m=sql.Identifier(col("amount")), e=tables["entries"].ident,
        x=sql.Literal(accounts[0][0]), y=sql.Literal(accounts[1][0]))
    rows: dict[Any, Any] = dict(conn.execute(query).fetchall())
    want = {accounts[0][0]: convention.debit_sign * TRANSFER_CENTS,
            accounts[1][0]: -convention.debit_sign * TRANSFER_CENTS}
    got = {a: int(rows.get(a) or 0) for a in want}
    if got == want:
        return ""
    return (f"it accepted the transfer of {TRANSFER_CENTS} cents but its entries moved "
            + ", ".join(f"{got[a]:+d} on test account {a} (expected {want[a]:+d})" for a in want))


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


def _insert(conn: psycopg.Connection, table: Table, values: dict[str, str], returning: str,
            case: Case) -> Any:
    """INSERT one row of ``values`` (and a plain value for each other column that needs one, noted in
    ``case.filled``); the ``returning`` column of the new row."""
    row = dict(values)
    for column in table.columns.values():
        if column.required and column.name not in row:
            row[column.name] = _value(conn, column, table.name)
            if column.unique and column.category == "N":  # a key without a default: one above the rest
                found = conn.execute(sql.SQL("SELECT (coalesce(max({}), 0) + 1)::text FROM {}").format(
                    sql.Identifier(column.name), table.ident)).fetchone()
                row[column.name] = str(found[0]) if found else "1"
            case.filled.add((table.name, column.name))
    # Values as literals, no parameters: a name holding "%" must reach the server as written.
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
        table.ident, sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(map(sql.Literal, row.values())), sql.Identifier(returning))
    found = conn.execute(query).fetchone()
    assert found is not None
    return found[0]


def _account(conn: psycopg.Connection, layout: Layout, table: Table, case: Case) -> tuple[Any, str, str]:
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
        case.filled.add((table.name, owner))
    return _insert(conn, table, values, col("id"), case), kind, currency


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
    journal = _insert(conn, tables["journals"], journal_values, layout.column("journals", "id"), case)
    for n, (index, side, cents) in enumerate(case.legs, start=1):
        account, kind, currency = accounts[index]
        case.statement = f"SELECT the balance of test account {account}"
        row = conn.execute(sql.SQL("SELECT {} FROM {} WHERE {} = {}").format(
            sql.Identifier(layout.column("accounts", "balance")), tables["accounts"].ident,
            sql.Identifier(layout.column("accounts", "id")), sql.Literal(account))).fetchone()
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
        _insert(conn, tables["entries"], values, col("id"), case)


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
            if category != "N":
                raise NotRun(f"{name} takes its {'from' if i == 0 else 'to'} account as {typname}; the probe "
                             "posts between account ids")
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

