"""Sessions that read one snapshot and can write nothing, alone or as a few workers.

``configure`` is the one place a session's settings are set (the timeouts
of ``limits``, and whatever else a caller pins), before any transaction.
``open_snapshot`` opens a connection inside one ``REPEATABLE READ, READ
ONLY`` transaction with our statement and lock timeouts; given the id of a
snapshot another connection exported (``export_snapshot``), it reads that
same snapshot, as ``pg_dump -j``'s workers do. ``in_parallel`` runs jobs on
a few such connections, all in one exported snapshot.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import psycopg
from psycopg import sql

from verifier.config import Config
from verifier.pg import conninfo

T = TypeVar("T")


def timeout_ms(seconds: float) -> str:
    """A timeout setting in whole milliseconds (``"1500ms"``), rounded, never below 1 (0 turns it off)."""
    return f"{max(1, round(seconds * 1000))}ms"


# Settings that change what our SQL means, pinned in every reading session whatever the target's
# defaults (ALTER DATABASE/ROLE ... SET): floats print as their shortest round-trip decimal
# (extra_float_digits = 1; PostgreSQL 12+, "Floating-Point Types"), which the cents checks read a
# real or double original as; string literals are standard (backslashes are not escapes); names
# resolve in pg_catalog only (our tables are schema-qualified; an operator or function someone
# defined in public, such as a "=" for bigint and numeric, is never ours: "The Schema Search Path"),
# pg_temp last; row level security is off, so that a policy that would hide rows from this role
# is an error naming the table instead of a silent subset ("Row Security Policies", row_security);
# the session runs as the role that logged in (an ALTER DATABASE ... SET role of the database's owner
# would make our sessions its own); format_type and quote_ident quote only what needs it
# (quote_all_identifiers); no idle-in-transaction limit cuts a reading transaction; dates and
# intervals print in the ISO and postgres styles that the text of samples and details shows
# (DateStyle, IntervalStyle). TimeZone is the database's own: a timestamp without time zone (a
# pending transaction's expiry) means the application's local time, which only it knows.
PINNED = {"role": "none", "extra_float_digits": "1", "standard_conforming_strings": "on",
          "search_path": "pg_catalog, pg_temp", "row_security": "off", "quote_all_identifiers": "off",
          "idle_in_transaction_session_timeout": "0", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres"}


def limits(config: Config) -> dict[str, str]:
    """The statement and lock timeouts of a session that reads (the target, a scratch database's checks)."""
    return {"statement_timeout": timeout_ms(config.statement_timeout_s),
            "lock_timeout": timeout_ms(config.lock_timeout_s)}


def configure(conn: psycopg.Connection, settings: dict[str, str]) -> None:
    """Set each of ``settings`` for the session of ``conn`` (in autocommit, before any transaction).

    ``search_path`` first, and every call to ``pg_catalog.set_config`` by its qualified name: the
    database's own defaults (ALTER DATABASE ... SET search_path = public, pg_catalog) are in force
    until then, and a ``public.set_config`` would otherwise run in our session, as our role."""
    ordered = sorted(settings.items(), key=lambda item: item[0] != "search_path")
    for name, value in ordered:
        conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))


def open_pinned(url: str, config: Config, *, what: str) -> psycopg.Connection:
    """A read-write connection (not in autocommit) with the ``PINNED`` settings and our timeouts:
    for the rehearsal's record of the originals. Raises ``DatabaseUnreachable``."""
    conn = conninfo.connect(url, what=what, autocommit=True)
    try:
        configure(conn, {**PINNED, **limits(config), "default_transaction_read_only": "off"})
        conn.autocommit = False
    except BaseException:
        conn.close()
        raise
    return conn


def open_snapshot(url: str, config: Config, *, snapshot_id: str | None = None) -> psycopg.Connection:
    """A connection inside one REPEATABLE READ, READ ONLY transaction, with our timeouts and the
    ``PINNED`` settings.

    The timeouts are set for the session before the transaction begins, so
    that ``SET TRANSACTION SNAPSHOT`` can be its first statement. Raises
    ``DatabaseUnreachable`` when the database cannot be reached.
    """
    conn = conninfo.connect(url, what="target database", autocommit=True)
    try:
        configure(conn, {**PINNED, **limits(config)})
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        if snapshot_id is not None:
            try:
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
            except (psycopg.errors.InvalidParameterValue, psycopg.errors.UndefinedObject) as exc:
                # The exporting transaction ended first: its session was lost (ended by an
                # administrator, by a hot standby's recovery conflict, a restart). PostgreSQL 15
                # says "invalid snapshot identifier" (22023), 18 "snapshot ... does not exist" (42704).
                raise psycopg.OperationalError(
                    f"the session that exported the audit's snapshot ended before this one could "
                    f"import it ({exc.diag.message_primary})") from None
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def planned(conn: psycopg.Connection, settings: dict[str, str]) -> Iterator[None]:
    """Planner settings (``enable_indexscan``, ``work_mem``) for the statements run inside, in
    ``conn``'s open transaction only (``set_config(..., is_local => true)``), restored afterwards.

    The workers of ``in_parallel`` run several passes in one transaction, each wanting its own plan.
    A failed statement leaves the transaction aborted, and nothing is restored (the transaction ends).
    """
    old = {}
    for name, value in settings.items():
        row = conn.execute("SELECT pg_catalog.current_setting(%s), pg_catalog.set_config(%s, %s, true)",
                           (name, name, value)).fetchone()
        assert row is not None
        old[name] = str(row[0])
    try:
        yield
    finally:
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            for name, value in old.items():
                conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))


def export_snapshot(conn: psycopg.Connection) -> str:
    """The id of ``conn``'s snapshot, for other connections to import while its transaction lasts."""
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    return str(row[0])


def in_parallel(jobs: list[Callable[[psycopg.Connection], T]], url: str, config: Config,
                snapshot_id: str, workers_max: int,
                progress: Callable[[int, int], None] | None = None, first: Sequence[int] = ()) -> list[T]:
    """Every job's result, in job order, on up to ``workers_max`` connections importing the snapshot.

    Each connection is opened (and imports the snapshot) once; the jobs
    take turns on them, in job order, except that the jobs at the indexes ``first`` are handed
    out before the others (the longest first: the last to end then is a short one). A job that fails
    (or Ctrl-C) cancels the others' statements and raises. ``progress(done, total)`` is called as
    jobs end (from their threads).
    """
    finished = [0]
    lock = threading.Lock()
    assert workers_max >= 1
    workers = min(workers_max, len(jobs))
    opened: list[psycopg.Connection] = []
    idle: queue.SimpleQueue[psycopg.Connection] = queue.SimpleQueue()

    def run_job(job: Callable[[psycopg.Connection], T]) -> T:
        conn = idle.get()
        try:
            result = job(conn)
        finally:
            idle.put(conn)
        if progress is not None:
            with lock:
                finished[0] += 1
                progress(finished[0], len(jobs))
        return result

    try:
        for _ in range(workers):
            opened.append(open_snapshot(url, config, snapshot_id=snapshot_id))
            idle.put(opened[-1])
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            early = set(first)
            order = [*dict.fromkeys(first), *(i for i in range(len(jobs)) if i not in early)]
            submitted = {i: pool.submit(run_job, jobs[i]) for i in order}
            futures = [submitted[i] for i in range(len(jobs))]
            try:
                results = [f.result() for f in futures]
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
    assert len(results) == len(jobs)
    return results
