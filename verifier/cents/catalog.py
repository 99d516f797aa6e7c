"""What a database holds, read from its catalog (read only).

``read_columns`` reads every column of every user table in one statement:
its declared type, the type under any domains (``CREATE DOMAIN cents AS
bigint``: PostgreSQL's "Domain Types"), a numeric column's scale, NOT NULL,
its place in the primary key and its comment. The money inventory, pair
discovery and the originals read it. ``money_tables`` lists the tables with
source columns (``SOURCE_TYPES``) and their exact row counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

# Types that hold an amount in major units (dollars): PostgreSQL's exact numeric (any precision),
# its binary floats, and its money type (an exact count of the currency's minor units, read as
# numeric by its cast). Domains over them count as them.
SOURCE_TYPES = ("numeric", "real", "double precision", "money")
FLOAT_TYPES = ("real", "double precision")
# Types that hold whole minor units (cents): the integers, and numeric (scale 0, or any scale for a
# column named as minor units). The largest value each integer type holds ("Numeric Types").
INTEGER_MAX = {"smallint": 32767, "integer": 2147483647, "bigint": 9223372036854775807}
TEXT_TYPES = ("text", "character varying", "character")
# A minor-units column's name: X plus one of these (longest first), or a domain or comment naming
# cents or minor units.
MINOR_SUFFIXES = ("_in_cents", "_minor_units", "_minor_unit", "_minor", "_cents")
MINOR_WORDS = re.compile(r"\b(cents?|minor[ _-]?units?)\b", re.IGNORECASE)

# Every column of every user table, with its type (and the type under its domains, resolved to
# the bottom), numeric scale, NOT NULL, place in the primary key and comment, in one catalog read.
COLUMNS_SQL = """
WITH RECURSIVE domains(top, base, typmod, depth) AS (
  SELECT t.oid, t.typbasetype, t.typtypmod, 1 FROM pg_catalog.pg_type t WHERE t.typtype = 'd'
  UNION ALL
  SELECT d.top, t.typbasetype, CASE WHEN d.typmod <> -1 THEN d.typmod ELSE t.typtypmod END, d.depth + 1
  FROM domains d JOIN pg_catalog.pg_type t ON t.oid = d.base
  WHERE t.typtype = 'd' AND d.depth < 32
), resolved AS (
  SELECT DISTINCT ON (top) top, base, typmod FROM domains ORDER BY top, depth DESC
)
SELECT n.nspname, c.relname, a.attname,
       pg_catalog.format_type(coalesce(r.base, a.atttypid), NULL) AS base_type,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS full_type,
       CASE WHEN coalesce(r.base, a.atttypid) = 'pg_catalog.numeric'::pg_catalog.regtype
                 AND coalesce(r.typmod, a.atttypmod) >= 4
            THEN (coalesce(r.typmod, a.atttypmod) - 4) & 65535 END AS numeric_scale,
       CASE WHEN r.top IS NOT NULL THEN pg_catalog.format_type(a.atttypid, NULL) END AS domain,
       (SELECT b.typtype = 'e' FROM pg_catalog.pg_type b WHERE b.oid = coalesce(r.base, a.atttypid)) AS enum,
       a.attnotnull,
       -- indkey is an int2vector, whose subscripts start at 0: 0 is a position.
       pg_catalog.array_position(i.indkey::int2[], a.attnum) AS key_position,
       pg_catalog.col_description(c.oid, a.attnum) AS comment
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary
LEFT JOIN resolved r ON r.top = a.atttypid
WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
  -- A partition is read through its partitioned table, unless a rehearsal recorded it as a table
  -- of its own before the migrations attached it (its OID among %(recorded)s).
  AND (NOT c.relispartition OR c.oid = ANY(%(recorded)s::oid[]))
  -- The system's own relations, by OID: pg_catalog, and information_schema's views and tables made
  -- by initdb (OIDs below FirstNormalObjectId, 16384: PostgreSQL's src/include/access/transam.h);
  -- a table someone created in information_schema is read. Schemas named pg_* are the system's
  -- (pg_toast, pg_temp_N: CREATE SCHEMA refuses the prefix to anyone else).
  AND n.oid <> 'pg_catalog'::pg_catalog.regnamespace
  AND NOT (n.nspname = 'information_schema' AND c.oid < 16384) AND n.nspname NOT LIKE 'pg\\_%%'
  -- A rehearsal's own record (verifier.cents.originals: its schema's name, unique in the scratch
  -- database); a live database's schema of any name is the user's, and read.
  AND (%(ours)s::text IS NULL OR n.nspname <> %(ours)s)
ORDER BY 1, 2, a.attnum
"""


@dataclass(frozen=True)
class Column:
    """One column: ``base_type`` is the type under any domains (``format_type`` without modifiers),
    ``full_type`` the declared one; ``numeric_scale`` for a numeric with a declared scale."""

    name: str
    base_type: str
    full_type: str
    not_null: bool
    key_position: int | None
    numeric_scale: int | None = None
    domain: str | None = None
    comment: str | None = None
    enum: bool = False

    @property
    def source_type(self) -> bool:
        return self.base_type in SOURCE_TYPES

    @property
    def float_type(self) -> bool:
        return self.base_type in FLOAT_TYPES

    @property
    def whole_number_type(self) -> bool:
        """An integer type, or a numeric of scale 0: whole minor units fit it and nothing else."""
        return self.base_type in INTEGER_MAX or (self.base_type == "numeric" and self.numeric_scale == 0)


def minor_suffix(name: str) -> str | None:
    """The minor-units suffix ``name`` ends with (``_cents``, ...), or None."""
    lowered = name.lower()
    return next((s for s in MINOR_SUFFIXES if lowered.endswith(s) and len(lowered) > len(s)), None)


def looks_minor(column: Column) -> bool:
    """Named, typed (a domain) or commented as minor units (cents)."""
    return (minor_suffix(column.name) is not None or column.name.lower() == "cents"
            or bool(column.domain and MINOR_WORDS.search(column.domain.replace("_", " ")))
            or bool(column.comment and MINOR_WORDS.search(column.comment) and column.whole_number_type))


def read_columns(conn: psycopg.Connection, *, ours: str | None = None,
                 recorded: tuple[int, ...] = ()) -> dict[tuple[str, str], list[Column]]:
    """Every column of every user table (COLUMNS_SQL), per (schema, table), in column order; with
    ``ours`` (a rehearsal: the schema of its record of the originals) not those of that schema;
    partitions only when their OID is ``recorded`` (a rehearsal's table that became one)."""
    tables: dict[tuple[str, str], list[Column]] = {}
    for nsp, rel, col, base, full, scale, domain, enum, not_null, key_pos, comment in conn.execute(
            COLUMNS_SQL, {"ours": ours, "recorded": list(recorded)}).fetchall():
        tables.setdefault((nsp, rel), []).append(
            Column(col, base, full, bool(not_null), key_pos, scale, domain, comment, bool(enum)))
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
    """Tables with source columns (``SOURCE_TYPES``, through domains) and their exact row counts."""
    result = []
    for (schema, table), columns in read_columns(conn).items():
        money = tuple((c.name, c.full_type) for c in columns if c.source_type)
        if not money:
            continue
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchone()
        assert row is not None
        result.append(MoneyTable(schema, table, money, int(row[0])))
    return result


# Partitioned tables: read whole (their partitions are not listed); every other table is read ONLY
# itself, since an inheritance child is listed, and verified, on its own.
PARTITIONED_SQL = ("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
                   "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'p'")


def reads(conn: psycopg.Connection) -> Callable[[str, str], sql.Composable]:
    """How to read a table as itself (``FROM`` this): ``ONLY schema.table``, or for a partitioned
    table ``schema.table`` (its partitions are its rows)."""
    partitioned = {(str(a), str(b)) for a, b in conn.execute(PARTITIONED_SQL).fetchall()}

    def read(schema: str, table: str) -> sql.Composable:
        ident = sql.Identifier(schema, table)
        return ident if (schema, table) in partitioned else sql.SQL("ONLY {}").format(ident)
    return read


def table_names(conn: psycopg.Connection, *, ours: str | None = None) -> set[tuple[str, str]]:
    """Every user table (schema, table), as ``read_columns`` sees them."""
    return set(read_columns(conn, ours=ours))
