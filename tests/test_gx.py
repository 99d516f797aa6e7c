"""Users' own Great Expectations suites on live tables (``--expectations DIR``), on a real server.

GX computes in SQL on the server (few rows come back), reads the run's own
snapshot, works as a SELECT-only role, and every suite that cannot run is a
clear error (exit 2), never a pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import psycopg
import pytest
from psycopg import sql

from verifier import judge
from verifier.cents import engine
from verifier.config import Config
from verifier.jobs.lifecycle import new_run
from verifier.pg.snapshot import open_snapshot

from .conftest import only_run, reader_role, run_cli, run_summary, table_digests

ROWS = 50_000
NULL_CENTS = (11, 222, 3333)  # rows whose cents are NULL
NEGATIVE = (44, 555)  # rows whose cents are negative (and so is the original)


@pytest.fixture
def shop(fresh_db: str) -> str:
    """A mixed-case schema and table of ``ROWS`` tips, with known defects."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Shop"')
        conn.execute('CREATE TABLE "Shop"."Tips" (id bigint PRIMARY KEY, amount numeric(12,2), '
                     'amount_cents bigint, note text)')
        conn.execute('INSERT INTO "Shop"."Tips" SELECT g, (g %% 1000 + 1) / 100.0, g %% 1000 + 1, '
                     "'tip ' || g FROM generate_series(1, %s) g", (ROWS,))
        conn.execute('UPDATE "Shop"."Tips" SET amount_cents = NULL WHERE id = ANY(%s)', (list(NULL_CENTS),))
        conn.execute('UPDATE "Shop"."Tips" SET amount = -amount, amount_cents = -amount_cents '
                     "WHERE id = ANY(%s)", (list(NEGATIVE),))
        conn.execute('GRANT USAGE ON SCHEMA "Shop" TO PUBLIC')
    return fresh_db


def _suite(directory: Path, name: str, expectations: list[dict[str, Any]], **meta: Any) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.json"
    body = {"name": name, "meta": {"target": "table", "schema": "Shop", "table": "Tips", **meta},
            "expectations": expectations}
    # Bounds are written as JSON numbers with a fraction, as a user would.
    path.write_text(json.dumps(body).replace('"@', "").replace('@"', ""))
    return path


TIPS_SUITE = [
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "amount_cents"}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "amount_cents", "min_value": 0}},
    {"type": "expect_column_values_to_be_between",
     "kwargs": {"column": "amount", "min_value": "@-10.00@", "max_value": "@10.00@"}},
    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}},
]


def _judged(data: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in data["stages"] if s["name"] == "judge")


def test_user_suite_runs_on_the_live_table_in_sql(shop: str, tmp_path: Path) -> None:
    _suite(tmp_path / "mine", "tips_live", TIPS_SUITE)
    result = run_cli("verify-cents", "--db", shop, "--expectations", str(tmp_path / "mine"),
                     "--report-dir", str(tmp_path / "r"))
    assert result.code == 1, result.stderr
    data = run_summary(tmp_path / "r")
    judged = _judged(data)
    assert judged["suites"] == ["cents_results.json", "tips_live.json"]
    mine = [e for e in judged["expectations"] if e["suite"] == "tips_live"]
    assert [(e["type"], e["success"], e["unexpected_count"]) for e in mine] == [
        ("expect_column_values_to_not_be_null", False, len(NULL_CENTS)),
        ("expect_column_values_to_be_between", False, len(NEGATIVE)),
        ("expect_column_values_to_be_between", True, 0),
        ("expect_column_values_to_be_unique", True, 0),
    ]
    assert all(e["table"] == "Shop.Tips" for e in mine)
    # The kwargs as the suite wrote them, not as GX holds them (10.0, 0.0).
    assert mine[2]["kwargs"] == {"column": "amount", "min_value": "-10.00", "max_value": "10.00"}
    assert mine[1]["kwargs"] == {"column": "amount_cents", "min_value": 0}
    assert sorted(mine[1]["unexpected"]) == sorted(str(-(k % 1000 + 1)) for k in NEGATIVE)
    failed = [f for f in data["findings"] if f["rule"] == "expectation_failed" and f["table"] == "Shop.Tips"]
    assert [(f["column"], f["count"], f["severity"]) for f in failed] == [
        ("amount_cents", len(NULL_CENTS), "error"), ("amount_cents", len(NEGATIVE), "error")]
    assert "(column=amount_cents, min_value=0) failed" in failed[1]["message"], failed[1]["message"]
    # SQL pushdown: 50,000 rows were judged, a handful came back (counts, the few
    # unexpected values, the catalog); every transaction imported the run's snapshot.
    live = judged["live"]
    assert live["snapshot"] and live["transactions"] >= 4
    assert 0 < live["rows_fetched"] < 100, live
    # junit.xml: one case per expectation, failed by its finding.
    cases = ElementTree.parse(only_run(tmp_path / "r") / "junit.xml").getroot().iter("testcase")
    gx_cases = [(c.get("name", "").split(" (")[0], c.find("failure") is not None)
                for c in cases if c.get("classname") == "gx.tips_live"]
    assert gx_cases == [(e["type"], not e["success"]) for e in mine]
    # The engine, in the same run, explains the same rows its own way.
    assert {f["rule"] for f in data["findings"]} >= {"null_introduced", "expectation_failed"}


def test_user_suite_reads_the_runs_snapshot_not_later_writes(shop: str, tmp_path: Path) -> None:
    """A NULL committed after the run's snapshot is not seen; a later snapshot sees it."""
    suite = judge.load_suite(_suite(tmp_path / "mine", "clean_ids", [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "note"}}]))
    config = Config()
    outcomes = []
    for _ in range(2):
        run = new_run("verify-cents --db", tmp_path / "r")
        with open_snapshot(shop, config) as conn:
            engine.run_checks(run, conn, config, url=shop)  # the snapshot is taken here
            with psycopg.connect(shop, autocommit=True) as writer:
                writer.execute('UPDATE "Shop"."Tips" SET note = NULL WHERE id = 7')
            judge.judge(run, [suite], live=judge.Live(shop, conn, config))
        outcomes.append(next(s.detail for s in run.stages if s.name == "judge")["expectations"][0])
    assert (outcomes[0]["success"], outcomes[0]["unexpected_count"]) == (True, 0)
    assert (outcomes[1]["success"], outcomes[1]["unexpected_count"]) == (False, 1)


def test_select_only_role_runs_user_suites_and_writes_nothing(shop: str, tmp_path: Path) -> None:
    _suite(tmp_path / "mine", "tips_live", TIPS_SUITE)
    before = table_digests(shop)
    grants = (sql.SQL('GRANT SELECT ON ALL TABLES IN SCHEMA "Shop" TO {}'),
              sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on"))
    with reader_role(shop, *grants) as reader:
        result = run_cli("verify-cents", "--db", reader, "--expectations", str(tmp_path / "mine"),
                         "--report-dir", str(tmp_path / "r"))
    assert result.code == 1, result.stderr
    assert len([f for f in run_summary(tmp_path / "r")["findings"] if f["rule"] == "expectation_failed"
                and f["table"] == "Shop.Tips"]) == 2
    assert table_digests(shop) == before


def test_a_table_the_role_may_not_read_is_a_clear_error(shop: str, tmp_path: Path) -> None:
    _suite(tmp_path / "mine", "private", TIPS_SUITE[:1], table="Private")
    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute('CREATE TABLE "Shop"."Private" (id bigint PRIMARY KEY, amount_cents bigint)')
    with reader_role(shop, sql.SQL('GRANT SELECT ON "Shop"."Tips" TO {}')) as reader:
        result = run_cli("verify-cents", "--db", reader, "--expectations", str(tmp_path / "mine"),
                         "--report-dir", str(tmp_path / "r"))
    assert result.code == 2, result.stderr
    assert "private.json names the table Shop.Private, which the role may not SELECT from" in result.stderr
    assert "Traceback" not in result.stderr
    assert run_summary(tmp_path / "r")["status"] == "error"


@pytest.mark.parametrize("case, expectations, meta, message", [
    ("missing table", TIPS_SUITE[:1], {"table": "Gone"},
     "names the table Shop.Gone, which does not exist in"),
    ("missing column", [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "nope"}}], {},
     'expect_column_values_to_not_be_null (column=nope) could not run on Shop.Tips: '
     'Error: The column "nope" in BatchData does not exist.'),
    ("inexact bound", [{"type": "expect_column_values_to_be_between",
                        "kwargs": {"column": "amount", "max_value": "@12345678901234567.01@"}}], {},
     "max_value=12345678901234567.01 would be compared as the float 1.2345678901234568e+16"),
    ("unknown expectation", [{"type": "expect_the_unexpected", "kwargs": {}}], {},
     "expect_the_unexpected"),
    ("no table", TIPS_SUITE[:1], {"table": None}, "meta.table must be a non-empty name"),
    ("repeated", TIPS_SUITE[:1] * 2, {},
     "expectation 1 (expect_column_values_to_not_be_null) repeats an earlier one"),
])
def test_a_suite_that_cannot_run_is_a_clear_error(shop: str, tmp_path: Path, case: str,
                                                  expectations: list[dict[str, Any]], meta: dict[str, Any],
                                                  message: str) -> None:
    _suite(tmp_path / "mine", "bad", expectations, **meta)
    result = run_cli("verify-cents", "--db", shop, "--expectations", str(tmp_path / "mine"),
                     "--report-dir", str(tmp_path / "r"))
    assert result.code == 2, (case, result.stdout, result.stderr)
    assert message in result.stderr, (case, result.stderr)
    assert str(tmp_path / "mine" / "bad.json") in result.stderr
    assert "Traceback" not in result.stderr


def test_an_empty_or_missing_expectations_directory_is_a_clear_error(shop: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for directory, message in ((tmp_path / "empty", "holds no suite"), (tmp_path / "nope", "does not exist")):
        result = run_cli("verify-cents", "--db", shop, "--expectations", str(directory),
                         "--report-dir", str(tmp_path / "r"))
        assert result.code == 2 and message in result.stderr, result.stderr
