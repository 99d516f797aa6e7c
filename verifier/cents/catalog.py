"""What a database holds, read from its catalog (read only).

``read_columns`` reads every column of every user table in one statement
(its type, NOT NULL, its place in the primary key); pair discovery and the
originals read it. ``money_tables`` lists the tables with money columns
(numeric, real, double precision) and their exact row counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

MONEY_TYPES = ("numeric", "real", "double precision")

# Every column of every user table, with its type, NOT NULL, and whether it
# belongs to the primary key (and where), in one catalog read.
COLUMNS_SQL = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, NULL) AS base_type,
       format_type(a.atttypid, a.atttypmod) AS full_type, a.attnotnull,
       -- indkey is an int2vector, whose subscripts start at 0: 0 is a position.
       array_position(i.indkey::int2[], a.attnum) AS key_position
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
  AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND n.nspname <> 'verifier_originals'  -- verifier.cents.originals.ORIGINALS_SCHEMA (asserted there)
ORDER BY 1, 2, a.attnum
"""


@dataclass(frozen=True)
class Column:
    name: str
    base_type: str
    full_type: str
    not_null: bool
    key_position: int | None


def read_columns(conn: psycopg.Connection) -> dict[tuple[str, str], list[Column]]:
    """Every column of every user table (COLUMNS_SQL), per (schema, table), in column order."""
    tables: dict[tuple[str, str], list[Column]] = {}
    for nsp, rel, col, base, full, not_null, key_pos in conn.execute(COLUMNS_SQL).fetchall():
        tables.setdefault((nsp, rel), []).append(Column(col, base, full, bool(not_null), key_pos))
    return tables


def key_of(columns: list[Column]) -> tuple[str, ...]:
    """The primary key's columns, in key order; empty when the table has none."""
    keyed = [c for c in columns if c.key_position is not None]
    return tuple(c.name for c in sorted(keyed, key=lambda c: c.key_position or 0))


@dataclass(frozen=True)
class MoneyTable:
    schema: str
    table: str
    columns: tuple[tuple[str, str], ...]  # (name, type)
    rows: int


def money_tables(conn: psycopg.Connection) -> list[MoneyTable]:
    """Tables with numeric/real/double columns (as pair discovery sees them) and exact row counts."""
    result = []
    for (schema, table), columns in read_columns(conn).items():
        money = tuple((c.name, c.full_type) for c in columns if c.base_type in MONEY_TYPES)
        if not money:
            continue
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchone()
        assert row is not None
        result.append(MoneyTable(schema, table, money, int(row[0])))
    return result
