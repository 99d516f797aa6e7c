"""Run the cents checks over a database and turn their results into findings.

``verify(conn, plans, config, offenders)`` runs, per table, the one-pass
summary statement; for tables with offending rows it streams them (COPY)
into the ``offenders`` CSV writer and keeps the first ``sample_rows_max``
of each (column, rule) as the finding's sample. Client memory stays
bounded whatever the table size. Reads only, in whatever transaction
``conn`` is in (the caller opens one REPEATABLE READ READ ONLY snapshot).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from verifier.cents import currency
from verifier.cents import pairs as pairs_
from verifier.cents.originals import Originals
from verifier.cents.pairs import Inventory, TablePlan
from verifier.cents.sql import (
    DIFF_BUCKETS,
    FLOAT_DIGITS,
    UNIQUE_KEY_SQL,
    WARNING_CLASSES,
    Check,
    PendingConstraint,
    build_duplicates_query,
    build_offenders_query,
    build_summary_query,
    checks_of,
    diff_bucket,
)
from verifier.config import Config
from verifier.errors import VerifierError
from verifier.files import RowWriter, offenders_csv
from verifier.findings import Finding
from verifier.pg import conninfo
from verifier.run import Run

# PostgreSQL's limit on a select list (MaxTupleAttributeNumber, "target lists can have at most 1664
# entries"): a table needs 1 + 2 per check + 1 per pair of it.
SELECT_LIST_MAX = 1664
OFFENDERS_HEADER = ("table", "column", "rule", "row_key", "original", "cents", "expected_cents",
                    "cents_impact")

# NOT VALID CHECK constraints of a table that involve a paired cents column:
# the rows they will reject when a later migration validates them.
PENDING_CONSTRAINTS_SQL = """
SELECT c.conname, pg_get_expr(c.conbin, c.conrelid)
FROM pg_constraint c
WHERE c.conrelid = %s::regclass AND c.contype = 'c' AND NOT c.convalidated
  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.conrelid
              AND a.attnum = ANY(c.conkey) AND a.attname = ANY(%s))
ORDER BY 1
"""


@dataclass
class CheckStats:
    """What one check found in one table. ``offending`` comes from the summary statement;
    the per-class figures from the classified offenders, and must add up to it."""

    rows: int = 0
    offending: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    impact: dict[str, Decimal] = field(default_factory=dict)  # per class: the signed sum (net)
    impact_abs: dict[str, Decimal] = field(default_factory=dict)  # per class: the sum of |impact|
    cents_sum: Decimal = Decimal(0)  # every row's cents (pairs)
    offenders_cents: Decimal = Decimal(0)  # the offending rows' cents
    offenders_expected: Decimal = Decimal(0)  # the offending rows' expected cents
    ties: int = 0
    fractional: int = 0
    fits: dict[str, int] = field(default_factory=lambda: {"half_away_from_zero": 0, "half_even": 0,
                                                          "truncate": 0})
    differences: dict[str, int] = field(default_factory=dict)  # pairs: offending rows per DIFF_BUCKETS

    @property
    def expected_sum(self) -> Decimal:
        """Sum of every row's expected cents: right rows' cents are their expected cents."""
        return self.cents_sum - self.offenders_cents + self.offenders_expected

    def add_offender(self, kind: str, klass: str, impact: str, cents: str, expected: str, tie: str,
                     frac: str, fits: tuple[str, str, str]) -> None:
        self.classes[klass] = self.classes.get(klass, 0) + 1
        if kind == "pair":
            bucket = diff_bucket(impact)
            self.differences[bucket] = self.differences.get(bucket, 0) + 1
        if impact:
            self.impact[klass] = self.impact.get(klass, Decimal(0)) + Decimal(impact)
            self.impact_abs[klass] = self.impact_abs.get(klass, Decimal(0)) + abs(Decimal(impact))
        self.offenders_cents += Decimal(cents or 0)
        # A NULL, NaN or infinite original has no expected cents (NULL): it expects no cents.
        self.offenders_expected += Decimal(expected or 0)
        self.ties += tie == "t"
        self.fractional += frac == "t"
        for mode, fit in zip(self.fits, fits, strict=True):
            self.fits[mode] += fit == "t"

    def as_json(self) -> dict[str, Any]:
        fitting = [m for m, n in self.fits.items() if self.fractional and n == self.fractional]
        return {"rows": self.rows, "offending_rows": self.offending, "classes": self.classes,
                "impact_cents": {k: int(v) for k, v in self.impact_abs.items()},
                "impact_cents_net": {k: int(v) for k, v in self.impact.items()},
                "cents_sum": str(self.cents_sum), "expected_sum": str(self.expected_sum),
                "ties": self.ties, "fractional_rows": self.fractional, "fits": self.fits,
                "rounding_modes_fitting_every_fractional_row": fitting,
                "differences": {b: self.differences[b] for b in DIFF_BUCKETS if b in self.differences}}


@dataclass
class TableResult:
    plan: TablePlan
    checks: list[Check]
    stats: dict[int, CheckStats]
    offenders: int = 0  # (row, check) pairs classified: offenders.csv's lines for this table
    offending_rows: int = 0  # distinct rows that break at least one check (the summary's count)

    @property
    def rows(self) -> int:
        return self.stats[0].rows if self.stats else 0

    def as_json(self) -> dict[str, Any]:
        return {"table": self.plan.name, "key": list(self.plan.key), "rows": self.rows,
                "offending_rows": self.offending_rows, "offenders": self.offenders,
                "checks": [{"check": c.label, "kind": c.kind, **self.stats[c.index].as_json()}
                           for c in self.checks]}


def _pending_constraints(conn: psycopg.Connection, plan: TablePlan) -> list[PendingConstraint]:
    table = sql.Identifier(plan.schema, plan.table).as_string(conn)
    rows = conn.execute(PENDING_CONSTRAINTS_SQL, (table, [p.target for p in plan.pairs])).fetchall()
    return [PendingConstraint(str(name), str(expr)) for name, expr in rows]


def verify_table(conn: psycopg.Connection, plan: TablePlan, config: Config,
                 offenders: RowWriter, not_null: list[tuple[str, str]] | None = None
                 ) -> tuple[TableResult, list[Finding]]:
    """One table's checks (``not_null``: (column, why) that a later step will set NOT NULL)."""
    identities = list(plan.identities)
    constraints = _pending_constraints(conn, plan) + [
        PendingConstraint(f"SET NOT NULL {column} ({why})",
                          sql.SQL("{} IS NOT NULL").format(sql.Identifier(column)).as_string(conn), column)
        for column, why in not_null or [] if column in plan.columns]
    checks = checks_of(plan, identities, constraints)
    columns = 1 + 2 * len(checks) + len(plan.pairs)  # build_summary_query's select list
    if columns > SELECT_LIST_MAX:
        raise VerifierError(
            f"{plan.name} has {len(checks):,} checks ({len(plan.pairs):,} pairs): their one statement would "
            f"read {columns:,} values, more than PostgreSQL's {SELECT_LIST_MAX:,} a select list may hold.",
            hint="Verify it in parts: exclude some of its columns in one run and the others in another.")
    stats = {c.index: CheckStats() for c in checks}
    row = conn.execute(build_summary_query(plan, identities, constraints)).fetchone()
    assert row is not None
    for check in checks:
        s = stats[check.index]
        s.rows = int(row[0])
        s.offending = int(row[1 + 2 * check.index])
        s.cents_sum = Decimal(row[2 + 2 * check.index] or 0)
    result = TableResult(plan, checks, stats)
    headroom = {p.target: int(v) for p, v in zip(plan.pairs, row[1 + 2 * len(checks):], strict=True)
                if v is not None}
    samples: dict[tuple[int, str], list[dict[str, Any]]] = {}
    if any(s.offending for s in stats.values()):
        result.offenders, result.offending_rows = _stream_offenders(
            conn, plan, config, identities, constraints, checks, offenders, stats, samples)
        for check in checks:  # two statements, one snapshot: they must agree row for row
            s = stats[check.index]
            if sum(s.classes.values()) != s.offending:
                raise RuntimeError(f"{plan.name} {check.label}: the summary counted {s.offending} "
                                   f"offending rows, the classification {sum(s.classes.values())}")
    # Every offending row breaks a check, and no check has more offending rows than the table.
    assert max((s.offending for s in stats.values()), default=0) <= result.offending_rows
    assert result.offending_rows <= sum(s.offending for s in stats.values())
    return result, _findings(result, samples) + _narrow(plan, headroom) + _duplicated(conn, plan, config,
                                                                                       offenders)


def _duplicated(conn: psycopg.Connection, plan: TablePlan, config: Config, out: RowWriter) -> list[Finding]:
    """``row_duplicated``: originals that more than one live row matches. Read only where no unique
    index covers the live key any longer (a migration dropped it); each copy beyond the first is an
    offender line of its own key."""
    if plan.originals is None or conn.execute(UNIQUE_KEY_SQL, {
            "oid": plan.originals.oid, "names": list(plan.originals.live_key_names)}).fetchone():
        return []
    extra, impact = 0, Decimal(0)
    sample: list[dict[str, Any]] = []
    for row_key, copies, adds in conn.execute(build_duplicates_query(plan, config.rounding)):
        extra += int(copies)
        impact += Decimal(adds)
        out.writerow((plan.name, None, "row_duplicated", row_key, None, None, None, adds))
        if len(sample) < config.sample_rows_max:
            sample.append({"key": json.loads(row_key, parse_float=Decimal),
                           "copies_beyond_the_first": int(copies)})
    if not extra:
        return []
    return [Finding(rule="row_duplicated", severity="error", table=plan.name, count=extra,
                    cents_impact=int(abs(impact)), cents_impact_net=int(impact), sample=tuple(sample),
                    message=f"{extra:,} row(s) of {plan.name} copy a row of the originals (its key "
                            f"{', '.join(plan.originals.live_key_names)} is no longer unique): they add "
                            f"{impact} cents",
                    detail={"copies_beyond_the_first": extra})]


def _stream_offenders(conn: psycopg.Connection, plan: TablePlan, config: Config,
                      identities: list[tuple[str, tuple[str, ...]]],
                      constraints: list[PendingConstraint], checks: list[Check], out: RowWriter,
                      stats: dict[int, CheckStats],
                      samples: dict[tuple[int, str], list[dict[str, Any]]]) -> tuple[int, int]:
    """Copy every classified offender to ``out``, add it to ``stats``, keep bounded samples.

    Returns the lines written (offending (row, check) pairs) and the offending rows (each once).
    """
    query = build_offenders_query(plan, config.rounding, identities, constraints)
    count = rows = 0
    with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT").format(query)) as copy:
        for (row_key, index, klass, source, target, expected_text, impact, cents, expected, tie, frac,
             fit_away, fit_even, fit_trunc, first) in copy.rows():
            check = checks[int(index)]
            out.writerow((plan.name, check.column or check.source, klass, row_key, source, target,
                          expected_text, impact))
            count += 1
            rows += first == "t"
            stats[check.index].add_offender(check.kind, klass, impact, cents, expected, tie, frac,
                                            (fit_away, fit_even, fit_trunc))
            bucket = samples.setdefault((int(index), str(klass)), [])
            if len(bucket) < config.sample_rows_max:
                # parse_float: a numeric in the key (a keyless table's whole row) stays its exact text.
                bucket.append({"key": json.loads(row_key, parse_float=Decimal), "original": source,
                               "cents": target, "expected_cents": expected_text})
    return count, rows


def _findings(result: TableResult, samples: dict[tuple[int, str], list[dict[str, Any]]]) -> list[Finding]:
    found = []
    plan = result.plan
    for check in result.checks:
        s = result.stats[check.index]
        for klass, n in sorted(s.classes.items()):
            found.append(Finding(
                rule=klass, severity="warning" if klass in WARNING_CLASSES else "error",
                table=plan.name, column=check.column, count=n,
                cents_impact=int(s.impact_abs.get(klass, 0)), cents_impact_net=int(s.impact.get(klass, 0)),
                sample=tuple(samples.get((check.index, klass), [])),
                message=f"{n:,} row(s) of {plan.name} {check.label}: {klass}",
                detail={"check": check.label, "source": check.source},
            ))
        if check.kind == "pair" and s.cents_sum != s.expected_sum:
            found.append(Finding(
                rule="sum_mismatch", severity="error", table=plan.name, column=check.column,
                cents_impact=int(abs(s.cents_sum - s.expected_sum)),
                cents_impact_net=int(s.cents_sum - s.expected_sum),
                restates=f"the row findings of {plan.name}.{check.column}",
                message=f"{plan.name}.{check.column} sums to {s.cents_sum} cents; its originals "
                        f"give {s.expected_sum}",
                detail={"cents_sum": str(s.cents_sum), "expected_sum": str(s.expected_sum)},
            ))
    for pair in plan.pairs:
        if pair.float_source:
            found.append(Finding(
                rule="float_artifact", severity="warning", table=plan.name, column=pair.source,
                count=result.rows,
                message=f"{plan.name}.{pair.source} is {pair.source_type}: its cents depend on "
                        f"binary floating point. {FLOAT_DIGITS}",
                detail={"source_type": pair.source_type, "digits": FLOAT_DIGITS},
            ))
    return found


def _narrow(plan: TablePlan, headroom: dict[str, int]) -> list[Finding]:
    """A ``narrow_minor_units`` warning per integer or smallint target: its largest |value| against
    the type's limit."""
    found = []
    for pair in plan.pairs:
        if not pair.narrow:
            continue
        largest = headroom.get(pair.target, 0)
        share = Decimal(largest * 100) / pair.target_max
        ceiling = Decimal(pair.target_max) / 100
        found.append(Finding(
            rule="narrow_minor_units", severity="warning", table=plan.name, column=pair.target,
            message=f"{plan.name}.{pair.target} is {pair.target_type}: its largest |value| is {largest:,} of "
                    f"the {pair.target_max:,} it can hold ({share:.4f}% used). Widen it to bigint before an "
                    f"amount of {ceiling:,.2f} or more arrives.",
            detail={"type": pair.target_type, "largest": largest, "limit": pair.target_max}))
    return found


def configured_not_null(config: Config) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """The configuration's ``not_null`` columns, per table."""
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for schema, table, column in config.not_null:
        found.setdefault((schema, table), []).append((column, "configured not_null"))
    return found


def inventory_findings(inventory: Inventory) -> list[Finding]:
    """An ``unverified_minor_units`` error per minor-units column no source verifies, an
    ``unpaired_column`` warning per source column no minor-units column is verified against."""
    found = []
    for e in inventory.entries:
        if e.verdict != "unverified":
            continue
        where = f"{e.schema}.{e.table}"
        if e.lost:
            found.append(Finding(
                rule="original_dropped", severity="error", table=where, column=e.column,
                message=f"{where}.{e.column} ({e.type}) held amounts before the migrations: {e.why}.",
                detail={"why": e.why, "type": e.type}))
        elif e.role == "minor_units":
            found.append(Finding(
                rule="unverified_minor_units", severity="error", table=where, column=e.column,
                message=f"{where}.{e.column} ({e.type}) holds minor units that were not verified: {e.why}.",
                detail={"why": e.why, "type": e.type}))
        else:
            found.append(Finding(
                rule="unpaired_column", severity="warning", table=where, column=e.column,
                message=f"{where}.{e.column} ({e.type}) is an amount that no minor-units column is "
                        "verified against.",
                detail={"why": e.why, "type": e.type}))
    return found


def verify(conn: psycopg.Connection, plans: list[TablePlan], config: Config,
           offenders: RowWriter, not_null: dict[tuple[str, str], list[tuple[str, str]]] | None = None,
           progress: Callable[[int, int, str], None] | None = None,
           ) -> tuple[list[TableResult], list[Finding]]:
    """Verify every table of ``plans``; raise ``VerifierError`` naming a table we may not read.

    ``not_null``: per table, (column, why) that a later step will set NOT NULL: its NULL rows are
    ``constraint_violation``. ``progress(done, total, table)`` is called before each table and at
    the end.
    """
    offenders.writerow(OFFENDERS_HEADER)
    results, findings = [], []
    for done, plan in enumerate(plans):
        if progress is not None:
            progress(done, len(plans), plan.name)
        try:
            result, found = verify_table(conn, plan, config, offenders,
                                         (not_null or {}).get((plan.schema, plan.table), []))
        except psycopg.errors.InsufficientPrivilege as exc:
            hidden = "row-level security" in (exc.diag.message_primary or "")
            raise VerifierError(
                f"No permission to read {plan.name}"
                + (" whole: a row level security policy would hide rows from this role"
                   if hidden else "") + f": {exc.diag.message_primary}.",
                hint=(f"Verify as a role with BYPASSRLS (ALTER ROLE ... BYPASSRLS), or one a policy on "
                      f"{plan.name} shows every row; or exclude the table in [tool.verifier] exclude."
                      if hidden else f"GRANT SELECT ON {plan.name} TO the verifying role, or exclude "
                                     "the table in [tool.verifier] exclude."),
            ) from None
        results.append(result)
        findings += found
    if progress is not None:
        progress(len(plans), len(plans), "")
    return results, findings


def run_checks(run: Run, conn: psycopg.Connection, config: Config, *, url: str,
               originals: dict[tuple[str, str], Originals] | None = None, required: bool = True,
               ledger: dict[tuple[str, str, str], str] | None = None,
               born: frozenset[tuple[str, str]] = frozenset(),
               not_null: dict[tuple[str, str], list[tuple[str, str]]] | None = None) -> None:
    """The "pairs" and "verify" stages of a run, on ``conn`` (one snapshot, read only).

    The "pairs" stage takes the money inventory (every column's verdict,
    ``verifier.cents.pairs``; ``ledger`` and ``born`` as there) and adds its
    findings. ``not_null``: per table, the (column, why) that a pending
    migration will set NOT NULL (the configuration's ``not_null`` too).
    Writes offenders.csv into the run folder (complete, or not at all) and
    adds the findings to ``run``. ``url`` (the database's, described and
    scrubbed of secrets) names the database in messages. Raises
    ``VerifierError`` when the database holds no money at all, a statement
    times out or the connection fails. With ``required`` off (a rehearsal
    whose migrations failed before any cents column existed), nothing to
    verify is a note in the stage, not an error.
    """
    where = conninfo.describe(url)
    with conninfo.reading(url, config.statement_timeout_s):
        with run.stage("pairs") as detail:
            plans, inventory = pairs_.discover(conn, config, originals, ledger=ledger, born=born,
                                               not_null=frozenset(not_null or {}))
            unverified = inventory_findings(inventory)
            detail.update(tables=len(plans), pairs=sum(len(p.pairs) for p in plans),
                          unpaired=len(unverified),
                          with_originals=sum(1 for p in plans if p.originals is not None),
                          pairing=[{"table": p.name, "source": q.source, "target": q.target, "rule": q.rule,
                                    "source_type": q.source_type, "target_type": q.target_type}
                                   for p in plans for q in p.pairs],
                          inventory=inventory.as_json())
            if any(p.currency for p in plans):
                detail["iso4217_published"] = currency.published()
            if not plans and not required:
                # The migrations stopped before any minor-units column existed: the sources waiting for
                # theirs are no news; a minor-units column nothing verifies still is.
                detail["skipped"] = "no decimal/cents pairs: the migrations stopped before any"
                run.add(*(f for f in unverified if f.severity == "error"))
                return
            run.add(*unverified)
        if not plans and not inventory.entries:
            raise VerifierError(
                f"No money columns found in {where}: nothing to verify.",
                hint="Sources are numeric, real, double precision or money columns (text ones with a "
                     "[[text_amounts]] rule); minor units are named X_cents, X_in_cents, X_minor or "
                     "X_minor_units, or configured in [[pairs]].")
        with run.stage("verify") as detail, offenders_csv(run.run_dir) as out:
            announced = configured_not_null(config)
            for table, columns in (not_null or {}).items():
                announced[table] = announced.get(table, []) + columns
            results, findings = verify(conn, plans, config, out, announced,
                                       lambda done, total, now: run.advanced("verify", done, total, "tables",
                                                                             now))
            detail["tables"] = [r.as_json() for r in results]
            detail["rows_checked"] = sum(r.rows for r in results)
    run.add(*findings)
