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

from verifier.cents.catalog import MONEY_TYPES, key_of, read_columns
from verifier.cents.originals import Originals
from verifier.config import Config
from verifier.errors import UsageError

CENTS_SUFFIX = "_cents"



@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    source_type: str  # full type, e.g. numeric(12,2), double precision
    source_not_null: bool
    # The column of the relation read that holds the original, where it is not
    # ``source`` itself: the recorded original (see TablePlan.originals).
    source_ref: str | None = None

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
    # Set in a rehearsal: the rows are this table FULL JOINed with its recorded
    # originals on the key, which adds row_missing and row_added.
    originals: Originals | None = None

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


def discover(conn: psycopg.Connection, config: Config,
             originals: dict[tuple[str, str], Originals] | None = None,
             ) -> tuple[list[TablePlan], list[Unpaired]]:
    """Pairs per table, and the unpaired money and cents columns.

    With ``originals`` (a rehearsal), a table's recorded money columns are
    the sources of its pairs, whether or not the migrations kept, changed or
    dropped them; a column converted in place (now BIGINT under its own
    name) is its own cents column. Raises ``UsageError`` when the
    configuration names a table or column that does not exist, or a column
    whose type cannot hold money or cents.
    """
    tables = read_columns(conn)
    originals = originals or {}
    configured: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for pc in config.pairs:
        live = {c.name: c for c in tables.get((pc.schema, pc.table), [])}
        if not live:
            raise UsageError(f"The configured pair {pc.schema}.{pc.table}.{pc.source} names a table "
                             "that does not exist (or that we may not see).")
        recorded = {name: full for name, full, _ in getattr(originals.get((pc.schema, pc.table)),
                                                              "columns", ())}
        for name, role, types in ((pc.source, "source", MONEY_TYPES),
                                  (pc.target, "target", ("bigint", "integer"))):
            if role == "source" and name in recorded:
                continue
            if name not in live:
                raise UsageError(f"The configured pair names column {pc.schema}.{pc.table}.{name} "
                                 f"({role}), which does not exist.")
            if live[name].base_type not in types:
                raise UsageError(f"The configured {role} {pc.schema}.{pc.table}.{name} is "
                                 f"{live[name].full_type}, not {' or '.join(types)}.")
        configured.setdefault((pc.schema, pc.table), []).append((pc.source, pc.target))
    plans: list[TablePlan] = []
    unpaired: list[Unpaired] = []
    for (nsp, rel), columns in tables.items():
        if config.excluded(nsp, rel):
            continue
        by_name = {c.name: c for c in columns}
        orig = originals.get((nsp, rel))
        # Every possible source: live money columns, then the recorded originals over them.
        sources: dict[str, tuple[str, bool, str | None]] = {
            c.name: (c.full_type, c.not_null, None) for c in columns if c.base_type in MONEY_TYPES}
        for i, (name, full, not_null) in enumerate(orig.columns if orig else ()):
            sources[name] = (full, not_null, f"verifier_original_{i}")
        chosen: dict[str, str] = {}  # target -> source
        for source, target in configured.get((nsp, rel), []):
            chosen[target] = source
        for name, (_, _, ref) in sources.items():
            sibling = by_name.get(name + CENTS_SUFFIX)
            in_place = by_name.get(name) if ref is not None else None
            for cand in (sibling, in_place):
                if (cand is not None and cand.base_type == "bigint" and cand.name not in chosen
                        and name not in chosen.values()):
                    chosen[cand.name] = name
        pairs = tuple(
            Pair(source, target, *sources[source])
            for target, source in chosen.items()
            if not config.excluded(nsp, rel, source) and not config.excluded(nsp, rel, target)
        )
        paired_sources, targets = set(chosen.values()), set(chosen)
        for name in sources:
            if not config.excluded(nsp, rel, name) and name not in paired_sources:
                unpaired.append(Unpaired(nsp, rel, name, "money_without_cents"))
        # A cents column without its decimal is suspect in a table that holds (or
        # held) decimals; a table born in cents (a ledger's) has nothing to pair.
        for col in columns if sources else ():
            if (col.name.endswith(CENTS_SUFFIX) and col.name not in targets
                    and not config.excluded(nsp, rel, col.name)):
                unpaired.append(Unpaired(nsp, rel, col.name, "cents_without_money"))
        if pairs:
            plans.append(TablePlan(nsp, rel, key_of(columns),
                                   tuple(col.name for col in columns),
                                   tuple(sorted(pairs, key=lambda p: p.source)),
                                   orig if orig and any(p.source_ref for p in pairs) else None))
    return plans, unpaired
