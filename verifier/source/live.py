"""A live database as the source (``--db URL``): one read-only snapshot of it, on the record.

``connected(run, url, config)`` is a run's "connect" stage: it opens one
``REPEATABLE READ, READ ONLY`` snapshot of the database at ``url``
(``verifier.pg.snapshot``) and records in the run's provenance which
server (its system identifier, where the role may read it), role,
database, snapshot and WAL position it reads. Nothing here
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

# The server's identity, the same whichever host name, port or role reaches it ("Control Data
# Functions"): with the database's name, it tells a later run the same target. pg_control_system()
# may be revoked from PUBLIC, so the right is asked first: its permission is checked when the
# statement starts, even where a CASE would never call it, and the error would end the snapshot.
SYSTEM_IDENTIFIER_ALLOWED_SQL = (
    "SELECT pg_catalog.has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE')")
SYSTEM_IDENTIFIER_SQL = "SELECT system_identifier::text FROM pg_catalog.pg_control_system()"


# What the connected role could write, though the verifier never does: superuser, tables of the
# database's own schemas it owns (through a role it is a member of) or may change (any of INSERT,
# UPDATE, DELETE, TRUNCATE: has_table_privilege takes a list, "PostgreSQL 15, System Information
# Functions"), and a few of their names.
WRITE_RIGHTS_SQL = """
WITH t AS (
  SELECT c.oid, pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS name,
         -- MEMBER, not USAGE: a NOINHERIT member of the owner's role can SET ROLE to it and write.
         pg_catalog.pg_has_role(c.relowner, 'MEMBER') AS owned,
         pg_catalog.has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
           OR pg_catalog.has_any_column_privilege(c.oid, 'INSERT, UPDATE') AS writable
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema'
    AND n.oid <> 'pg_catalog'::pg_catalog.regnamespace AND n.nspname NOT LIKE 'pg\\_toast%'
    AND n.nspname NOT LIKE 'pg\\_temp\\_%'
)
SELECT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),
       count(*) FILTER (WHERE owned), count(*) FILTER (WHERE writable),
       (SELECT pg_catalog.array_agg(name ORDER BY name) FROM (
          SELECT name FROM t WHERE owned OR writable ORDER BY name LIMIT 3) x)
FROM t
"""

# The one statement that makes a role fit to verify: it reads every table and sequence and has
# USAGE on every schema (pg_read_all_data, PostgreSQL 14 and later, "Predefined Roles"); BYPASSRLS
# lets it see every row where row level security is on (it writes nothing either way).
READER_GRANT = "CREATE ROLE verifier_reader LOGIN BYPASSRLS IN ROLE pg_read_all_data;"


def write_rights(conn: psycopg.Connection) -> list[str]:
    """What the role of ``conn`` could write in its database (empty: nothing), in words."""
    row = conn.execute(WRITE_RIGHTS_SQL).fetchone()
    assert row is not None
    superuser, owned, writable, examples = row
    rights = ["is a superuser"] if superuser else []
    if owned:
        rights.append(f"owns {owned} table(s)")
    if writable:
        rights.append(f"may INSERT, UPDATE, DELETE or TRUNCATE {writable} table(s) or columns of them")
    if rights and examples:
        rights.append("e.g. " + ", ".join(examples))
    return rights


def probe(run: Run, conn: psycopg.Connection, url: str) -> None:
    """Record the target, its server (``target_system_identifier``: text, absent when the role may
    not execute pg_control_system()) and the snapshot ``conn`` reads in ``run``'s provenance, and
    say (on the record and the terminal) when the role could write to it."""
    row = conn.execute(SNAPSHOT_SQL).fetchone()
    assert row is not None
    snapshot, lsn, version, user, database = row
    run.provenance.update(target=conninfo.describe(url), target_server_version=version,
                          target_role=user, target_database=database, snapshot=snapshot, wal_lsn=lsn,
                          isolation="REPEATABLE READ, READ ONLY")
    allowed = conn.execute(SYSTEM_IDENTIFIER_ALLOWED_SQL).fetchone()
    if allowed is not None and allowed[0]:
        identifier = conn.execute(SYSTEM_IDENTIFIER_SQL).fetchone()
        assert identifier is not None
        run.provenance["target_system_identifier"] = identifier[0]
    # Otherwise none is recorded, and the next run finds this one by what is recorded without it:
    # the connection string as described (target) and the database's name (verifier.jobs.baseline).
    rights = write_rights(conn)
    run.provenance["target_role_can_write"] = rights
    if rights:
        run.provenance["target_role_advice"] = READER_GRANT
        run.tell(f"The role {user} can write to {database} ({'; '.join(rights)}). The verifier only reads, "
                 "in a READ ONLY transaction, but a role that can only read is the safer one to give it: "
                 f"{READER_GRANT} (PostgreSQL 14 or later; BYPASSRLS needs a superuser to grant).")


@contextlib.contextmanager
def connected(run: Run, url: str, config: Config) -> Iterator[psycopg.Connection]:
    """The "connect" stage: one read-only snapshot of ``url``, recorded in ``run``'s provenance.

    Raises ``DatabaseUnreachable`` when the database cannot be reached.
    """
    with run.stage("connect") as detail:
        detail["target"] = conninfo.describe(url)
        conn = open_snapshot(url, config)
    with conn:
        with conninfo.reading(url, config.statement_timeout_s):
            probe(run, conn, url)
        yield conn
