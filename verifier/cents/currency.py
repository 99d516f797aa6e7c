"""Currencies: each row's minor unit, from ISO 4217, where a table says which currency a row is in.

A table's currency column is configured (``[[minor_units]] currency_column``)
or detected: one column named ``currency``, ``currency_code``,
``iso_currency``, ``currency_iso`` or ``X_currency``, of a text type (or an
enum), whose first rows hold three-letter codes. The checks then read each
row's factor (10 to the power of its currency's minor unit: JPY 1, USD 100,
KWD 1000) through ``join``, a hash join with a VALUES list of ISO 4217's
codes: a code the table lacks, or one with no minor unit (gold, XDR), gives
no factor and the row is ``unknown_currency``.

The table is the ``iso4217`` package's copy of ISO 4217 list one (its
``__published__`` date is recorded with each run that uses it); nothing is
downloaded.
"""

from __future__ import annotations

import functools

import psycopg
from psycopg import sql

from verifier.cents.catalog import TEXT_TYPES, Column
from verifier.errors import VerifierError

FACTOR = "verifier_factor"  # the factor's column in the relation the checks read
CURRENCY_NAMES = ("currency", "currency_code", "iso_currency", "currency_iso")
DETECT_ROWS = 1000  # rows read to tell a currency column by its values
# The first rows of a candidate column: how many are set, and how many look like ISO codes.
# format('%s', c): the text of the type's output function. A cast (c::text) would run a CREATE CAST
# that the owner of an enum type may define (PostgreSQL 15, "CREATE CAST"), which may lie.
# Run without parameters: a name holding "%" (a table "fx%%orders") must reach the server as
# written, which a query with %s placeholders would not (psycopg reads "%%" in it as "%").
LOOKS_SQL = ("SELECT count(c), count(*) FILTER ("
             "WHERE upper(btrim(pg_catalog.format('%s', c))) COLLATE \"C\" ~ '^[A-Z]{{3}}$') "
             "FROM (SELECT {column} AS c FROM {table} LIMIT {limit}) s")


@functools.cache
def exponents() -> dict[str, int]:
    """ISO 4217 code -> minor unit (exponent), for the codes that have one (not XAU, XDR, ...)."""
    from iso4217 import Currency

    return {c.code: int(c.exponent) for c in Currency if c.exponent is not None}


def published() -> str:
    """The publication date of the ISO 4217 table in use."""
    import iso4217

    return iso4217.__published__.isoformat()


def join(relation: sql.Composable, column: Column) -> sql.Composable:
    """``relation`` with each row's factor as ``FACTOR``: a hash join with ISO 4217's codes (upper
    and lower case: ``usd`` is read as ``USD``), written in the column's own type so that the join
    compares values without a cast per row (char(3) as bpchar, which ignores trailing blanks;
    varchar and text as text; an enum through its text). Other spellings (`` USD``) find no code."""
    pairs = sorted(exponents().items())
    typed = "bpchar" if column.base_type == "character" else "text"
    rows = sql.SQL(", ").join(
        sql.SQL("({}::{}, {}::numeric)").format(sql.Literal(code), sql.SQL(typed), sql.Literal(10 ** e))
        for c, e in pairs for code in (c, c.lower()))
    # In the "C" collation: a case-insensitive (nondeterministic) one would match "Usd" to both USD
    # and usd, and read each row twice.
    key = sql.SQL("r.{}").format(sql.Identifier(column.name))
    if column.enum or column.base_type == "citext":  # its output function's text, never a CREATE CAST
        key = sql.SQL("pg_catalog.format('%s', {})").format(key)
    key = sql.SQL('{} COLLATE "C"').format(key)
    return sql.SQL("(SELECT r.*, verifier_iso.factor AS {f} FROM {rel} AS r LEFT JOIN "
                   "(VALUES {rows}) AS verifier_iso(code, factor) ON verifier_iso.code = {key})").format(
        f=sql.Identifier(FACTOR), rel=relation, rows=rows, key=key)


def code_type(column: Column) -> bool:
    """Whether the column's type can hold a currency code: text types, citext, an enum."""
    return column.base_type in TEXT_TYPES or column.base_type == "citext" or column.enum


def candidates(columns: list[Column]) -> list[Column]:
    """The columns named and typed like a currency code."""
    return [c for c in columns
            if (c.name.lower() in CURRENCY_NAMES or c.name.lower().endswith("_currency")) and code_type(c)]


def looks_like_codes(conn: psycopg.Connection, schema: str, table: str, column: str) -> bool:
    """Whether most of the first ``DETECT_ROWS`` set values of the column are three-letter codes
    (an empty table: yes, by its name alone)."""
    try:
        row = conn.execute(sql.SQL(LOOKS_SQL).format(column=sql.Identifier(column),
                                                     table=sql.Identifier(schema, table),
                                                     limit=sql.Literal(DETECT_ROWS))).fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise VerifierError(f"No permission to read {schema}.{table} (to tell whether {column} holds each "
                            f"row's currency): {exc.diag.message_primary}.",
                            hint=f"GRANT SELECT ON {schema}.{table} TO the verifying role, or exclude the "
                                 "table in [tool.verifier] exclude.") from None
    assert row is not None
    set_values, codes = int(row[0]), int(row[1])
    return set_values == 0 or codes * 2 > set_values
