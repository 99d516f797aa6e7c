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

import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from verifier.cents.sql import float_exact

from .conftest import only_run, pg_dump_custom, run_cli


def _verify(dsn: str, tmp_path: Path, setup: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(setup)
    result = run_cli("verify-cents", "--db", dsn, "--report-dir", str(tmp_path / "r"), *extra)
    assert "Traceback" not in result.stderr, result.stderr
    return result.code, json.loads((only_run(tmp_path / "r") / "summary.json").read_text()), result.stderr


def _offenders(report_dir: Path) -> list[dict[str, str]]:
    with (only_run(report_dir) / "offenders.csv").open() as fh:
        return list(csv.DictReader(fh))


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


def _stage(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in data["stages"] if s["name"] == name)


def test_a_an_integer_cents_column_is_verified_and_its_headroom_stated(fresh_db: str, tmp_path: Path) -> None:
    code, data, _ = _verify(fresh_db, tmp_path, """
        CREATE TABLE invoices (id int PRIMARY KEY, amount numeric(12,2) NOT NULL, amount_cents bigint);
        INSERT INTO invoices VALUES (1, 1.00, 100);
        CREATE TABLE coupons (id int PRIMARY KEY, amount numeric(12,2) NOT NULL, amount_cents integer);
        INSERT INTO coupons VALUES (1, 123.45, 12344);""")
    assert code == 1
    found = {(f["rule"], f["table"], f["column"]) for f in data["findings"]}
    # Checked at last (12344 is no rounding of 12345), with no untrue "unpaired" warnings.
    assert ("value_mismatch", "public.coupons", "amount_cents") in found
    assert not [f for f in data["findings"] if f["rule"] in ("unpaired_column", "unverified_minor_units")]
    [narrow] = [f for f in data["findings"] if f["rule"] == "narrow_minor_units"]
    assert narrow["detail"] == {"type": "integer", "largest": 12344, "limit": 2147483647}
    assert "21,474,836.47" in narrow["message"]


def test_b_a_text_amount_is_never_passed_over(fresh_db: str, tmp_path: Path) -> None:
    setup = """CREATE TABLE advances (id int PRIMARY KEY, requested_amount text NOT NULL,
                                     requested_amount_cents bigint);
               INSERT INTO advances VALUES (1, '1,072.50', 100), (2, '$2,000.00', 200000), (3, 'n/a', 0),
                                           (4, '(15.25)', -1525), (5, ' USD 7 ', 700), (6, '-$5.00', -500),
                                           (7, '1.072,50', 107250), (8, '12$34', 1234), (9, '1,00', 100),
                                           (10, '1,2,3,4', 1234), (11, 'USD-USD5', -500);"""
    code, data, _ = _verify(fresh_db, tmp_path, setup)
    assert code == 1
    [unverified] = [f for f in data["findings"] if f["rule"] == "unverified_minor_units"]
    assert unverified["column"] == "requested_amount_cents"
    assert "its source requested_amount is text: give it a parse rule in [[text_amounts]]" in \
        unverified["message"]
    # With its parse rule, every row is read: one wrong, six unparsable, four right.
    (tmp_path / "verifier.toml").write_text('[[text_amounts]]\ncolumn = "advances.requested_amount"\n')
    result = run_cli("verify-cents", "--db", fresh_db, "--config", str(tmp_path / "verifier.toml"),
                     "--report-dir", str(tmp_path / "parsed"))
    assert result.code == 1, result.stderr
    parsed = json.loads((only_run(tmp_path / "parsed") / "summary.json").read_text())
    rows = {json.loads(r["row_key"])["id"]: r["rule"] for r in _offenders(tmp_path / "parsed")}
    # Separators and symbols only where an amount has them: a European or garbled text is no amount.
    assert rows == {1: "value_mismatch", 3: "unparsable_original", 7: "unparsable_original",
                    8: "unparsable_original", 9: "unparsable_original", 10: "unparsable_original",
                    11: "unparsable_original"}
    pairing = _stage(parsed, "pairs")["pairing"]
    assert [(p["source"], p["target"], p["rule"]) for p in pairing] == [
        ("requested_amount", "requested_amount_cents", "X / X_cents")]


def test_c_an_identity_holds_on_a_table_without_decimals(fresh_db: str, tmp_path: Path) -> None:
    setup = """CREATE TABLE payments (id int PRIMARY KEY, amount_cents bigint, fee_cents bigint,
                                     net_amount_cents bigint);
               INSERT INTO payments VALUES (1, 1000, 30, 500), (2, 1000, 30, 970);"""
    config = tmp_path / "verifier.toml"
    config.write_text('[[identities]]\ntable = "payments"\ntotal = "amount_cents"\n'
                      'parts = ["fee_cents", "net_amount_cents"]\n')
    code, data, _ = _verify(fresh_db, tmp_path, setup, "--config", str(config))
    assert code == 1
    [identity] = [f for f in data["findings"] if f["rule"] == "identity_violation"]
    assert identity["count"] == 1 and identity["sample"][0]["key"] == {"id": 1}
    # The decimals are gone: no cents column here can be verified, and the run says so.
    assert {f["column"] for f in data["findings"] if f["rule"] == "unverified_minor_units"} == {
        "amount_cents", "fee_cents", "net_amount_cents"}
    report = (only_run(tmp_path / "r") / "report.html").read_text().replace("<wbr>", "")  # names' breaks
    inventory = report[report.index('<h2 id="inventory">'):report.index('<h2 id="tables">')]
    assert "Not verified by this run" in inventory and "public.payments.net_amount_cents" in inventory
    assert "unverified <b>3</b>" in inventory
    config.write_text('[[identities]]\ntable = "paymnets"\ntotal = "amount_cents"\n'
                      'parts = ["a", "b"]\n')
    typo = run_cli("verify-cents", "--db", fresh_db, "--config", str(config),
                   "--report-dir", str(tmp_path / "t"))
    assert typo.code == 2 and "The configured identity names table public.paymnets" in typo.stderr
    assert "Traceback" not in typo.stderr


def test_names_comments_domains_and_types_teams_use(fresh_db: str, tmp_path: Path) -> None:
    code, data, _ = _verify(fresh_db, tmp_path, """
        CREATE DOMAIN usd AS numeric(12,2) CHECK (VALUE >= 0);
        CREATE DOMAIN minor_units AS bigint;
        CREATE TABLE shop_sales (id int PRIMARY KEY,
            price_usd numeric(10,2), price_cents bigint,            -- X_usd / X_cents
            tip_amount numeric(10,2), tip_cents integer,            -- X_amount / X_cents
            fee numeric(10,2), fee_in_cents bigint,                 -- X / X_in_cents
            total usd, total_minor_units numeric(18,0),             -- a domain source, numeric scale 0
            list_price money, list_price_minor bigint,              -- PostgreSQL's money type
            payout_value numeric(10,2), paid minor_units,           -- a domain target, by its comment
            refund numeric(10,2), refund_usd numeric(10,2), refund_cents bigint);  -- two sources: none
        COMMENT ON COLUMN shop_sales.paid IS 'payout_value, in cents';
        INSERT INTO shop_sales VALUES (1, 9.99, 999, 1.50, 150, 0.30, 30, 12.00, 1200, 5.25, 525,
                                      7.77, 777, 1.00, 1.00, 100);""")
    assert code == 1
    pairing = {p["target"]: (p["source"], p["rule"]) for p in _stage(data, "pairs")["pairing"]}
    assert pairing == {
        "price_cents": ("price_usd", "X_usd / X_cents"), "tip_cents": ("tip_amount", "X_amount / X_cents"),
        "fee_in_cents": ("fee", "X / X_in_cents"), "total_minor_units": ("total", "X / X_minor_units"),
        "list_price_minor": ("list_price", "X / X_minor"), "paid": ("payout_value", "its comment names it")}
    errors = [f for f in data["findings"] if f["severity"] == "error"]
    assert [(f["rule"], f["column"]) for f in errors] == [("unverified_minor_units", "refund_cents")]
    assert "two or more sources could be its: refund, refund_usd" in errors[0]["message"]
    counts = _stage(data, "pairs")["inventory"]["counts"]
    assert (counts["verified_minor_units"], counts["verified_source"], counts["unverified"]) == (6, 6, 3)


def test_d_each_row_in_its_own_currencys_minor_unit(fresh_db: str, tmp_path: Path) -> None:
    code, data, _ = _verify(fresh_db, tmp_path, """
        CREATE TABLE orders (id int PRIMARY KEY, currency char(3) NOT NULL, amount numeric(14,3) NOT NULL,
                             amount_cents bigint);
        INSERT INTO orders VALUES (1,'USD',9.99,999),(2,'JPY',80,80),(3,'JPY',80,8000),(4,'JPY',1500,1500),
                                  (5,'KWD',1.234,1234),(6,'kwd',2.5,2500),(7,'XAU',1,100),(8,'ZZZ',1,100);""")
    assert code == 1
    rows = {s["key"]["id"]: f["rule"] for f in data["findings"] for s in f["sample"]}
    # JPY has no minor unit, KWD three (lower case read as upper); gold has none, ZZZ is no code.
    assert rows == {3: "scale_error", 7: "unknown_currency", 8: "unknown_currency"}
    pairs_stage = _stage(data, "pairs")
    [entry] = [e for e in pairs_stage["inventory"]["verified"] if e["column"].endswith("amount_cents")]
    assert "minor unit: each row's currency (currency, ISO 4217)" in entry["why"]
    assert pairs_stage["iso4217_published"] >= "2026-01-01"


def test_a_fixed_exponent_and_a_configured_currency_column(fresh_db: str, tmp_path: Path) -> None:
    config = tmp_path / "verifier.toml"
    config.write_text('[[minor_units]]\ntable = "yen_sales"\nexponent = 0\n'
                      '[[minor_units]]\ntable = "fx"\ncurrency_column = "ccy"\n')
    code, data, _ = _verify(fresh_db, tmp_path, """
        CREATE TABLE yen_sales (id int PRIMARY KEY, amount numeric(12,0), amount_minor bigint);
        INSERT INTO yen_sales VALUES (1, 500, 500), (2, 700, 70000);
        CREATE TABLE fx (id int PRIMARY KEY, ccy text, amount numeric(14,3), amount_minor bigint);
        INSERT INTO fx VALUES (1, 'BHD', 1.5, 1500), (2, 'EUR', 1.5, 150), (3, NULL, 1, 100);""",
        "--config", str(config))
    assert code == 1
    rows = {(f["table"], s["key"]["id"]): f["rule"] for f in data["findings"] for s in f["sample"]}
    assert rows == {("public.yen_sales", 2): "scale_error", ("public.fx", 3): "unknown_currency"}
    config.write_text('[[minor_units]]\ntable = "fx"\ncurrency_column = "currency"\n')
    missing = run_cli("verify-cents", "--db", fresh_db, "--config", str(config),
                      "--report-dir", str(tmp_path / "m"))
    assert missing.code == 2
    assert "The configured minor_units on public.fx names column(s) currency, which do not exist" in \
        missing.stderr


def test_rows_a_later_set_not_null_will_reject(fresh_db: str, tmp_path: Path, make_db: Any,
                                               server_dsn: str) -> None:
    setup = """CREATE TABLE wallets (id int PRIMARY KEY, balance numeric(12,2), balance_cents bigint);
               INSERT INTO wallets VALUES (1, 5.00, 500), (2, NULL, NULL), (3, NULL, NULL);"""
    config = tmp_path / "verifier.toml"
    config.write_text('not_null = ["wallets.balance_cents"]\n')
    code, data, _ = _verify(fresh_db, tmp_path, setup, "--config", str(config))
    assert code == 1
    [violation] = [f for f in data["findings"] if f["rule"] == "constraint_violation"]
    assert (violation["column"], violation["count"]) == ("balance_cents", 2)
    assert "configured not_null" in violation["message"]
    # A table without pairs is checked too; a name that does not exist is exit 2.
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE payouts (id int PRIMARY KEY, payee_id int); "
                     "INSERT INTO payouts VALUES (1, NULL)")
    config.write_text('not_null = ["payouts.payee_id"]\n')
    run_cli("verify-cents", "--db", fresh_db, "--config", str(config), "--report-dir", str(tmp_path / "p"))
    payouts = json.loads((only_run(tmp_path / "p") / "summary.json").read_text())
    violations = [(f["table"], f["column"]) for f in payouts["findings"]
                  if f["rule"] == "constraint_violation"]
    assert violations == [("public.payouts", "payee_id")]
    config.write_text('not_null = ["wallets.balance_cnets"]\n')
    typo = run_cli("verify-cents", "--db", fresh_db, "--config", str(config),
                   "--report-dir", str(tmp_path / "t"))
    assert typo.code == 2 and "names column(s) balance_cnets" in typo.stderr
    # In a rehearsal, a pending migration announces it: 302 stops the series before 303 runs.
    source = make_db()
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE TABLE wallets (id int PRIMARY KEY, balance numeric(12,2)); "
                     "INSERT INTO wallets VALUES (1, 5.00), (2, NULL), (3, NULL), (4, 1.00);")
    dump = tmp_path / "wallets.dump"
    pg_dump_custom(source, dump)
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "300_add.sql").write_text("ALTER TABLE wallets ADD COLUMN balance_cents bigint;\n")
    (migrations / "301_fill.sql").write_text("UPDATE wallets SET balance_cents = round(balance * 100);\n")
    (migrations / "302_gate.sql").write_text("DO $$ BEGIN RAISE EXCEPTION 'gate closed'; END $$;\n")
    (migrations / "303_enforce.sql").write_text(
        "BEGIN;\nALTER TABLE public.wallets ALTER COLUMN balance_cents SET NOT NULL;\nCOMMIT;\n")
    result = run_cli("verify-cents", "--snapshot", str(dump), "--scratch", server_dsn, "--migrations",
                     str(migrations), "--skip-rule-checks", "--report-dir", str(tmp_path / "rehearsal"))
    assert result.code == 1, result.stderr
    rehearsed = json.loads((only_run(tmp_path / "rehearsal") / "summary.json").read_text())
    [violation] = [f for f in rehearsed["findings"] if f["rule"] == "constraint_violation"]
    assert (violation["column"], violation["count"]) == ("balance_cents", 2)
    assert "303_enforce.sql line 2, not applied" in violation["message"]


def test_what_the_target_controls_does_not_change_the_verdict(fresh_db: str, tmp_path: Path) -> None:
    """Row level security that would hide wrong rows is an error naming the table; an operator someone
    defined in public for bigint = numeric is never the one our comparison uses."""
    from .conftest import reader_role

    setup = """CREATE TABLE pay (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint);
               INSERT INTO pay VALUES (1, 1.00, 100), (2, 2.00, 2);
               CREATE FUNCTION public.lie(bigint, numeric) RETURNS boolean LANGUAGE sql IMMUTABLE
                 AS 'SELECT true';
               CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = public.lie);"""
    code, data, _ = _verify(fresh_db, tmp_path, setup)
    assert code == 1 and [f["rule"] for f in data["findings"] if f["severity"] == "error"][0] == "scale_error"
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE pay ENABLE ROW LEVEL SECURITY; "
                     "CREATE POLICY honest_looking ON pay FOR SELECT USING (amount_cents = amount * 100)")
    with reader_role(fresh_db) as reader:
        result = run_cli("verify-cents", "--db", reader, "--report-dir", str(tmp_path / "rls"))
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "a row level security policy would hide rows from this role" in result.stderr
    assert "BYPASSRLS" in result.stderr


def test_an_identity_whose_total_is_null_is_broken(fresh_db: str, tmp_path: Path) -> None:
    config = tmp_path / "verifier.toml"
    config.write_text('[[identities]]\ntable = "pay"\ntotal = "amount_cents"\n'
                      'parts = ["fee_cents", "net_cents"]\n')
    code, data, _ = _verify(fresh_db, tmp_path, """
        CREATE TABLE pay (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint,
                          fee numeric(12,2), fee_cents bigint, net numeric(12,2), net_cents bigint);
        INSERT INTO pay VALUES (1, NULL, NULL, 1.00, 100, 4.00, 400),
                               (2, 5.00, 500, NULL, NULL, 5.00, 500);""",
        "--config", str(config))
    assert code == 1
    [identity] = [f for f in data["findings"] if f["rule"] == "identity_violation"]
    assert (identity["count"], identity["cents_impact"], identity["sample"][0]["key"]) == (1, 500, {"id": 1})


def test_what_a_break_it_run_found_passing(fresh_db: str, tmp_path: Path) -> None:
    """Each of these passed once while a cent was wrong or unchecked; now each is found."""
    config = tmp_path / "verifier.toml"
    config.write_text('[[pairs]]\nsource = "products.price_usd"\ntarget = "price"\n')
    code, data, _ = _verify(fresh_db, tmp_path, """
        -- a configured pair whose target is not named like cents
        CREATE TABLE products (id int PRIMARY KEY, price_usd numeric(12,2), price bigint);
        INSERT INTO products VALUES (1, 19.99, 5);
        -- a second currency column: which one a pair follows cannot be told
        CREATE TABLE fx (id int PRIMARY KEY, currency text, amount numeric(14,3), amount_cents bigint,
                         settlement_currency text, settlement_amount numeric(14,3),
                         settlement_amount_cents bigint);
        INSERT INTO fx VALUES (1, 'USD', 5, 500, 'JPY', 750, 75000);
        -- a user's schema that shares the name of the verifier's rehearsal record
        CREATE SCHEMA verifier_originals;
        CREATE TABLE verifier_originals.payouts (id int PRIMARY KEY, amount numeric(12,2),
                                                 amount_cents bigint);
        INSERT INTO verifier_originals.payouts VALUES (1, 10.00, 1);
        -- a comment that mentions another column does not beat the name
        CREATE TABLE orders (id int PRIMARY KEY, tip numeric(12,2), tip_cents bigint, fee numeric(12,2),
                             fee_cents bigint);
        INSERT INTO orders VALUES (1, 2.00, 999, 9.99, 999);
        COMMENT ON COLUMN orders.tip_cents IS 'In cents. Unlike fee, it is never refunded';
        -- an inheritance child: its wrong row is counted once, in its own table
        CREATE TABLE base_sales (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint);
        CREATE TABLE shop_sales () INHERITS (base_sales);
        INSERT INTO shop_sales VALUES (1, 1.00, 7);
        -- views named like a ledger's tables make no ledger
        CREATE TABLE accounts (id int PRIMARY KEY, balance_cents bigint);
        CREATE VIEW journals AS SELECT 1 AS id; CREATE VIEW entries AS SELECT 1 AS id;""",
        "--config", str(config))
    assert code == 1
    rows = {(json.loads(r["row_key"])["id"], r["table"], r["column"]): r["rule"]
            for r in _offenders(tmp_path / "r")}
    assert rows[(1, "public.products", "price")] == "value_mismatch"
    assert rows[(1, "verifier_originals.payouts", "amount_cents")] == "value_mismatch"
    assert rows[(1, "public.orders", "tip_cents")] == "value_mismatch"
    assert rows[(1, "public.shop_sales", "amount_cents")] == "value_mismatch"
    assert not [k for k in rows if k[1] == "public.base_sales"]
    unverified = {(f["table"], f["column"]): f["message"] for f in data["findings"]
                  if f["rule"] == "unverified_minor_units"}
    assert "several columns could hold each row's currency" in \
        unverified[("public.fx", "settlement_amount_cents")]
    assert ("public.accounts", "balance_cents") in unverified
    assert data["totals"]["offending_rows"] == 4


def test_configured_columns_of_the_wrong_type_are_exit_2(fresh_db: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE pay (id uuid PRIMARY KEY, ccy smallint, amount numeric(12,2), "
                     "amount_cents bigint, fee_cents bigint)")
    config = tmp_path / "verifier.toml"
    for text, words in (('[[identities]]\ntable = "pay"\ntotal = "amount_cents"\n'
                         'parts = ["id", "fee_cents"]\n',
                         "names column(s) that hold no amount: id (uuid)"),
                        ('[[minor_units]]\ntable = "pay"\ncurrency_column = "ccy"\n',
                         "currency_column public.pay.ccy is smallint")):
        config.write_text(text)
        result = run_cli("verify-cents", "--db", fresh_db, "--config", str(config),
                         "--report-dir", str(tmp_path / "r"))
        assert result.code == 2 and "Traceback" not in result.stderr and words in result.stderr, result.stderr


@pytest.mark.parametrize("schema", ["public", "crm"])
def test_tables_named_as_a_ledger_that_are_not_one_fail_the_rehearsal_beside_its_cents(
        schema: str, tmp_path: Path, server_dsn: str, leftovers: None) -> None:
    """A CRM's accounts, a blog's journals and entries: the rehearsal's cents verdicts stand, and the
    ledger it could not audit is an error finding (not a run that verified nothing); excluding the
    entries table by name says they are not a ledger. In another schema than the configured one
    they are not audited either, and say so (before, that was a pass: found by a break-it run)."""
    dump = tmp_path / "snapshot.sql"
    dump.write_text("--\n-- PostgreSQL database dump\n--\n\n"
                    "CREATE TABLE public.tips (id integer PRIMARY KEY, amount numeric(12,2), "
                    "amount_cents bigint);\n"
                    "INSERT INTO public.tips VALUES (1, 1.50, 150), (2, 0.07, 7);\n"
                    f"CREATE SCHEMA IF NOT EXISTS {schema};\n"
                    f"CREATE TABLE {schema}.accounts (id integer PRIMARY KEY, name text);\n"
                    f"CREATE TABLE {schema}.journals (id integer PRIMARY KEY, title text);\n"
                    f"CREATE TABLE {schema}.entries (id integer PRIMARY KEY, journal_id integer, "
                    "body text);\n"
                    "\n--\n-- PostgreSQL database dump complete\n--\n\n")
    (tmp_path / "migrations").mkdir()
    runs = {}
    for name, config in (("plain", ""), ("excluded", f'exclude = ["{schema}.entries"]\n'),
                         ("no_ledger", "[ledger]\naudit_in_rehearsal = false\n")):
        (tmp_path / f"{name}.toml").write_text(config)
        report = tmp_path / name
        result = run_cli("verify-cents", "--snapshot", str(dump), "--migrations",
                         str(tmp_path / "migrations"), "--scratch", server_dsn, "--report-dir", str(report),
                         "--config", str(tmp_path / f"{name}.toml"))
        assert "Traceback" not in result.stderr
        runs[name] = (result.code, json.loads((only_run(report) / "summary.json").read_text()))
    code, data = runs["plain"]
    assert code == 1, data
    assert [(f["rule"], f["severity"], f["table"]) for f in data["findings"]] == [
        ("ledger_not_audited", "error", f"{schema}.entries")]
    assert "not audited" in data["provenance"]["ledger"]
    counts = _stage(data, "pairs")["inventory"]["counts"]
    assert (counts["verified_source"], counts["verified_minor_units"], counts["unverified"]) == (1, 1, 0)
    code, data = runs["excluded"]
    assert code == 0 and data["findings"] == [], data
    code, data = runs["no_ledger"]
    assert code == 0 and data["findings"] == [], data
    assert data["provenance"]["ledger"] == "not audited: [tool.verifier.ledger] audit_in_rehearsal = false"
    code, data = runs["excluded"]
    assert data["provenance"]["ledger"] == ("not audited: excluded by name ('public.entries')"
                                            if schema == "public" else
                                            "none: no ledger tables (accounts, journals, entries) in schema "
                                            "public after the migrations")
