"""The traced migration runner.

``Runner(dsn)`` applies migration files to one database the way psql would
(statements outside an explicit BEGIN ... COMMIT each run on their own),
and traces every statement: its duration and the relation locks its
backend holds before the transaction ends, read from ``pg_locks`` by a
second (observer) connection so that the tracing itself takes no locks in
the migration's transaction. Statements that cannot run in a transaction
block (CREATE INDEX CONCURRENTLY, VACUUM, a CALL that commits) are never
wrapped in one; for those, the observer samples the locks while they run.

A failure stops the file: the open transaction is rolled back and the
result carries file, statement number, line, excerpt, SQLSTATE, message,
detail, hint and context. ``timeout_s`` cancels a file still running after
that many seconds, and terminates its backend ``CANCEL_GRACE_S`` later if
the cancel was caught; the failure then carries a stall report: what the
backend was doing when the limit fired, read by the observer just before
the cancel. Writes only to the database it was given.

Two failures are not the migration's: a lost connection (the server went
away, or someone ended our backend) and, with ``lock_timeout_s``, a wait
for a lock that another session holds. Both raise ``VerifierError`` (the
run could not verify, exit 2) instead of returning a failure.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from verifier.config.migrations import DEFAULT_TRACKER, Tracker
from verifier.errors import DatabaseUnreachable, UsageError, VerifierError
from verifier.migrate.plan import MigrationFile, recorded
from verifier.migrate.sqltext import SqlSyntaxError, Statement, split_statements
from verifier.pg import conninfo
from verifier.pg.snapshot import configure, timeout_ms

# A tracker's columns: name, type, and whether an INSERT must give it a value.
TRACKER_COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod),
       a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
INTEGER_TYPES = ("integer", "bigint", "smallint")
TIME_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")
LOCK_SAMPLE_INTERVAL_S = 0.05
# After the time limit's cancel, how long a statement may take to stop before its backend is
# terminated (pg_terminate_backend): a PL/pgSQL block with EXCEPTION WHEN query_canceled swallows a
# cancel and would run for ever.
CANCEL_GRACE_S = 10.0
EXCERPT_CHARS_MAX = 200

# Relation locks of one backend, tables and materialized views only (index
# and catalog locks follow from them and would drown the report).
LOCKS_SQL = """
SELECT coalesce(n.nspname || '.' || c.relname, 'oid ' || l.relation::text), l.mode
FROM pg_locks l
LEFT JOIN pg_class c ON c.oid = l.relation
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = %s AND l.locktype = 'relation' AND l.granted
  AND (c.oid IS NULL OR (c.relkind IN ('r', 'p', 'm')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')))
ORDER BY 1, 2
"""
# The stall report: the migration backend's activity when its time limit fires.
STALL_SQL = """
SELECT state, wait_event_type, wait_event,
       round(extract(epoch FROM now() - query_start)::numeric, 3)::text,
       round(extract(epoch FROM now() - xact_start)::numeric, 3)::text, left(query, 300)
FROM pg_stat_activity WHERE pid = %s
"""
# Progress that the server reports for some statements (PostgreSQL documentation, "Progress Reporting").
PROGRESS_SQL = {
    "pg_stat_progress_copy": "SELECT command, tuples_processed, NULL::bigint FROM pg_stat_progress_copy "
                             "WHERE pid = %s",
    "pg_stat_progress_create_index": "SELECT phase, tuples_done, tuples_total FROM "
                                     "pg_stat_progress_create_index WHERE pid = %s",
}

# How long the backend's current transaction has run: a lock seen by a
# sample has been held at most that long (a CALL commits per batch).
XACT_AGE_SQL = """
SELECT extract(epoch FROM clock_timestamp() - xact_start)::float8
FROM pg_stat_activity WHERE pid = %s
"""


# pg_locks' mode names as the SQL LOCK command spells them.
LOCK_MODE_NAMES = {
    "AccessShareLock": "ACCESS SHARE", "RowShareLock": "ROW SHARE",
    "RowExclusiveLock": "ROW EXCLUSIVE", "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE",
    "ShareLock": "SHARE", "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE",
    "ExclusiveLock": "EXCLUSIVE", "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}


@dataclass(frozen=True)
class StatementTrace:
    number: int
    line: int
    excerpt: str
    duration_s: float
    locks: tuple[tuple[str, str], ...]  # (relation, mode) held when it ended

    def as_json(self) -> dict[str, Any]:
        return {"number": self.number, "line": self.line, "excerpt": self.excerpt,
                "duration_s": round(self.duration_s, 6),
                "locks": [{"relation": r, "mode": m} for r, m in self.locks]}


@dataclass(frozen=True)
class LockHeld:
    """A lock the migration held: from the statement that took it to its transaction's end.

    ``sampled`` locks were seen while a statement that commits inside (a
    CALL) ran; their ``held_s`` is the longest transaction seen holding them.
    """

    relation: str
    mode: str
    held_s: float
    from_line: int
    sampled: bool = False

    def describe(self) -> str:
        mode = LOCK_MODE_NAMES.get(self.mode, self.mode)
        text = f"{mode} on {self.relation} for {self.held_s:.3f} s (from line {self.from_line})"
        return text + (", longest transaction seen holding it" if self.sampled else "")


@dataclass(frozen=True)
class MigrationFailure:
    file: str
    statement_number: int | None
    line: int
    excerpt: str
    sqlstate: str | None
    message: str
    detail: str | None = None
    hint: str | None = None
    context: str | None = None
    stall: dict[str, Any] | None = None  # a cancelled migration's stall report (Stall.as_json)

    def describe(self) -> str:
        where = f"{self.file} line {self.line}"
        if self.statement_number is not None:
            where += f" (statement {self.statement_number})"
        code = f" [{self.sqlstate}]" if self.sqlstate else ""
        text = f"{where}{code}: {self.message}"
        if self.detail:
            text += f" DETAIL: {self.detail}"
        if self.hint:
            text += f" HINT: {self.hint}"
        return text


@dataclass(frozen=True)
class MigrationResult:
    file: MigrationFile
    direction: str  # up | down
    duration_s: float
    statements: tuple[StatementTrace, ...]
    locks: tuple[LockHeld, ...]
    failure: MigrationFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file.path.name, "version": self.file.version, "direction": self.direction,
            "checksum": self.file.checksum, "duration_s": round(self.duration_s, 6), "ok": self.ok,
            "failure": None if self.failure is None else self.failure.__dict__,
            "statements": [s.as_json() for s in self.statements],
            "locks": [{"relation": lk.relation, "mode": lk.mode, "held_s": round(lk.held_s, 6),
                       "from_line": lk.from_line, "sampled": lk.sampled, "text": lk.describe()}
                      for lk in self.locks],
        }


@dataclass
class _Transaction:
    """Locks first seen in the open transaction: (relation, mode) -> (time, line)."""

    first_seen: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)

    def observe(self, locks: Sequence[tuple[str, str]], at: float, line: int) -> None:
        for lock in locks:
            self.first_seen.setdefault(lock, (at, line))

    def close(self, at: float) -> list[LockHeld]:
        held = [LockHeld(rel, mode, max(0.0, at - t0), line)
                for (rel, mode), (t0, line) in self.first_seen.items()]
        self.first_seen.clear()
        return held


class Runner:
    """Apply migration files to the database at ``dsn``, with tracing.

    Use as a context manager (it holds two connections). The observer
    connects to ``observer_dsn`` (default ``dsn``): in a rehearsal, the
    scratch server's own role, which sees every session and lock of the
    database, while the migrations run as its sandbox role. Its session
    resolves names in pg_catalog only (a function the migrations put in
    public is never ours). Raises ``DatabaseUnreachable`` when the database
    cannot be reached.
    """

    def __init__(self, dsn: str, *, timeout_s: float | None = None,
                 lock_timeout_s: float | None = None, tracker: Tracker = DEFAULT_TRACKER,
                 observer_dsn: str | None = None,
                 on_statement: Callable[[MigrationFile, StatementTrace], None] | None = None) -> None:
        assert timeout_s is None or timeout_s > 0
        self.on_statement = on_statement
        assert lock_timeout_s is None or lock_timeout_s > 0
        self.dsn = dsn
        self.tracker = tracker
        self.timeout_s = timeout_s
        self.lock_timeout_s = lock_timeout_s
        self.conn = conninfo.connect(dsn, autocommit=True, what="migration database")
        try:
            self.observer = conninfo.connect(observer_dsn or dsn, autocommit=True, what="migration database")
            configure(self.observer, {"role": "none", "search_path": "pg_catalog, pg_temp"})
            # A snapshot may set the database read-only for new sessions (its owner may ALTER
            # DATABASE ... SET): the migrations and the tracker write. A file's own SET still wins.
            configure(self.conn, {"default_transaction_read_only": "off"})
            if lock_timeout_s is not None:  # a file's own SET lock_timeout still wins
                configure(self.conn, {"lock_timeout": timeout_ms(lock_timeout_s)})
        except BaseException:
            self.conn.close()
            raise
        self.pid = self.conn.info.backend_pid
        self._timed_out = threading.Event()
        self._stall: dict[str, Any] | None = None
        self._guard = threading.Lock()  # the limit's timers against the end of a file
        self._done = self._terminated = False
        self._terminator: threading.Timer | None = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for c in (self.conn, self.observer):
            if not c.closed:
                c.close()

    # -- the tracker (schema_migrations by default) --------------------------

    def _tracker_table(self) -> sql.Identifier:
        return sql.Identifier(self.tracker.schema, self.tracker.table)

    def ensure_table(self) -> None:
        """Create the default tracker when absent; check that a configured one can be read and written.

        Raises ``UsageError`` when a configured tracker's table or column does not exist, or the
        table has a column that needs a value we cannot give (NOT NULL, no default, not a time).
        """
        t = self.tracker
        if not t.configured:
            self.conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (version TEXT PRIMARY KEY, "
                                      "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())").format(
                self._tracker_table()))
        columns = {str(name): (str(kind), bool(needs)) for name, kind, needs in self.conn.execute(
            TRACKER_COLUMNS_SQL, (t.schema, t.table)).fetchall()}
        fix = ("Set [tool.verifier.migration_tracker] table and column to the table and column that "
               "record your applied migrations (see the README, Migrations and the runner).")
        if not columns:
            raise UsageError(f"The migration tracker {t.schema}.{t.table} does not exist in the database, "
                             "so which migrations it already has cannot be told.", hint=fix)
        if t.column not in columns:
            raise UsageError(f"The migration tracker {t.schema}.{t.table} has no column {t.column}.",
                             hint=fix)
        unfilled = [n for n, (kind, needs) in columns.items()
                    if needs and n != t.column and kind not in TIME_TYPES]
        if unfilled:
            raise UsageError(
                f"The migration tracker {t.schema}.{t.table} has NOT NULL column(s) without a default "
                f"({', '.join(unfilled)}): the runner records a migration by {t.column} alone.",
                hint="Give them defaults in the snapshot's schema, or track by another table.")

    def applied(self) -> set[str]:
        """The values the tracker's column records, as text in ``plan.recorded``'s forms (the default
        tracker is created when absent)."""
        self.ensure_table()
        rows = self.conn.execute(sql.SQL("SELECT {}::text FROM {} WHERE {} IS NOT NULL").format(
            sql.Identifier(self.tracker.column), self._tracker_table(), sql.Identifier(self.tracker.column)
        )).fetchall()
        return recorded(str(r[0]) for r in rows)

    def check_recordable(self, files: Sequence[MigrationFile]) -> None:
        """Raise ``UsageError`` before anything runs when the tracker's column cannot record one of
        ``files``: a type that holds neither text nor integers, a file without a number (or one too
        large) for an integer column, a name longer than a varchar column holds."""
        t = self.tracker
        self.ensure_table()
        columns = {str(n): str(k) for n, k, _ in self.conn.execute(
            TRACKER_COLUMNS_SQL, (t.schema, t.table)).fetchall()}
        kind = columns[t.column]
        where = f"{t.describe()}, of type {kind}"
        if kind in INTEGER_TYPES:
            limit = {"smallint": 2**15 - 1, "integer": 2**31 - 1, "bigint": 2**63 - 1}[kind]
            for f in files:
                if f.number is None or f.number > limit:
                    why = "it has no number." if f.number is None else "its number is too large."
                    raise UsageError(f"{f.path.name} cannot be recorded in {where}: {why}",
                                     hint="Number the files within the column's range, or track them by "
                                          "file name ([migration_tracker] records).")
            return
        match = re.fullmatch(r"(?:character varying|character|text)(?:\((\d+)\))?", kind)
        if match is None:
            raise UsageError(f"The migration tracker {where} holds neither text nor integers: the runner "
                             "cannot record what it applies.", hint="Track migrations in a text or integer "
                                                                     "column ([migration_tracker] column).")
        width = int(match.group(1)) if match.group(1) else None
        for f in files:
            if width is not None and len(f.record_value(t.records)) > width:
                raise UsageError(f"{f.path.name} cannot be recorded in {where}: "
                                 f"{f.record_value(t.records)!r} is longer than {width} characters.",
                                 hint="Widen the column, or record versions rather than file names.")

    def record(self, f: MigrationFile) -> None:
        """Mark ``f`` applied: its number where a version column is an integer, else
        ``f.record_value``; NOT NULL time columns without a default get now() (node-pg-migrate's
        ``run_on``). Raises ``UsageError`` for a file without a number and an integer column."""
        self.ensure_table()
        t = self.tracker
        columns = {str(name): (str(kind), bool(needs)) for name, kind, needs in self.conn.execute(
            TRACKER_COLUMNS_SQL, (t.schema, t.table)).fetchall()}
        value: str | int = f.record_value(t.records)
        if columns[t.column][0] in INTEGER_TYPES:
            if f.number is None:
                raise UsageError(f"{f.path.name} has no number to record in {t.describe()}, an integer "
                                 "column.", hint="Number the file, or track migrations by file name.")
            value = f.number
        times = [n for n, (kind, needs) in columns.items() if needs and n != t.column and kind in TIME_TYPES]
        names = [t.column, *times]
        # Values as literals, no parameters: a configured name holding "%" reaches the server as written.
        self.conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {}{} WHERE NOT EXISTS (SELECT FROM {} WHERE {}::text = {})"
                    ).format(self._tracker_table(), sql.SQL(", ").join(map(sql.Identifier, names)),
                             sql.Literal(value), sql.SQL("").join(sql.SQL(", now()") for _ in times),
                             self._tracker_table(), sql.Identifier(t.column), sql.Literal(str(value))))

    def unrecord(self, f: MigrationFile) -> None:
        """Forget ``f`` in the tracker (every way it may have been recorded)."""
        self.ensure_table()
        values = [f.version, f.path.stem, f.path.name, *([str(f.number)] if f.number is not None else [])]
        self.conn.execute(sql.SQL("DELETE FROM {} WHERE {}::text IN ({})").format(
            self._tracker_table(), sql.Identifier(self.tracker.column),
            sql.SQL(", ").join(map(sql.Literal, values))))

    # -- applying -----------------------------------------------------------

    def apply(self, f: MigrationFile, *, direction: str = "up", record: bool = True) -> MigrationResult:
        """Run the up (or down) SQL of ``f``; record it in the tracker on success."""
        assert direction in ("up", "down")
        if direction == "up":
            text, first_line = f.text.up, 1
        else:
            assert f.text.down is not None, "no down block"
            text, first_line = f.text.down, f.text.down_first_line
        started = time.monotonic()
        try:
            statements = split_statements(text, first_line=first_line)
        except SqlSyntaxError as exc:
            syntax = MigrationFailure(f.path.name, None, exc.line, _line_of(text, exc.line - first_line),
                                      "42601", f"{exc.message} at column {exc.column}")
            return MigrationResult(f, direction, 0.0, (), (), syntax)
        timer = None
        self._timed_out.clear()
        self._stall = None
        self._done = self._terminated = False
        if self.timeout_s is not None:
            timer = threading.Timer(self.timeout_s, self._cancel)
            timer.daemon = True
            timer.start()
        try:
            traces, locks, failure = self._run(f, statements)
        finally:
            with self._guard:  # no cancel, and no termination, once the file's statements are done
                self._done = True
            for t in (timer, self._terminator):
                if t is not None:
                    t.cancel()
        if failure is None and record:
            for attempt in (1, 2):
                try:
                    self.record(f) if direction == "up" else self.unrecord(f)
                    break
                except psycopg.errors.QueryCanceled:
                    # The time limit fired as the last statement ended: its cancel request reached
                    # the server late, during the record. The file ran to its end; record it again.
                    if attempt == 2 or not self._timed_out.is_set():
                        raise
        return MigrationResult(f, direction, time.monotonic() - started, tuple(traces),
                               tuple(locks), failure)

    def _cancel(self) -> None:
        """The time limit: read the stall report, cancel the running statement, and terminate its
        backend ``CANCEL_GRACE_S`` later if it is still running (a PL/pgSQL block that catches
        query_canceled goes on after a cancel)."""
        with self._guard:
            if self._done:
                return
            self._stall = self._stalled()
            self._timed_out.set()
            cancel = getattr(self.conn, "cancel_safe", None) or self.conn.cancel
            try:
                cancel()
            except psycopg.Error:
                pass
            self._terminator = threading.Timer(CANCEL_GRACE_S, self._terminate)
            self._terminator.daemon = True
            self._terminator.start()

    def _terminate(self) -> None:
        with self._guard:
            if self._done:
                return
            self._terminated = True
            try:
                self.observer.execute("SELECT pg_terminate_backend(%s)", (self.pid,))
            except psycopg.Error:
                pass

    def _locks(self) -> list[tuple[str, str]]:
        return [(str(r), str(m)) for r, m in self.observer.execute(LOCKS_SQL, (self.pid,)).fetchall()]

    def _run(self, f: MigrationFile, statements: list[Statement]
             ) -> tuple[list[StatementTrace], list[LockHeld], MigrationFailure | None]:
        traces: list[StatementTrace] = []
        held: list[LockHeld] = []
        tx = _Transaction()
        in_block = False  # inside the file's own BEGIN ... COMMIT
        for stmt in statements:
            if self._timed_out.is_set():
                return traces, held, self._timeout_failure(f, stmt, tx, held)
            wrap = not in_block and not stmt.no_transaction and not stmt.opens_transaction
            t0 = time.monotonic()
            sampler = _Sampler(self) if stmt.no_transaction else None
            try:
                if wrap:
                    self.conn.execute("BEGIN")
                if sampler:
                    sampler.start()
                self.conn.execute(stmt.sql, prepare=False)
            except psycopg.Error as exc:
                if sampler:
                    sampler.stop()
                if self._terminated:  # our own termination, after the cancel was ignored
                    return traces, held, self._timeout_failure(f, stmt, tx, held)
                self._not_the_migrations(f, stmt, exc)
                now = time.monotonic()
                held += tx.close(now)
                self._rollback()
                if self._timed_out.is_set():
                    return traces, held, self._timeout_failure(f, stmt, tx, held)
                return traces, held, _failure(f, stmt, exc)
            now = time.monotonic()
            if sampler:
                seen = sampler.stop()
                locks = list(seen)
                held += [LockHeld(r, m, age, stmt.line, sampled=True) for (r, m), age in seen.items()]
            else:
                locks = self._locks() if (in_block or wrap) else []
                tx.observe(locks, t0, stmt.line)
            traces.append(StatementTrace(stmt.number, stmt.line, stmt.excerpt(EXCERPT_CHARS_MAX),
                                         now - t0, tuple(locks)))
            if self.on_statement is not None:
                self.on_statement(f, traces[-1])
            if stmt.opens_transaction:
                in_block = True
            elif stmt.closes_transaction:
                in_block = False
                held += tx.close(now)
            if wrap:
                try:
                    self.conn.execute("COMMIT")
                except psycopg.Error as exc:  # a cancel for the limit can land on the COMMIT
                    if self._timed_out.is_set():
                        return traces, held, self._timeout_failure(f, stmt, tx, held)
                    self._not_the_migrations(f, stmt, exc)
                    return traces, held, _failure(f, stmt, exc)
                held += tx.close(time.monotonic())
        held = self._resolve_new_relations(held)
        if in_block:
            # A file that opens a transaction and never closes it: psql would
            # roll it back at exit, and so do we, loudly.
            self._rollback()
            last = statements[-1]
            return traces, held, MigrationFailure(
                f.path.name, last.number, last.line, last.excerpt(EXCERPT_CHARS_MAX), None,
                "the file ends inside a transaction block (BEGIN without COMMIT); rolled back")
        return traces, held, None

    def _resolve_new_relations(self, held: list[LockHeld]) -> list[LockHeld]:
        """Name the relations that were created (so invisible) while they were locked."""
        oids = {int(lk.relation[4:]) for lk in held if lk.relation.startswith("oid ")}
        if not oids:
            return held
        rows = self.observer.execute(
            "SELECT c.oid, n.nspname || '.' || c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY(%s)", (list(oids),)
        ).fetchall()
        names = {f"oid {oid}": (name, kind) for oid, name, kind in rows}
        result = []
        for lk in held:
            name, kind = names.get(lk.relation, (lk.relation, "r"))
            if kind in ("r", "p", "m"):  # new indexes and sequences follow from their tables
                result.append(LockHeld(name, lk.mode, lk.held_s, lk.from_line, lk.sampled))
        return result

    def _not_the_migrations(self, f: MigrationFile, stmt: Statement, exc: psycopg.Error) -> None:
        """Raise ``VerifierError`` when ``exc`` is a lost connection or our lock timeout."""
        state = exc.sqlstate or ""
        at = f"{f.path.name} (statement at line {stmt.line})"
        reason = conninfo.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else state, self.dsn)
        if self.conn.broken or state.startswith("08") or state in ("57P01", "57P02", "57P03"):
            raise DatabaseUnreachable(
                f"The connection to the migration database {conninfo.describe(self.dsn)} was lost "
                f"while {at} ran: {reason}", target=conninfo.describe(self.dsn),
                hint="Nothing was verified; run again when the server is up.") from None
        if state == "55P03" and self.lock_timeout_s is not None and "lock timeout" in str(exc):
            others = self._other_sessions()
            raise VerifierError(
                f"{at} waited more than {self.lock_timeout_s:g} s for a lock: another session holds "
                f"one on the migration database {conninfo.describe(self.dsn)}"
                + (f" ({others})" if others else "") + ".",
                hint="Nothing else should use a scratch database during a rehearsal; if a migration "
                     "is meant to wait, raise migration_lock_timeout_s in [tool.verifier].") from None

    def _other_sessions(self) -> str:
        """The other sessions on the database, as a short text (best effort)."""
        try:
            rows = self.observer.execute(
                "SELECT pid, usename, application_name FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s) "
                "AND backend_type = 'client backend' ORDER BY pid LIMIT 5", (self.pid,)).fetchall()
        except psycopg.Error:
            return ""
        return "; ".join(f"pid {pid}, user {user}, application {app or '-'}" for pid, user, app in rows)

    def _rollback(self) -> None:
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            try:
                self.conn.execute("ROLLBACK")
            except psycopg.Error:
                pass

    def _stalled(self) -> dict[str, Any]:
        """What the migration's backend is doing now (best effort): the stall report."""
        report: dict[str, Any] = {"limit_s": self.timeout_s}
        try:
            row = self.observer.execute(STALL_SQL, (self.pid,)).fetchone()
            if row is not None:
                report.update(zip(("state", "wait_event_type", "wait_event", "statement_running_s",
                                   "transaction_running_s", "query"), row, strict=True))
            report["locks"] = [f"{mode} on {rel}" for rel, mode in self._locks()]
            progress = [(view, dict(zip(("phase", "done", "total"), r, strict=True)))
                        for view, query in PROGRESS_SQL.items()
                        for r in self.observer.execute(query, (self.pid,)).fetchall()]
        except psycopg.Error as exc:
            report["unreadable"] = (exc.diag.message_primary or str(exc)).strip()
            return report
        report["rows_changed"] = (
            dict(progress) if progress else
            "not known: the changes of a transaction that has not committed are invisible to other "
            "sessions, and no pg_stat_progress view reports this statement")
        return report

    def _timeout_failure(self, f: MigrationFile, stmt: Statement, tx: _Transaction,
                         held: list[LockHeld]) -> MigrationFailure:
        held += tx.close(time.monotonic())
        self._rollback()
        stall = self._stall or {"limit_s": self.timeout_s}
        stall.update(file=f.path.name, line=stmt.line, statement_number=stmt.number,
                     excerpt=stmt.excerpt(EXCERPT_CHARS_MAX))
        if self._terminated:
            stall["terminated"] = (f"the statement went on after the cancel (a block that catches "
                                   f"query_canceled?); its backend was terminated {CANCEL_GRACE_S:g} s later")
        return MigrationFailure(
            f.path.name, stmt.number, stmt.line, stmt.excerpt(EXCERPT_CHARS_MAX), "57014",
            f"cancelled: the migration was still running after {self.timeout_s:g} s "
            "(migration_timeout_s, or --migration-timeout S; 0 for no limit)", stall=stall)


class _Sampler:
    """Polls the migration backend's locks while a non-transactional statement runs.

    ``stop()`` returns each (relation, mode) seen with the longest age of a
    transaction seen holding it.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.seen: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        observer, pid = self.runner.observer, self.runner.pid
        while not self._stop.is_set():
            try:
                # The transaction's age, read just after the locks, bounds how
                # long each of them had been held at that moment.
                locks = self.runner._locks()
                row = observer.execute(XACT_AGE_SQL, (pid,)).fetchone()
            except psycopg.Error:
                return
            age = float(row[0]) if row is not None and row[0] is not None else 0.0
            for lock in locks:
                self.seen[lock] = max(self.seen.get(lock, 0.0), age)
            self._stop.wait(LOCK_SAMPLE_INTERVAL_S)

    def stop(self) -> dict[tuple[str, str], float]:
        self._stop.set()
        self._thread.join()
        return self.seen


def _line_of(text: str, index0: int) -> str:
    lines = text.splitlines()
    return lines[index0].strip()[:EXCERPT_CHARS_MAX] if 0 <= index0 < len(lines) else ""


def _failure(f: MigrationFile, stmt: Statement, exc: psycopg.Error) -> MigrationFailure:
    diag = exc.diag
    line = stmt.line
    position = diag.statement_position
    if position:
        # The error's position in the statement (1-based characters) -> file line.
        line += stmt.sql[: max(0, int(position) - 1)].count("\n")
    return MigrationFailure(
        file=f.path.name, statement_number=stmt.number, line=line,
        excerpt=stmt.excerpt(EXCERPT_CHARS_MAX), sqlstate=diag.sqlstate,
        message=(diag.message_primary or str(exc)).strip(), detail=diag.message_detail,
        hint=diag.message_hint, context=diag.context,
    )
