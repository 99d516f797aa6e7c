"""No unearned pass: the inputs of public bug reports of teams doing this migration, each a whole database.

Each case is the issue's own SQL, run through ``verify-cents --db`` as a
user would, with the verdict and the figures a payments engineer expects:
a real (float4) original read at its shortest round-trip decimal, not
PostgreSQL's six digits; four rows one cent off each way reported as 4
cents absolute and 0 net; a half-cent that a tie rule rounds to 0 called
``rounding_mode``, not ``missing_backfill``; a table's ``sum_mismatch``
restating its rows without adding to the headline. The exact binary value
of a double, decoded in SQL, agrees with Python's ``Decimal(float)``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from verifier.cents.sql import float_exact

from .conftest import only_run, run_cli


def _verify(dsn: str, tmp_path: Path, setup: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(setup)
    result = run_cli("verify-cents", "--db", dsn, "--report-dir", str(tmp_path / "r"), *extra)
    assert "Traceback" not in result.stderr, result.stderr
    return result.code, json.loads((only_run(tmp_path / "r") / "summary.json").read_text()), result.stderr


def _by_rule(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["rule"]: f for f in data["findings"]}


def test_e_a_real_original_is_read_at_its_shortest_decimal(fresh_db: str, tmp_path: Path) -> None:
    # 12345.67 as real is 12345.669921875; PostgreSQL's cast to numeric gives 12345.7 (six digits).
    code, data, _ = _verify(fresh_db, tmp_path, "CREATE TABLE t (id int PRIMARY KEY, amount real, "
                            "amount_cents bigint); INSERT INTO t VALUES (1, 12345.67, 1234570), "
                            "(2, 12345.67, 1234567), (3, 1.005, 100), (4, 1.005, 101);")
    assert code == 1
    rows = {s["key"]["id"]: f["rule"] for f in data["findings"] for s in f["sample"]}
    # 1234570 is what the six-digit cast gives: float_artifact. 1234567 is right. 1.005 as a double is
    # 1.00499999999999989...: 100 is what its binary value rounds to, 101 what its decimal rounds to.
    assert rows == {1: "float_artifact", 3: "float_artifact", 4: "sub_cent_loss"}
    [warning] = [f for f in data["findings"] if f["rule"] == "float_artifact" and f["severity"] == "warning"]
    assert "shortest round-trip decimal" in warning["message"] and warning["column"] == "amount"


def test_f_four_rows_a_cent_off_each_way_are_four_cents_not_zero(fresh_db: str, tmp_path: Path) -> None:
    code, data, _ = _verify(fresh_db, tmp_path, "CREATE TABLE token_txns (id int PRIMARY KEY, "
                            "amount numeric(12,4) NOT NULL, amount_cents bigint); INSERT INTO token_txns "
                            "VALUES (1,0.0250,2),(2,-0.0250,-2),(3,0.0450,4),(4,-0.0450,-4);")
    assert code == 1
    rounding = _by_rule(data)["rounding_mode"]
    assert (rounding["count"], rounding["cents_impact"], rounding["cents_impact_net"]) == (4, 4, 0)
    assert data["totals"] == {"offending_rows": 4, "cents_impact": 4, "cents_impact_net": 0}
    report = (only_run(tmp_path / "r") / "report.html").read_text()
    assert "cents impact, absolute (sum of |difference|)" in report and "cents impact, net" in report


def test_a_half_cent_a_tie_rule_rounds_to_zero_is_rounding_mode(fresh_db: str, tmp_path: Path) -> None:
    code, data, _ = _verify(fresh_db, tmp_path, "CREATE TABLE fees (id int PRIMARY KEY, "
                            "amount numeric(12,3) NOT NULL, amount_cents bigint); INSERT INTO fees VALUES "
                            "(1, 0.005, 0), (2, -0.005, 0), (3, 0.025, 2), (4, 0.25, 0), (5, 0.004, 0);")
    assert code == 1
    classes = {s["key"]["id"]: f["rule"] for f in data["findings"] for s in f["sample"]}
    # Ties under half-even (0.005 -> 0, 0.025 -> 2); 0.25 -> 0 is a backfill that never ran; 0.004 -> 0
    # is right under the rounding mode, with a fraction of a cent lost.
    assert classes == {1: "rounding_mode", 2: "rounding_mode", 3: "rounding_mode", 4: "missing_backfill",
                       5: "sub_cent_loss"}


def test_the_headline_counts_each_row_and_each_cent_once(fresh_db: str, tmp_path: Path) -> None:
    # Five wrong rows in one column, two of them wrong in a second column too: a sum_mismatch per
    # column restates them.
    code, data, _ = _verify(fresh_db, tmp_path, """
        CREATE TABLE payouts (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint,
                              fee numeric(12,2), fee_cents bigint);
        INSERT INTO payouts SELECT g, g, g * 100, 1, 100 FROM generate_series(1, 20) g;
        UPDATE payouts SET amount_cents = amount_cents + 7 WHERE id <= 5;
        UPDATE payouts SET fee_cents = 0 WHERE id <= 2;""")
    assert code == 1
    sums = {f["column"]: f for f in data["findings"] if f["rule"] == "sum_mismatch"}
    assert {c: (f["restates"], f["cents_impact"], f["cents_impact_net"]) for c, f in sums.items()} == {
        "amount_cents": ("the row findings of public.payouts.amount_cents", 35, 35),
        "fee_cents": ("the row findings of public.payouts.fee_cents", 200, -200)}
    # 5 rows: 5 x 7 cents in amount_cents, 2 x 100 cents missing in fee_cents.
    assert data["totals"] == {"offending_rows": 5, "cents_impact": 5 * 7 + 2 * 100,
                              "cents_impact_net": 5 * 7 - 2 * 100}
    verify = next(s for s in data["stages"] if s["name"] == "verify")
    assert [(t["offending_rows"], t["offenders"]) for t in verify["tables"]] == [(5, 7)]


finite_doubles = st.floats(allow_nan=False, allow_infinity=False, width=64)
reals = st.floats(allow_nan=False, allow_infinity=False, width=32)  # widened to float8: exact


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(finite_doubles, reals), min_size=1, max_size=30))
def test_the_exact_binary_value_decoded_in_sql_is_pythons(fresh_db: str, values: list[float]) -> None:
    with psycopg.connect(fresh_db) as conn:
        exact = float_exact(sql.SQL("u.f"))
        query = sql.SQL("SELECT {}::text FROM unnest(%s::float8[]) AS u(f)").format(exact)
        got = [Decimal(r[0]) for r in conn.execute(query, (values,)).fetchall()]
    assert got == [Decimal(v) for v in values]  # Decimal(float) is the float's exact value
