"""No unearned pass, as a property: random money tables in the types, names and currencies teams use.

Hypothesis draws a table (a source of numeric, real, double precision,
money or a domain over numeric; a minor-units column of bigint, integer,
numeric of scale 0 or a domain over bigint; a pair of names from the
conventions the inventory knows; with or without a currency column of
ISO 4217 codes), fills it with right rows, plants wrong ones of known
classes, and runs ``verify-cents --db`` in process. It asserts that the run
never passes while a planted row exists, that every planted row is found
with its class, and that no right row is called wrong.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from verifier.jobs.in_place import verify_cents

SOURCE_TYPES = ("numeric(14,4)", "numeric(18,3)", "real", "double precision", "money", "usd_amount")
TARGET_TYPES = ("bigint", "integer", "numeric(18,0)", "minor_units")
NAMES = (("amount", "amount_cents"), ("fee", "fee_in_cents"), ("price", "price_minor"),
         ("total", "total_minor_units"), ("price_usd", "price_cents"), ("tip_amount", "tip_cents"),
         ("payout_dollars", "payout_cents"))
CURRENCIES = {"USD": 100, "EUR": 100, "JPY": 1, "KWD": 1000, "CLF": 10000}
# What a planted row's minor units are, given its right ones u (never 0 for the first three).
PLANTS = {"missing_backfill": lambda u: 0, "sign_flip": lambda u: -u, "scale_error": lambda u: 10 * u,
          "value_mismatch": lambda u: u + 1000003, "null_introduced": lambda u: None}


@dataclass(frozen=True)
class Case:
    source_type: str
    target_type: str
    names: tuple[str, str]
    currency: bool
    rows: tuple[tuple[str, int, str | None], ...]  # (currency, right minor units, planted class or None)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    source_type = draw(st.sampled_from(SOURCE_TYPES))
    # money holds two decimals: no currency with other minor units.
    currency = source_type != "money" and draw(st.booleans())
    codes = sorted(CURRENCIES) if currency else ["USD"]
    if source_type == "numeric(14,4)":  # four decimals: CLF's minor unit fits
        pass
    elif currency:
        codes = [c for c in codes if c != "CLF"]
    # Real keeps six significant digits exactly, double fifteen: amounts stay within them.
    bound = 99_999 if source_type == "real" else 99_999_999
    rows = draw(st.lists(st.tuples(st.sampled_from(codes), st.integers(-bound, bound),
                                   st.one_of(st.none(), st.none(), st.sampled_from(sorted(PLANTS)))),
                         min_size=1, max_size=25))
    # A class that needs the right value to be non-zero, on a zero, is no plant.
    rows = [(c, u, None if p in ("missing_backfill", "sign_flip", "scale_error") and u == 0 else p)
            for c, u, p in rows]
    if currency and draw(st.booleans()):  # a code ISO 4217 does not know
        rows.append(("ZZZ", 123, "unknown_currency"))
    return Case(source_type, draw(st.sampled_from(TARGET_TYPES)), draw(st.sampled_from(NAMES)),
                currency, tuple(rows))


def _value(units: int, code: str, source_type: str) -> str:
    """The amount of ``units`` minor units in currency ``code``, as exact text."""
    factor = CURRENCIES.get(code, 100)
    return str(Decimal(units) / factor)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_a_planted_wrong_row_never_passes_and_is_found_with_its_class(
        make_db: Any, tmp_path_factory: Any, case: Case) -> None:
    dsn = make_db()
    source, target = case.names
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE DOMAIN usd_amount AS numeric(16,4); CREATE DOMAIN minor_units AS bigint")
        conn.execute(sql.SQL("CREATE TABLE sales (id int PRIMARY KEY, {cur} {s} {st}, {t} {tt})").format(
            cur=sql.SQL("currency char(3)," if case.currency else ""), s=sql.Identifier(source),
            st=sql.SQL(case.source_type), t=sql.Identifier(target), tt=sql.SQL(case.target_type)))
        planted = {}
        for i, (code, units, plant) in enumerate(case.rows):
            minor = PLANTS[plant](units) if plant in PLANTS else units
            if plant is not None:
                planted[i] = plant
            values = [i, *([code] if case.currency else []), _value(units, code, case.source_type), minor]
            marks = ", ".join(["%s"] * len(values))
            conn.execute(sql.SQL("INSERT INTO sales VALUES ({})").format(sql.SQL(marks)), values)
    out = tmp_path_factory.mktemp("runs")
    run = verify_cents(dsn, report_dir=out)
    errors = [f for f in run.findings if f["severity"] == "error"]
    assert run.exit_code == (1 if planted else 0), (case, errors)
    assert not [f for f in errors if f["rule"] == "unverified_minor_units"], errors
    with (run.run_dir / "offenders.csv").open() as fh:
        found = {json.loads(r["row_key"])["id"]: r["rule"] for r in csv.DictReader(fh)
                 if r["rule"] not in ("sub_cent_loss",)}
    assert found == planted, case
