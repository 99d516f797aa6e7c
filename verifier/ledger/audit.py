"""Run the ledger's invariants over one snapshot and turn their results into findings.

``audit(run, conn, url, config, schedule)`` reads, on ``conn`` (a REPEATABLE
READ, READ ONLY transaction the caller opened), in these stages:

1. ``layout``: every configured table and column exists (else
   ``UsageError`` naming it, ``verifier.ledger.layout``), which legacy
   balance columns exist to reconcile, and the sign convention, configured
   or detected from the entries (``verifier.ledger.convention``);
2. ``state``, with a state file (``Schedule.state``): what earlier audits
   proved, and how far history is settled now (``verifier.ledger.proven``);
3. ``audit``: every pass's summary (``invariants.summary_query``), in
   parallel on up to ``workers`` connections that import ``conn``'s
   exported snapshot, so every pass sees exactly the same ledger (a full
   chain pass sorts, in account ranges: ``split_chain``); with a
   state, the incremental passes (only what lies beyond the proven
   watermarks) and the digests of proven history (``verifier.ledger.history``)
   share those connections;
4. ``offenders``: for passes that found something, their offending rows,
   streamed on ``conn`` (the same snapshot) to offenders.csv, with bounded
   samples; the streamed counts must equal the summaries' (else a bug);
   offenders in proven history found by earlier audits are reported again
   from the state, and changed proven rows are ``history_tampered``;
5. ``state saved``: the new state, written atomically only once all of the
   above is done.

It writes offenders.csv (complete, or not at all) into the run folder and
adds findings to ``run``; it never writes to the database.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from verifier import signals
from verifier.cents.sql import UNIQUE_KEY_SQL
from verifier.config import Config
from verifier.config.ledger import Layout
from verifier.errors import UsageError, VerifierError
from verifier.files import OFFENDERS_NAME, offenders_csv
from verifier.findings import Finding, rule, whole_cents
from verifier.ledger import history, proven
from verifier.ledger import invariants as inv
from verifier.ledger import state as st
from verifier.ledger.convention import detect_convention
from verifier.ledger.layout import Detection, detect
from verifier.ledger.proven import Schedule, Scope
from verifier.pg import conninfo
from verifier.pg.snapshot import export_snapshot, in_parallel, planned
from verifier.run import Run

__all__ = ["Schedule", "audit"]

OFFENDERS_HEADER = ("rule", "table", "id", "cents_impact", "detail")
CURRENCIES_MAX = 200  # distinct account currencies the per-currency figures are read for
# The full chain pass reads the entries in (account, seq) order. Through an index on the account,
# that is a random read of the table per entry (on 10^7 entries each heap page was fetched about
# 50 times); a sequential scan and a sort read each page once. So the full chain pass sorts, split
# into account ranges that the workers sort at once; work_mem larger than this made the sorts
# slower here, not faster (64 MB: 10.0 s against 8.6 s on 10^7 entries; README "Speed").
CHAIN_SORTED = {"enable_indexscan": "off", "enable_bitmapscan": "off", "work_mem": "4MB"}
# Split, the ranges are the parallelism: no parallel workers of PostgreSQL's own on top of them.
CHAIN_SPLIT = {**CHAIN_SORTED, "max_parallel_workers_per_gather": "0"}
# PostgreSQL compiles a statement whose estimated cost passes jit_above_cost (JIT): worth it on the
# full passes that read every entry (10^7 entries: chain 7.3 s against 9.5 s without, journals 3.9 s
# against 4.4 s), not on the others, whose estimates pass it on far fewer rows (reversed 0.5 s
# against 0.25 s, the incremental journals pass 0.52 s against 0.20 s, all of it compiling).
JIT_PASSES = frozenset({"chain", "journals", "trial"})
NO_JIT = {"jit": "off"}
INTEGER_OIDS = frozenset({20, 21, 23})  # int8, int2, int4 (pg_type.oid, fixed since PostgreSQL 7)
CHAIN_SAMPLE_PERCENT = 1  # of the entries' pages, sampled for the account ranges' bounds
CHAIN_RANGE_ROWS_MIN = 2_000  # sampled entries per range, at least (else fewer ranges)
CHAIN_QUANTILES = 64  # of the sampled accounts, grouped into ranges of about equal weight


# Whether the entries can be cut into account ranges: a table (not a view), and an account column
# whose type (under any domains) is built in or an enum. Its "<" and ">=", resolved in pg_catalog,
# then order as its sort does. An extension's type (citext) sorts by its own operators, which
# pg_catalog does not hold: its ranges would be cut in one order and read in another (text's).
SPLITTABLE_SQL = """
WITH RECURSIVE base(oid, typtype, typnamespace, typbasetype) AS (
    SELECT t.oid, t.typtype, t.typnamespace, t.typbasetype
    FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n
                        ON n.oid = c.relnamespace WHERE n.nspname = {schema} AND c.relname = {table})
      AND a.attname = {column} AND NOT a.attisdropped
    UNION ALL
    SELECT t.oid, t.typtype, t.typnamespace, t.typbasetype
    FROM pg_catalog.pg_type t JOIN base b ON b.typtype = 'd' AND t.oid = b.typbasetype)
SELECT c.relkind::text,
       (SELECT b.typtype = 'e' OR b.typnamespace = 'pg_catalog'::pg_catalog.regnamespace
        FROM base b WHERE b.typtype <> 'd')
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = {schema} AND c.relname = {table}
"""


@dataclass(frozen=True)
class Planned:
    """A pass to run: its SQL, the placeholders that fill it, its planner settings; ``part`` names
    the account range of a pass split into several (``None``: the whole pass)."""

    p: inv.Pass
    filled: dict[str, sql.Composable]
    settings: dict[str, str] = field(default_factory=dict)
    part: str | None = None
    # Run after the others, from the chain pass's figures (``inv.TRIAL_FOLDED``), not on a worker.
    after_chain: bool = False


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


def _summary(conn: psycopg.Connection, *, p: inv.Pass, filled: dict[str, sql.Composable],
             settings: dict[str, str]) -> PassResult:
    started = time.monotonic()
    with planned(conn, settings):
        rows = conn.execute(inv.summary_query(p, filled)).fetchall()
    n = len(p.totals)
    # A summary read in groups (``Pass.group_by``) has a row per group, none where x is empty.
    parts = [PassResult(p.name, {name: v if isinstance(v, dict) else int(v)
                                 for (name, _), v in zip(p.totals, row[:n], strict=True)},
                        [int(v) for v in row[n::2]], [Decimal(v) for v in row[n + 1::2]])
             for row in rows] or [PassResult(p.name, {name: {} if name in inv.BREAKDOWNS else 0
                                                      for name, _ in p.totals},
                                             [0] * len(p.rules), [Decimal(0)] * len(p.rules))]
    return dataclasses.replace(_merged(parts), duration_s=round(time.monotonic() - started, 3))


def stream_offenders(conn: psycopg.Connection, p: inv.Pass, filled: dict[str, sql.Composable],
                     result: PassResult, layout: Layout, out: Any, sample_rows_max: int,
                     proven: dict[str, int], run_id: str, unproven: dict[str, set[int]] | None = None
                     ) -> tuple[dict[int, list[dict[str, Any]]], list[st.Carried]]:
    """Copy every offending row of pass ``p`` to ``out``.

    Returns up to ``sample_rows_max`` samples per rule, and the rows that lie
    in proven history (ids up to ``proven``, but those of ``unproven``: rows
    of gaps this audit does not prove), which the state file carries.
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
            if rule.scope and scope is not None and int(scope) <= proven[rule.scope[0]] \
                    and int(scope) not in (unproven or {}).get(rule.scope[0], ()):
                carried.append(st.Carried(p.name, int(index), ident, impact, int(weight), detail, run_id))
    # Two statements, one snapshot: they must agree row for row.
    if streamed != result.counts:
        raise RuntimeError(f"ledger pass {p.name}: the summary counted {result.counts}, "
                           f"the offenders {streamed}")
    return samples, carried


def _sample(bucket: list[dict[str, Any]], limit: int, ident: str | None, impact: str | None,
            detail: str | None) -> None:
    if len(bucket) < limit:  # NULL (None) where a layout's column is NULL
        bucket.append({"id": ident, "cents_impact": whole_cents(Decimal(impact)) if impact is not None else 0,
                       "detail": detail})


# The passes whose proven rows a row of a gap can make offend (``invariants._first_no_more``).
_FIRST_NO_MORE = ("idempotency", "reversals")


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
                layout: Layout, offenders: str = OFFENDERS_NAME) -> list[Finding]:
    found = []
    for i, r in enumerate(p.rules):
        if not result.counts[i]:
            continue
        table = layout.table(r.table)
        found.append(Finding(
            rule=r.rule, severity="error", table=table, count=result.counts[i],
            cents_impact=whole_cents(result.impacts[i]), sample=tuple(samples.get(i, [])),
            message=f"{result.counts[i]:,} row(s) of {table}: {r.rule} ({rule(r.rule).meaning})",
            detail={"check": p.name, "offenders": offenders},
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


def audit(run: Run, conn: psycopg.Connection, url: str, config: Config,
          schedule: Schedule | None = None, *, offenders: str = OFFENDERS_NAME
          ) -> tuple[Layout, inv.Convention]:
    """The stages of a ledger audit (see the module docstring); with a state file, incremental.

    ``offenders``: the name of the offending rows' CSV in the run folder (a
    rehearsal's cents checks write offenders.csv). Returns the layout as
    detected and the sign convention.

    Raises ``UsageError`` for a layout the database lacks or a state file that is not this
    ledger's, ``VerifierError`` for a missing privilege, a timeout or a lost connection.
    """
    schedule = schedule or Schedule()
    with conninfo.reading(url, config.statement_timeout_s), _permission():
        if schedule.state is None:
            return _audit(run, conn, url, config, schedule, offenders)
        with st.locked(schedule.state):
            return _audit(run, conn, url, config, schedule, offenders)


def _audit(run: Run, conn: psycopg.Connection, url: str, config: Config, schedule: Schedule,
           offenders: str) -> tuple[Layout, inv.Convention]:
    layout, detection, convention, currencies, builtin = _layout_stage(run, conn, config.ledger)
    config = dataclasses.replace(config, ledger=layout)
    filled = inv.names(layout, convention, currencies, account_as_text=not builtin)
    scope = (proven.read_state(run, conn, layout, convention, filled, schedule, detection.mutable)
             if schedule.state is not None else proven.UNSCHEDULED)
    passes, not_checked = _plan_passes(scope, layout, convention, currencies, filled, detection)
    passes = split_chain(conn, passes, layout, scope.mode)
    rehash = _plan_rehash(scope, schedule)
    parts, digests, compared, gained = _audit_stage(run, conn, url, config, scope, passes, rehash, detection,
                                                    filled, schedule.state)
    findings, carried, tampered, results = _offenders_stage(run, conn, config, scope, passes, parts, compared,
                                                            rehash, offenders, gained)
    _opening_stage(run, scope, results)
    if not_checked:
        findings.append(_not_checked_finding(not_checked))
    run.add(*findings)
    if scope.previous is not None and tampered and schedule.state is not None:
        # History an earlier release's audits proved has changed: the state is not started anew
        # from the ledger as it is now (the next audit finds the same), until --full says to.
        with run.stage("state saved") as detail:
            detail.update(path=str(schedule.state), saved=False, tampered=len(tampered),
                          why="history that earlier audits proved has changed: the state file is left as "
                              "it was (run --full to start a new proven history from the ledger as it is)")
        run.provenance["ledger_history"] = scope.previous.runs[-proven.TREND_RUNS_MAX:]
    elif scope.state is not None and schedule.state is not None:
        with run.stage("state saved") as detail:
            proved = scope.previous or scope.state  # the state whose proven chunks were re-hashed
            rehashed = sum(history.chunk_count(proved, t, r) for t, r in rehash.items())
            checked = next((r.totals.get("entries", 0) for r in results if r.name == "journals"), 0)
            scope.state.tampered = tampered
            sparse = proven.advance(scope.state, run, digests, scope, carried, rehashed, checked, findings)
            if sparse:
                detail["gaps_not_kept"] = {t: (
                    f"more than {history.HOLES_NEW_MAX:,} gaps among the ids this audit proved (ids drawn "
                    "with an increment or from several sequences): a row added in one later is "
                    "history_tampered") for t in sparse}
            if st.finite(scope.state):
                signals.hold()  # (the outcome is on record from the save on: verifier.signals)
                st.save(schedule.state, scope.state)
            else:  # (saved, every later audit refused the file, even once mended: found by break-it runs)
                detail.update(saved=False, why=(
                    "the entries this audit would prove hold an amount or a balance of NaN or Infinity (a "
                    "numeric column): the state file is left as it was, and they are checked again by "
                    "the next audit"))
            detail.update(path=str(schedule.state), proven=dict(scope.state.proven),
                          carried=len(scope.state.carried),
                          chunks={t: len(c) for t, c in scope.state.chunks.items()}, rehashed_chunks=rehashed,
                          tampered=len(tampered))
        run.provenance["ledger_history"] = scope.state.runs[-proven.TREND_RUNS_MAX:]
    return layout, convention


def _layout_stage(run: Run, conn: psycopg.Connection, configured: Layout
                  ) -> tuple[Layout, Detection, inv.Convention, tuple[str, ...], bool]:
    """The "layout" stage: the ledger's layout detected from the catalog; its sign convention; its
    currencies; whether its account ids are of a type built in (``_builtin_account``)."""
    with run.stage("layout") as detail:
        layout, detection = detect(conn, configured)
        builtin = _builtin_account(conn, layout)
        convention, evidence = detect_convention(conn, layout)
        currencies = _currencies(conn, layout)
        detail.update(layout=detection.name, schema=layout.schema,
                      tables={t: n or None for t, n in layout.tables.items()}, roles=detection.roles,
                      convention=convention.describe(), evidence=evidence, currencies=list(currencies),
                      reconcile=[f"{r.schema}.{r.table}.{r.column}" for r in detection.reconciles],
                      reconcile_skipped=[{"reconcile": f"{r.schema}.{r.table}.{r.column}", "why": why}
                                         for r, why in detection.skipped],
                      non_negative_account_types=list(layout.non_negative_account_types or ()),
                      debit_normal_account_types=list(layout.debit_normal_account_types),
                      history_leaves_out=detection.mutable)
        run.provenance["ledger_convention"] = convention.describe()
        run.provenance["ledger_layout"] = detection.name
    return layout, detection, convention, currencies, builtin


# The account ids of more than one row (by the id's own equality), most rows first: id, rows, and the
# balances of the rows beyond the first (counted twice).
DUPLICATE_IDS_SQL = """
SELECT d.id::text, d.n, d.extra
FROM (SELECT a.{id} AS id, count(*) AS n,
             coalesce(sum(abs(a.{balance}::numeric)), 0)
             - coalesce(min(abs(a.{balance}::numeric)), 0) AS extra
      FROM {accounts} a WHERE a.{id} IS NOT NULL GROUP BY a.{id} HAVING count(*) > 1) d
ORDER BY d.n DESC, 1
"""


def _duplicate_accounts(conn: psycopg.Connection, layout: Layout, out: Any, sample_rows_max: int,
                        offenders: str) -> Finding | None:
    """``account_id_duplicate``: account ids of more than one row, each written to ``out`` (the
    offenders' CSV), where the accounts' id column has no unique index (one scan of the accounts
    then; none where it has one). An exact copy of an account's row made a full audit's trial
    balance count its entries twice, while an incremental one passed (found by a break-it run):
    neither named the id. (The other rules still count such an account's entries once per row.)"""
    name = sql.Identifier(layout.schema, layout.tables["accounts"])
    oid = conn.execute("SELECT %s::regclass::oid", (name.as_string(conn),)).fetchone()
    assert oid is not None
    # (A unique index on the id alone, as the cents engine asks of a live key.)
    if conn.execute(UNIQUE_KEY_SQL, {"oid": oid[0], "names": [layout.column("accounts", "id")]}).fetchone():
        return None
    table = layout.table("accounts")
    ids, extra_rows, extra = 0, 0, Decimal(0)
    sample: list[dict[str, Any]] = []
    with conn.cursor() as cur:
        cur.execute(sql.SQL(DUPLICATE_IDS_SQL).format(
            id=sql.Identifier(layout.column("accounts", "id")),
            balance=sql.Identifier(layout.column("accounts", "balance")), accounts=name))
        for account, n, cents in cur:
            ids, extra_rows, extra = ids + 1, extra_rows + int(n) - 1, extra + Decimal(cents)
            out.writerow(("account_id_duplicate", table, account, cents, f"{int(n)} rows"))
            _sample(sample, sample_rows_max, account, str(cents), f"{int(n)} rows")
    if not ids:
        return None
    return Finding(
        rule="account_id_duplicate", severity="error", table=table, count=ids,
        cents_impact=whole_cents(extra), sample=tuple(sample),
        message=f"{ids:,} account id(s) of {table} are shared by more than one row ({extra_rows:,} row(s) "
                f"beyond one per id): account_id_duplicate ({rule('account_id_duplicate').meaning}). Give "
                f"{layout.column('accounts', 'id')} a unique index once the duplicates are resolved.",
        detail={"check": "accounts", "rows_beyond_one": extra_rows, "offenders": offenders})


def _currencies(conn: psycopg.Connection, layout: Layout) -> tuple[str, ...]:
    """The accounts' currencies (at most ``CURRENCIES_MAX``), for the per-currency figures."""
    currency = sql.Identifier(layout.column("accounts", "currency"))
    query = sql.SQL("SELECT DISTINCT {}::text FROM {} WHERE {} IS NOT NULL ORDER BY 1 LIMIT {}").format(
        currency, sql.Identifier(layout.schema, layout.tables["accounts"]), currency,
        sql.Literal(CURRENCIES_MAX + 1))
    found = tuple(str(c) for (c,) in conn.execute(query).fetchall())
    if len(found) > CURRENCIES_MAX:
        raise VerifierError(f"The ledger's accounts hold more than {CURRENCIES_MAX} currencies in "
                            f"{layout.table('accounts')}.{layout.column('accounts', 'currency')}; this "
                            f"version reads per-currency figures for at most {CURRENCIES_MAX}.",
                            hint="If that is not the accounts' currency column, name the right one in "
                                 '[tool.verifier.ledger.columns] ("accounts.currency"); a ledger of more '
                                 "currencies cannot be audited by this version.")
    return found


def _plan_passes(scope: Scope, layout: Layout, convention: inv.Convention, currencies: tuple[str, ...],
                 filled: dict[str, sql.Composable], detection: Detection
                 ) -> tuple[list[Planned], list[tuple[str, str]]]:
    """The passes this audit runs (every pass in full, or only what lies beyond the watermarks),
    and the rules it cannot check, with why."""
    runnable, not_checked = inv.plan(layout, scope.mode == "incremental")
    if scope.mode == "incremental":
        assert scope.state is not None
        assert scope.placeholders is not None  # built by ``proven.read_state``
        passes = [Planned(p, scope.placeholders, dict(NO_JIT)) for p in runnable]
    elif not layout.has("entries", "currency"):
        # Entries take their account's currency: the trial balance is summed by the chain pass.
        folded = inv.fold_trial(filled, currencies)
        passes = [Planned(inv.TRIAL_FOLDED, filled, dict(NO_JIT), after_chain=True) if p.name == "trial"
                  else Planned(p, folded if p.name == "chain" else filled,
                               {} if p.name in JIT_PASSES else dict(NO_JIT)) for p in runnable]
    else:
        passes = [Planned(p, filled, {} if p.name in JIT_PASSES else dict(NO_JIT)) for p in runnable]
    not_checked += [("reconciliation_mismatch", f"{r.schema}.{r.table}.{r.column}: {why}")
                    for r, why in detection.skipped]
    return passes + [Planned(inv.reconcile_pass(r), inv.names(layout, convention, currencies, r),
                             dict(NO_JIT)) for r in detection.reconciles], not_checked


def split_chain(conn: psycopg.Connection, passes: list[Planned], layout: Layout, mode: str = "full"
                 ) -> list[Planned]:
    """The full chain pass as a sort (``CHAIN_SORTED``), split into ranges of account ids holding about as
    many entries each (``_account_bounds``: ``layout.chain_ranges``, else ``chain_ranges_default`` on a
    large ledger; bounds from a sample of the entries' pages). The first range is open below and holds
    the NULL accounts, the last is open above: every entry falls in exactly one, whatever the sample
    saw. An incremental chain pass (``mode``) reads only the new entries, through the index, and is not
    split."""
    if mode == "incremental":
        return passes
    out = []
    for planned_pass in passes:
        if planned_pass.p.name != "chain":
            out.append(planned_pass)
            continue
        bounds = _account_bounds(conn, layout, planned_pass.filled)
        types = _types(conn, planned_pass.filled)
        filled = _packed(conn, planned_pass.filled) if set(types) <= INTEGER_OIDS else planned_pass.filled
        shown = str if types[0] in INTEGER_OIDS else _quoted
        account = sql.SQL("e.{}").format(planned_pass.filled["entries_account"])
        ranges: list[tuple[str, sql.Composable]] = []
        edges: list[Any] = [None, *bounds, None]
        for low, high in zip(edges, edges[1:], strict=False):
            where = []
            if low is not None:
                where.append(sql.SQL("{} >= {}").format(account, sql.Literal(low)))
            if high is not None:
                where.append(sql.SQL("({} < {} OR {} IS NULL)").format(account, sql.Literal(high), account)
                             if low is None else sql.SQL("{} < {}").format(account, sql.Literal(high)))
            said = ([f">= {shown(low)}"] if low is not None else []) + (
                [f"< {shown(high)}"] if high is not None else [])
            ranges.append(("account " + " and ".join(said) if said else "every account",
                           sql.SQL(" AND ").join(where) if where else sql.SQL("true")))
        split = len(ranges) > 1
        out += [Planned(planned_pass.p, {**filled, "chain_range": where},
                        {**planned_pass.settings, **(CHAIN_SPLIT if split else CHAIN_SORTED)},
                        part=label if split else None)
                for label, where in ranges]
    return out


def _entries_account_kind(conn: psycopg.Connection, layout: Layout) -> tuple[str, bool | None] | None:
    """``SPLITTABLE_SQL`` of the entries' account column: the entries relation's relkind, and whether
    the column's type (under any domains) is built in or an enum; None without such a relation."""
    row = conn.execute(sql.SQL(SPLITTABLE_SQL).format(
        schema=sql.Literal(layout.schema), table=sql.Literal(layout.tables["entries"]),
        column=sql.Literal(layout.column("entries", "account")))).fetchone()
    return None if row is None else (str(row[0]), row[1])


def _builtin_account(conn: psycopg.Connection, layout: Layout) -> bool:
    """Whether the entries' account column is of a type built in or an enum (``SPLITTABLE_SQL``): its
    "=" under the audit's search_path (pg_catalog) then groups as its GROUP BY does (else the audit
    groups accounts by their text: ``inv.names``, ``account_as_text``)."""
    row = _entries_account_kind(conn, layout)
    builtin = row is None or bool(row[1])
    # Ids that cannot be joined at all: an extension's type with no "=" that pg_catalog's operators
    # reach (ltree; citext reaches text's through its implicit cast), or two types without an "="
    # between them (integer and text, uuid and text): say so, not "internal error" (found by break-it
    # runs).
    entries, accounts = (sql.Identifier(layout.schema, layout.tables[t]) for t in ("entries", "accounts"))
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SELECT 1 FROM {} a JOIN {} e ON a.{} = e.{} WHERE false").format(
                accounts, entries, sql.Identifier(layout.column("accounts", "id")),
                sql.Identifier(layout.column("entries", "account"))))
    except psycopg.errors.UndefinedFunction as exc:
        why = ("their types have no \"=\" between them" if builtin else
               "it reads with search_path set to pg_catalog, so that no operator of another schema can "
               "change a verdict, and their type's \"=\" is not there")
        raise VerifierError(
            f"The ledger's account ids ({layout.table('accounts')}.{layout.column('accounts', 'id')}, "
            f"{layout.table('entries')}.{layout.column('entries', 'account')}) cannot be compared by the "
            f"audit: {exc.diag.message_primary}; {why}.",
            hint="Audit views that give both ids as one type, such as text (name them as the ledger's "
                 "tables in [ledger.tables] of verifier.toml).") from None
    return builtin


def _types(conn: psycopg.Connection, filled: dict[str, sql.Composable]) -> tuple[int, int]:
    """The type oids of the entries' account and seq columns, as a result reports them (a domain's
    base type: PostgreSQL's RowDescription message)."""
    with conn.cursor() as cur:
        cur.execute(inv.compose("SELECT e.{entries_account}, e.{entries_seq} FROM {entries} e LIMIT 0",
                                filled))
        assert cur.description is not None
        account, seq = (int(c.type_code) for c in cur.description)
    return account, seq


def _packed(conn: psycopg.Connection, filled: dict[str, sql.Composable]) -> dict[str, sql.Composable]:
    """``filled`` with the chain's window on one sort key (``inv.packed_chain``), for entries whose
    account and seq are integers (``_types`` in ``INTEGER_OIDS``) whose spans in ``conn``'s snapshot
    fit one bigint key; else ``filled`` as it is (ids too far apart, or no account)."""
    row = conn.execute(inv.compose(
        "SELECT min(e.{entries_account})::int8, max(e.{entries_account})::int8, "
        "min(e.{entries_seq})::int8, max(e.{entries_seq})::int8 FROM {entries} e", filled)).fetchone()
    assert row is not None
    account_min, account_max, seq_min, seq_max = row
    if account_min is None:
        return filled
    if seq_min is None:
        seq_min = seq_max = 0
    # Slots 0 .. seq_max - seq_min for the seqs, one more for a NULL seq (last in its account).
    seq_slots = seq_max - seq_min + 2
    if (account_max - account_min + 1) * seq_slots > 2**63 - 1:
        return filled
    return inv.packed_chain(filled, account_min, seq_min, seq_slots)


def _quoted(value: str) -> str:
    """An account id of a range's label, quoted as SQL quotes a literal (an empty id shows as '')."""
    return "'" + value.replace("'", "''") + "'"


def chain_ranges_default(workers: int) -> int:
    """Account ranges of a large ledger's full chain pass when ``chain_ranges`` is not configured:
    one fewer than the workers (at least 2; none with one worker), so that the journals pass, the
    other long pass, starts beside them. Each range reads the whole table (its own sequential scan,
    filtered): on 10^7 entries and two cores, 2 ranges on 3 workers took 11.4-11.8 s against
    12.4-12.6 s for 3."""
    return max(2, workers - 1) if workers > 1 else 1


def _account_bounds(conn: psycopg.Connection, layout: Layout, filled: dict[str, sql.Composable]
                    ) -> list[str]:
    """Increasing account ids (as text) that cut the entries into ranges of about as many entries
    each, from ``CHAIN_QUANTILES`` quantiles of a sample of the entries' pages: up to
    ``layout.chain_ranges`` ranges where configured, else up to ``chain_ranges_default`` on a ledger large
    enough to pay (``CHAIN_RANGE_ROWS_MIN`` sampled entries per range). None for an entries
    relation that is not a table (a view cannot be sampled). An account that holds many entries (a
    platform's fee account) repeats among the quantiles; the range it starts is given its weight."""
    ranges_max = layout.chain_ranges or chain_ranges_default(layout.workers)
    if ranges_max < 2:
        return []
    kind = _entries_account_kind(conn, layout)
    if kind is None or kind[0] not in ("r", "p", "m") or not kind[1]:
        return []
    # Sorted as the range predicates compare: by the column's type's default ordering and its
    # collation, which for the types of SPLITTABLE_SQL are the operators found in pg_catalog (the
    # session's search_path). A constant seed: the same ranges each run.
    # A small ledger's sample of 1% may be empty; configured ranges then sample every page.
    # An account type without an ordering (json) cannot be cut: one range, the transaction kept
    # (a savepoint).
    for percent in (CHAIN_SAMPLE_PERCENT, 100):
        try:
            with conn.transaction():
                row = conn.execute(inv.compose(
                    "SELECT count(*), (percentile_disc({fractions}::float8[]) WITHIN GROUP "
                    "(ORDER BY e.{entries_account}))::text[] "
                    "FROM {entries} e TABLESAMPLE SYSTEM ({percent}) REPEATABLE (0) "
                    "WHERE e.{entries_account} IS NOT NULL",
                    {**filled, "percent": sql.Literal(percent),
                     "fractions": sql.Literal([i / CHAIN_QUANTILES for i in range(CHAIN_QUANTILES)])}
                )).fetchone()
        except psycopg.errors.UndefinedFunction:
            return []
        assert row is not None
        sampled, quantiles = int(row[0]), list(row[1] or [])
        if layout.chain_ranges is None or sampled >= CHAIN_QUANTILES:
            break
    ranges = (ranges_max if layout.chain_ranges is not None
              else min(ranges_max, sampled // CHAIN_RANGE_ROWS_MIN))
    if ranges < 2 or not sampled:
        return []
    return balanced(quantiles, ranges)


def balanced(quantiles: list[str], ranges: int) -> list[str]:
    """Cuts (values among ``quantiles``, increasing) that split the sampled values into up to
    ``ranges`` ranges ``[cut_i, cut_i+1)`` of about equal weight.

    ``quantiles``: the values at fractions 0, 1/q, 2/q, ... of the sample, in order; each stands
    for 1/q of it, and a value that repeats stands for as many shares (one range, however heavy:
    one account's entries are never split)."""
    weight: dict[str, int] = {}
    for value in quantiles:
        weight[value] = weight.get(value, 0) + 1
    share = len(quantiles) / ranges
    cuts: list[str] = []
    held = 0
    for value, n in weight.items():
        if held >= share and len(cuts) < ranges - 1:
            cuts.append(value)
            held = 0
        held += n
    return cuts



def _opening_stage(run: Run, scope: Scope, results: list[PassResult]) -> None:
    """The opening balances, stated per currency, and the trial balance arithmetic that includes them."""
    totals = {r.name: r.totals for r in results}
    chain, accounts = totals.get("chain", {}), totals.get("accounts", {})
    first = chain.get("opening_by_currency", {})  # of the currencies with entries, where read per currency
    idle = accounts.get("opening_without_entries_by_currency", {})
    balances = accounts.get("balances_by_currency", {})
    by_currency: dict[str, dict[str, Any]] = {}
    for currency in sorted({*first, *idle, *balances}):
        by_currency[currency] = {"opening_cents": str(Decimal(first.get(currency, "0"))
                                                      + Decimal(idle.get(currency, "0")))}
        if currency in balances:
            by_currency[currency]["balances_cents"] = balances[currency]
    with run.stage("opening balances") as detail:
        detail.update(
            scope="every account" if scope.mode == "full" else "accounts whose first entry is new since the "
                                                               "last audit, and accounts without entries",
            accounts_with_opening_balance=chain.get("accounts_with_opening_balance", 0)
            + accounts.get("accounts_without_entries_holding_money", 0),
            by_currency=by_currency)


def _not_checked_finding(not_checked: list[tuple[str, str]]) -> Finding:
    rules = sorted({r for r, _ in not_checked})
    return Finding(
        rule="ledger_rule_not_checked", severity="warning", table=None, count=len(rules), cents_impact=0,
        sample=tuple({"id": r, "cents_impact": 0, "detail": why} for r, why in not_checked),
        message=f"{len(rules)} ledger rule(s) not checked: "
                + "; ".join(f"{r} ({why})" for r, why in not_checked)
                + f" ({rule('ledger_rule_not_checked').meaning})",
        detail={"check": "layout", "rules": rules})


def _plan_rehash(scope: Scope, schedule: Schedule) -> dict[str, list[tuple[int, int]]]:
    """Per history table, the chunks of proven history this audit re-hashes (none without a state):
    a share of the state's, or all of an earlier release's state (``Scope.previous``)."""
    if scope.state is None:
        return {}
    if scope.previous is not None:
        return {table: history.plan_rehash(scope.previous, table, 1) for table in st.HISTORY_TABLES}
    return {table: (history.plan_rehash(scope.state, table, schedule.history_share)
                    if scope.mode == "incremental" else [])
            for table in st.HISTORY_TABLES}


def _audit_stage(run: Run, conn: psycopg.Connection, url: str, config: Config, scope: Scope,
                 passes: list[Planned], rehash: dict[str, list[tuple[int, int]]], detection: Detection,
                 filled: dict[str, sql.Composable], state_path: Path | None
                 ) -> tuple[list[PassResult], list[history.Digests], list[history.Digests],
                            list[st.Tampered]]:
    """The "audit" stage: every pass's summary and the history digests, in parallel, in one snapshot.
    Returns the passes' results, the digests of the state this audit saves, those of the state whose
    proven chunks it re-hashed (``rehash``: the same, but for ``Scope.previous``'s), and the journals
    ``Scope.previous`` proved complete that gained entries (``history.gained``)."""
    jobs: list[Callable[[psycopg.Connection], Any]] = [
        functools.partial(_summary, p=x.p, filled=x.filled, settings=x.settings)
        for x in passes if not x.after_chain]
    on_workers = len(jobs)
    # Handed out first, the longest: the chain's ranges, the history digests (a full audit's digest
    # of every entry takes about as long as a chain range), the journals pass. The last to end is
    # then a short job, not a long one started last.
    names = [x.p.name for x in passes if not x.after_chain]
    first = [i for i, name in enumerate(names) if name == "chain"]
    if scope.state is not None:
        for table in st.HISTORY_TABLES:
            old = scope.state.proven[table] if scope.mode == "incremental" else proven.FULL_FROM
            first.append(len(jobs))
            jobs.append(functools.partial(history.digest, layout=config.ledger, table=table,
                                          leave_out=detection.mutable[table], filled=filled,
                                          seed=scope.state.seed, kind=scope.state.identity["row_hash"][table],
                                          chunks=[] if scope.previous else rehash[table], old=old,
                                          new=scope.settled[table], timezone=scope.state.digest_timezone,
                                          late=scope.proving(table), held=sorted(scope.held[table]),
                                          live=scope.live if table == "entries" else ()))
        if scope.previous is not None:
            # Its proven history as it proved it (its seed, row hashing and time zone); nothing beyond.
            was = scope.previous
            first += range(len(jobs), len(jobs) + len(st.HISTORY_TABLES))
            jobs += [functools.partial(history.digest, layout=config.ledger, table=table,
                                       leave_out=detection.mutable[table], filled=filled, seed=was.seed,
                                       kind=was.identity["row_hash"][table], chunks=rehash[table],
                                       old=was.proven[table], new=was.proven[table],
                                       timezone=was.digest_timezone, held=scope.late[table])
                     for table in st.HISTORY_TABLES]
            # Its proven entries' sums per currency, under the accounts' currencies now: it kept them
            # (``State.trial``), though not each account's currency.
            jobs.append(functools.partial(history.trial, filled=filled, old=proven.FULL_FROM,
                                          new=was.proven["entries"],
                                          left_out=[*scope.late["entries"], *was.live]))
            # And the journals it proved complete that have gained entries since.
            jobs.append(functools.partial(history.gained, filled=filled, entries=was.proven["entries"],
                                          journals=was.proven["journals"], late=scope.late["journals"]))
        # Each account's last entry among those this audit proves (all of them, in full), for the
        # next audit's chains and accounts.
        if scope.mode == "incremental":
            jobs.append(functools.partial(proven.newly_proven_last, filled=filled,
                                          old=scope.state.proven["entries"], new=scope.settled["entries"],
                                          late=scope.proving("entries")))
        else:  # (every account's: written to a file beside the state as they are read, not held in memory)
            assert state_path is not None
            try:
                spill: Path | None = st.spill_file(state_path)
            except UsageError:  # (held in memory: the findings are reported, the save fails as before)
                spill = None
            jobs.append(functools.partial(proven.newly_proven_last, filled=filled, old=proven.FULL_FROM,
                                          new=scope.settled["entries"], late=scope.proving("entries"))
                        if spill is None else
                        functools.partial(proven.all_last, filled=filled, new=scope.settled["entries"],
                                          late=scope.proving("entries"), spill=spill, path=state_path))
    first += [i for i, name in enumerate(names) if name == "journals"]
    snapshot_id = export_snapshot(conn)
    run.provenance["exported_snapshot"] = snapshot_id
    with run.stage("audit") as detail:
        done = in_parallel(jobs, url, config, snapshot_id, config.ledger.workers,
                           lambda n, total: run.advanced("audit", n, total, "passes"), first)
        results = _after_chain(conn, passes, done[:on_workers])
        tables = len(st.HISTORY_TABLES)
        digests: list[history.Digests] = done[on_workers:on_workers + tables]
        compared, gained = digests, []
        if scope.previous is not None:  # its digests, the entries' with their trial by currency now
            entries, journals = done[on_workers + tables:on_workers + 2 * tables]
            compared = [dataclasses.replace(entries, trial=done[on_workers + 2 * tables]), journals]
            gained = done[on_workers + 2 * tables + 1]
        if scope.state is not None:
            last = done[-1]
            kept = scope.state.last  # not None in an incremental audit (``proven.read_state``)
            if scope.mode == "incremental" and kept is not None:
                scope.state.last, scope.state.last_changed = proven.merged_last(kept, last), set(last)
            else:
                assert state_path is not None
                scope.state.last = last if isinstance(last, dict) else st.spilled(last, state_path)
        detail.update(workers=min(config.ledger.workers, len(jobs)), mode=scope.mode,
                      passes=[{"pass": r.name, **({"accounts": x.part} if x.part else {}),
                               "rules": [rule.rule for rule in x.p.rules],
                               "duration_s": r.duration_s, **r.totals, "offending": sum(r.counts)}
                              for x, r in zip(passes, results, strict=True)])
    return results, digests, compared, gained


def _after_chain(conn: psycopg.Connection, passes: list[Planned], done: list[PassResult]
                 ) -> list[PassResult]:
    """Every pass's result, in ``passes``' order: ``done`` (the workers', in order) with those of the
    passes run after the chain (``after_chain``) from its figures, on ``conn``. Each such pass in
    ``passes`` is given the filled placeholders it ran with (the offenders stage reads them); the
    chain's trial figures are taken out of its results."""
    chain = [r for x, r in zip((x for x in passes if not x.after_chain), done, strict=True)
             if x.p.name == "chain"]
    figures = dict(_merged(chain).totals) if chain else {}
    for r in chain:
        for name in inv.TRIAL_FIGURES:
            r.totals.pop(name, None)
    results = iter(done)
    out = []
    for i, x in enumerate(passes):
        if x.after_chain:
            passes[i] = dataclasses.replace(x, filled=inv.trial_from_chain(x.filled, figures))
            out.append(_summary(conn, p=x.p, filled=passes[i].filled, settings=x.settings))
        else:
            out.append(next(results))
    return out


def _merged(parts: list[PassResult]) -> PassResult:
    """One pass's result from those of its account ranges: counts, impacts and totals added up
    (a breakdown by currency per currency, exactly), durations too (the ranges ran at once)."""
    if len(parts) == 1:
        return parts[0]
    totals: dict[str, Any] = {}
    for part in parts:
        for name, value in part.totals.items():
            if isinstance(value, dict):
                into = totals.setdefault(name, {})
                for key, figure in value.items():
                    into[key] = str(Decimal(into.get(key, "0")) + Decimal(figure))
            else:
                totals[name] = totals.get(name, 0) + value
    groups: dict[tuple[str, str], list[Any]] = {}
    for part in parts:
        for key, (n, cents) in part.groups.items():
            tally = groups.setdefault(key, [0, Decimal(0)])
            tally[0] += n
            tally[1] += cents
    return PassResult(parts[0].name, totals, [sum(c) for c in zip(*(p.counts for p in parts), strict=True)],
                      [sum(i, Decimal(0)) for i in zip(*(p.impacts for p in parts), strict=True)],
                      round(sum(p.duration_s for p in parts), 3), groups)


def _offenders_stage(run: Run, conn: psycopg.Connection, config: Config, scope: Scope, passes: list[Planned],
                     parts: list[PassResult], digests: list[history.Digests],
                     rehash: dict[str, list[tuple[int, int]]], offenders: str, gained: list[st.Tampered]
                     ) -> tuple[list[Finding], list[st.Carried], list[st.Tampered], list[PassResult]]:
    """The "offenders" stage: offending rows to offenders.csv; the findings, carried rows and tampering,
    and each pass's result (its account ranges' merged)."""
    layout = config.ledger
    findings: list[Finding] = []
    carried = scope.carried
    # (a row of proven history is one of these passes': as planned, with their rules for this layout)
    rules = {**{p.name: len(p.rules) for p in inv.FULL}, **{x.p.name: len(x.p.rules) for x in passes}}
    beyond = next((c for c in carried if c.rule_index >= rules.get(c.pass_name, 0)), None)
    if beyond is not None and scope.state is not None:  # (a hand-edited file: found by break-it runs)
        raise st.damaged(scope.state.loaded_path or Path("--state"), ValueError(
            f"an offending row of rule {beyond.rule_index} of a pass {beyond.pass_name!r} of "
            f"{rules.get(beyond.pass_name, 'no')} rules"))
    new_carried: list[st.Carried] = []
    tampered: list[st.Tampered] = []
    with run.stage("offenders") as detail, offenders_csv(run.run_dir, offenders) as out:
        out.writerow(OFFENDERS_HEADER)
        results: list[PassResult] = []
        by_pass: dict[str, list[tuple[Planned, PassResult]]] = {}
        for planned_pass, part in zip(passes, parts, strict=True):
            by_pass.setdefault(planned_pass.p.name, []).append((planned_pass, part))
        for group in by_pass.values():
            p = group[0][0].p
            samples: dict[int, list[dict[str, Any]]] = {}
            for planned_pass, part in group:
                if any(part.counts):
                    with planned(conn, planned_pass.settings):
                        found_samples, found = stream_offenders(
                            conn, p, planned_pass.filled, part, layout, out, config.sample_rows_max,
                            scope.settled, run.run_id, scope.held)
                    new_carried += found
                    for index, rows in found_samples.items():
                        bucket = samples.setdefault(index, [])
                        bucket += rows[:config.sample_rows_max - len(bucket)]
            result = _merged([part for _, part in group])
            results.append(result)
            # A proven journal found again (one a journal of a gap now precedes,
            # ``invariants._first_no_more``, while that one is read as new) is counted and kept once.
            # (Only there: a journals pass row of an orphan journal stands for several entries.)
            again = {(c.pass_name, c.rule_index, c.id) for c in new_carried if c.pass_name in _FIRST_NO_MORE}
            carried = [c for c in carried if (c.pass_name, c.rule_index, c.id) not in again
                       and not _read_whole(scope, c)]
            add_carried(p, result, [c for c in carried if c.pass_name == p.name], layout, out, samples,
                        config.sample_rows_max)
            findings += findings_of(p, result, samples, layout, offenders)
        if scope.state is not None:
            proved = scope.previous or scope.state  # the state whose proven chunks were re-hashed
            for table, found_digests in zip(st.HISTORY_TABLES, digests, strict=True):
                tampered += [dataclasses.replace(t, found_by=run.run_id) for t in history.compare(
                    proved, table, rehash[table], found_digests.rehashed)]
            if scope.previous is not None:
                tampered += [dataclasses.replace(t, found_by=run.run_id)
                             for t in [*history.moved(scope.previous.trial, digests[0].trial), *gained]]
            # Found by an earlier audit in a chunk this one did not re-hash: still so, as far as
            # anyone knows (a re-hash that finds the chunk as proven again ends it; --full starts anew).
            tampered += [t for t in scope.state.tampered if scope.mode == "incremental"
                         and not any(a <= t.chunk <= b for a, b in rehash[t.table])]
            # An account's last proven entry changed, where no re-hash read its chunk (nor an earlier
            # audit's finding names it): found as the last entries are sent (``proven.shipped``).
            known = {(t.table, t.chunk) for t in tampered}  # (a chunk's range names its rows)
            tampered += [dataclasses.replace(t, found_by=run.run_id) for t in scope.changed_last
                         if (t.table, t.chunk) not in known
                         and not any(a <= t.chunk <= b for a, b in rehash[t.table])]
        # The entries of gaps below their account's last proven entry: found again by every audit while
        # they are there, so not carried in the state.
        below = [dataclasses.replace(t, found_by=run.run_id) for t in scope.below]
        for t in [*tampered, *below]:
            out.writerow(("history_tampered", layout.table(t.table), t.id, t.cents_impact,
                          _told(t, run.run_id)))
        findings += _tampered_findings([*tampered, *below], layout, config.sample_rows_max, offenders,
                                       run.run_id)
        duplicate = _duplicate_accounts(conn, layout, out, config.sample_rows_max, offenders)
        if duplicate is not None:
            findings.append(duplicate)
        detail["rows"] = (sum(sum(r.counts) for r in results) + len(tampered) + len(below)
                          + (duplicate.count if duplicate else 0))
        detail["drift_by_account_type"] = _drift_by_type(results)
    return findings, carried + new_carried, tampered, results


def _read_whole(scope: Scope, c: st.Carried) -> bool:
    """Whether this audit read again every entry of the journal of ``c``, a journals pass row carried
    from proven history, and found it anew as it stands (or not): an incremental audit's journals
    pass (``invariants.INC_JOURNALS``) reads every entry of a journal beyond the journals proven, and
    of one found in a gap. Such a row is an orphan journal's (its entries proven, and no journal of
    its id): counted beside its carried row, its entries were counted twice on every audit after
    (found by a break-it run)."""
    if c.pass_name != "journals" or scope.mode != "incremental" or scope.state is None or c.id is None:
        return False
    try:
        journal = int(c.id)
    except ValueError:
        return False
    return journal > scope.state.proven["journals"] or journal in scope.late["journals"]


def _drift_by_type(results: list[PassResult]) -> dict[str, dict[str, Any]]:
    """account_balance_drift per account type, over every pass that checks it (for the report's chart)."""
    by_type: dict[str, list[Any]] = {}
    for r in results:
        for (name, group), (n, cents) in r.groups.items():
            if name == "account_balance_drift":
                tally = by_type.setdefault(group, [0, Decimal(0)])
                tally[0] += n
                tally[1] += cents
    return {t: {"accounts": n, "drift_cents": str(whole_cents(Decimal(cents)))}
            for t, (n, cents) in sorted(by_type.items())}


def _told(t: st.Tampered, run_id: str) -> str:
    """A tampering's detail, and which earlier audit found it (when not this one)."""
    return t.detail if t.found_by == run_id else f"{t.detail} (found by audit {t.found_by})"


def _tampered_findings(tampered: list[st.Tampered], layout: Layout,
                       sample_rows_max: int, offenders: str, run_id: str) -> list[Finding]:
    found = []
    for table in st.HISTORY_TABLES:
        mine = [t for t in tampered if t.table == table]
        if mine:
            found.append(Finding(
                rule="history_tampered", severity="error", table=layout.table(table), count=len(mine),
                cents_impact=sum(t.cents_impact for t in mine),
                sample=tuple({"id": t.id, "cents_impact": t.cents_impact, "detail": _told(t, run_id)}
                             for t in mine[:sample_rows_max]),
                message=f"{len(mine):,} change(s) to {layout.table(table)} rows an earlier audit had proven: "
                        f"history_tampered ({rule('history_tampered').meaning})",
                detail={"check": history.HISTORY_CHECK, "offenders": offenders}))
    return found
