"""Verification of a live database in place (read only).

``verify_cents`` opens one connection to the target, in a single
``REPEATABLE READ, READ ONLY`` transaction with statement and lock
timeouts, records which snapshot and WAL position it read, discovers the
(decimal, cents) pairs and verifies every row of every pair. It never
writes to the target: a read-only transaction cannot, and the role may be
one that can only SELECT. ``audit_ledger`` is not built yet and says so.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from verifier import conninfo
from verifier.checks import engine
from verifier.config import Config
from verifier.config import load as load_config
from verifier.errors import NotBuiltYet
from verifier.judge import judge
from verifier.run import Run, new_run, recorded

# What the report records about the snapshot it read: the transaction
# snapshot, and the WAL position (the replay position on a standby).
SNAPSHOT_SQL = """
SELECT pg_current_snapshot()::text,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text,
       current_setting('server_version'), current_user, current_database()
"""


def open_snapshot(url: str, config: Config) -> psycopg.Connection:
    """A connection inside one REPEATABLE READ, READ ONLY transaction, with our timeouts."""
    conn = conninfo.connect(url, what="target database")
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    for name, seconds in (("statement_timeout", config.statement_timeout_s),
                          ("lock_timeout", config.lock_timeout_s)):
        conn.execute("SELECT set_config(%s, %s, false)", (name, f"{int(seconds * 1000)}ms"))
    return conn


def _probe(run: Run, conn: psycopg.Connection, url: str) -> None:
    row = conn.execute(SNAPSHOT_SQL).fetchone()
    assert row is not None
    snapshot, lsn, version, user, database = row
    run.provenance.update(target=conninfo.describe(url), target_server_version=version,
                          target_role=user, target_database=database, snapshot=snapshot, wal_lsn=lsn,
                          isolation="REPEATABLE READ, READ ONLY")


def verify_cents(url: str, *, report_dir: Path, config_path: Path | None = None,
                 strict: bool = False, gx: bool = False) -> Run:
    """Verify every (decimal, cents) pair of the database at ``url``, in place."""
    run = new_run("verify-cents --db", report_dir)
    with recorded(run):
        config = load_config(config_path)
        run.provenance.update(rounding_mode=config.rounding, config=config.source)
        with run.stage("connect") as detail:
            detail["target"] = conninfo.describe(url)
            conn = open_snapshot(url, config)
        with conn:
            _probe(run, conn, url)
            engine.run_checks(run, conn, config, url=url)
        if gx:
            judge(run)
        run.end("fail" if run.failing(strict=strict) else "pass")
    return run


def audit_ledger(url: str, *, report_dir: Path) -> Run:
    run = new_run("verify-ledger --db", report_dir)
    with recorded(run):
        with run.stage("connect") as detail:
            detail["target"] = conninfo.describe(url)
            with open_snapshot(url, Config()) as conn:
                _probe(run, conn, url)
        raise NotBuiltYet("The target is reachable, but the ledger audit is not built yet; "
                          "nothing was verified (exit 2).")
    return run
