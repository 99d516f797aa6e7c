"""Originals: a rehearsal's record of every money value before the migrations run.

``record(conn, config)`` copies, for each table with money columns
(numeric, real, double) and a primary key, the key and the money columns
into a table of its own in the ``verifier_originals`` schema of the
scratch database (never anywhere else). After the migrations, the checks
read each table FULL JOINed with its originals on the key
(``verifier.cents.sql.relation``): rows lost or added by a migration are
``row_missing`` / ``row_added``, and a decimal column changed in place or
dropped (as 303 drops them) is still compared with the value it had.

Tables without a primary key cannot be matched row for row after a
migration rewrote them; they are not recorded, and are verified against
their live decimal columns, as in place (the stage detail lists them).

The schema is left out of pair discovery and of the migration rule
fingerprints. Migrations that loop over every table of the database will
see it; that is the price of joining in the same database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from verifier.cents.catalog import COLUMNS_SQL, Column, key_of, looks_minor, read_columns, reads
from verifier.config import Config
from verifier.errors import VerifierError

# Where a rehearsal records the originals, in its scratch database only. The
# catalog's reading (and the migration rule checks' fingerprints) leave it out.
ORIGINALS_SCHEMA = "verifier_originals"
assert f"<> '{ORIGINALS_SCHEMA}'" in COLUMNS_SQL


@dataclass(frozen=True)
class Source:
    """A recorded source column: its declared type, NOT NULL, and kind (numeric, float, money, text)."""

    name: str
    type: str
    not_null: bool
    kind: str


@dataclass(frozen=True)
class Originals:
    """A table's key and source values as a rehearsal recorded them before migrating."""

    relation: str  # its table in ORIGINALS_SCHEMA
    key: tuple[str, ...]
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class Recorded:
    tables: dict[tuple[str, str], Originals]
    rows: int
    keyless: list[str]  # tables with money columns but no primary key: not recorded
    digests: dict[str, str] = field(default_factory=dict)  # relation -> digest() when recorded


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


def digest(conn: psycopg.Connection, relation: str) -> str | None:
    """The fingerprint of one recorded table (DIGEST_SQL), None when it is gone."""
    try:
        with conn.transaction():
            row = conn.execute(sql.SQL(DIGEST_SQL).format(
                sql.Identifier(ORIGINALS_SCHEMA, relation))).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None else str(row[0])


def check_unchanged(conn: psycopg.Connection, recorded: Recorded) -> None:
    """Raise ``VerifierError`` when a migration changed or dropped the recorded originals: comparing
    with them would verify the cents against what the migration left, not against the originals."""
    changed = [f"{ORIGINALS_SCHEMA}.{relation}" for relation, before in recorded.digests.items()
               if digest(conn, relation) != before]
    if changed:
        raise VerifierError(
            f"The migrations changed or dropped the verifier's record of the original amounts "
            f"({', '.join(changed[:5])}): the cents cannot be verified against them.",
            hint="A migration that loops over every schema reached the verifier_originals schema; "
                 "leave it out of such loops (it exists only in the rehearsal's scratch database).")


def record(conn: psycopg.Connection, config: Config) -> Recorded:
    """Record key and source values of every keyed table with sources (commits on ``conn``): the
    columns of an amount type (numeric, real, double precision, money, through domains) and the
    text columns configured in ``[[text_amounts]]``."""
    tables: dict[tuple[str, str], Originals] = {}
    keyless: list[str] = []
    rows = 0
    with conn.transaction():
        read = reads(conn)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(ORIGINALS_SCHEMA)))
        for (nsp, rel), cols in read_columns(conn).items():
            money = [Source(c.name, c.full_type, c.not_null,
                            {"real": "float", "double precision": "float", "money": "money"}.get(
                                c.base_type, "numeric" if c.source_type else "text"))
                     for c in cols if (c.source_type or config.text_amount(nsp, rel, c.name))
                     and not looks_minor(c) and not config.excluded(nsp, rel, c.name)]
            if not money or config.excluded(nsp, rel):
                continue
            key = key_of(cols)
            if not key:
                keyless.append(f"{nsp}.{rel}")
                continue
            name = f"t{len(tables) + 1}"
            target = sql.Identifier(ORIGINALS_SCHEMA, name)
            typed = {c.name: c for c in cols}
            cur = conn.execute(sql.SQL("CREATE TABLE {} AS SELECT {} FROM {}").format(
                target, sql.SQL(", ").join(_plain(typed[c]) for c in [*key, *(m.name for m in money)]),
                read(nsp, rel)))
            rows += max(cur.rowcount, 0)
            conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                target, sql.SQL(", ").join(sql.Identifier(c) for c in key)))
            tables[(nsp, rel)] = Originals(name, key, tuple(money))
    for orig in tables.values():
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(ORIGINALS_SCHEMA, orig.relation)))
    digests = {o.relation: digest(conn, o.relation) or "" for o in tables.values()}
    return Recorded(tables, rows, keyless, digests)
