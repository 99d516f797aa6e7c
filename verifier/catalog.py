"""What a database holds, read from its catalog (read only)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

# Every column that can hold money before the conversion: numeric and the
# float types (which should not, and are reported for it later).
MONEY_COLUMNS_SQL = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
  AND a.atttypid IN ('numeric'::regtype, 'real'::regtype, 'double precision'::regtype)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'verifier_originals')
  AND n.nspname NOT LIKE 'pg_toast%%'
  AND n.nspname NOT LIKE 'pg_temp%%'
ORDER BY 1, 2, a.attnum
"""


@dataclass(frozen=True)
class MoneyTable:
    schema: str
    table: str
    columns: tuple[tuple[str, str], ...]  # (name, type)
    rows: int


def money_tables(conn: psycopg.Connection) -> list[MoneyTable]:
    """Tables with numeric/real/double columns and their exact row counts."""
    grouped: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for schema, table, column, type_ in conn.execute(MONEY_COLUMNS_SQL, {}).fetchall():
        grouped.setdefault((schema, table), []).append((column, type_))
    result = []
    for (schema, table), columns in grouped.items():
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchone()
        assert row is not None
        result.append(MoneyTable(schema, table, tuple(columns), int(row[0])))
    return result
