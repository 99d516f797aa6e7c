"""The demo generator: deterministic by seed, and realistic where it matters.

Realistic means the traps of production are there for the verifier to meet:
many small tips and few large payouts, NULLs where the schema allows them,
4-decimal token values with sub-cent parts and exact half-cent ties, values
at the column limit, a legacy float column, and the platform's identity
amount = fee + net holding on every clean row.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from verifier.demo import generate

from .conftest import table_digests


@pytest.fixture(scope="module")
def platform(server_dsn: str, make_module_db: Callable[[], str]) -> str:
    dsn = make_module_db()
    generate.generate(dsn, rows=20_000, seed=11)
    return dsn


def _one(dsn: str, query: str | sql.Composable) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
        assert row is not None
        return row[0]


def test_same_seed_same_data_other_seed_other_data(make_db: Callable[[], str]) -> None:
    a, b, c = make_db(), make_db(), make_db()
    generate.generate(a, rows=3_000, seed=5)
    generate.generate(b, rows=3_000, seed=5)
    generate.generate(c, rows=3_000, seed=6)
    # (schema_migrations, whose applied_at is the wall clock, is not in the digests.)
    assert table_digests(a) == table_digests(b)
    other = table_digests(c)
    assert other["tips"] != table_digests(a)["tips"]
    assert other["tips"][0] == table_digests(a)["tips"][0]  # same size, other values


def test_row_counts_follow_the_plan(platform: str) -> None:
    plan = generate.plan(20_000, 11)
    counts = {t: n for t, (n, _) in table_digests(platform).items()}
    assert counts == plan.counts
    assert _one(platform, "SELECT version FROM schema_migrations") == "001"


def test_many_small_tips_few_large_payouts(platform: str) -> None:
    small_share = _one(platform, "SELECT avg((amount < 5)::int) FROM tips")
    assert isinstance(small_share, Decimal) and small_share > Decimal("0.5")
    assert _one(platform, "SELECT max(amount) FROM tips") > Decimal("200")  # type: ignore[operator]
    tips = _one(platform, "SELECT count(*) FROM tips")
    payouts = _one(platform, "SELECT count(*) FROM creator_payouts")
    assert payouts * 20 < tips  # type: ignore[operator]
    assert _one(platform, "SELECT avg(amount) FROM creator_payouts") > 50 * _one(  # type: ignore[operator]
        platform, "SELECT avg(amount) FROM tips")


@pytest.mark.parametrize("table, column", [
    ("payments", "fee"), ("payments", "net_amount"), ("withdrawals", "fee"),
    ("shop_items", "sale_price"), ("stream_rates", "voice_rate"),
    ("stream_rates", "legacy_rate_per_minute"), ("users", "total_earnings"),
])
def test_nulls_where_the_schema_allows_them(platform: str, table: str, column: str) -> None:
    t, c = sql.Identifier(table), sql.Identifier(column)
    nulls = _one(platform, sql.SQL("SELECT count(*) FILTER (WHERE {} IS NULL) FROM {}").format(c, t))
    values = _one(platform, sql.SQL("SELECT count({}) FROM {}").format(c, t))
    assert nulls and values, (table, column, nulls, values)


def test_sub_cent_values_and_exact_half_cent_ties(platform: str) -> None:
    for table, column in (("token_transactions", "amount_usd"), ("token_balances", "balance_usd")):
        t, c = sql.Identifier(table), sql.Identifier(column)
        sub_cent = _one(platform, sql.SQL("SELECT count(*) FROM {} WHERE {} * 100 <> trunc({} * 100)")
                        .format(t, c, c))
        ties = _one(platform, sql.SQL("SELECT count(*) FROM {} WHERE mod({} * 10000, 100) = 50")
                    .format(t, c))
        assert sub_cent and ties, (table, sub_cent, ties)


def test_values_at_the_column_limit(platform: str) -> None:
    assert _one(platform, "SELECT max(amount) FROM payments") == Decimal("9999999999.99")


def test_legacy_float_column_is_double_precision_with_values(platform: str) -> None:
    assert _one(platform, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                          "WHERE attrelid = 'stream_rates'::regclass "
                          "AND attname = 'legacy_rate_per_minute'") == "double precision"


def test_identities_hold_on_clean_data(platform: str) -> None:
    assert _one(platform, "SELECT count(*) FROM payments WHERE fee IS NOT NULL "
                          "AND amount <> fee + net_amount") == 0
    assert _one(platform, "SELECT count(*) FROM creator_earnings "
                          "WHERE gross_amount <> platform_fee + net_amount") == 0
    assert _one(platform, "SELECT count(*) FROM gift_transactions g JOIN virtual_gifts v "
                          "ON v.id = g.gift_id WHERE g.amount <> v.price * g.quantity") == 0


def test_every_foreign_key_holds(platform: str) -> None:
    """Generation skips per-row FK triggers where it may; prove no reference dangles."""
    with psycopg.connect(platform) as conn:
        fks = conn.execute(
            "SELECT conrelid::regclass::text, a.attname, confrelid::regclass::text, af.attname "
            "FROM pg_constraint c "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "JOIN pg_attribute af ON af.attrelid = c.confrelid AND af.attnum = c.confkey[1] "
            "WHERE c.contype = 'f' AND cardinality(c.conkey) = 1"
        ).fetchall()
        assert len(fks) >= 25
        for child, column, parent, key in fks:
            query = sql.SQL(
                "SELECT count(*) FROM {} c WHERE {} IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM {} p WHERE p.{} = c.{})"
            ).format(sql.Identifier(child), sql.Identifier(column), sql.Identifier(parent),
                     sql.Identifier(key), sql.Identifier(column))
            row = conn.execute(query).fetchone()
            assert row == (0,), (child, column, parent)
