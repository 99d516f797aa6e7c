"""Run the ledger's invariants over one snapshot and turn their results into findings.

``audit(run, conn, url, config)`` reads, on ``conn`` (a REPEATABLE READ,
READ ONLY transaction the caller opened):

1. the layout: every configured table and column exists (else
   ``UsageError`` naming it), and which legacy balance columns exist to
   reconcile;
2. the sign convention, configured or detected from the entries;
3. every pass's summary (``invariants.summary_query``), in parallel on up
   to ``workers`` connections that import ``conn``'s exported snapshot, so
   every pass sees exactly the same ledger;
4. for passes that found something, their offending rows, streamed on
   ``conn`` (the same snapshot) to offenders.csv, with bounded samples;
   the streamed counts must equal the summaries' (else a bug: assertion).

It writes offenders.csv (complete, or not at all) into the run folder and
adds findings to ``run``; it never writes to the database.
"""

from __future__ import annotations

import contextlib
import csv
import os
import queue
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from verifier import conninfo
from verifier.config import Config
from verifier.errors import UsageError, VerifierError
from verifier.findings import RULES, Finding
from verifier.ledger import invariants as inv
from verifier.ledger.layout import BALANCE_RULES, POSITIVE_IS, Layout, check_exists
from verifier.run import Run
from verifier.target import open_snapshot

OFFENDERS_HEADER = ("rule", "table", "id", "cents_impact", "detail")
CONVENTION_SAMPLE_ROWS = 100_000  # entries read to detect the sign convention


@dataclass
class PassResult:
    """One pass's summary: what it read, and per rule its weighted count and cents impact."""

    name: str
    totals: dict[str, int]
    counts: list[int]
    impacts: list[Decimal]
    duration_s: float = 0.0


def detect_convention(conn: psycopg.Connection, layout: Layout) -> tuple[inv.Convention, dict[str, Any]]:
    """The configured convention, or the one most of the first entries follow."""
    filled = inv.names(layout, inv.Convention(-1, 1))
    filled["limit"] = sql.Literal(CONVENTION_SAMPLE_ROWS)
    row = conn.execute(inv.compose(inv.CONVENTION_SQL, filled)).fetchone()
    assert row is not None
    minus, plus, debit_positive, debit_negative, read = (int(v) for v in row)
    evidence: dict[str, Any] = {"entries_read": read, "after_is_before_minus_amount": minus,
                "after_is_before_plus_amount": plus, "positive_amount_is_debit": debit_positive,
                "negative_amount_is_debit": debit_negative}

    def choose(configured: str, options: tuple[str, str], votes: tuple[int, int], what: str) -> int:
        """0 for the first option (the platform's), 1 for the second."""
        if configured != "detect":
            evidence[what] = "configured"
            return options.index(configured)
        if read == 0:  # nothing to detect from: the platform's convention, said so
            evidence[what] = "assumed (no entries)"
            return 0
        if votes[0] == votes[1]:
            raise UsageError(f"Cannot tell the ledger's {what} from its entries ({votes[0]} entries each "
                             "way).", hint=f"Set ledger.{what} in [tool.verifier.ledger].")
        evidence[what] = "detected"
        return 0 if votes[0] > votes[1] else 1

    balance = choose(layout.balance_rule, BALANCE_RULES, (minus, plus), "balance_rule")
    positive = choose(layout.positive_is, POSITIVE_IS, (debit_positive, debit_negative), "positive_is")
    convention = inv.Convention(direction=-1 if balance == 0 else 1, debit_sign=1 if positive == 0 else -1)
    return convention, evidence


def _summary(conn: psycopg.Connection, p: inv.Pass, filled: dict[str, sql.Composable]) -> PassResult:
    started = time.monotonic()
    row = conn.execute(inv.summary_query(p, filled)).fetchone()
    assert row is not None
    n = len(p.totals)
    return PassResult(p.name, {name: int(v) for (name, _), v in zip(p.totals, row[:n], strict=True)},
                      [int(v) for v in row[n::2]], [Decimal(v) for v in row[n + 1::2]],
                      round(time.monotonic() - started, 3))


def summarize(passes: list[tuple[inv.Pass, dict[str, sql.Composable]]], url: str, config: Config,
              snapshot_id: str) -> list[PassResult]:
    """Every pass's summary, on up to ``config.ledger.workers`` connections importing the snapshot.

    Each connection is opened (and imports the snapshot) once; the passes
    take turns on them.
    """
    workers = min(config.ledger.workers, len(passes))
    opened: list[psycopg.Connection] = []
    idle: queue.SimpleQueue[psycopg.Connection] = queue.SimpleQueue()

    def run_pass(p: inv.Pass, filled: dict[str, sql.Composable]) -> PassResult:
        conn = idle.get()
        try:
            return _summary(conn, p, filled)
        finally:
            idle.put(conn)

    try:
        for _ in range(workers):
            opened.append(open_snapshot(url, config, snapshot_id=snapshot_id))
            idle.put(opened[-1])
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_pass, p, filled) for p, filled in passes]
            try:
                return [f.result() for f in futures]
            except BaseException:
                # Ctrl-C or a failed pass: stop the others' statements instead of waiting for them.
                for f in futures:
                    f.cancel()
                for conn in opened:
                    conn.cancel_safe()
                raise
    finally:
        for conn in opened:
            conn.close()


def stream_offenders(conn: psycopg.Connection, p: inv.Pass, filled: dict[str, sql.Composable],
                     result: PassResult, layout: Layout, out: Any, sample_rows_max: int
                     ) -> dict[int, list[dict[str, Any]]]:
    """Copy every offending row of pass ``p`` to ``out``; return up to ``sample_rows_max`` per rule."""
    samples: dict[int, list[dict[str, Any]]] = {}
    streamed = [0] * len(p.rules)
    with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT").format(inv.offenders_query(p, filled))) as copy:
        for index, ident, impact, weight, detail in copy.rows():
            rule = p.rules[int(index)]
            streamed[int(index)] += int(weight)
            out.writerow((rule.rule, layout.table(rule.table), ident, impact, detail))
            bucket = samples.setdefault(int(index), [])
            if len(bucket) < sample_rows_max:  # NULL (None) where a layout's column is NULL
                bucket.append({"id": ident, "cents_impact": int(Decimal(impact)) if impact is not None else 0,
                               "detail": detail})
    # Two statements, one snapshot: they must agree row for row.
    if streamed != result.counts:
        raise RuntimeError(f"ledger pass {p.name}: the summary counted {result.counts}, "
                           f"the offenders {streamed}")
    return samples


def findings_of(p: inv.Pass, result: PassResult, samples: dict[int, list[dict[str, Any]]],
                layout: Layout) -> list[Finding]:
    found = []
    for i, rule in enumerate(p.rules):
        if not result.counts[i]:
            continue
        table = layout.table(rule.table)
        found.append(Finding(
            rule=rule.rule, severity="error", table=table, count=result.counts[i],
            cents_impact=int(result.impacts[i]), sample=tuple(samples.get(i, [])),
            message=f"{result.counts[i]:,} row(s) of {table}: {rule.rule} ({RULES[rule.rule]})",
            detail={"check": p.name},
        ))
    return found


@contextlib.contextmanager
def _permission() -> Iterator[None]:
    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        raise VerifierError(f"No permission to read the ledger: {exc.diag.message_primary}.",
                            hint="GRANT SELECT on the ledger's tables (and the reconciled legacy "
                                 "tables) to the auditing role.") from None


def audit(run: Run, conn: psycopg.Connection, url: str, config: Config) -> None:
    """The "layout", "audit" and "offenders" stages of a ledger audit (see the module docstring)."""
    layout = config.ledger
    offenders_tmp = run.run_dir / ".offenders.csv.partial"
    try:
        with conninfo.reading(url, config.statement_timeout_s), _permission():
            with run.stage("layout") as detail:
                reconciles = check_exists(conn, layout)
                convention, evidence = detect_convention(conn, layout)
                detail.update(schema=layout.schema, tables=layout.tables, convention=convention.describe(),
                              evidence=evidence,
                              reconcile=[f"{r.schema}.{r.table}.{r.column}" for r in reconciles],
                              non_negative_account_types=list(layout.non_negative_account_types))
                run.provenance["ledger_convention"] = convention.describe()
            filled = inv.names(layout, convention)
            passes = [(p, filled) for p in inv.PASSES]
            passes += [(inv.reconcile_pass(r), inv.names(layout, convention, r)) for r in reconciles]
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            assert row is not None
            snapshot_id = str(row[0])
            run.provenance["exported_snapshot"] = snapshot_id
            with run.stage("audit") as detail:
                results = summarize(passes, url, config, snapshot_id)
                detail.update(workers=min(config.ledger.workers, len(passes)),
                              passes=[{"pass": r.name, "rules": [rule.rule for rule in p.rules],
                                       "duration_s": r.duration_s, **r.totals, "offending": sum(r.counts)}
                                      for (p, _), r in zip(passes, results, strict=True)])
            findings: list[Finding] = []
            with run.stage("offenders") as detail, offenders_tmp.open("w", newline="") as fh:
                out = csv.writer(fh)
                out.writerow(OFFENDERS_HEADER)
                for (p, placeholders), result in zip(passes, results, strict=True):
                    samples = (stream_offenders(conn, p, placeholders, result, layout, out,
                                                config.sample_rows_max)
                               if any(result.counts) else {})
                    findings += findings_of(p, result, samples, layout)
                detail["rows"] = sum(sum(r.counts) for r in results)
    except BaseException:
        offenders_tmp.unlink(missing_ok=True)  # no half a CSV next to the report
        raise
    os.replace(offenders_tmp, run.run_dir / "offenders.csv")
    run.findings += [f.as_json() for f in findings]
