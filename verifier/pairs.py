"""Decimal/cents pairs, from the catalog and the configuration (read only).

A pair is a money column ``X`` (numeric, real or double precision) and its
BIGINT sibling ``X_cents`` in the same table, in any schema, with any
quoting; the configuration adds pairs with other names and excludes tables
or columns. Money columns without cents, and cents without a money column,
are returned as unpaired (the run reports them as warnings).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from verifier.config import Config
from verifier.errors import UsageError

MONEY_TYPES = ("numeric", "real", "double precision")
CENTS_SUFFIX = "_cents"

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
  AND n.nspname <> 'verifier_originals'
ORDER BY 1, 2, a.attnum
"""


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    source_type: str  # full type, e.g. numeric(12,2), double precision
    source_not_null: bool

    @property
    def float_source(self) -> bool:
        return self.source_type in ("real", "double precision")


@dataclass(frozen=True)
class TablePlan:
    schema: str
    table: str
    key: tuple[str, ...]  # primary key columns; empty when the table has none
    columns: tuple[str, ...]  # every column, in order (the sample of a keyless table)
    pairs: tuple[Pair, ...]

    def __post_init__(self) -> None:
        assert self.pairs, "a table plan without pairs"
        assert set(self.key) <= set(self.columns)
        targets = [p.target for p in self.pairs]
        assert len(targets) == len(set(targets)), "a cents column paired twice"

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class Unpaired:
    schema: str
    table: str
    column: str
    kind: str  # money_without_cents | cents_without_money


@dataclass(frozen=True)
class _Column:
    name: str
    base_type: str
    full_type: str
    not_null: bool
    key_position: int | None


def _key_position(col: _Column) -> int:
    assert col.key_position is not None
    return col.key_position


def discover(conn: psycopg.Connection, config: Config) -> tuple[list[TablePlan], list[Unpaired]]:
    """Pairs per table, and the unpaired money and cents columns.

    Raises ``UsageError`` when the configuration names a table or column
    that does not exist, or a column whose type cannot hold money or cents.
    """
    tables: dict[tuple[str, str], list[_Column]] = {}
    for nsp, rel, col, base, full, not_null, key_pos in conn.execute(COLUMNS_SQL).fetchall():
        tables.setdefault((nsp, rel), []).append(_Column(col, base, full, bool(not_null), key_pos))
    configured: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for pc in config.pairs:
        by_col = {c.name: c for c in tables.get((pc.schema, pc.table), [])}
        if not by_col:
            raise UsageError(f"The configured pair {pc.schema}.{pc.table}.{pc.source} names a table "
                             "that does not exist (or that we may not see).")
        for name, role, types in ((pc.source, "source", MONEY_TYPES),
                                  (pc.target, "target", ("bigint", "integer"))):
            if name not in by_col:
                raise UsageError(f"The configured pair names column {pc.schema}.{pc.table}.{name} "
                                 f"({role}), which does not exist.")
            if by_col[name].base_type not in types:
                raise UsageError(f"The configured {role} {pc.schema}.{pc.table}.{name} is "
                                 f"{by_col[name].full_type}, not {' or '.join(types)}.")
        configured.setdefault((pc.schema, pc.table), []).append((pc.source, pc.target))
    plans: list[TablePlan] = []
    unpaired: list[Unpaired] = []
    for (nsp, rel), columns in tables.items():
        if config.excluded(nsp, rel):
            continue
        by_name = {c.name: c for c in columns}
        chosen: dict[str, str] = {}  # target -> source
        for source, target in configured.get((nsp, rel), []):
            chosen[target] = source
        for c in columns:
            sibling = by_name.get(c.name + CENTS_SUFFIX)
            if (c.base_type in MONEY_TYPES and sibling is not None and sibling.base_type == "bigint"
                    and sibling.name not in chosen and c.name not in chosen.values()):
                chosen[sibling.name] = c.name
        pairs = tuple(
            Pair(source, target, by_name[source].full_type, by_name[source].not_null)
            for target, source in chosen.items()
            if not config.excluded(nsp, rel, source) and not config.excluded(nsp, rel, target)
        )
        sources, targets = set(chosen.values()), set(chosen)
        for col in columns:
            if config.excluded(nsp, rel, col.name):
                continue
            if col.base_type in MONEY_TYPES and col.name not in sources:
                unpaired.append(Unpaired(nsp, rel, col.name, "money_without_cents"))
            elif col.name.endswith(CENTS_SUFFIX) and col.name not in targets:
                unpaired.append(Unpaired(nsp, rel, col.name, "cents_without_money"))
        if pairs:
            keyed = sorted((col for col in columns if col.key_position is not None), key=_key_position)
            plans.append(TablePlan(nsp, rel, tuple(col.name for col in keyed),
                                   tuple(col.name for col in columns),
                                   tuple(sorted(pairs, key=lambda p: p.source))))
    return plans, unpaired
