"""Run the ledger's invariants over one snapshot and turn their results into findings.

``audit(run, conn, url, config, schedule)`` reads, on ``conn`` (a REPEATABLE
READ, READ ONLY transaction the caller opened):

1. the layout: every configured table and column exists (else
   ``UsageError`` naming it), and which legacy balance columns exist to
   reconcile;
2. the sign convention, configured or detected from the entries;
3. with a state file (``Schedule.state``, see ``verifier.ledger.state``):
   what earlier audits proved, and how far history is settled now;
4. every pass's summary (``invariants.summary_query``), in parallel on up
   to ``workers`` connections that import ``conn``'s exported snapshot, so
   every pass sees exactly the same ledger; with a state, the incremental
   passes (only what lies beyond the proven watermarks) and the digests of
   proven history (``verifier.ledger.history``) share those connections;
5. for passes that found something, their offending rows, streamed on
   ``conn`` (the same snapshot) to offenders.csv, with bounded samples;
   the streamed counts must equal the summaries' (else a bug); offenders
   in proven history found by earlier audits are reported again from the
   state, and changed proven rows are ``history_tampered``;
6. the new state, written atomically only once all of the above is done.

It writes offenders.csv (complete, or not at all) into the run folder and
adds findings to ``run``; it never writes to the database.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import queue
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from verifier import conninfo
from verifier.config import Config
from verifier.errors import UsageError, VerifierError
from verifier.findings import RULES, Finding
from verifier.ledger import history
from verifier.ledger import invariants as inv
from verifier.ledger import state as st
from verifier.ledger.layout import BALANCE_RULES, POSITIVE_IS, Layout, check_exists
from verifier.report.junit import HISTORY_CHECK
from verifier.run import Run
from verifier.target import open_snapshot

T = TypeVar("T")
OFFENDERS_HEADER = ("rule", "table", "id", "cents_impact", "detail")
CONVENTION_SAMPLE_ROWS = 100_000  # entries read to detect the sign convention


@dataclass
class PassResult:
    """One pass's summary: what it read, and per rule its weighted count and cents impact."""

    name: str
    totals: dict[str, Any]  # counts (int), or a breakdown (by_currency: {currency: exact sum as text})
    counts: list[int]
    impacts: list[Decimal]
    duration_s: float = 0.0
    # Per (rule, group) of rules with a group (account_balance_drift by account type): rows, |impact|.
    groups: dict[tuple[str, str], list[Any]] = field(default_factory=dict)


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


def _summary(conn: psycopg.Connection, *, p: inv.Pass, filled: dict[str, sql.Composable]) -> PassResult:
    started = time.monotonic()
    row = conn.execute(inv.summary_query(p, filled)).fetchone()
    assert row is not None
    n = len(p.totals)
    return PassResult(p.name, {name: v if isinstance(v, dict) else int(v)
                               for (name, _), v in zip(p.totals, row[:n], strict=True)},
                      [int(v) for v in row[n::2]], [Decimal(v) for v in row[n + 1::2]],
                      round(time.monotonic() - started, 3))


def in_parallel(jobs: list[Callable[[psycopg.Connection], T]], url: str, config: Config,
                snapshot_id: str) -> list[T]:
    """Every job's result, on up to ``config.ledger.workers`` connections importing the snapshot.

    Each connection is opened (and imports the snapshot) once; the jobs
    take turns on them.
    """
    workers = min(config.ledger.workers, len(jobs))
    opened: list[psycopg.Connection] = []
    idle: queue.SimpleQueue[psycopg.Connection] = queue.SimpleQueue()

    def run_job(job: Callable[[psycopg.Connection], T]) -> T:
        conn = idle.get()
        try:
            return job(conn)
        finally:
            idle.put(conn)

    try:
        for _ in range(workers):
            opened.append(open_snapshot(url, config, snapshot_id=snapshot_id))
            idle.put(opened[-1])
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_job, job) for job in jobs]
            try:
                return [f.result() for f in futures]
            except BaseException:
                # Ctrl-C or a failed job: stop the others' statements instead of waiting for them.
                for f in futures:
                    f.cancel()
                for conn in opened:
                    conn.cancel_safe()
                raise
    finally:
        for conn in opened:
            conn.close()


def stream_offenders(conn: psycopg.Connection, p: inv.Pass, filled: dict[str, sql.Composable],
                     result: PassResult, layout: Layout, out: Any, sample_rows_max: int,
                     proven: dict[str, int], run_id: str
                     ) -> tuple[dict[int, list[dict[str, Any]]], list[st.Carried]]:
    """Copy every offending row of pass ``p`` to ``out``.

    Returns up to ``sample_rows_max`` samples per rule, and the rows that lie
    in proven history (ids up to ``proven``), which the state file carries.
    """
    samples: dict[int, list[dict[str, Any]]] = {}
    carried: list[st.Carried] = []
    streamed = [0] * len(p.rules)
    with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT").format(inv.offenders_query(p, filled))) as copy:
        for index, ident, impact, weight, detail, scope, group in copy.rows():
            rule = p.rules[int(index)]
            streamed[int(index)] += int(weight)
            if group is not None:
                tally = result.groups.setdefault((rule.rule, group), [0, Decimal(0)])
                tally[0] += int(weight)
                tally[1] += abs(Decimal(impact)) if impact is not None else 0
            out.writerow((rule.rule, layout.table(rule.table), ident, impact, detail))
            _sample(samples.setdefault(int(index), []), sample_rows_max, ident, impact, detail)
            if rule.scope and scope is not None and int(scope) <= proven[rule.scope[0]]:
                carried.append(st.Carried(p.name, int(index), ident, impact, int(weight), detail, run_id))
    # Two statements, one snapshot: they must agree row for row.
    if streamed != result.counts:
        raise RuntimeError(f"ledger pass {p.name}: the summary counted {result.counts}, "
                           f"the offenders {streamed}")
    return samples, carried


def _sample(bucket: list[dict[str, Any]], limit: int, ident: str | None, impact: str | None,
            detail: str | None) -> None:
    if len(bucket) < limit:  # NULL (None) where a layout's column is NULL
        bucket.append({"id": ident, "cents_impact": int(Decimal(impact)) if impact is not None else 0,
                       "detail": detail})


def add_carried(p: inv.Pass, result: PassResult, carried: list[st.Carried], layout: Layout, out: Any,
                samples: dict[int, list[dict[str, Any]]], sample_rows_max: int) -> None:
    """Report pass ``p``'s offenders in proven history, found by earlier audits, with this audit's."""
    for c in carried:
        rule = p.rules[c.rule_index]
        result.counts[c.rule_index] += c.weight
        result.impacts[c.rule_index] += abs(Decimal(c.impact)) if c.impact is not None else 0
        out.writerow((rule.rule, layout.table(rule.table), c.id, c.impact, c.detail))
        _sample(samples.setdefault(c.rule_index, []), sample_rows_max, c.id, c.impact,
                f"{c.detail} (found by audit {c.found_by})" if c.detail else f"found by audit {c.found_by}")


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


@dataclass(frozen=True)
class Schedule:
    """What ``--state``, ``--full`` and ``--verify-history-share`` ask of an audit."""

    state: Path | None = None
    full: bool = False
    history_share: float = 1.0

    def __post_init__(self) -> None:
        assert 0 < self.history_share <= 1


IDENTITY_SQL = """
SELECT (SELECT system_identifier::text FROM pg_control_system()), current_database(),
       (SELECT coalesce(json_object_agg(c.relname, (
                SELECT json_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)), '{}')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = ANY(%s))::text
"""
SNAPSHOT_SQL = """
SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text, (SELECT count(*) FROM pg_snapshot_xip(s)),
       (SELECT max({entries_id}) FROM {entries}), (SELECT max({journals_id}) FROM {journals})
FROM pg_current_snapshot() s
"""


def identity(conn: psycopg.Connection, layout: Layout, convention: inv.Convention) -> dict[str, Any]:
    """What makes a state file this ledger's: the server, database, tables, their columns, the convention."""
    tables = [layout.tables[t] for t in st.HISTORY_TABLES]
    row = conn.execute(IDENTITY_SQL, (layout.schema, tables)).fetchone()
    assert row is not None
    columns = json.loads(row[2])
    return {"system_identifier": row[0], "database": row[1], "schema": layout.schema,
            "tables": {t: layout.tables[t] for t in st.HISTORY_TABLES},
            "columns": {t: columns.get(layout.tables[t]) for t in st.HISTORY_TABLES},
            "convention": convention.describe(),
            "row_hash": {t: history.row_hash_kind(conn, layout, t) for t in st.HISTORY_TABLES}}


def _check_identity(path: Path, stored: dict[str, Any], current: dict[str, Any]) -> None:
    differ = [k for k in current if stored.get(k) != current[k]]
    if differ:
        what = "; ".join(f"{k}: {stored.get(k)} in the state, {current[k]} here" for k in differ)
        raise UsageError(f"The state file {path} was written for another ledger ({what}).",
                         hint="Give each ledger its own --state file. After an intended change to the "
                              "ledger's tables, move the file away to start a new proven history "
                              "(it is left as it is).")


RUNNING_XIDS_SQL = """
SELECT transactionid::text FROM pg_locks
WHERE locktype = 'transactionid' AND mode = 'ExclusiveLock' AND granted
"""


# The first journal beyond the proven ones that has an entry beyond the entries' watermark.
OPEN_JOURNAL_SQL = """
SELECT min({entries_journal}) FROM {entries} WHERE {entries_id} > {w} AND {entries_journal} > {jw}
"""


def running_bound(conn: psycopg.Connection, xmax: int) -> int:
    """An xid above every transaction running now (``xmax``: the snapshot's, as an xid8).

    A snapshot's xmax is one past the newest *completed* transaction, not
    the next xid: a transaction that took its xid after the newest one to
    commit is running, yet neither in the snapshot's list of running xids
    nor below its xmax. Each running transaction holds the lock on its own
    xid, which pg_locks shows to every role (as a 32-bit xid, placed here in
    xmax's epoch: running xids lie within 2^31 of it).
    """
    bound = xmax
    for (xid32,) in conn.execute(RUNNING_XIDS_SQL).fetchall():
        delta = (int(xid32) - xmax) % 2**32
        delta -= 2**32 if delta >= 2**31 else 0
        bound = max(bound, xmax + delta + 1)
    return bound


def settle(proven: dict[str, int], last_seen: dict[str, int] | None, last_bound: int | None,
           xmin: int) -> dict[str, int]:
    """How far history is settled (no transaction can still add a row below): the new watermarks.

    What the previous audit saw (``last_seen``) settles once every
    transaction that was running then has ended: ``xmin`` (this snapshot's
    oldest running xid) has reached ``last_bound`` (``running_bound`` of the
    previous audit). What this audit sees settles at a later audit, never
    at once: a transaction running now may hold ids below what it sees. So
    the first audit of a state proves nothing, the second what the first
    saw. (Rows added later below a watermark, by explicit ids, cached
    sequence values, or a transaction that took sequence values and wrote
    nothing for a whole audit, are history_tampered.)
    """
    if last_seen is None or last_bound is None or xmin < last_bound:
        return dict(proven)
    return {t: max(proven[t], last_seen[t]) for t in st.HISTORY_TABLES}


def audit(run: Run, conn: psycopg.Connection, url: str, config: Config,
          schedule: Schedule | None = None) -> None:
    """The stages of a ledger audit (see the module docstring); with a state file, incremental."""
    schedule = schedule or Schedule()
    offenders_tmp = run.run_dir / ".offenders.csv.partial"
    try:
        with conninfo.reading(url, config.statement_timeout_s), _permission():
            if schedule.state is None:
                _audit(run, conn, url, config, schedule, offenders_tmp)
            else:
                with st.locked(schedule.state):
                    _audit(run, conn, url, config, schedule, offenders_tmp)
    except BaseException:
        offenders_tmp.unlink(missing_ok=True)  # no half a CSV next to the report
        raise


def _audit(run: Run, conn: psycopg.Connection, url: str, config: Config, schedule: Schedule,
           offenders_tmp: Path) -> None:
    layout = config.ledger
    with run.stage("layout") as detail:
        reconciles = check_exists(conn, layout)
        convention, evidence = detect_convention(conn, layout)
        detail.update(schema=layout.schema, tables=layout.tables, convention=convention.describe(),
                      evidence=evidence, reconcile=[f"{r.schema}.{r.table}.{r.column}" for r in reconciles],
                      non_negative_account_types=list(layout.non_negative_account_types))
        run.provenance["ledger_convention"] = convention.describe()
    filled = inv.names(layout, convention)
    state, before, mode = None, None, "full"
    settled = dict.fromkeys(st.HISTORY_TABLES, 0)
    if schedule.state is not None:
        with run.stage("state") as detail:
            before = st.load(schedule.state)
            current = identity(conn, layout, convention)
            if before is not None:
                _check_identity(schedule.state, before.identity, current)
            if before is None or schedule.full or before.empty:
                state = st.new(current)
                state.runs = before.runs if before else []
            else:
                state, mode = before, "incremental"
            xmin, xmax, in_progress, max_entry, max_journal = conn.execute(
                inv.compose(SNAPSHOT_SQL, filled)).fetchone() or ()
            seen = {"entries": int(max_entry or 0), "journals": int(max_journal or 0)}
            # What the last audit saw settles now (also after --full: it is a fact about the ledger).
            settled = settle(state.proven, before.seen if before else None,
                             before.seen_xmax if before else None, int(xmin))
            # Ids interleave across transactions: a journal below the journals' watermark may own
            # entries above the entries' one. It is proven complete only with all of its entries.
            open_journal = conn.execute(inv.compose(OPEN_JOURNAL_SQL, {
                **filled, "w": sql.Literal(settled["entries"]), "jw": sql.Literal(state.proven["journals"])
            })).fetchone()
            if open_journal and open_journal[0] is not None:
                settled["journals"] = max(state.proven["journals"],
                                          min(settled["journals"], int(open_journal[0]) - 1))
            # Saved only if the audit completes: what the next audit may settle, and when.
            state.seen, state.seen_xmax = seen, running_bound(conn, int(xmax))
            detail.update(path=str(schedule.state), mode=mode, proven_before=dict(state.proven),
                          seen=seen, settled=settled, transactions_in_progress=int(in_progress),
                          history_share=schedule.history_share)
    if mode == "incremental":
        assert state is not None
        placeholders = inv.incremental(filled, state.proven["entries"], state.proven["journals"], state.trial)
        passes = [(p, placeholders) for p in inv.INC_PASSES]
    else:
        passes = [(p, filled) for p in inv.PASSES]
    passes += [(inv.reconcile_pass(r), inv.names(layout, convention, r)) for r in reconciles]
    jobs: list[Callable[[psycopg.Connection], Any]] = [
        functools.partial(_summary, p=p, filled=f) for p, f in passes]
    rehash: dict[str, list[tuple[int, int]]] = {}
    if state is not None:
        for table in st.HISTORY_TABLES:
            rehash[table] = (history.plan_rehash(state, table, schedule.history_share)
                             if mode == "incremental" else [])
            old = state.proven[table] if mode == "incremental" else FULL_FROM
            jobs.append(functools.partial(history.digest, layout=layout, table=table, seed=state.seed,
                                          kind=state.identity["row_hash"][table], chunks=rehash[table],
                                          old=old, new=settled[table]))
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    snapshot_id = str(row[0])
    run.provenance["exported_snapshot"] = snapshot_id
    with run.stage("audit") as detail:
        done = in_parallel(jobs, url, config, snapshot_id)
        results: list[PassResult] = done[:len(passes)]
        digests: list[history.Digests] = done[len(passes):]
        detail.update(workers=min(config.ledger.workers, len(jobs)), mode=mode,
                      passes=[{"pass": r.name, "rules": [rule.rule for rule in p.rules],
                               "duration_s": r.duration_s, **r.totals, "offending": sum(r.counts)}
                              for (p, _), r in zip(passes, results, strict=True)])
    findings: list[Finding] = []
    carried: list[st.Carried] = list(state.carried) if state is not None and mode == "incremental" else []
    new_carried: list[st.Carried] = []
    tampered: list[history.Tampered] = []
    with run.stage("offenders") as detail, offenders_tmp.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(OFFENDERS_HEADER)
        for (p, placeholders), result in zip(passes, results, strict=True):
            samples: dict[int, list[dict[str, Any]]] = {}
            if any(result.counts):
                samples, found = stream_offenders(conn, p, placeholders, result, layout, out,
                                                  config.sample_rows_max, settled, run.run_id)
                new_carried += found
            add_carried(p, result, [c for c in carried if c.pass_name == p.name], layout, out, samples,
                        config.sample_rows_max)
            findings += findings_of(p, result, samples, layout)
        if state is not None:
            for table, found_digests in zip(st.HISTORY_TABLES, digests, strict=True):
                tampered += history.compare(state, table, rehash[table], found_digests.rehashed)
        for t in tampered:
            out.writerow(("history_tampered", layout.table(t.table), t.id, t.cents_impact, t.detail))
        findings += _tampered_findings(tampered, layout, config.sample_rows_max)
        detail["rows"] = sum(sum(r.counts) for r in results) + len(tampered)
        detail["drift_by_account_type"] = _drift_by_type(results)
    os.replace(offenders_tmp, run.run_dir / "offenders.csv")
    run.findings += [f.as_json() for f in findings]
    if state is not None and schedule.state is not None:
        with run.stage("state saved") as detail:
            rehashed = sum(b - a + 1 for r in rehash.values() for a, b in r)
            _advance(state, run, digests, settled, carried + new_carried, mode, rehashed, results, findings)
            st.save(schedule.state, state)
            detail.update(path=str(schedule.state), proven=dict(state.proven), carried=len(state.carried),
                          chunks={t: len(c) for t, c in state.chunks.items()}, rehashed_chunks=rehashed,
                          tampered=len(tampered))
        run.provenance["ledger_history"] = state.runs[-TREND_RUNS:]


def _drift_by_type(results: list[PassResult]) -> dict[str, dict[str, Any]]:
    """account_balance_drift per account type, over every pass that checks it (for the report's chart)."""
    by_type: dict[str, list[Any]] = {}
    for r in results:
        for (rule, group), (n, cents) in r.groups.items():
            if rule == "account_balance_drift":
                tally = by_type.setdefault(group, [0, Decimal(0)])
                tally[0] += n
                tally[1] += cents
    return {t: {"accounts": n, "drift_cents": str(cents)} for t, (n, cents) in sorted(by_type.items())}


FULL_FROM = -(1 << 63) - 1  # below every bigint: a full audit digests every id
TREND_RUNS = 60  # audits of the state's history a report carries (for its trend charts)
KEPT_RUNS = 1000  # audits the state file remembers


def _tampered_findings(tampered: list[history.Tampered], layout: Layout,
                       sample_rows_max: int) -> list[Finding]:
    found = []
    for table in st.HISTORY_TABLES:
        mine = [t for t in tampered if t.table == table]
        if mine:
            found.append(Finding(
                rule="history_tampered", severity="error", table=layout.table(table), count=len(mine),
                cents_impact=sum(t.cents_impact for t in mine),
                sample=tuple({"id": t.id, "cents_impact": t.cents_impact, "detail": t.detail}
                             for t in mine[:sample_rows_max]),
                message=f"{len(mine):,} change(s) to {layout.table(table)} rows an earlier audit had proven: "
                        f"history_tampered ({RULES['history_tampered']})",
                detail={"check": HISTORY_CHECK}))
    return found


def _advance(state: st.State, run: Run, digests: list[history.Digests], settled: dict[str, int],
             carried: list[st.Carried], mode: str, rehashed: int, results: list[PassResult],
             findings: list[Finding]) -> None:
    """The state after this audit: proven history extended to ``settled``, this audit in its history."""
    for table, found in zip(st.HISTORY_TABLES, digests, strict=True):
        history.extend(state, table, found, settled[table])
    state.carried = carried
    state.proven_at = run.run_id
    entries = next((r.totals.get("entries", 0) for r in results if r.name == "journals"), 0)
    state.runs.append({
        "run_id": run.run_id, "started_at": run.started_at.isoformat(), "mode": mode,
        "status": "fail" if findings else "pass", "duration_s": round(time.monotonic() - run._t0, 3),
        "entries": settled["entries"], "proven_entries": state.proven["entries"], "checked_entries": entries,
        "rehashed_chunks": rehashed,
        "findings": len(findings), "offending_rows": sum(f.count for f in findings),
        "cents_impact": str(sum(f.cents_impact for f in findings)),
        "rules": sorted({f.rule for f in findings})})
    del state.runs[:-KEPT_RUNS]
