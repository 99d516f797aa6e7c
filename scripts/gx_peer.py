"""Great Expectations Core 1.x as a peer of ``verify-cents``, for bench_cents.py.

What a team would write in GX for "each cents column equals its decimal
times 100": one suite holding, for each (decimal, cents) pair, an
``UnexpectedRowsExpectation`` whose query selects the rows that break it,

    SELECT * FROM {batch} WHERE "amount_cents" IS DISTINCT FROM "amount" * 100

(times each row's minor unit instead of 100 with ``--currency``), validated
on a whole-table batch of ``payments`` through GX's PostgreSQL data source
(SQLAlchemy over psycopg 3). The comparison is the exact one verify makes:
in ``numeric``, NULL on one side only counting as a difference, and no
``round()``, which would hide a sub-cent (the probe plants one). Why not
``ExpectColumnPairValuesToBeEqual``, GX's column-pair expectation: it
compares two stored columns and takes no expression, so "decimal x 100"
would first need a derived column (a view per table, as reladiff needs);
GX's documentation sends a condition it has no expectation for to
``UnexpectedRowsExpectation`` ("Use SQL to define a custom Expectation",
docs.greatexpectations.io/docs/core/customize_expectations/). GX runs two
statements per expectation (the query, fetching at most 200 of its rows,
and a ``count(*)`` of it), each a full scan of the table when the data is
clean: eight scans for the four pairs.

GX runs in a worker process of its own (this file run as a script, with
the same Python), which the benchmark drives through its stdin and stdout,
one JSON line each way per request: in the benchmark's process, GX's
200 MiB or so would count towards the peak memory of every
``verify-cents`` it starts (Linux carries a process's high-water mark from
before its ``exec`` over into the program's). The worker imports GX and
makes its context once (the verifier's own ``gx_context``: ephemeral, no
progress bars) and each database's data source on first use, outside any
timing, and times each validation itself. Its connections are made by
psycopg from the libpq connection string, as the verifier's judge stage
makes them, so GX's configuration holds no address. A probe first
validates a copy of the first PROBE_ROWS rows with reladiff_peer's planted
differences (a cent too many, a cent too few, a hundredth of a cent): GX
must report exactly those rows, or it is never timed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from reladiff_peer import MINOR, PLANTS, PROBE_ROWS

from verifier.errors import VerifierError
from verifier.judge.suites import _exception, gx_context

TABLE = "payments"
PLANTED = "gx_planted"  # the probe's copy; dropped before anything else reads the database
# The id of the row reladiff_peer.PLANTS changes in each pair (every other pair: none).
PLANTED_IDS = {"amount": 1, "net": 2, "tax": 3}
# Each pair's rows that break "cents = decimal x factor" ({batch}: GX puts its batch's table there).
UNEXPECTED_SQL = "SELECT * FROM {{batch}} WHERE {cents} IS DISTINCT FROM {decimal} * {factor}"
PLANTED_SQL = "CREATE TABLE {planted} AS SELECT * FROM {table} WHERE id <= %s"
PLANT_SQL = "UPDATE {planted} SET {column} = {column} {change}"


class Validator:
    """In the worker: one GX suite (an ``UnexpectedRowsExpectation`` per pair), validated on
    ``payments`` of each database. Every method raises ``RuntimeError`` saying what went wrong
    (``VerifierError`` on construction when GX is not installed)."""

    def __init__(self, pairs: tuple[str, ...], currency: bool) -> None:
        assert set(PLANTED_IDS) == set(PLANTS["actual"]) | set(PLANTS["expected"]) <= set(pairs)
        self.gx, self.context = gx_context()
        self.version = str(self.gx.__version__)
        self.pairs = pairs
        factor = sql.SQL(MINOR if currency else "100")
        self.queries = {c: sql.SQL(UNEXPECTED_SQL).format(
            cents=sql.Identifier(f"{c}_cents"), decimal=sql.Identifier(c), factor=factor).as_string()
            for c in pairs}
        self.suite = self.context.suites.add(self.gx.ExpectationSuite(name="cents_pairs"))
        for c in pairs:
            self.suite.add_expectation(self.gx.expectations.UnexpectedRowsExpectation(
                unexpected_rows_query=self.queries[c], meta={"pair": c}))
        self.sources: dict[str, Any] = {}  # dsn -> GX data source
        self.batches: dict[tuple[str, str], Any] = {}  # (dsn, table) -> whole-table batch definition
        self.statements = 0  # statements GX has run, over all its engines

    def _batch(self, dsn: str, table: str) -> Any:
        """The whole-table batch definition of ``table`` in ``dsn``'s database (made on first use)."""
        if dsn not in self.sources:
            # The URL only names the dialect: psycopg makes every connection from ``dsn``.
            source = self.context.data_sources.add_postgres(
                f"bench_{secrets.token_hex(4)}", connection_string="postgresql+psycopg://bench@bench/bench",
                kwargs={"creator": lambda: psycopg.connect(dsn), "pool_pre_ping": False})
            from sqlalchemy import event

            def counted(*_: Any) -> None:
                self.statements += 1

            event.listen(source.get_execution_engine().engine, "after_cursor_execute", counted)
            self.sources[dsn] = source
        if (dsn, table) not in self.batches:
            asset = self.sources[dsn].add_table_asset(table, table_name=table)
            self.batches[dsn, table] = asset.add_batch_definition_whole_table("all")
        return self.batches[dsn, table]

    def _validate(self, dsn: str, table: str, suite: Any,
                  result_format: str = "SUMMARY") -> tuple[float, Any]:
        """Wall seconds of GX's validation of ``suite`` on ``table`` (getting the batch and validating it),
        and its result; ``RuntimeError`` when GX did not validate exactly that table of that database,
        ran no statement, or could not compute an expectation."""
        batch = self._batch(dsn, table)
        before = self.statements
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            result = batch.get_batch().validate(suite, result_format=result_format)
            wall = time.perf_counter() - start
        spec = result.meta.get("batch_spec") or {}
        source = (result.meta.get("active_batch_definition") or {}).get("datasource_name")
        if (spec.get("table_name"), source) != (table, self.sources[dsn].name):
            raise RuntimeError(f"GX validated {spec.get('table_name')!r} of data source {source!r}, "
                               f"not {table!r} of {self.sources[dsn].name!r}")
        for r in result.results:
            failure = _exception(r)
            if failure is not None:
                raise RuntimeError(f"GX could not run {r.expectation_config.type} on {table}: "
                                   f"{failure.splitlines()[0]}")
        if self.statements == before:
            raise RuntimeError(f"GX ran no statement on {table} (it validated nothing, or through an "
                               "engine that is not the one counted)")
        return wall, result

    def check_rows(self, dsn: str, rows: int) -> None:
        """Raises unless GX's batch of ``payments`` in ``dsn``'s database holds ``rows`` rows (apart
        from the pairs' suite: their results cannot say how many rows they read)."""
        suite = self.context.suites.add(self.gx.ExpectationSuite(name=f"row_count_{secrets.token_hex(4)}"))
        suite.add_expectation(self.gx.expectations.ExpectTableRowCountToEqual(value=rows))
        _, result = self._validate(dsn, TABLE, suite)
        [count] = result.results
        if not count.success:
            raise RuntimeError(f"GX's batch of {TABLE} has {count.result.get('observed_value')} rows, "
                               f"not {rows}")

    def probe(self, dsn: str) -> None:
        """Raises unless the suite, on a copy of the first PROBE_ROWS rows with the planted
        differences, is unsuccessful with exactly the planted rows. Creates and drops that copy."""
        planted = sql.Identifier(PLANTED)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL(PLANTED_SQL).format(planted=planted, table=sql.Identifier(TABLE)),
                         (PROBE_ROWS,))
            try:
                for side, plants in PLANTS.items():
                    for c, change in plants.items():
                        conn.execute(sql.SQL(PLANT_SQL).format(
                            planted=planted, column=sql.Identifier(f"{c}_cents" if side == "actual" else c),
                            change=sql.SQL(change)))
                _, result = self._validate(dsn, PLANTED, self.suite, result_format="COMPLETE")
            finally:
                conn.execute(sql.SQL("DROP TABLE {}").format(planted))
        expected = {c: [PLANTED_IDS[c]] if c in PLANTED_IDS else [] for c in self.pairs}
        found = {r.expectation_config.meta["pair"]: sorted(
            row["id"] for row in ((r.result or {}).get("details") or {}).get("unexpected_rows", []))
            for r in result.results}
        if result.success or found != expected:
            raise RuntimeError(f"on {PROBE_ROWS} rows with 3 planted differences, success {result.success} "
                               f"and the rows of each pair {found}, not {expected}")

    def timed(self, dsn: str) -> float:
        """Wall seconds of one validation of the suite on clean data, which must succeed with no
        unexpected row in any pair."""
        wall, result = self._validate(dsn, TABLE, self.suite)
        found = {r.expectation_config.meta["pair"]: (r.success, (r.result or {}).get("observed_value"))
                 for r in result.results}
        if not result.success or found != {c: (True, 0) for c in self.pairs}:
            raise RuntimeError(f"on clean data: success {result.success}, (success, unexpected rows) "
                               f"of each pair {found}")
        return wall

    def close(self) -> None:
        """Close GX's connections (before the databases are dropped)."""
        for source in self.sources.values():
            source.get_execution_engine().engine.dispose()


def serve(pairs: tuple[str, ...], currency: bool) -> None:
    """The worker: a first line ``{"value": {"version", "queries"}}`` (or ``{"error"}``: GX is not
    installed), then, for each request line ``{"op", "args"}`` on stdin, one reply line
    ``{"value"}``, or ``{"error"}`` for what ``Validator`` raises; ends at ``close``. A bug raises
    (its traceback on stderr) and ends the worker."""
    replies = sys.stdout
    sys.stdout = sys.stderr  # whatever GX prints stays off the replies

    def reply(**message: Any) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    try:
        validator = Validator(pairs, currency)
    except VerifierError as exc:
        reply(error=str(exc))
        return
    reply(value={"version": validator.version, "queries": validator.queries})
    ops: dict[str, Callable[..., Any]] = {
        "check_rows": validator.check_rows, "probe": validator.probe, "timed": validator.timed}
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "close":
            validator.close()
            reply(value=None)
            return
        try:
            value = ops[request["op"]](*request["args"])
        except RuntimeError as exc:
            reply(error=str(exc))
        else:
            reply(value=value)


class Gx:
    """In the benchmark: the GX worker, started on construction; ``RuntimeError`` when GX is not
    installed, ``SystemExit`` when the worker ends without answering."""

    def __init__(self, pairs: tuple[str, ...], currency: bool) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--pairs", ",".join(pairs)]
        self.pairs = pairs
        self.worker = subprocess.Popen(argv + (["--currency"] if currency else []),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started = self._answer()
        self.version: str = started["version"]
        self.queries: dict[str, str] = started["queries"]

    def _answer(self) -> Any:
        assert self.worker.stdout is not None
        line = self.worker.stdout.readline()
        if not line:
            raise SystemExit(f"GX: its worker exited {self.worker.wait()} without answering")
        message = json.loads(line)
        if "error" in message:
            raise RuntimeError(message["error"])
        return message["value"]

    def _ask(self, op: str, *args: Any) -> Any:
        assert self.worker.stdin is not None
        self.worker.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.worker.stdin.flush()
        return self._answer()

    def check_rows(self, dsn: str, rows: int) -> None:
        """``SystemExit`` unless GX's batch of ``payments`` in ``dsn``'s database holds ``rows`` rows."""
        try:
            self._ask("check_rows", dsn, rows)
        except RuntimeError as exc:
            raise SystemExit(f"GX: {exc}") from exc

    def probe(self, dsn: str) -> str | None:
        """None when GX finds exactly the planted differences (see ``Validator.probe``); else why not."""
        try:
            self._ask("probe", dsn)
        except RuntimeError as exc:
            return str(exc)
        return None

    def timed(self, dsn: str) -> float:
        """Wall seconds of one validation on clean data (see ``Validator.timed``); ``SystemExit`` when it
        does not succeed with no unexpected row in every pair."""
        try:
            return float(self._ask("timed", dsn))
        except RuntimeError as exc:
            raise SystemExit(f"GX: {exc}") from exc

    def close(self) -> None:
        """Close GX's connections and end the worker."""
        if self.worker.poll() is None:
            self._ask("close")
            assert self.worker.stdin is not None
            self.worker.stdin.close()
            self.worker.wait()


def load(pairs: tuple[str, ...], currency: bool) -> Gx | None:
    """The GX peer, its worker started; None (said in one line) when GX is not installed."""
    try:
        return Gx(pairs, currency)
    except RuntimeError as exc:
        print(f"GX: skipped ({exc})")
        return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The GX worker of bench_cents.py (see this docstring).")
    parser.add_argument("--pairs", required=True, help="the decimal columns, comma-separated")
    parser.add_argument("--currency", action="store_true")
    args = parser.parse_args()
    serve(tuple(args.pairs.split(",")), args.currency)
