"""Table suites: GX on live tables of the verified database, inside the run's own snapshot.

GX computes every metric in SQL on the server (SQL pushdown: counts, and at
most a few unexpected values come back), through a SQLAlchemy engine whose
every connection is ours (``session``: read only, the run's timeouts) and
whose every transaction imports the run's snapshot (``SET TRANSACTION
SNAPSHOT``), so it judges exactly the data the engine verified and can
write nothing. A table that does not exist or may not be read, and an
error GX raises while it reads, stop the run naming the suite; an error of
the verifier itself is never reported as the suite's.
"""

from __future__ import annotations

import secrets
import warnings
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from verifier.config import Config
from verifier.errors import UsageError, VerifierError
from verifier.judge.suites import Suite, prepare, record
from verifier.pg import conninfo
from verifier.pg.snapshot import configure, export_snapshot, limits
from verifier.run import Run

# Whether the suite's table exists in the run's snapshot, and whether the role may read it.
TABLE_SQL = "SELECT c.oid, has_table_privilege(c.oid, 'SELECT') FROM pg_class c WHERE c.oid = to_regclass(%s)"


@dataclass(frozen=True)
class Live:
    """The verified database for ``table`` suites: its URL, and the connection holding the
    run's snapshot (open in a ``REPEATABLE READ, READ ONLY`` transaction)."""

    url: str
    conn: psycopg.Connection
    config: Config


def _check_table(live: Live, suite: Suite) -> None:
    """The suite's table exists in the run's snapshot and may be read; else a clear error."""
    assert suite.schema is not None and suite.table is not None
    ident = sql.Identifier(suite.schema, suite.table).as_string(live.conn)
    with conninfo.reading(live.url, live.config.statement_timeout_s):
        row = live.conn.execute(TABLE_SQL, (ident,)).fetchone()
    where = conninfo.describe(live.url)
    if row is None:
        raise UsageError(f"The expectation suite {suite.path} names the table {suite.relation}, "
                         f"which does not exist in {where}.")
    if not row[1]:
        raise UsageError(f"The expectation suite {suite.path} names the table {suite.relation}, "
                         f"which the role may not SELECT from in {where}.",
                         hint="GRANT SELECT on it to the verifier's role, or remove the suite.")


def session(live: Live, schema: str) -> psycopg.Connection:
    """A new connection for GX: read only, our timeouts, ``schema`` first on the search path."""
    conn = conninfo.connect(live.url, what="target database for GX", autocommit=True)
    try:
        configure(conn, {"default_transaction_read_only": "on",
                         "default_transaction_isolation": "repeatable read",
                         **limits(live.config),
                         "search_path": sql.Identifier(schema).as_string(conn)})
        conn.autocommit = False
    except BaseException:
        conn.close()
        raise
    return conn


def judge_tables(run: Run, gx: Any, context: Any, suites: list[Suite], live: Live,
                 outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """Run ``suites`` on live tables in ``live``'s snapshot; how much GX read, for the report.

    Raises ``UsageError`` for a table that does not exist or may not be read, ``VerifierError``
    when GX fails on the suite (its SQL, a timeout, a lost connection).
    """
    from sqlalchemy import event

    with conninfo.reading(live.url, live.config.statement_timeout_s):
        snapshot_id = export_snapshot(live.conn)
    importing = sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)).as_string(live.conn)
    stats: dict[str, int] = {"statements": 0, "rows_fetched": 0, "transactions": 0}
    for suite in suites:
        _check_table(live, suite)
    for n, suite in enumerate(suites):
        assert suite.schema is not None and suite.table is not None
        run.advanced("judge", n, len(suites), "table suites", now=f"{suite.schema}.{suite.table}")
        schema = suite.schema
        # The URL only names the dialect: connections come from the creator, so GX's
        # configuration never holds the target's address or password.
        source = context.data_sources.add_postgres(
            f"live_{secrets.token_hex(4)}", connection_string="postgresql+psycopg://verifier@verifier/verifier",
            kwargs={"creator": lambda s=schema: session(live, s), "pool_pre_ping": False})
        engine = source.get_execution_engine().engine

        def begin(conn: Any) -> None:
            conn.exec_driver_sql(importing)
            stats["transactions"] += 1

        def counted(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            stats["statements"] += 1
            stats["rows_fetched"] += max(cursor.rowcount, 0)

        event.listen(engine, "begin", begin)
        event.listen(engine, "after_cursor_execute", counted)
        table = suite.table if suite.table == suite.table.lower() and suite.table.isidentifier() \
            else '"' + suite.table.replace('"', '""') + '"'
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                prepared = prepare(gx, context, suite)
                try:  # GX's own work only: what fails in here is the suite's, not a bug of ours
                    asset = source.add_table_asset(suite.name, table_name=table)
                    batch = asset.add_batch_definition_whole_table("all")
                    result = batch.get_batch().validate(prepared.gx_suite)
                except VerifierError:
                    raise
                except Exception as exc:  # GX wraps connection and SQL failures in its own kinds
                    reason = conninfo.scrub(str(exc), live.url).splitlines()[0]
                    raise VerifierError(f"The expectation suite {suite.path} could not run on "
                                        f"{suite.relation}: {reason}") from None
                record(run, prepared, result, outcomes, where=suite.relation)
        finally:
            engine.dispose()
        if source.get_execution_engine().engine is not engine:  # GX made a second engine: not ours
            raise AssertionError("GX read through an engine that does not import the run's snapshot")
    return {"snapshot": snapshot_id, **stats}
