"""The target database: connections that read one snapshot and can write nothing.

``open_snapshot`` opens a connection inside one ``REPEATABLE READ, READ
ONLY`` transaction with our statement and lock timeouts; given the id of a
snapshot another connection exported (``pg_export_snapshot()``), it reads
that same snapshot, as ``pg_dump -j``'s workers do. ``probe`` records in a
run which snapshot and WAL position it read.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from verifier import conninfo
from verifier.config import Config
from verifier.run import Run

# What the report records about the snapshot it read: the transaction
# snapshot, and the WAL position (the replay position on a standby).
SNAPSHOT_SQL = """
SELECT pg_current_snapshot()::text,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text,
       current_setting('server_version'), current_user, current_database()
"""


def open_snapshot(url: str, config: Config, *, snapshot_id: str | None = None) -> psycopg.Connection:
    """A connection inside one REPEATABLE READ, READ ONLY transaction, with our timeouts.

    The timeouts are set for the session before the transaction begins, so
    that ``SET TRANSACTION SNAPSHOT`` can be its first statement.
    """
    conn = conninfo.connect(url, what="target database", autocommit=True)
    try:
        for name, seconds in (("statement_timeout", config.statement_timeout_s),
                              ("lock_timeout", config.lock_timeout_s)):
            conn.execute("SELECT set_config(%s, %s, false)", (name, f"{int(seconds * 1000)}ms"))
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        if snapshot_id is not None:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
    except BaseException:
        conn.close()
        raise
    return conn


def probe(run: Run, conn: psycopg.Connection, url: str) -> None:
    """Record the target, its server and the snapshot ``conn`` reads in ``run``'s provenance."""
    row = conn.execute(SNAPSHOT_SQL).fetchone()
    assert row is not None
    snapshot, lsn, version, user, database = row
    run.provenance.update(target=conninfo.describe(url), target_server_version=version,
                          target_role=user, target_database=database, snapshot=snapshot, wal_lsn=lsn,
                          isolation="REPEATABLE READ, READ ONLY")
