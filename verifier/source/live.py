"""A live database as the source (``--db URL``): one read-only snapshot of it, on the record.

``connected(run, url, config)`` is a run's "connect" stage: it opens one
``REPEATABLE READ, READ ONLY`` snapshot of the database at ``url``
(``verifier.pg.snapshot``) and records in the run's provenance which
server, role, database, snapshot and WAL position it reads. Nothing here
writes to the database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from verifier.config import Config
from verifier.pg import conninfo
from verifier.pg.snapshot import open_snapshot
from verifier.run import Run

# What the report records about the snapshot it read: the transaction
# snapshot, and the WAL position (the replay position on a standby).
SNAPSHOT_SQL = """
SELECT pg_current_snapshot()::text,
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text,
       current_setting('server_version'), current_user, current_database()
"""


def probe(run: Run, conn: psycopg.Connection, url: str) -> None:
    """Record the target, its server and the snapshot ``conn`` reads in ``run``'s provenance."""
    row = conn.execute(SNAPSHOT_SQL).fetchone()
    assert row is not None
    snapshot, lsn, version, user, database = row
    run.provenance.update(target=conninfo.describe(url), target_server_version=version,
                          target_role=user, target_database=database, snapshot=snapshot, wal_lsn=lsn,
                          isolation="REPEATABLE READ, READ ONLY")


@contextlib.contextmanager
def connected(run: Run, url: str, config: Config) -> Iterator[psycopg.Connection]:
    """The "connect" stage: one read-only snapshot of ``url``, recorded in ``run``'s provenance.

    Raises ``DatabaseUnreachable`` when the database cannot be reached.
    """
    with run.stage("connect") as detail:
        detail["target"] = conninfo.describe(url)
        conn = open_snapshot(url, config)
    with conn:
        probe(run, conn, url)
        yield conn
