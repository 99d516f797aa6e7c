"""Judgement by Great Expectations (GX Core 1.x) suites, on request (``--gx``).

Suites are JSON files: ``{"name", "meta": {"target": ...}, "expectations":
[{"type", "kwargs"}]}``, the shape of GX 1.x's own suite JSON. The built-in
suites live in the project's ``expectations/`` folder; a user's own come
from ``--expectations DIR``. ``meta.target`` says what a suite judges:

- ``"results"``: the cents engine's results, one row per check of a
  verified table (``results_rows``), as a pandas DataFrame. Counts are
  integers and sums exact decimal strings: no money becomes a float.
- ``"table"``: a live table of the verified database (``meta.schema``,
  default ``public``, and ``meta.table``, catalog names as they are, no
  quoting). GX computes every metric in SQL on the server (SQL pushdown:
  counts, and at most a few unexpected values come back), through a
  SQLAlchemy engine whose every transaction imports the run's own snapshot
  (``SET TRANSACTION SNAPSHOT``) read only, with the run's timeouts, so it
  judges exactly the data the engine verified and can write nothing.
  Numbers in a suite's kwargs are read as ``Decimal`` and bound as
  ``numeric``: a money column is never compared with a float bound.

Every expectation's outcome is recorded in the run's ``judge`` stage; each
failed one is an ``expectation_failed`` finding (error). An expectation
that cannot run (a column that does not exist, a statement timeout, a lost
connection) stops the run with a message naming the suite and the
expectation: a suite that did not run has not passed. GX, pandas and
SQLAlchemy are imported here only, when a run asks for a judgement, so
``--help`` and runs without ``--gx`` never pay for them.
"""

from __future__ import annotations

import json
import logging
import secrets
import warnings
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from verifier import conninfo
from verifier.checks.cents import WARNING_CLASSES
from verifier.config import Config
from verifier.errors import UsageError, VerifierError
from verifier.findings import Finding
from verifier.paths import project_expectations_dir
from verifier.run import Run

TARGETS = ("results", "table")
UNEXPECTED_SHOWN = 10  # unexpected values recorded per expectation


@dataclass(frozen=True)
class Suite:
    path: Path
    name: str
    target: str
    expectations: list[dict[str, Any]]
    schema: str | None = None  # target "table"
    table: str | None = None

    @property
    def relation(self) -> str | None:
        return None if self.table is None else f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class Live:
    """The verified database for ``table`` suites: its URL, and the connection holding the
    run's snapshot (open in a ``REPEATABLE READ, READ ONLY`` transaction)."""

    url: str
    conn: psycopg.Connection
    config: Config


def results_rows(verify_detail: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per check of each verified table, from the ``verify`` stage's detail."""
    rows = []
    for table in verify_detail.get("tables", []):
        for check in table["checks"]:
            pair = check["kind"] == "pair"
            rows.append({
                "table": table["table"], "check": check["check"], "kind": check["kind"],
                "rows": check["rows"], "offending_rows": check["offending_rows"],
                "error_rows": sum(n for k, n in check["classes"].items() if k not in WARNING_CLASSES),
                "cents_sum": check["cents_sum"] if pair else None,
                "expected_sum": check["expected_sum"] if pair else None,
            })
    return rows


def _name(value: Any, path: Path, key: str) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise UsageError(f"The expectation suite {path}: meta.{key} must be a non-empty name, "
                         f"not {value!r}.")
    return value


def load_suite(path: Path) -> Suite:
    """Read and check one suite file; raise ``UsageError`` naming the file and the problem."""
    try:
        # Numbers with a fraction become Decimal: a bound such as 0.01 stays exact.
        spec = json.loads(path.read_text(), parse_float=Decimal)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"Cannot read the expectation suite {path}: {exc}.") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("expectations"), list):
        raise UsageError(f"The expectation suite {path} has no \"expectations\" list.")
    meta = spec.get("meta") or {}
    if not isinstance(meta, dict):
        raise UsageError(f"The expectation suite {path}: \"meta\" must be an object.")
    target = meta.get("target")
    if target not in TARGETS:
        raise UsageError(f"The expectation suite {path} has meta.target {target!r}; "
                         f"expected one of {', '.join(TARGETS)}.")
    for i, e in enumerate(spec["expectations"]):
        if not isinstance(e, dict) or not isinstance(e.get("type"), str) or not isinstance(
                e.get("kwargs", {}), dict):
            raise UsageError(f"The expectation suite {path}: expectation {i} needs a \"type\" and "
                             "\"kwargs\".")
    name = spec.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise UsageError(f"The expectation suite {path}: \"name\" must be a non-empty string.")
    if target == "table":
        return Suite(path, name, target, spec["expectations"],
                     schema=_name(meta.get("schema", "public"), path, "schema"),
                     table=_name(meta.get("table"), path, "table"))
    return Suite(path, name, target, spec["expectations"])


def suite_files(directory: Path | None = None) -> list[Path]:
    return sorted((directory or project_expectations_dir()).glob("*.json"))


def load(user_dir: Path | None = None) -> list[Suite]:
    """The built-in suites, then the user's own from ``user_dir`` (every ``*.json`` there)."""
    files = suite_files()
    if user_dir is not None:
        if not user_dir.is_dir():
            raise UsageError(f"The expectations directory {user_dir} does not exist.")
        mine = suite_files(user_dir)
        if not mine:
            raise UsageError(f"The expectations directory {user_dir} holds no suite (*.json).")
        built_in = {f.resolve() for f in files}
        files += [p for p in mine if p.resolve() not in built_in]
    suites = [load_suite(p) for p in files]
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise UsageError(f"Two expectation suites are named {', '.join(twice)}; suite names must differ.")
    return suites


def _plain(value: Any) -> Any:
    """``value`` for summary.json: numbers with a fraction as their exact text (a float as the
    shortest text that reads back as it), never a float."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "batch_id")


def _gx() -> Any:
    try:
        import great_expectations as gx
    except ImportError:
        raise VerifierError("--gx needs Great Expectations.",
                            hint="pip install 'financial-migration-verifier[gx]'") from None
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return gx, context


def _exception(result: Any) -> str | None:
    """The message of the first exception GX caught while computing ``result``, if any.

    GX 1.x keeps them per metric (``{metric id: {"raised_exception", "exception_message"}}``).
    """
    infos = result.exception_info if isinstance(result.exception_info, dict) else {}
    for info in [infos, *infos.values()]:
        if isinstance(info, dict) and str(info.get("raised_exception")) == "True":
            return str(info.get("exception_message") or "unknown error")
    return None


def judge(run: Run, suites: list[Suite] | None = None, *, live: Live | None = None) -> None:
    """Validate each suite (built-in ones by default); record outcomes, add findings to ``run``.

    ``table`` suites read ``live`` (required when there are any).
    """
    suites = load() if suites is None else suites
    verify = next((s.detail for s in run.stages if s.name == "verify"), None)
    with run.stage("judge") as detail:
        detail["suites"] = [s.path.name for s in suites]
        if verify is None:
            detail["skipped"] = "nothing was verified"
            return
        gx, context = _gx()
        outcomes = detail.setdefault("expectations", [])
        results = [s for s in suites if s.target == "results"]
        if results:
            import pandas as pd  # type: ignore[import-untyped]

            batch = (context.data_sources.add_pandas("verifier").add_dataframe_asset("results")
                     .add_batch_definition_whole_dataframe("all"))
            frame = pd.DataFrame(results_rows(verify), dtype=object)
            for suite in results:
                _validate(run, gx, context, suite, outcomes,
                          lambda b=batch: b.get_batch(batch_parameters={"dataframe": frame}), where=None)
        tables = [s for s in suites if s.target == "table"]
        if tables:
            assert live is not None, "table suites need the verified database"
            detail["live"] = _judge_tables(run, gx, context, tables, live, outcomes)
        detail["failed"] = sum(1 for o in outcomes if not o["success"])


def _exact_bounds(suite: Suite, given: dict[str, Any], kept: dict[str, Any]) -> None:
    """Refuse a number GX would not keep: it holds bounds as floats (``min_value`` 0.01 is the
    double nearest 0.01), so a bound is allowed only if that float reads back as the same decimal."""
    for key, value in given.get("kwargs", {}).items():
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            continue
        back = kept.get(key)
        if isinstance(back, float) and Decimal(repr(back)) != Decimal(value):
            raise UsageError(f"The expectation suite {suite.path}: {given['type']} {key}={value} would be "
                             f"compared as the float {back!r}, which is another number.",
                             hint="GX compares numbers as double precision: give a bound of at most 15 "
                                  "significant digits (a cents column's integer bound is exact below 2^53).")


def _validate(run: Run, gx: Any, context: Any, suite: Suite, outcomes: list[dict[str, Any]],
              get_batch: Any, where: str | None) -> None:
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    gx_suite = gx.ExpectationSuite(name=suite.name)
    for i, e in enumerate(suite.expectations):
        try:
            gx_suite.add_expectation_configuration(
                ExpectationConfiguration(type=e["type"], kwargs=e.get("kwargs", {})))
        except Exception as exc:  # GX raises its own kinds for unknown types and kwargs
            raise UsageError(f"The expectation suite {suite.path}: {e['type']}: {exc}") from None
        if len(gx_suite.expectations) != i + 1:  # GX keeps one of two equal expectations
            raise UsageError(f"The expectation suite {suite.path}: expectation {i} ({e['type']}) "
                             "repeats an earlier one.")
        _exact_bounds(suite, e, dict(gx_suite.expectations[-1].configuration.kwargs))
    gx_suite = context.suites.add(gx_suite)
    # Each result's kwargs as the suite file wrote them (GX turns 0 into 0.0; _exact_bounds
    # has made sure the number it compares with is the same).
    given = [e.get("kwargs", {}) for e in suite.expectations]
    written = dict(zip((e.id for e in gx_suite.expectations), given, strict=True))
    result = get_batch().validate(gx_suite)
    for r in result.results:
        config = r.expectation_config
        assert config is not None
        kwargs = {k: v for k, v in dict(written.get(config.id, config.kwargs)).items() if k != "batch_id"}
        failure = _exception(r)
        if failure is not None:
            raise VerifierError(f"The expectation suite {suite.path}: {config.type} "
                                f"({_kwargs_text(kwargs)}) could not run"
                                f"{' on ' + where if where else ''}: {failure.splitlines()[0]}")
        got = r.result or {}
        outcome = {"suite": suite.name, "table": suite.relation, "type": config.type,
                   "kwargs": _plain(kwargs), "success": bool(r.success),
                   "unexpected_count": got.get("unexpected_count"),
                   "observed_value": None if got.get("observed_value") is None
                   else str(got["observed_value"]),
                   "unexpected": [str(v) for v in got.get("partial_unexpected_list") or []
                                  ][:UNEXPECTED_SHOWN]}
        outcomes.append(outcome)
        if not r.success:
            count = got.get("unexpected_count")
            run.findings.append(Finding(
                rule="expectation_failed", severity="error", table=suite.relation,
                column=kwargs.get("column") if isinstance(kwargs.get("column"), str) else None,
                count=int(count) if count else 1,
                message=f"GX suite {suite.name}: {config.type} ({_kwargs_text(kwargs)}) failed"
                        + (f" for {count} row(s)" if count is not None else
                           f" (observed {outcome['observed_value']})"),
                detail=outcome,
            ).as_json())


# -- table suites: GX on the live database, in the run's snapshot --------------------------------------


def _check_table(live: Live, suite: Suite) -> None:
    """The suite's table exists in the run's snapshot and may be read; else a clear error."""
    assert suite.schema is not None and suite.table is not None
    ident = sql.Identifier(suite.schema, suite.table).as_string(live.conn)
    with conninfo.reading(live.url, live.config.statement_timeout_s):
        row = live.conn.execute("SELECT c.oid, has_table_privilege(c.oid, 'SELECT') FROM pg_class c "
                                "WHERE c.oid = to_regclass(%s)", (ident,)).fetchone()
    where = conninfo.describe(live.url)
    if row is None:
        raise UsageError(f"The expectation suite {suite.path} names the table {suite.relation}, "
                         f"which does not exist in {where}.")
    if not row[1]:
        raise UsageError(f"The expectation suite {suite.path} names the table {suite.relation}, "
                         f"which the role may not SELECT from in {where}.",
                         hint="GRANT SELECT on it to the verifier's role, or remove the suite.")


def _session(live: Live, schema: str) -> psycopg.Connection:
    """A new connection for GX: read only, our timeouts, ``schema`` first on the search path."""
    conn = conninfo.connect(live.url, what="target database for GX", autocommit=True)
    try:
        settings = {
            "default_transaction_read_only": "on",
            "default_transaction_isolation": "repeatable read",
            "statement_timeout": f"{int(live.config.statement_timeout_s * 1000)}ms",
            "lock_timeout": f"{int(live.config.lock_timeout_s * 1000)}ms",
            "search_path": sql.Identifier(schema).as_string(conn),
        }
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        conn.autocommit = False
    except BaseException:
        conn.close()
        raise
    return conn


def _judge_tables(run: Run, gx: Any, context: Any, suites: list[Suite], live: Live,
                  outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """Run ``suites`` on live tables in ``live``'s snapshot; how much GX read, for the report."""
    from sqlalchemy import event

    with conninfo.reading(live.url, live.config.statement_timeout_s):
        row = live.conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    snapshot_id = str(row[0])
    importing = sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)).as_string(live.conn)
    stats: dict[str, int] = {"statements": 0, "rows_fetched": 0, "transactions": 0}
    for suite in suites:
        _check_table(live, suite)
    for suite in suites:
        assert suite.schema is not None and suite.table is not None
        schema = suite.schema
        # The URL only names the dialect: connections come from the creator, so GX's
        # configuration never holds the target's address or password.
        source = context.data_sources.add_postgres(
            f"live_{secrets.token_hex(4)}", connection_string="postgresql+psycopg://verifier@verifier/verifier",
            kwargs={"creator": lambda s=schema: _session(live, s), "pool_pre_ping": False})
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
                batch = source.add_table_asset(suite.name, table_name=table).add_batch_definition_whole_table(
                    "all")
                _validate(run, gx, context, suite, outcomes, batch.get_batch, where=suite.relation)
        except VerifierError:
            raise
        except Exception as exc:  # GX wraps connection and SQL failures in its own kinds
            raise VerifierError(f"The expectation suite {suite.path} could not run on {suite.relation}: "
                                f"{conninfo.scrub(str(exc), live.url).splitlines()[0]}") from None
        finally:
            engine.dispose()
        if source.get_execution_engine().engine is not engine:  # GX made a second engine: not ours
            raise AssertionError("GX read through an engine that does not import the run's snapshot")
    return {"snapshot": snapshot_id, **stats}
