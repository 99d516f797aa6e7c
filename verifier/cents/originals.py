"""Originals: a rehearsal's record of every money value before the migrations run.

``record(conn, config)`` copies, for each table with money columns
(numeric, real, double) and a primary key, the key and the money columns
into a table of its own in the ``verifier_originals`` schema of the
scratch database (never anywhere else). After the migrations, the checks
read each table FULL JOINed with its originals on the key
(``verifier.cents.sql.relation``): rows lost or added by a migration are
``row_missing`` / ``row_added``, and a decimal column changed in place or
dropped (as 303 drops them) is still compared with the value it had.

A table without a primary key is matched on its first unique index whose
columns are all NOT NULL; one with neither cannot be matched row for row
after a migration rewrote them: it is not recorded, is verified against
its live decimal columns, as in place, and the run says so
(``originals_not_recorded``, a warning).

The schema (``verifier_originals``, or that name with a random suffix when
the snapshot already holds a schema so named) is owned by the reader role;
the sandbox role that runs the migrations cannot read or change it. It is
left out of pair discovery by name (the name is ours for the rehearsal) and
of the migration rule fingerprints (the sandbox role may not use it).

Tables are followed by OID (``relocate``): a migration that renames a
table, moves it to another schema or renames its key columns is still
compared with its originals; one that drops the table, or a key column,
leaves originals that match nothing, which is an error
(``originals_unmatched``), never a silent pass.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import psycopg
from psycopg import sql

from verifier.cents.catalog import COLUMNS_SQL, Column, key_of, looks_minor, read_columns, reads
from verifier.cents.currency import candidates as currency_candidates
from verifier.config import Config
from verifier.errors import VerifierError

# Where a rehearsal records the originals, in its scratch database only (with a random suffix
# when the snapshot has a schema of that name). The catalog's reading leaves it out by name.
ORIGINALS_SCHEMA = "verifier_originals"
assert "n.nspname <> %(ours)s" in COLUMNS_SQL


@dataclass(frozen=True)
class Source:
    """A recorded column: its declared type, NOT NULL, and kind (numeric, float, money, text; code: a
    currency code column, recorded to be compared, never a source)."""

    name: str
    type: str
    not_null: bool
    kind: str


@dataclass(frozen=True)
class Originals:
    """A table's key and source values as a rehearsal recorded them before migrating."""

    relation: str  # its table in ``schema``
    key: tuple[str, ...]  # the key's columns, as named in the record
    sources: tuple[Source, ...]
    schema: str = ORIGINALS_SCHEMA  # the record's schema (Recorded.schema)
    oid: int = 0  # the live table's pg_class OID when recorded: followed through renames
    key_attnums: tuple[int, ...] = ()  # the live key columns' attribute numbers, in key order
    key_types: tuple[str, ...] = ()  # their types (format_type) when recorded
    live_key: tuple[str, ...] = ()  # the key's columns as the live table now names them (relocate)
    rows: int = 0  # rows recorded
    # Each row's currency code columns (named and typed like one, catalog.currency candidates),
    # recorded so that a migration that relabels a row's currency is seen (``codes``), and the
    # attribute numbers of sources and codes, to follow a renamed column.
    codes: tuple[Source, ...] = ()
    attnums: tuple[int, ...] = ()  # of sources, then codes, in that order
    # Set by relocate: each source's, then each code's, column name now (None: dropped).
    live_names: tuple[str | None, ...] = ()

    @property
    def live_key_names(self) -> tuple[str, ...]:
        return self.live_key or self.key

    def live_name(self, index: int) -> str | None:
        """The live name of the ``index``-th recorded column (sources, then codes); its recorded name
        before relocate."""
        recorded = (*self.sources, *self.codes)[index].name
        return self.live_names[index] if self.live_names else recorded


@dataclass(frozen=True)
class Recorded:
    tables: dict[tuple[str, str], Originals]
    rows: int
    keyless: list[str]  # tables with money columns but no primary key: not recorded
    digests: dict[str, str] = field(default_factory=dict)  # relation -> digest() when recorded
    schema: str = ORIGINALS_SCHEMA  # the schema the record lives in


@dataclass(frozen=True)
class Unmatched:
    """A recorded table whose originals match nothing after the migrations, and why."""

    table: str  # schema.table as recorded
    rows: int
    why: str


# A recorded table's fingerprint: its row count and the sum of a 64-bit hash of every row (order
# free, one read; a migration that rewrites the originals changes it). Not proof against a migration
# built to forge it: keeping the originals out of the migrations' reach is the rehearsal's sandbox.
DIGEST_SQL = ("SELECT pg_catalog.count(*)::text || ':' || coalesce(pg_catalog.sum("
              "pg_catalog.hashtextextended(o::text, 0)::numeric), 0)::text FROM {} o")


def _plain(column: Column) -> sql.Composable:
    """A column as its base type when its type is a domain: a domain's CHECK is an expression of
    the snapshot's, which may call its functions, and storing a value of the domain's type runs it
    (PostgreSQL 15, CREATE DOMAIN); the record stores plain values. ``base_type`` is format_type's
    name, schema-qualified where the pinned search_path (pg_catalog) does not find it."""
    if column.domain is None:
        return sql.Identifier(column.name)
    return sql.SQL("{}::{} AS {}").format(sql.Identifier(column.name), sql.SQL(column.base_type),
                                         sql.Identifier(column.name))


def digest(conn: psycopg.Connection, relation: str, schema: str = ORIGINALS_SCHEMA) -> str | None:
    """The fingerprint of one recorded table (DIGEST_SQL), None when it is gone."""
    try:
        with conn.transaction():
            row = conn.execute(sql.SQL(DIGEST_SQL).format(
                sql.Identifier(schema, relation))).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None else str(row[0])


def check_unchanged(conn: psycopg.Connection, recorded: Recorded) -> None:
    """Raise ``VerifierError`` when a migration changed or dropped the recorded originals: comparing
    with them would verify the cents against what the migration left, not against the originals."""
    changed = [f"{recorded.schema}.{relation}" for relation, before in recorded.digests.items()
               if digest(conn, relation, recorded.schema) != before]
    if changed:
        raise VerifierError(
            f"The migrations changed or dropped the verifier's record of the original amounts "
            f"({', '.join(changed[:5])}): the cents cannot be verified against them.",
            hint=f"A migration that loops over every schema reached the {recorded.schema} schema; "
                 "leave it out of such loops (it exists only in the rehearsal's scratch database).")


# Per recorded table: where its OID is now, and the name and type of each recorded key column
# (by attribute number; a dropped one is absent); then the name now of each recorded source and
# code column (NULL: dropped).
RELOCATE_SQL = """
SELECT n.nspname, c.relname,
       (SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.ord)
          FROM pg_catalog.unnest(%(attnums)s::int2[]) WITH ORDINALITY AS k(num, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.num AND NOT a.attisdropped),
       (SELECT pg_catalog.array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY k.ord)
          FROM pg_catalog.unnest(%(attnums)s::int2[]) WITH ORDINALITY AS k(num, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.num AND NOT a.attisdropped),
       (SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.ord)
          FROM pg_catalog.unnest(%(columns)s::int2[]) WITH ORDINALITY AS k(num, ord)
          LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.num
                                                 AND NOT a.attisdropped)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = %(oid)s::oid AND c.relkind IN ('r', 'p')
"""
# Key types whose values compare with pg_catalog's cross-type equality after a migration widened them.
_INTEGERS = frozenset({"smallint", "integer", "bigint"})


def relocate(conn: psycopg.Connection, recorded: Recorded
             ) -> tuple[dict[tuple[str, str], Originals], list[Unmatched]]:
    """The recorded tables under the names the migrations left them (followed by OID), and those
    whose originals match nothing: the table dropped, a key column dropped, or a key column whose
    type changed other than between integer types (smallint, integer, bigint compare exactly)."""
    found: dict[tuple[str, str], Originals] = {}
    lost: list[Unmatched] = []
    for (nsp, rel), o in recorded.tables.items():
        row = conn.execute(RELOCATE_SQL, {"oid": o.oid, "attnums": list(o.key_attnums),
                                          "columns": list(o.attnums)}).fetchone()
        where = f"{nsp}.{rel}"
        if row is None:
            lost.append(Unmatched(where, o.rows, "the migrations dropped the table (or replaced it with "
                                                 "another of that name): its rows cannot be matched"))
            continue
        names, types = list(row[2] or []), list(row[3] or [])
        if len(names) < len(o.key):
            lost.append(Unmatched(where, o.rows, "the migrations dropped a column of its primary key "
                                                 f"({', '.join(o.key)}): its rows cannot be matched"))
            continue
        changed = [f"{k} from {a} to {b}" for k, a, b in zip(o.key, o.key_types, types, strict=True)
                   if a != b and not {a, b} <= _INTEGERS]
        if changed:
            lost.append(Unmatched(where, o.rows, f"the migrations changed the type of its key column(s) "
                                                 f"{'; '.join(changed)}: its rows cannot be matched exactly"))
            continue
        now = tuple(None if n is None else str(n) for n in (row[4] or []))
        found[(str(row[0]), str(row[1]))] = replace(o, live_key=tuple(names), live_names=now)
    return found, lost


# A recorded table's OID and the attribute numbers of the named columns, in the order named.
KEY_SQL = """
SELECT c.oid::bigint, (SELECT pg_catalog.array_agg(a.attnum ORDER BY k.ord)
          FROM pg_catalog.unnest(%(names)s::text[]) WITH ORDINALITY AS k(name, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = k.name)
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(nsp)s AND c.relname = %(rel)s
"""
SCHEMA_TAKEN_SQL = "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s"


# A table without a primary key: its first unique, valid, whole-table index on plain columns that
# are all NOT NULL (as good as a primary key for matching rows: PostgreSQL 15, "Unique Indexes").
UNIQUE_KEY_SQL = """
SELECT (SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.ord)
          FROM pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(num, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num)
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
  AND i.indexprs IS NULL
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[]) AND NOT a.attnotnull)
ORDER BY i.indnkeyatts, i.indexrelid LIMIT 1
"""


def _unique_key(conn: psycopg.Connection, nsp: str, rel: str) -> tuple[str, ...]:
    row = conn.execute(UNIQUE_KEY_SQL, (nsp, rel)).fetchone()
    return tuple(str(c) for c in row[0]) if row and row[0] else ()


def _schema_name(conn: psycopg.Connection) -> str:
    """ORIGINALS_SCHEMA, or that name with a random suffix when the snapshot holds a schema so named."""
    if conn.execute(SCHEMA_TAKEN_SQL, (ORIGINALS_SCHEMA,)).fetchone() is None:
        return ORIGINALS_SCHEMA
    return f"{ORIGINALS_SCHEMA}_{secrets.token_hex(4)}"


def record(conn: psycopg.Connection, config: Config,
           progress: Callable[[int, int, str], None] | None = None) -> Recorded:
    """Record key and source values of every keyed table with sources (commits on ``conn``): the
    columns of an amount type (numeric, real, double precision, money, through domains) and the
    text columns configured in ``[[text_amounts]]``. ``progress(done, total, table)`` before each
    table."""
    tables: dict[tuple[str, str], Originals] = {}
    keyless: list[str] = []
    rows = 0
    with conn.transaction():
        read = reads(conn)
        schema = _schema_name(conn)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        everything = read_columns(conn, ours=schema)
        for done, ((nsp, rel), cols) in enumerate(everything.items()):
            if progress is not None:
                progress(done, len(everything), f"{nsp}.{rel}")
            money = [Source(c.name, c.full_type, c.not_null,
                            {"real": "float", "double precision": "float", "money": "money"}.get(
                                c.base_type, "numeric" if c.source_type else "text"))
                     for c in cols if (c.source_type or config.text_amount(nsp, rel, c.name))
                     and not looks_minor(c) and not config.excluded(nsp, rel, c.name)]
            if not money or config.excluded(nsp, rel):
                continue
            key = key_of(cols) or _unique_key(conn, nsp, rel)
            if not key:
                keyless.append(f"{nsp}.{rel}")
                continue
            name = f"t{len(tables) + 1}"
            target = sql.Identifier(schema, name)
            typed = {c.name: c for c in cols}
            codes = tuple(Source(c.name, c.full_type, c.not_null, "code") for c in currency_candidates(cols)
                          if c.name not in key and c.name not in {m.name for m in money})
            recorded = [*key, *(m.name for m in money), *(c.name for c in codes)]
            cur = conn.execute(sql.SQL("CREATE TABLE {} AS SELECT {} FROM {}").format(
                target, sql.SQL(", ").join(_plain(typed[c]) for c in recorded), read(nsp, rel)))
            rows += max(cur.rowcount, 0)
            conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                target, sql.SQL(", ").join(sql.Identifier(c) for c in key)))
            where = conn.execute(KEY_SQL, {"names": recorded, "nsp": nsp, "rel": rel}).fetchone()
            assert where is not None and len(where[1]) == len(recorded)
            attnums = tuple(int(n) for n in where[1])
            tables[(nsp, rel)] = Originals(name, key, tuple(money), schema, int(where[0]), attnums[:len(key)],
                                           tuple(typed[c].full_type for c in key), rows=max(cur.rowcount, 0),
                                           codes=codes, attnums=attnums[len(key):])
    for orig in tables.values():
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, orig.relation)))
    digests = {o.relation: digest(conn, o.relation, schema) or "" for o in tables.values()}
    return Recorded(tables, rows, keyless, digests, schema)
