"""The ledger's layout, detected from the catalog: which column fills each role, what is absent.

``detect(conn, layout)`` reads the catalog (read only) and returns the
layout with every role filled (a column name, or ``""`` for an optional
role or table the database lacks) and a ``Detection``: the layout's name,
the column of each role, the rules that cannot be checked and why, and the
legacy balance columns that can be reconciled. A configured name must
exist; a role left to detection takes the first of its candidate names
that exists (``verifier.config.ledger.ROLES``). ``entries.seq``, the order
of the entries, is ``entries.id`` when that is an integer, else an integer
column named like an ordering column.

Raises ``UsageError`` naming, in one message, every required role and
table the database lacks with the configuration that would fix it; for row
level security that would hide rows of a ledger table from this role
(``row_security_active``, PostgreSQL documentation, "Row Security
Policies"); and for a configured reconciliation whose key cannot match the
accounts' owner.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import psycopg

from verifier.config.ledger import ALL_TYPES, MUTABLE_BY_DEFAULT, ROLES, TABLES, Layout, Reconcile
from verifier.errors import UsageError

# The columns (and their types) of the given tables of one schema.
COLUMNS_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype), c.oid::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""
RLS_SQL = "SELECT row_security_active(%s::oid), current_user"
# Casts defined in the database (not by initdb) that run a function, from the type of a column of the
# given tables to a type the audit's SQL casts to. The audit casts such columns (an enum type, a
# currency code) with ::text and ::numeric; a cast the type's owner defined would run instead of
# PostgreSQL's I/O conversion and could change what is read (PostgreSQL 15, "CREATE CAST").
CASTS_SQL = """
SELECT DISTINCT pg_catalog.format_type(k.castsource, NULL), pg_catalog.format_type(k.casttarget, NULL),
       k.castfunc::pg_catalog.regprocedure::text
FROM pg_catalog.pg_cast k
JOIN pg_catalog.pg_attribute a ON a.atttypid = k.castsource AND a.attnum > 0 AND NOT a.attisdropped
WHERE a.attrelid = ANY(%s::oid[]) AND k.oid >= 16384 AND k.castmethod = 'f'
  AND k.casttarget IN ('pg_catalog.text'::pg_catalog.regtype, 'pg_catalog.varchar'::pg_catalog.regtype,
                       'pg_catalog.numeric'::pg_catalog.regtype, 'pg_catalog.int8'::pg_catalog.regtype,
                       'pg_catalog.int4'::pg_catalog.regtype, 'pg_catalog.int2'::pg_catalog.regtype)
ORDER BY 1, 2
"""
PLATFORM = "platform 400"
EARLIER = "verifier 400 (earlier)"
CUSTOM = "custom"


PRESENT_TABLES_SQL = "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace " \
                     "WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')"
PRESENT_SQL = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace " \
              "WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"


def tables_of(conn: psycopg.Connection, layout: Layout) -> set[tuple[str, str]]:
    """The ledger's own tables that exist, as (schema, table); empty when the database holds no
    ledger (``present``)."""
    if not present(conn, layout):
        return set()
    names = [n for n in layout.tables.values() if n]
    rows = conn.execute(PRESENT_TABLES_SQL, (layout.schema, names)).fetchall()
    return {(layout.schema, str(r[0])) for r in rows}


def required(layout: Layout) -> list[str]:
    """The names of the layout's required tables (accounts, journals, entries, as configured)."""
    return [layout.tables[t] for t, (needed, _) in TABLES.items() if needed]


def present(conn: psycopg.Connection, layout: Layout) -> bool:
    """Whether the database holds a ledger: the layout's required tables all exist in its schema."""
    row = conn.execute(PRESENT_SQL, (layout.schema, required(layout))).fetchone()
    return row is not None and int(row[0]) == len(required(layout))


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type, e.g. "bigint", "uuid"
    integer: bool


@dataclass
class Detection:
    """What ``detect`` found: the layout's name, each role's column, what cannot be checked."""

    name: str
    roles: dict[str, str | None]  # "table.role" -> column (None: absent)
    reconciles: list[Reconcile]  # those that run
    skipped: list[tuple[Reconcile, str]]  # default reconciliations that cannot run here, and why
    not_checked: list[tuple[str, str]] = field(default_factory=list)  # (rule, why)
    mutable: dict[str, list[str]] = field(default_factory=dict)  # history table -> columns left out


def _catalog(conn: psycopg.Connection, schema: str, tables: list[str]
             ) -> tuple[dict[str, dict[str, Column]], dict[str, int]]:
    found: dict[str, dict[str, Column]] = {}
    oids: dict[str, int] = {}
    for table, column, typ, integer, oid in conn.execute(COLUMNS_SQL, (schema, tables)).fetchall():
        found.setdefault(str(table), {})[str(column)] = Column(str(column), str(typ), bool(integer))
        oids[str(table)] = int(oid)
    return found, oids


def detect(conn: psycopg.Connection, layout: Layout) -> tuple[Layout, Detection]:
    """The layout with every role filled from the catalog, and what was detected (see the module)."""
    found, oids = _catalog(conn, layout.schema, [t for t in layout.tables.values() if t])
    problems: list[str] = []
    fixes: list[str] = []
    tables = dict(layout.tables)
    for logical, (required, _) in TABLES.items():
        if tables[logical] not in found:
            if required:
                problems.append(f"the table {layout.schema}.{tables[logical]} ({logical}) does not exist "
                                "or is not visible to this role")
                fixes.append(f'{logical} = "<your table>"   # in [tool.verifier.ledger.tables]')
            tables[logical] = ""
    columns: dict[str, dict[str, str | None]] = {}
    for logical, roles in ROLES.items():
        have = found.get(tables[logical], {}) if tables[logical] else {}
        columns[logical] = {}
        for role, (required, candidates) in roles.items():
            configured = layout.columns[logical][role]
            name = _fill(logical, role, configured, candidates, have)
            if name is None and tables[logical] and (required or configured):
                looked = ", ".join(_looked(role, candidates))
                what = (f"has no column {configured}" if configured
                        else f"has no column for {logical}.{role} (looked for {looked})")
                problems.append(f"{layout.schema}.{tables[logical]} {what}")
                fixes.append(f'"{logical}.{role}" = "<your column>"   # in [tool.verifier.ledger.columns]')
            columns[logical][role] = name or ""
    if tables["journals"] and columns["journals"]["id"]:
        jid = found[tables["journals"]][str(columns["journals"]["id"])]
        if not jid.integer:
            problems.append(f"{layout.schema}.{tables['journals']}.{jid.name} is {jid.type}: journal ids "
                            "must be integers (they order the journals)")
    snapshot_key = "id"
    if not problems and tables["snapshots"]:
        last = found[tables["snapshots"]][str(columns["snapshots"]["last_entry"])]
        keys = {role: found[tables["entries"]][str(columns["entries"][role])] for role in ("id", "seq")}
        fits = [role for role, col in keys.items() if col.type == last.type]
        if fits:
            snapshot_key = fits[0]
        else:
            problems.append(f"{layout.schema}.{tables['snapshots']}.{last.name} is {last.type}, which "
                            f"matches neither entries.id ({keys['id'].type}) "
                            f"nor entries.seq ({keys['seq'].type})")
    if problems:
        raise UsageError(
            f"The ledger in schema {layout.schema} cannot be audited: {'; '.join(problems)}.",
            hint="Name them in verifier.toml ([ledger]) or pyproject.toml ([tool.verifier.ledger]):\n  "
                 + "\n  ".join(dict.fromkeys(fixes)))
    _check_row_security(conn, layout.schema, tables, oids)
    _check_casts(conn, layout.schema, [oids[t] for t in tables.values() if t])
    filled = replace(layout, tables=tables, columns=columns, snapshot_entry=snapshot_key)
    name = _name(filled)
    if filled.non_negative_account_types is None:
        filled = replace(filled, non_negative_account_types=(ALL_TYPES,) if name == PLATFORM
                         else ("user", "escrow"))
    filled = replace(filled, name=name)
    filled_roles = {f"{t}.{r}": (c or None)
                    for t, cols in columns.items() if tables[t] for r, c in cols.items()}
    detection = Detection(name, filled_roles,
                          *_reconciles(conn, filled, found))
    detection.mutable = _mutable(filled, found)
    return filled, detection


def _looked(role: str, candidates: tuple[str, ...]) -> tuple[str, ...]:
    return ("an integer id", *candidates) if role == "seq" else candidates


def _fill(logical: str, role: str, configured: str | None, candidates: tuple[str, ...],
          have: dict[str, Column]) -> str | None:
    """The column that fills one role: the configured one if it exists, else the first candidate."""
    if configured == "":
        return None
    if configured is not None:
        return configured if configured in have else None
    if logical == "entries" and role == "seq":
        ident = have.get("id")
        if ident is not None and ident.integer:
            return "id"
        return next((c for c in candidates if c in have and have[c].integer), None)
    return next((c for c in candidates if c in have), None)


def _check_row_security(conn: psycopg.Connection, schema: str, tables: dict[str, str],
                        oids: dict[str, int]) -> None:
    for logical, table in tables.items():
        if not table:
            continue
        row = conn.execute(RLS_SQL, (oids[table],)).fetchone()
        assert row is not None
        if row[0]:
            raise UsageError(
                f"Row level security is on for {schema}.{table} ({logical}) and applies to the role "
                f"{row[1]}: the audit would see only the rows its policies let through, and could pass "
                "a ledger it has not read.",
                hint=f"Audit as a role that bypasses it: ALTER ROLE {row[1]} BYPASSRLS (a superuser "
                     "grants it), or as the tables' owner.")


def _check_casts(conn: psycopg.Connection, schema: str, oids: list[int]) -> None:
    """``UsageError`` when a cast defined in the database (CASTS_SQL) could replace what the audit reads."""
    found = conn.execute(CASTS_SQL, (oids,)).fetchall()
    if found:
        casts = "; ".join(f"{a} AS {b} WITH FUNCTION {f}" for a, b, f in found)
        raise UsageError(
            f"The ledger in schema {schema} cannot be audited: the database defines cast(s) that would "
            f"run its own function where the audit reads a column's value ({casts}), and could change "
            "what the audit sees.",
            hint="Drop the cast(s) (DROP CAST), or audit a copy of the database without them.")


def _name(layout: Layout) -> str:
    cols = layout.columns
    if (cols["accounts"]["type"], cols["accounts"]["owner"], cols["journals"]["reversed_by"]) == (
            "type", "owner_id", "reversed_by"):
        return PLATFORM
    if (cols["accounts"]["type"], cols["journals"]["reverses"]) == ("account_type", "reverses_journal_id"):
        return EARLIER
    return CUSTOM


def _reconciles(conn: psycopg.Connection, layout: Layout, found: dict[str, dict[str, Column]]
                ) -> tuple[list[Reconcile], list[tuple[Reconcile, str]]]:
    """The reconciliations that can run, and the defaults that cannot (with why)."""
    present = []
    skipped = []
    owner = layout.columns["accounts"]["owner"]
    owner_type = found[layout.tables["accounts"]][owner].type if owner else None
    for r in layout.reconcile:
        cols, _ = _catalog(conn, r.schema, [r.table])
        have = cols.get(r.table, {})
        if not have and not r.configured:
            continue  # the default's table is not there: nothing to reconcile
        problem = None
        if r.key not in have or r.column not in have:
            problem = (f"{r.schema}.{r.table} has no column "
                       f"{', '.join(c for c in (r.key, r.column) if c not in have)}")
        elif owner_type is None:
            problem = f"{layout.table('accounts')} has no owner column (accounts.owner)"
        elif have[r.key].type != owner_type:
            problem = (f"{r.schema}.{r.table}.{r.key} is {have[r.key].type}, "
                       f"{layout.table('accounts')}.{owner} is {owner_type}: the key cannot match the owner")
        if problem is None:
            present.append(r)
        elif r.configured:
            raise UsageError(f"The reconciliation of {r.schema}.{r.table}.{r.column} cannot run: {problem}.",
                             hint="In [[tool.verifier.ledger.reconcile]], name a key of the same type as "
                                  "the accounts' owner column.")
        else:
            skipped.append((r, problem))
    return present, skipped


# The roles whose columns may change after posting, and are checked on every audit as they are.
MUTABLE_ROLES = {"journals": ("reversed_by", "is_reversed")}


def _mutable(layout: Layout, found: dict[str, dict[str, Column]]) -> dict[str, list[str]]:
    """Per history table, the columns left out of its digests: they may change after posting.

    Raises UsageError for a configured ``mutable_columns`` name that the table does not have, or that
    plays a role in the audit (an entry's amount, account, journal, balances...): a change there
    is what the history digests exist to find, and an incremental audit does not read it again.
    """
    out: dict[str, list[str]] = {}
    for table in ("entries", "journals"):
        name = layout.tables[table]
        have = found.get(name, {})
        allowed = MUTABLE_ROLES.get(table, ())
        names = [c for c in MUTABLE_BY_DEFAULT if c in have]
        names += [c for c in (layout.columns[table].get(r) for r in allowed) if c]
        for column in (c.partition(".")[2] for c in layout.mutable_columns if c.partition(".")[0] == table):
            roles = [r for r, c in layout.columns[table].items() if c == column and r not in allowed]
            if column not in have:
                problem = f"{layout.schema}.{name} has no column {column}"
            elif roles:
                problem = (f"{layout.schema}.{name}.{column} is the {' and '.join(roles)} the audit "
                           "checks; a proven row whose " + column + " changed must be found, not left out "
                           "of the history digests")
            else:
                names.append(column)
                continue
            raise UsageError(f"ledger.mutable_columns names {table}.{column}: {problem}.",
                             hint="List only columns that may change after posting and that the audit "
                                  "does not check (metadata, a description, updated_at).")
        out[table] = list(dict.fromkeys(names))
    return out
