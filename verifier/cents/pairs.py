"""The money inventory: every column of every table accounted for; the pairs to verify (read only).

Every column the role can see is one of: a source (an amount in major
units: numeric of any precision, real, double precision, money, a domain
over one, or text configured in ``[[text_amounts]]``), a minor-units column
(cents: a whole-number type, or numeric, named or commented as minor units,
or of a domain so named), or not money. Each money column gets a verdict
(``VERDICTS``): verified (with the rule that paired it), excluded by the
configuration (with the entry), part of the ledger (``verify-ledger``
audits it), born in minor units (a rehearsal's table the migrations
created), or unverified with the reason. An unverified minor-units column
fails the run (``unverified_minor_units``); an unverified source is a
warning (``unpaired_column``).

A minor-units column is paired with one source, by the first of these that
names one: the configuration (``[[pairs]]``), a rehearsal's column converted
in place (its recorded original has its name), its comment (naming exactly
one source column of the table), or its name (``NAME_RULES``: ``X_cents``,
``X_in_cents``, ``X_minor``, ``X_minor_units`` from ``X``, ``X_usd``,
``X_amount`` or ``X_dollars``). Two sources for one target are never
guessed between: the target is unverified and says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg

from verifier.cents import currency
from verifier.cents.catalog import (
    INTEGER_MAX,
    MINOR_SUFFIXES,
    PARTITIONED_SQL,
    SOURCE_TYPES,
    TEXT_TYPES,
    Column,
    key_of,
    looks_minor,
    minor_suffix,
    read_columns,
)
from verifier.cents.originals import Originals
from verifier.config import Config, TextAmount
from verifier.errors import UsageError

# The sources a minor-units column X<suffix> may have, by name, in order: X, X_usd, ...
SOURCE_SUFFIXES = ("", "_usd", "_amount", "_dollars")
VERDICTS = ("verified_source", "verified_minor_units", "excluded", "ledger", "born_in_minor_units",
            "unverified")
ROLES = ("source", "minor_units")


@dataclass(frozen=True)
class Pair:
    """A minor-units column (``target``) and the source it is verified against, by ``rule``."""

    source: str
    target: str
    source_type: str  # the source's declared type, e.g. numeric(12,2), double precision, a domain
    source_not_null: bool
    # The column of the relation read that holds the original, where it is not
    # ``source`` itself: the recorded original (see TablePlan.originals).
    source_ref: str | None = None
    rule: str = "X / X_cents"
    source_kind: str = "numeric"  # numeric | float | money | text (catalog types, through domains)
    target_type: str = "bigint"  # the target's type under any domain
    text: TextAmount | None = None  # how a text source is read
    # Minor units per major unit: 10 ** exponent; None: each row's currency's (TablePlan.currency).
    exponent: int | None = 2

    def __post_init__(self) -> None:
        assert self.source_kind in ("numeric", "float", "money", "text")
        assert (self.source_kind == "text") == (self.text is not None)

    @property
    def float_source(self) -> bool:
        return self.source_kind == "float"

    @property
    def target_max(self) -> int:
        """The largest value the target's type holds (numeric: a BIGINT's, as the cents are)."""
        return INTEGER_MAX.get(self.target_type, INTEGER_MAX["bigint"])

    @property
    def narrow(self) -> bool:
        return self.target_type in ("integer", "smallint")


@dataclass(frozen=True)
class Kept:
    """A recorded column that the migrations kept as it was (a source no cents replaced, or a row's
    currency code): in a rehearsal its live values must still be the recorded ones."""

    column: str  # its live name
    ref: str  # the recorded value's column in the relation read (verifier_original_<i>, verifier_code_<j>)
    kind: str  # numeric | float | money | text | code
    recorded: str  # its name when recorded


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
    identities: tuple[tuple[str, tuple[str, ...]], ...] = ()  # configured: (total, parts)
    currency: Column | None = None  # the column of each row's currency, for pairs without an exponent
    not_null: bool = False  # a later step sets columns of it NOT NULL (checked even without pairs)
    partitioned: bool = False  # read with its partitions; any other table is read ONLY itself
    kept: tuple[Kept, ...] = ()  # with originals: recorded columns that must be unchanged

    def __post_init__(self) -> None:
        assert self.pairs or self.identities or self.not_null or self.originals is not None, \
            "a table plan with nothing to check"
        assert (self.currency is not None) == any(p.exponent is None for p in self.pairs)
        assert set(self.key) <= set(self.columns)
        targets = [p.target for p in self.pairs]
        assert len(targets) == len(set(targets)), "a cents column paired twice"
        assert self.originals is not None or not self.kept

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class Entry:
    """One money column of the inventory: its role, its verdict and why (the rule that paired it,
    the configuration entry that excluded it, or the reason it is not verified)."""

    schema: str
    table: str
    column: str
    type: str
    role: str
    verdict: str
    why: str
    lost: bool = False  # a recorded source the migrations dropped with no cents verified against it

    def __post_init__(self) -> None:
        assert self.role in ROLES and self.verdict in VERDICTS
        assert not self.lost or (self.role, self.verdict) == ("source", "unverified")

    def as_json(self) -> dict[str, str]:
        return {"column": f"{self.schema}.{self.table}.{self.column}", "type": self.type, "role": self.role,
                "verdict": self.verdict, "why": self.why}


@dataclass(frozen=True)
class Inventory:
    entries: tuple[Entry, ...]
    columns: int  # every column of every table seen

    def counts(self) -> dict[str, int]:
        """Columns per verdict (and how many are not money), every verdict listed."""
        found = {v: sum(1 for e in self.entries if e.verdict == v) for v in VERDICTS}
        return {**found, "not_money": self.columns - len(self.entries)}

    def as_json(self) -> dict[str, Any]:
        return {"counts": self.counts(),
                "verified": [e.as_json() for e in self.entries if e.verdict.startswith("verified")],
                "not_verified": [e.as_json() for e in self.entries if not e.verdict.startswith("verified")]}


@dataclass
class _Source:
    type: str
    not_null: bool
    ref: str | None
    kind: str
    text: TextAmount | None = None


@dataclass
class _Table:
    """Discovery's working state for one table."""

    schema: str
    table: str
    columns: list[Column]
    sources: dict[str, _Source] = field(default_factory=dict)
    targets: dict[str, Column] = field(default_factory=dict)
    others: dict[str, Column] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)  # recorded sources the migrations dropped
    codes_dropped: list[str] = field(default_factory=list)  # recorded currency columns dropped
    kept: list[Kept] = field(default_factory=list)  # recorded columns still there, unconverted


def _kind(column_base_type: str) -> str:
    return {"real": "float", "double precision": "float", "money": "money"}.get(column_base_type, "numeric")


def discover(conn: psycopg.Connection, config: Config,
             originals: dict[tuple[str, str], Originals] | None = None, *,
             ledger: dict[tuple[str, str, str], str] | None = None,
             born: frozenset[tuple[str, str]] = frozenset(),
             not_null: frozenset[tuple[str, str]] = frozenset(),
             ) -> tuple[list[TablePlan], Inventory]:
    """The table plans (pairs and configured identities per table) and the money inventory.

    ``originals`` (a rehearsal): a table's recorded sources are the sources
    of its pairs, whether the migrations kept, changed or dropped them; a
    column converted in place is its own minor-units column. ``ledger``:
    (schema, table, column) of each ledger role -> its verdict text; ``born``: tables the rehearsal's
    migrations created; ``not_null``: tables a later step sets columns of NOT
    NULL (checked even without pairs). Raises ``UsageError`` when the configuration names a
    table or column that does not exist, or a column whose type cannot hold
    what its role needs.
    """
    ours = next(iter(originals.values())).schema if originals else None
    # A recorded table the migrations attached as a partition is still compared with its record.
    tables = read_columns(conn, ours=ours, recorded=tuple(o.oid for o in (originals or {}).values()))
    partitioned = {(str(a), str(b)) for a, b in conn.execute(PARTITIONED_SQL).fetchall()}
    originals = originals or {}
    ledger = ledger or {}
    _check_configured(tables, config, originals)
    plans: list[TablePlan] = []
    entries: list[Entry] = []
    for (nsp, rel), columns in tables.items():
        t = _classify(nsp, rel, columns, config, originals.get((nsp, rel)))
        detect = t.targets and not config.excluded(nsp, rel)
        orig_here = originals.get((nsp, rel))
        # A recorded table whose rows had no currency column: a currency column the migrations
        # added does not decide its minor units (relabelled rows would be read in a new currency).
        fixed = (orig_here is not None and not orig_here.codes
                 and config.minor_units_of(nsp, rel) is None)
        unit = _minor_unit(conn, t, config) if detect and not fixed else _Unit(2, None, "")
        roles = {c: text for (a, b, c), text in ledger.items() if (a, b) == (nsp, rel)}
        pairs, found = _pair(t, config, roles, (nsp, rel) in born, unit)
        entries += found + _sources(t, pairs, config, roles)
        entries += [Entry(nsp, rel, code, "currency code", "source", "unverified", CODE_DROPPED_WHY,
                          lost=True) for code in t.codes_dropped]
        identities = tuple((i.total, i.parts) for i in config.identities if (i.schema, i.table) == (nsp, rel))
        announced = (nsp, rel) in not_null or any((a, b) == (nsp, rel) for a, b, _ in config.not_null)
        orig = originals.get((nsp, rel))
        if config.excluded(nsp, rel) or not (pairs or identities or announced or orig):
            continue
        # A recorded table is always read with its originals: rows lost, added or copied, and
        # amounts changed where no cents replaced them, are found whether or not a pair needs them.
        plans.append(TablePlan(nsp, rel, key_of(columns), tuple(c.name for c in columns),
                               tuple(sorted(pairs, key=lambda p: (p.source, p.target))), orig,
                               identities, unit.currency if pairs and unit.exponent is None else None,
                               announced, (nsp, rel) in partitioned, tuple(t.kept) if orig else ()))
    total = sum(len(c) for c in tables.values())
    return plans, Inventory(tuple(entries), total)


def _check_configured(tables: dict[tuple[str, str], list[Column]], config: Config,
                      originals: dict[tuple[str, str], Originals]) -> None:
    """Raise ``UsageError`` for a configured pair, identity or text amount naming what does not exist."""
    for pc in config.pairs:
        live = {c.name: c for c in tables.get((pc.schema, pc.table), [])}
        if not live:
            raise UsageError(f"The configured pair {pc.schema}.{pc.table}.{pc.source} names a table "
                             "that does not exist (or that we may not see).")
        recorded = {o.name for o in getattr(originals.get((pc.schema, pc.table)), "sources", ())}
        if pc.source not in recorded:
            source = live.get(pc.source)
            if source is None:
                raise UsageError(f"The configured pair names column {pc.schema}.{pc.table}.{pc.source} "
                                 "(source), which does not exist.")
            if not (source.source_type or config.text_amount(pc.schema, pc.table, pc.source)):
                raise UsageError(f"The configured source {pc.schema}.{pc.table}.{pc.source} is "
                                 f"{source.full_type}, not numeric, real, double precision or money (text "
                                 "needs a [[text_amounts]] entry).")
        target = live.get(pc.target)
        if target is None:
            raise UsageError(f"The configured pair names column {pc.schema}.{pc.table}.{pc.target} "
                             "(target), which does not exist.")
        if not (target.whole_number_type or target.base_type == "numeric"):
            raise UsageError(f"The configured target {pc.schema}.{pc.table}.{pc.target} is "
                             f"{target.full_type}, not bigint, integer, smallint or numeric.")
    for ident in config.identities:
        live = _named(tables, "identity", ident.schema, ident.table, ident.total, *ident.parts)
        wrong = [f"{c} ({live[c].full_type})" for c in (ident.total, *ident.parts)
                 if not (live[c].base_type in INTEGER_MAX or live[c].base_type in ("numeric", "money"))]
        if wrong:
            raise UsageError(f"The configured identity on {ident.schema}.{ident.table} names column(s) that "
                             f"hold no amount: {', '.join(wrong)}.")
    for schema, table, column in config.not_null:
        _named(tables, "not_null", schema, table, column)
    for mu in config.minor_units:
        live = _named(tables, "minor_units", mu.schema, mu.table, *filter(None, [mu.currency_column]))
        if mu.currency_column and not currency.code_type(live[mu.currency_column]):
            raise UsageError(f"The configured minor_units currency_column {mu.schema}.{mu.table}."
                             f"{mu.currency_column} is {live[mu.currency_column].full_type}, not a text "
                             "type or an enum that holds ISO 4217 codes.")
    for ta in config.text_amounts:
        col = _named(tables, "text amount", ta.schema, ta.table, ta.column)[ta.column]
        if col.base_type not in TEXT_TYPES:
            raise UsageError(f"The configured text amount {ta.schema}.{ta.table}.{ta.column} is "
                             f"{col.full_type}, not text.")


def _named(tables: dict[tuple[str, str], list[Column]], what: str, schema: str, table: str,
           *columns: str) -> dict[str, Column]:
    """The columns of a table the configuration names (``what``: which entry); ``UsageError`` naming
    the table, or the columns, that do not exist."""
    live = {c.name: c for c in tables.get((schema, table), [])}
    if not live:
        raise UsageError(f"The configured {what} names table {schema}.{table}, which does not exist (or "
                         "that we may not see).")
    missing = [c for c in columns if c not in live]
    if missing:
        raise UsageError(f"The configured {what} on {schema}.{table} names column(s) {', '.join(missing)}, "
                         "which do not exist.")
    return live


def _classify(nsp: str, rel: str, columns: list[Column], config: Config, orig: Originals | None) -> _Table:
    t = _Table(nsp, rel, columns)
    # A recorded source's name now (a renamed column is followed by its attribute number); a dropped
    # one's name, where a whole-number column has taken it (add cents, drop the decimal, rename the
    # cents to the decimal's name: converted in place in three steps).
    recorded = ({orig.live_name(i) or o.name for i, o in enumerate(orig.sources)} if orig else set())
    configured = {pc.target for pc in config.pairs if (pc.schema, pc.table) == (nsp, rel)}
    for c in columns:
        text = config.text_amount(nsp, rel, c.name)
        # A configured target is one whatever its name; a recorded source now of a whole-number type
        # was converted in place: it is its own cents.
        if looks_minor(c) or c.name in configured or (c.name in recorded and c.whole_number_type):
            t.targets[c.name] = c
        elif c.source_type:
            t.sources[c.name] = _Source(c.full_type, c.not_null, None, _kind(c.base_type))
        elif text is not None:
            t.sources[c.name] = _Source(c.full_type, c.not_null, None, "text", text)
        else:
            t.others[c.name] = c
    # A decimal named like minor units ("fee_cents" numeric(12,2)) whose own minor-units column exists
    # ("fee_cents_cents") is that column's source.
    for name, c in list(t.targets.items()):
        suffixed = {name + suffix for suffix in MINOR_SUFFIXES}
        if c.base_type in SOURCE_TYPES and not c.whole_number_type and suffixed & set(t.targets):
            del t.targets[name]
            t.sources[name] = _Source(c.full_type, c.not_null, None, _kind(c.base_type))
    if orig is None:
        return t
    live = {c.name: c for c in columns}
    for i, o in enumerate(orig.sources):
        now = orig.live_name(i)
        name = o.name if now is None else now
        t.sources[name] = _Source(o.type, o.not_null, f"verifier_original_{i}", o.kind,
                                  config.text_amount(nsp, rel, o.name) if o.kind == "text" else None)
        if now is None:
            t.dropped.add(name)
        elif now not in t.targets and _same_kind(live[now], o.kind):
            t.kept.append(Kept(now, f"verifier_original_{i}", o.kind, o.name))
        # Renamed, and another column now carries its old name (two names swapped): that column is
        # read as the original by name too, so that it must hold the recorded values.
        other = live.get(o.name)
        if now is not None and now != o.name and other is not None and other.name not in t.targets \
                and _same_kind(other, o.kind):
            t.kept.append(Kept(o.name, f"verifier_original_{i}", o.kind, o.name))
    for j, code in enumerate(orig.codes):
        now = orig.live_name(len(orig.sources) + j)
        if now is not None and live[now].full_type == code.type:
            t.kept.append(Kept(now, f"verifier_code_{j}", "code", code.name))
        elif now is None:
            t.codes_dropped.append(code.name)
    return t


def _same_kind(column: Column, kind: str) -> bool:
    """Whether a live column still holds an amount as the recorded ``kind`` does (not converted)."""
    if kind == "text":
        return column.base_type in TEXT_TYPES
    return column.source_type and _kind(column.base_type) == kind


def _candidates(t: _Table, target: Column, config: Config) -> tuple[list[str], str]:
    """The sources ``target`` may be verified against, by the first rule that names any, and the rule."""
    configured = [pc.source for pc in config.pairs
                  if (pc.schema, pc.table, pc.target) == (t.schema, t.table, target.name)]
    if configured:
        return configured, "configured ([[pairs]])"
    if target.name in t.sources and t.sources[target.name].ref is not None:
        return [target.name], "converted in place (its recorded original)"
    suffix = minor_suffix(target.name)
    if suffix is not None:
        base = target.name[: -len(suffix)]
        hits = [s for s in SOURCE_SUFFIXES if base + s in t.sources and base + s != target.name]
        if hits:
            return [base + s for s in hits], ", ".join(f"X{s} / X{suffix}" for s in hits)
    # Only where its name names no source: a comment that names source columns.
    if target.comment:
        named = [s for s in t.sources if s != target.name
                 and re.search(rf"(?<![\w]){re.escape(s)}(?![\w])", target.comment)]
        if named:
            return named, "its comment names it"
    return [], ""


@dataclass(frozen=True)
class _Unit:
    """A table's minor unit: a fixed ``exponent``, or each row's ``currency`` (exponent None);
    ``unresolved`` says why neither could be chosen (its targets are then unverified)."""

    exponent: int | None
    currency: Column | None
    how: str
    unresolved: str | None = None


def _minor_unit(conn: psycopg.Connection, t: _Table, config: Config) -> _Unit:
    """The configured minor unit of table ``t``, else its detected currency column, else cents."""
    configured = config.minor_units_of(t.schema, t.table)
    if configured is not None and configured.exponent is not None:
        return _Unit(configured.exponent, None, f"exponent {configured.exponent} ([[minor_units]])")
    if configured is not None:
        column = next(c for c in t.columns if c.name == configured.currency_column)
        return _Unit(None, column, f"each row's currency ({column.name}, ISO 4217; [[minor_units]])")
    found = [c for c in currency.candidates(t.columns)
             if currency.looks_like_codes(conn, t.schema, t.table, c.name)]
    if len(found) > 1:
        names = ", ".join(c.name for c in found)
        return _Unit(2, None, "", f"several columns could hold each row's currency ({names}); name one in "
                                  "[[minor_units]] currency_column")
    if found:
        return _Unit(None, found[0], f"each row's currency ({found[0].name}, ISO 4217)")
    return _Unit(2, None, "")


def _pair(t: _Table, config: Config, ledger: dict[str, str], born: bool, unit: _Unit
          ) -> tuple[list[Pair], list[Entry]]:
    """The pairs of table ``t`` and the inventory's entries of its minor-units columns. One without a
    source is part of the ``ledger`` (its verdict text) or born in a table the migrations created,
    else unverified; an ambiguous or mistyped one is unverified wherever it is."""
    pairs: list[Pair] = []
    entries: list[Entry] = []
    for name, target in t.targets.items():
        excluded = config.exclusion(t.schema, t.table, name)
        if excluded is not None:
            entries.append(Entry(t.schema, t.table, name, target.full_type, "minor_units", "excluded",
                                 f"exclude = [\"{excluded}\"]"))
            continue
        found, rule = _candidates(t, target, config)
        found = [s for s in found if config.exclusion(t.schema, t.table, s) is None]
        why = None
        if len(found) > 1:
            why = (f"two or more sources could be its: {', '.join(found)} ({rule}); none is guessed. Name "
                   "one in [[pairs]]")
        elif not (target.whole_number_type or target.base_type == "numeric"):
            why = f"its type, {target.full_type}, cannot hold minor units"
        elif found and unit.unresolved is not None:
            why = unit.unresolved
        elif not found and name in ledger:
            entries.append(Entry(t.schema, t.table, name, target.full_type, "minor_units", "ledger",
                                 ledger[name]))
            continue
        elif not found and born:
            entries.append(Entry(t.schema, t.table, name, target.full_type, "minor_units",
                                 "born_in_minor_units", "its table was created by the migrations: it never "
                                 "held an amount to convert"))
            continue
        elif not found:
            why = _no_source(t, target)
        if why is not None:
            entries.append(Entry(t.schema, t.table, name, target.full_type, "minor_units", "unverified", why))
            continue
        source = t.sources[found[0]]
        pairs.append(Pair(found[0], name, source.type, source.not_null, source.ref, rule, source.kind,
                          target.base_type, source.text, unit.exponent))
        entries.append(Entry(t.schema, t.table, name, target.full_type, "minor_units", "verified_minor_units",
                             f"verified against {found[0]} ({rule})" + (f"; minor unit: {unit.how}"
                                                                        if unit.how else "")))
    return pairs, entries


def _no_source(t: _Table, target: Column) -> str:
    """Why no source was found for ``target``, naming a likely one of a type we cannot read."""
    suffix = minor_suffix(target.name)
    if suffix is not None:
        base = target.name[: -len(suffix)]
        for s in SOURCE_SUFFIXES:
            other = t.others.get(base + s)
            if other is not None and other.base_type in TEXT_TYPES:
                return (f"its source {other.name} is {other.full_type}: give it a parse rule in "
                        "[[text_amounts]] (thousands, decimal, symbols) to verify it")
            if other is not None:
                return f"its likely source {other.name} is {other.full_type}, not an amount type"
    stem = target.name[: -len(suffix)] if suffix else target.name
    names = ", ".join(stem + s for s in SOURCE_SUFFIXES)
    return (f"no source column to verify it against (looked for {names}; none in this table holds an "
            "amount). Name one in [[pairs]], or exclude it")


def _sources(t: _Table, pairs: list[Pair], config: Config, ledger: dict[str, str]) -> list[Entry]:
    """The inventory's entries of the sources of table ``t``: verified by a pair, excluded, part of
    the ``ledger``, or unverified."""
    used = {p.source for p in pairs}
    entries: list[Entry] = []
    for name, source in t.sources.items():
        if source.ref is not None and name in t.targets:  # converted in place: listed as its target
            continue
        excluded = config.exclusion(t.schema, t.table, name)
        if excluded is not None:
            verdict, why = "excluded", f"exclude = [\"{excluded}\"]"
        elif name in used:
            verdict = "verified_source"
            why = "verified by " + ", ".join(p.target for p in pairs if p.source == name)
        elif name in ledger:
            verdict, why = "ledger", ledger[name]
        elif name in t.dropped:
            entries.append(Entry(t.schema, t.table, name, source.type, "source", "unverified",
                                 DROPPED_WHY, lost=True))
            continue
        else:
            verdict, why = "unverified", "no minor-units column is verified against it"
        entries.append(Entry(t.schema, t.table, name, source.type, "source", verdict, why))
    return entries


CODE_DROPPED_WHY = ("the migrations dropped this column of each row's currency: the minor units its amounts "
                    "were recorded in are no longer on the rows")
DROPPED_WHY = ("the migrations dropped it, and no minor-units column is verified against its recorded "
               "amounts: they are in no column this run verified")
