"""Bad input, fuzzed: nothing raises anything but a clear ``VerifierError``; nothing runs text as SQL.

Hypothesis writes configuration files (random TOML, and shapes close to
valid ones), connection URLs, migration files and damaged dump files, and
creates tables whose schema, table and column names hold quotes, spaces,
unicode and SQL fragments, with money values at the limits of numeric and
BIGINT. Each goes through the real code against the real server. A canary
table checks that no name or value was ever executed.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from verifier import config as config_
from verifier.cents.sql import BIGINT_MAX
from verifier.errors import VerifierError
from verifier.jobs import in_place, ledger_audit, migrations
from verifier.migrate import plan
from verifier.migrate.runner import Runner
from verifier.pg import conninfo
from verifier.source import dump

from .conftest import run_cli
from .test_cents import oracle

FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
CANARY = "canary_untouched"

# Text that looks like SQL, quotes and comments, for names and migration files.
FRAGMENTS = ["'", '"', ";", "--", "/*", "*/", "$$", "\\", " ", "\n", "\t", "é", "☃", "ß", "%s", "{}",
             "); DROP TABLE canary_untouched; --", "' OR '1'='1", "\" ; DELETE FROM canary_untouched; --",
             "<script>", "NULL", "amount", "_cents", "BEGIN;", "COMMIT;", "pg_sleep(5)"]
names = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(min_size=1, max_size=6)),
                 min_size=1, max_size=5).map("".join)


def _verifier_errors_only(action: Any) -> Any:
    """Run ``action``; a VerifierError is a clear answer, anything else fails the test."""
    try:
        return action()
    except VerifierError as exc:
        assert str(exc).strip(), "an error without a message"
        return exc


@pytest.fixture(scope="module")
def canary_db(make_module_db: Any) -> str:
    """A database with one small pair table and a canary that nothing may touch."""
    dsn = str(make_module_db())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(sql.Identifier(CANARY)))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1), (2), (3)").format(sql.Identifier(CANARY)))
        conn.execute("CREATE TABLE tips (id int PRIMARY KEY, amount numeric(10,2), amount_cents bigint)")
        conn.execute("INSERT INTO tips VALUES (1, 1.23, 123), (2, 4.56, 456)")
    return dsn


def _canary_intact(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        ids = conn.execute(sql.SQL("SELECT array_agg(id ORDER BY id) FROM {}").format(sql.Identifier(CANARY)))
        assert ids.fetchone() == ([1, 2, 3],)


# -- configuration files ---------------------------------------------------------------------------

def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) \
            else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


KEYS = ["rounding", "sample_rows_max", "statement_timeout_s", "lock_timeout_s", "migration_lock_timeout_s",
        "pairs", "exclude", "identities", "ledger"]
scalars = st.one_of(st.text(max_size=12), names, st.integers(-(2**63), 2**63 - 1), st.booleans(),
                    st.floats(allow_nan=True, allow_infinity=True))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
close_to_valid = st.fixed_dictionaries({}, optional={
    "rounding": st.sampled_from(["half_away_from_zero", "half_even", "truncate", "banker", ""]),
    "sample_rows_max": st.one_of(st.integers(-5, 2_000), st.floats()),
    "statement_timeout_s": st.one_of(st.floats(), st.integers(-1, 10**6)),
    "lock_timeout_s": st.floats(),
    "pairs": st.lists(st.fixed_dictionaries({"source": st.one_of(names, st.just("tips.amount")),
                                             "target": st.one_of(names, st.just("amount_cents"))}),
                      max_size=3),
    "exclude": st.lists(st.one_of(names, st.just("tips")), max_size=3),
    "identities": st.lists(st.fixed_dictionaries({"table": names, "total": names,
                                                  "parts": st.lists(names, max_size=3)}), max_size=2),
    "ledger": st.dictionaries(st.sampled_from(["tables", "columns", "non_negative_types", "sign_convention",
                                               "debit_value", "credit_value", "reconciliations", "workers"]),
                              values, max_size=3),
})
documents = st.one_of(close_to_valid, st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)),
                                                      values, max_size=5))


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)
@given(doc=documents, raw=st.one_of(st.none(), st.text(max_size=200)))
def test_any_configuration_file_is_read_or_refused_clearly(canary_db: str, doc: dict[str, Any],
                                                          raw: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "verifier.toml"
        text = raw if raw is not None else "\n".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in doc.items())
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        loaded = _verifier_errors_only(lambda: config_.load(path))
        if isinstance(loaded, config_.Config):
            # What the file configures reaches SQL only as identifiers and parameters.
            _verifier_errors_only(lambda: in_place.verify_cents(canary_db, report_dir=Path(tmp) / "r",
                                                               config_path=path))
            _verifier_errors_only(lambda: ledger_audit.audit_ledger(canary_db, report_dir=Path(tmp) / "r",
                                                               config_path=path))
    _canary_intact(canary_db)


# -- connection URLs -------------------------------------------------------------------------------

secret_text = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=8, max_size=16)
params = st.dictionaries(st.sampled_from(["sslmode", "connect_timeout", "application_name", "options",
                                          "target_session_attrs", "service", "bogus", "passfile"]),
                         st.text(max_size=10), max_size=3)


@settings(max_examples=120, deadline=None)
@given(user=st.text(max_size=10), password=secret_text, host=st.sampled_from(
    ["127.0.0.1", "localhost", "/nonexistent/socket/dir", "[::1]", "", "bad host name"]),
    port=st.one_of(st.integers(0, 70_000), st.text(max_size=5)), dbname=st.text(max_size=10), query=params,
    quoted=st.booleans())
def test_any_url_connects_or_fails_clearly_without_showing_its_password(
        user: str, password: str, host: str, port: Any, dbname: str, query: dict[str, str],
        quoted: bool) -> None:
    q = quote if quoted else (lambda s, safe="": s)
    qs = "&".join(f"{k}={q(v, safe='')}" for k, v in query.items())
    url = f"postgresql://{q(user, safe='')}:{q(password, safe='')}@{host}:{port}/{q(dbname, safe='')}" + (
        f"?{qs}" if qs else "")
    assume(password not in url.replace(q(password, safe=""), "", 1))  # the password is distinctive
    assume(q(password, safe="") not in url.replace(q(password, safe=""), "", 1))
    if "connect_timeout" in query:
        assume(not query["connect_timeout"].strip().isdigit())  # keep the cases fast
    result = _verifier_errors_only(lambda: conninfo.connect(url))
    if isinstance(result, psycopg.Connection):
        result.close()
        return
    described = _verifier_errors_only(lambda: conninfo.describe(url))
    for shown in (str(result), conninfo.redact(url), str(described)):
        assert password not in shown and q(password, safe="") not in shown


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=60))
def test_any_conninfo_text_is_handled(text: str) -> None:
    result = _verifier_errors_only(lambda: conninfo.connect(text))
    if isinstance(result, psycopg.Connection):
        result.close()


# -- migration files -------------------------------------------------------------------------------

SQL_BITS = ["BEGIN;", "COMMIT;", "ROLLBACK;", "SELECT 1;", "CREATE TABLE IF NOT EXISTS fz (id int);",
            "ALTER TABLE fz ADD COLUMN IF NOT EXISTS x int;", "DROP TABLE IF EXISTS fz;", "VACUUM;",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS fz_i ON fz (id);", "DO $$ BEGIN NULL; END $$;",
            "-- Down Migration\n", "-- Dependencies: 299_x.sql\n", "-- Migration: x\n", "$$", "'", '"', "/*",
            "*/", "--", ";", "\n", "E'\\\\'", "é", "\x00", "SELECT pg_sleep(0.01);",
            "INSERT INTO fz VALUES (1);"]
migration_text = st.lists(st.one_of(st.sampled_from(SQL_BITS), st.text(max_size=8)), max_size=25).map("".join)
file_names = st.tuples(st.integers(0, 99_999), st.text(min_size=0, max_size=12)).map(
    lambda p: f"{p[0]:03d}_{p[1].replace('/', '_').replace(chr(0), '_')}.sql")


@settings(max_examples=120, deadline=None)
@given(files=st.dictionaries(file_names, migration_text, min_size=1, max_size=4))
@example(files={"000_0.sql": "TABLE"})  # a syntax error at the end of the input: pglast gives no offset
def test_any_migrations_directory_validates_or_is_refused_clearly(files: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            try:
                (Path(tmp) / name).write_text(text, encoding="utf-8", errors="surrogatepass")
            except OSError:  # a name the file system refuses (too long in bytes): not ours to test
                continue
        _verifier_errors_only(lambda: migrations.validate(Path(tmp)))
        _verifier_errors_only(lambda: plan.discover(Path(tmp)))


@pytest.fixture(scope="module")
def migration_db(make_module_db: Any) -> str:
    return str(make_module_db())


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES)
@given(text=migration_text)
def test_any_migration_file_applies_or_fails_as_a_finding(migration_db: str, text: str) -> None:
    """The runner applies whatever a file says to its own database: a result, never an exception."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "300_fuzz.sql").write_text(text, encoding="utf-8", errors="surrogatepass")
        found = _verifier_errors_only(lambda: plan.discover(Path(tmp)))
        if isinstance(found, VerifierError):
            assert "NUL" in str(found) or "UTF-8" in str(found)
            return
        [f] = found.files
        with Runner(migration_db, timeout_s=20) as runner:
            result = runner.apply(f, record=False)
        assert result.failure is None or result.failure.message


# -- dump files -------------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None, suppress_health_check=FIXTURES)
@given(seed=st.integers(0, 2**32 - 1), how=st.sampled_from(["flip", "truncate", "splice", "zero"]),
       fmt=st.sampled_from(["custom", "tar", "plain"]))
def test_damaged_dumps_are_refused_clearly_or_restored(dumps: dict[str, Path], server_dsn: str, seed: int,
                                                       how: str, fmt: str) -> None:
    rng = random.Random(seed)
    data = bytearray(dumps[fmt].read_bytes())
    at = rng.randrange(len(data))
    if how == "flip":
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        del data[at:]
    elif how == "splice":
        data[at:at] = rng.randbytes(rng.randint(1, 512))
    else:
        data[at:at + rng.randint(1, 4096)] = bytes(min(4096, len(data) - at))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / dumps[fmt].name
        path.write_bytes(bytes(data))
        _verifier_errors_only(lambda: dump.inspect(path))
        config = Path(tmp) / "verifier.toml"
        config.write_text("restore_timeout_s = 15\n")  # some damaged tars make pg_restore loop
        result = run_cli("verify-cents", "--snapshot", str(path), "--scratch", server_dsn,
                         "--config", str(config), "--report-dir", str(Path(tmp) / "r"), timeout=300)
    assert result.code in (0, 1, 2), result
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    if how == "truncate":  # every format knows its own end: a cut dump is never verified
        assert result.code == 2 and "snapshot" in result.stderr.lower(), result


@settings(max_examples=80, deadline=None)
@given(content=st.binary(max_size=300), name=st.sampled_from(["x.dump", "x.sql", "x.tar", "x"]))
def test_random_bytes_are_not_a_snapshot(content: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        _verifier_errors_only(lambda: dump.inspect(path))


# -- identifiers and money at the limits --------------------------------------------------------------

def _expected_class(x: Decimal | None, c: int | None) -> str | None:
    """test_cents' Decimal oracle, and non_finite_original for NaN and the infinities."""
    if x is not None and not x.is_finite():
        return "non_finite_original"
    return oracle(x, c)


limits = st.one_of(
    st.sampled_from([Decimal("92233720368547758.07"), Decimal("-92233720368547758.08"),
                     Decimal("92233720368547758.08"), Decimal("-92233720368547758.09"), Decimal("NaN"),
                     Decimal("Infinity"), Decimal("-Infinity"), Decimal("1e1000"), Decimal("-1e5000"),
                     Decimal("1e-1000"), Decimal("0.005"), Decimal("-0.005"), Decimal(0)]),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=Decimal("-92233720368547758.07"),
                max_value=Decimal("92233720368547758.07")),
    st.none(),
)


@st.composite
def money_rows(draw: st.DrawFn) -> tuple[Decimal | None, int | None]:
    x = draw(limits)
    if x is None or not x.is_finite():
        return x, draw(st.sampled_from([None, 0, 1, BIGINT_MAX, -BIGINT_MAX - 1]))
    e = (x * 100).to_integral_value(rounding=ROUND_HALF_UP)
    if abs(e) > BIGINT_MAX:
        return x, draw(st.sampled_from([None, 0, BIGINT_MAX]))
    c = int(e) + draw(st.sampled_from([0, 0, 1]))
    return x, c if abs(c) <= BIGINT_MAX else int(e)


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURES)
@given(schema=names, table=names, column=names, rows=st.lists(money_rows(), min_size=1, max_size=12))
def test_hostile_names_and_money_at_the_limits(canary_db: str, schema: str, table: str, column: str,
                                               rows: list[tuple[Decimal | None, int | None]]) -> None:
    assume("\x00" not in schema + table + column)  # PostgreSQL names cannot hold NUL
    schema, table, column = schema[:40], table[:40], column[:40]
    assume(max(len(f"{column}_cents".encode()), len(schema.encode()), len(table.encode())) <= 63)
    assume(schema.lower() not in ("public", "information_schema") and not schema.startswith("pg_"))
    ident = sql.Identifier
    with psycopg.connect(canary_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident(schema)))
        try:
            conn.execute(sql.SQL("CREATE TABLE {}.{} (id int PRIMARY KEY, {} numeric, {} bigint)").format(
                ident(schema), ident(table), ident(column), ident(f"{column}_cents")))
            with conn.cursor() as cur:
                # Literals, not parameters: with parameters psycopg would read a % in a name as one.
                for i, (x, c) in enumerate(rows):
                    cur.execute(sql.SQL("INSERT INTO {}.{} VALUES ({}, {}::numeric, {})").format(
                        ident(schema), ident(table), sql.Literal(i),
                        sql.Literal(None if x is None else str(x)), sql.Literal(c)))
            with tempfile.TemporaryDirectory() as tmp:
                config = Path(tmp) / "verifier.toml"
                config.write_text("exclude = [\"public.tips\"]\n")
                run = in_place.verify_cents(canary_db, report_dir=Path(tmp), config_path=config)
                findings = {(f["rule"], f["table"], f["column"]): f for f in run.findings}
                assert json.loads((run.run_dir / "summary.json").read_text())["status"] == run.status
                assert (run.run_dir / "report.html").is_file()
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident(schema)))
    where = (f"{schema}.{table}", f"{column}_cents")
    want: dict[str, int] = {}
    for x, c in rows:
        klass = _expected_class(x, c)
        if klass is not None:
            want[klass] = want.get(klass, 0) + 1
    got = {k: f["count"] for (k, *w), f in findings.items()
           if tuple(w) == where and k not in ("sum_mismatch", "unpaired_column")}
    assert got == want, findings
    _canary_intact(canary_db)
