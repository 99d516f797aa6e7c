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
failed one is an ``expectation_failed`` finding (error). ``suites.py``
reads the suite files and validates one suite; ``live.py`` runs the table
suites. An expectation
that cannot run (a column that does not exist, a statement timeout, a lost
connection) stops the run with a message naming the suite and the
expectation: a suite that did not run has not passed. GX, pandas and
SQLAlchemy are imported here only, when a run asks for a judgement, so
``--help`` and runs without ``--gx`` never pay for them.
"""

from __future__ import annotations

from typing import Any

from verifier.findings import rule
from verifier.judge.live import Live, judge_tables
from verifier.judge.suites import Suite, gx_context, load, load_suite, prepare, record
from verifier.run import Run

__all__ = ["Live", "Suite", "judge", "load", "load_suite", "results_rows"]


def results_rows(verify_detail: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per check of each verified table, from the ``verify`` stage's detail."""
    rows = []
    for table in verify_detail.get("tables", []):
        for check in table["checks"]:
            pair = check["kind"] == "pair"
            rows.append({
                "table": table["table"], "check": check["check"], "kind": check["kind"],
                "rows": check["rows"], "offending_rows": check["offending_rows"],
                "error_rows": sum(n for k, n in check["classes"].items() if rule(k).severities[0] == "error"),
                "cents_sum": check["cents_sum"] if pair else None,
                "expected_sum": check["expected_sum"] if pair else None,
            })
    return rows


def judge(run: Run, suites: list[Suite] | None = None, *, live: Live | None = None) -> None:
    """Validate each suite (built-in ones by default); record outcomes, add findings to ``run``.

    ``table`` suites read ``live`` (required when there are any).
    """
    suites = load() if suites is None else suites
    verify = run.detail("verify")
    with run.stage("judge") as detail:
        detail["suites"] = [s.path.name for s in suites]
        if verify is None:
            detail["skipped"] = "nothing was verified"
            return
        run.advanced("judge", 0, len(suites), "suites", now="loading Great Expectations")
        gx, context = gx_context()
        outcomes = detail.setdefault("expectations", [])
        results = [s for s in suites if s.target == "results"]
        if results:
            import pandas as pd  # type: ignore[import-untyped]

            batch = (context.data_sources.add_pandas("verifier").add_dataframe_asset("results")
                     .add_batch_definition_whole_dataframe("all"))
            frame = pd.DataFrame(results_rows(verify), dtype=object)
            for n, suite in enumerate(results):
                run.advanced("judge", n, len(suites), "suites", now=suite.name)
                prepared = prepare(gx, context, suite)
                record(run, prepared, batch.get_batch(batch_parameters={"dataframe": frame}).validate(
                    prepared.gx_suite), outcomes, where=None)
        tables = [s for s in suites if s.target == "table"]
        if tables:
            assert live is not None, "table suites need the verified database"
            detail["live"] = judge_tables(run, gx, context, tables, live, outcomes)
        detail["failed"] = sum(1 for o in outcomes if not o["success"])
