"""What a database holds, read from its catalog (read only)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from verifier.pairs import MONEY_TYPES, read_columns


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
