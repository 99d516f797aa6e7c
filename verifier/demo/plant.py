"""Defects planted in the demo platform at known rows (listed by ``verifier.demo.manifest``).

``backfill_and_plant(dsn)`` applies the project's 300 and 301 to a
generated platform (so its snapshot is "production after the backfill") and
then changes a few rows the way real conversions go wrong: one row per
per-row class of DESIGN.md's vocabulary, plus an identity and a constraint
broken with consistent cents. It returns what it planted; the tests assert
the engine finds exactly those rows with exactly those rules.

A rehearsal of such a snapshot then runs 302, whose gate refuses the
mismatches (``migration_failed``), and verifies the state it reached.

Written only to the demo database the caller created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from verifier.config import Identity
from verifier.demo.generate import apply_own_migrations
from verifier.pg import conninfo

# The identity the platform's payments must satisfy; the demo checks it.
DEMO_IDENTITIES = (Identity("public", "payments", "amount_cents", ("fee_cents", "net_amount_cents")),)


@dataclass(frozen=True)
class Planted:
    table: str  # schema.table
    column: str  # the cents column, the identity's total, or the constraint's name
    key: dict[str, Any]
    rule: str


@dataclass(frozen=True)
class _Plant:
    table: str
    key: str
    where: str  # which rows may take it (SQL over the table's columns; constant text)
    offset: int  # the how-manieth of those rows, by key
    assign: str  # SET list (constant text)
    found: tuple[tuple[str, str], ...]  # (column, rule) the engine must report for the row
    # A NOT VALID constraint the row must break: PostgreSQL checks it on UPDATE,
    # so it is lifted for the change and put back NOT VALID, as if the row had
    # been there before the constraint (which is what NOT VALID is for).
    lift: str | None = None


# Each plant is constant SQL text written here; no input reaches it.
PLANTS = (
    _Plant("subscriptions", "id", "price <> 0", 3, "price_cents = 0",
           (("price_cents", "missing_backfill"),)),
    _Plant("shop_items", "id", "true", 3, "sale_price = NULL, sale_price_cents = 0",
           (("sale_price_cents", "null_coerced_to_zero"),)),
    _Plant("users", "id", "total_earnings IS NOT NULL", 0, "total_earnings_cents = NULL",
           (("total_earnings_cents", "null_introduced"),)),
    _Plant("token_transactions", "id", "true", 3, "amount_usd = 12.3456, amount_usd_cents = 1235",
           (("amount_usd_cents", "sub_cent_loss"),)),
    _Plant("token_balances", "user_id", "true", 3, "balance_usd = 10.0050, balance_usd_cents = 1000",
           (("balance_usd_cents", "rounding_mode"),)),
    _Plant("vod_purchases", "id", "true", 3, "price = 0.29, price_cents = 28",
           (("price_cents", "float_artifact"),)),
    _Plant("ppv_messages", "id", "true", 3, "price = 12.34, price_cents = 12",
           (("price_cents", "scale_error"),)),
    _Plant("show_tickets", "id", "price_paid > 0", 3, "price_paid_cents = -price_paid_cents",
           (("price_paid_cents", "sign_flip"),)),
    _Plant("stream_rates", "creator_id", "true", 1,
           "legacy_rate_per_minute = 1e17, legacy_rate_per_minute_cents = NULL",
           (("legacy_rate_per_minute_cents", "overflow"),)),
    _Plant("stream_rates", "creator_id", "true", 2,
           "legacy_rate_per_minute = 'NaN', legacy_rate_per_minute_cents = 0",
           (("legacy_rate_per_minute_cents", "non_finite_original"),)),
    _Plant("creator_offers", "id", "price >= 1", 0, "price_cents = price_cents + 7",
           (("price_cents", "value_mismatch"),)),
    # An order whose currency code is no ISO 4217 code: its minor units cannot be told.
    _Plant("live_shopping_orders", "id", "currency = 'USD'", 3, "currency = 'ZZZ'",
           (("amount_cents", "unknown_currency"),)),
    # The identity amount = fee + net breaks while fee and its cents agree; 300's
    # NOT VALID constraint on the same identity will reject the row too.
    _Plant("payments", "id", "fee IS NOT NULL", 3, "fee = fee + 1, fee_cents = fee_cents + 100",
           (("amount_cents", "identity_violation"), ("payments_cents_identity", "constraint_violation")),
           lift="payments_cents_identity"),
    _Plant("users", "id", "true", 2, "balance = -5.00, balance_cents = -500",
           (("users_balance_cents_nonnegative", "constraint_violation"),),
           lift="users_balance_cents_nonnegative"),
)


def backfill_and_plant(dsn: str) -> list[Planted]:
    """Apply 300 and 301 to the generated platform at ``dsn``, then plant every defect."""
    backfill(dsn)
    return plant(dsn)


def backfill(dsn: str) -> None:
    """Apply the project's 300 and 301 to the generated platform at ``dsn`` (the runner records them)."""
    assert apply_own_migrations(dsn, lambda f: f.version in ("300", "301")) == ["300", "301"]


def plant(dsn: str) -> list[Planted]:
    """Plant every defect of ``PLANTS`` in the backfilled platform at ``dsn``, in one transaction."""
    planted: list[Planted] = []
    with conninfo.connect(dsn, what="demo database") as conn, conn.transaction():
        for p in PLANTS:
            key = sql.Identifier(p.key)
            table = sql.Identifier(p.table)
            definition = None
            if p.lift is not None:
                found = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                     "WHERE conrelid = %s::regclass AND conname = %s",
                                     (p.table, p.lift)).fetchone()
                assert found is not None, f"no constraint {p.lift} on {p.table}"
                definition = str(found[0])
                conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    table, sql.Identifier(p.lift)))
            row = conn.execute(sql.SQL(
                "UPDATE {table} SET {assign} WHERE {key} = (SELECT {key} FROM {table} WHERE {where} "
                "ORDER BY {key} OFFSET {offset} LIMIT 1) RETURNING {key}").format(
                    table=table, key=key, assign=sql.SQL(p.assign), where=sql.SQL(p.where),  # noqa: S608
                    offset=sql.Literal(p.offset))).fetchone()
            assert row is not None, f"no row of {p.table} to plant {p.found} in"
            if definition is not None:
                assert definition.endswith("NOT VALID"), definition
                conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    # PostgreSQL's own deparse of the constraint we just dropped.
                    table, sql.Identifier(str(p.lift)), sql.SQL(definition)))  # noqa: S608
            planted += [Planted(f"public.{p.table}", column, {p.key: row[0]}, rule)
                        for column, rule in p.found]
    return planted
