"""The SQL stand-ins for pgcrypto and uuid-ossp give the originals' results, and let the
platform's dump rehearse on the default (embedded) scratch.

On the test server (PostgreSQL 15 with its contrib modules), each stand-in's
script runs in a schema of its own beside the real extension, and every
deterministic function is compared with the original on the same inputs:
digests and HMACs of every algorithm (empty, short, multi-block and long-key
inputs, text and bytea), name-based UUIDs (v3, v5) in every namespace. The
random ones are checked for their form (version, variant, length). A dump
shaped like the platform's (both extensions, uuid keys by default) restores
and migrates on the embedded server; one that needs an extension nobody
stands in for stops before the restore, naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from verifier.scratch import standin

from .conftest import pg_dump_custom, run_cli, run_summary

ALGORITHMS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
MESSAGES = ("", "a", "abc", "tip of 4.99 USD", "x" * 55, "y" * 56, "z" * 64, "é€💸" * 40, "w" * 1000)
KEYS = ("", "k", "secret-key", "K" * 64, "L" * 65, "M" * 129)


@pytest.fixture
def both(fresh_db: str) -> psycopg.Connection:
    conn = psycopg.connect(fresh_db, autocommit=True)
    conn.execute('CREATE SCHEMA real; CREATE EXTENSION pgcrypto SCHEMA real; '
                 'CREATE EXTENSION "uuid-ossp" SCHEMA real; CREATE SCHEMA standin')
    conn.execute("SET search_path = standin")  # as CREATE EXTENSION runs a script: its target schema
    for name in standin.STANDINS:
        conn.execute(standin.script(name).replace("@extschema@", "standin"))
    conn.execute("RESET search_path")
    return conn


def test_digest_and_hmac_match_pgcrypto(both: psycopg.Connection) -> None:
    with both:
        for algorithm in ALGORITHMS:
            for message in MESSAGES:
                same = both.execute(
                    "SELECT real.digest(%(m)s::text, %(a)s) = standin.digest(%(m)s::text, %(a)s), "
                    "real.digest(convert_to(%(m)s, 'UTF8'), %(a)s) "
                    "= standin.digest(convert_to(%(m)s, 'UTF8'), upper(%(a)s))",
                    {"m": message, "a": algorithm}).fetchone()
                assert same == (True, True), (algorithm, message)
                for key in KEYS:
                    same = both.execute(
                        "SELECT real.hmac(%(m)s::text, %(k)s::text, %(a)s) "
                        "= standin.hmac(%(m)s::text, %(k)s::text, %(a)s)",
                        {"m": message, "k": key, "a": algorithm}).fetchone()
                    assert same == (True,), (algorithm, message, key)
        unknown = 'Cannot use "whirlpool": No such hash algorithm'
        with pytest.raises(psycopg.errors.RaiseException, match=unknown):
            both.execute("SELECT standin.digest('x'::text, 'whirlpool')")


def test_name_based_uuids_match_uuid_ossp(both: psycopg.Connection) -> None:
    with both:
        for ns in ("dns", "url", "oid", "x500", "nil"):
            assert both.execute(f"SELECT real.uuid_ns_{ns}() = standin.uuid_ns_{ns}()" if ns != "nil" else
                                "SELECT real.uuid_nil() = standin.uuid_nil()").fetchone() == (True,)
            for name in ("", "www.example.com", "creator/42", "é€💸" * 30):
                for v in (3, 5):
                    namespace = "uuid_nil()" if ns == "nil" else f"uuid_ns_{ns}()"
                    same = both.execute(
                        f"SELECT real.uuid_generate_v{v}(real.{namespace}, %(n)s), "
                        f"standin.uuid_generate_v{v}(standin.{namespace}, %(n)s)", {"n": name}).fetchone()
                    assert same is not None and same[0] == same[1], (v, ns, name, same)


def test_random_uuids_and_bytes_have_the_originals_form(both: psycopg.Connection) -> None:
    with both:
        for fn, version in (("uuid_generate_v4", 4), ("uuid_generate_v1", 1), ("uuid_generate_v1mc", 1),
                            ("gen_random_uuid", 4)):
            rows = both.execute(sql.SQL("SELECT {}()::text FROM generate_series(1, 50)").format(
                sql.Identifier("standin", fn))).fetchall()
            values = [r[0] for r in rows]
            assert len(set(values)) == 50, fn
            assert all(v[14] == str(version) and v[19] in "89ab" for v in values), (fn, values[:3])
        # v1: the time field is now (100 ns since 1582-10-15), as uuid-ossp's is.
        real, ours = both.execute(
            "SELECT ('x' || substr(u, 16, 3) || substr(u, 10, 4) || substr(u, 1, 8))::bit(60)::bigint "
            "FROM (VALUES (real.uuid_generate_v1mc()::text), (standin.uuid_generate_v1mc()::text)) v(u)"
        ).fetchall()
        assert abs(real[0] - ours[0]) < 10_000_000 * 60, (real, ours)  # within a minute
        lengths = both.execute(
            "SELECT length(standin.gen_random_bytes(n)) FROM unnest(ARRAY[1, 16, 33, 1024]) n").fetchall()
        assert [r[0] for r in lengths] == [1, 16, 33, 1024]
        with pytest.raises(psycopg.errors.RaiseException, match="Length not in range"):
            both.execute("SELECT standin.gen_random_bytes(1025)")


def _dump(make_db: Any, tmp_path: Path, setup: str) -> Path:
    dsn = make_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(setup)
    out = tmp_path / "platform.dump"
    pg_dump_custom(dsn, out)
    return out


# A creator platform's database as its hosted PostgreSQL holds it: the extensions in their own schema,
# uuid keys that default to uuid_generate_v4().
PLATFORM = """
CREATE SCHEMA extensions;
CREATE EXTENSION "uuid-ossp" SCHEMA extensions;
CREATE EXTENSION pgcrypto SCHEMA extensions;
CREATE TABLE tips (id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(), amount numeric(12,2) NOT NULL,
                   receipt bytea DEFAULT extensions.gen_random_bytes(16));
INSERT INTO tips (amount) SELECT (g % 50) + 0.99 FROM generate_series(1, 200) g;
"""
BACKFILL = """ALTER TABLE tips ADD COLUMN IF NOT EXISTS amount_cents BIGINT;
UPDATE tips SET amount_cents = round(amount * 100);
CREATE TABLE IF NOT EXISTS tip_receipts AS
  SELECT extensions.uuid_generate_v5(extensions.uuid_ns_url(), id::text) AS receipt_id,
         encode(extensions.hmac(id::text, 'k', 'sha256'), 'hex') AS signature FROM tips;
"""


def test_the_platforms_dump_rehearses_on_the_default_scratch(make_db: Any, tmp_path: Path,
                                                             leftovers: None) -> None:
    dump = _dump(make_db, tmp_path, PLATFORM)
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "300_tips_cents.sql").write_text(BACKFILL)
    result = run_cli("verify-cents", "--snapshot", str(dump), "--migrations", str(migrations),
                     "--skip-rule-checks", "--report-dir", str(tmp_path / "r"))  # --scratch embedded
    data = run_summary(tmp_path / "r")
    assert result.code == 0, (result.stderr, data["findings"])
    restore = next(s for s in data["stages"] if s["name"] == "restore")
    assert restore["extensions"] == restore["extensions_standin"] == ["pgcrypto", "uuid-ossp"]
    assert data["provenance"]["scratch_kind"] == "embedded"
    assert "stand-in(s) were installed instead" in result.stderr
    assert [t["ok"] for t in next(s for s in data["stages"] if s["name"] == "migrate")["timeline"]] == [True]


def test_an_extension_no_scratch_has_is_named_before_the_restore(make_db: Any, tmp_path: Path,
                                                                 leftovers: None) -> None:
    dump = _dump(make_db, tmp_path, "CREATE EXTENSION sslinfo; CREATE EXTENSION xml2;"
                                    "CREATE TABLE tips (id int PRIMARY KEY, amount numeric(12,2));")
    result = run_cli("verify-cents", "--snapshot", str(dump), "--migrations", str(tmp_path),
                     "--report-dir", str(tmp_path / "r"))
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "creates the extension(s) sslinfo, xml2, which the scratch server (embedded" in result.stderr
    assert "--scratch postgresql://" in result.stderr and "CREATE EXTENSION sslinfo works" in result.stderr
    assert "Migrating" not in result.stderr


def test_a_function_the_standins_lack_is_named_with_what_to_do(make_db: Any, tmp_path: Path,
                                                              leftovers: None) -> None:
    dump = _dump(make_db, tmp_path,
                 "CREATE SCHEMA extensions; CREATE EXTENSION pgcrypto SCHEMA extensions; "
                 "CREATE TABLE users (id int PRIMARY KEY, pw text); "
                 "CREATE VIEW hashed AS SELECT id, extensions.crypt(pw, '$1$abc') AS h FROM users;")
    result = run_cli("verify-cents", "--snapshot", str(dump), "--migrations", str(tmp_path),
                     "--report-dir", str(tmp_path / "r"))
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "crypt" in result.stderr and "only the verifier's stand-in of pgcrypto" in result.stderr
    assert "--scratch docker" in result.stderr
