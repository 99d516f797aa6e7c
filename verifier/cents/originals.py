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

from dataclasses import dataclass

import psycopg
from psycopg import sql

from verifier.cents.catalog import COLUMNS_SQL, MONEY_TYPES, key_of, read_columns
from verifier.config import Config

# Where a rehearsal records the originals, in its scratch database only. The
# catalog's reading (and the migration rule checks' fingerprints) leave it out.
ORIGINALS_SCHEMA = "verifier_originals"
assert f"<> '{ORIGINALS_SCHEMA}'" in COLUMNS_SQL


@dataclass(frozen=True)
class Originals:
    """A table's key and money values as a rehearsal recorded them before migrating."""

    relation: str  # its table in ORIGINALS_SCHEMA
    key: tuple[str, ...]
    columns: tuple[tuple[str, str, bool], ...]  # (money column, full type, NOT NULL)


@dataclass(frozen=True)
class Recorded:
    tables: dict[tuple[str, str], Originals]
    rows: int
    keyless: list[str]  # tables with money columns but no primary key: not recorded


def record(conn: psycopg.Connection, config: Config) -> Recorded:
    """Record key and money values of every keyed money table (commits on ``conn``)."""
    tables: dict[tuple[str, str], Originals] = {}
    keyless: list[str] = []
    rows = 0
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(ORIGINALS_SCHEMA)))
        for (nsp, rel), cols in read_columns(conn).items():
            money = [(c.name, c.full_type, c.not_null) for c in cols
                     if c.base_type in MONEY_TYPES and not config.excluded(nsp, rel, c.name)]
            if not money or config.excluded(nsp, rel):
                continue
            key = key_of(cols)
            if not key:
                keyless.append(f"{nsp}.{rel}")
                continue
            name = f"t{len(tables) + 1}"
            target = sql.Identifier(ORIGINALS_SCHEMA, name)
            cur = conn.execute(sql.SQL("CREATE TABLE {} AS SELECT {} FROM {}").format(
                target, sql.SQL(", ").join(sql.Identifier(c) for c in [*key, *(m[0] for m in money)]),
                sql.Identifier(nsp, rel)))
            rows += max(cur.rowcount, 0)
            conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                target, sql.SQL(", ").join(sql.Identifier(c) for c in key)))
            tables[(nsp, rel)] = Originals(name, key, tuple(money))
    for orig in tables.values():
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(ORIGINALS_SCHEMA, orig.relation)))
    return Recorded(tables, rows, keyless)
