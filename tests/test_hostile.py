"""Hostile snapshots and migrations: the rehearsal's sandbox.

A rehearsal restores the snapshot and runs the migrations as a role that
owns only its scratch database (``ScratchServer.database(sandbox=True)``).
Each case below is SQL a snapshot or a migration may hold that, run by a
superuser, reached outside that database: it must fail inside PostgreSQL,
the run must say so (exit 2 for a snapshot that does not restore, exit 1
for a migration that fails), and nothing must change outside the scratch
database: another database of the scratch server keeps its rows and its
write counters, no role appears, the server's configuration is unchanged,
no program runs (a file it would create is absent).

Functions that would act as a superuser act only inside a database the
rehearsal made (``current_database()`` starting ``verifier_scratch``), so
that creating the source database here, as a superuser, triggers nothing.
"""

from __future__ import annotations

import csv
import secrets
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import psycopg
import pytest

from .conftest import _ours, only_run, pg_dump_custom, run_cli, run_summary, table_digests

# Acts only inside a rehearsal's database, and only with a superuser's rights: creates FILE.
SPY = """
CREATE FUNCTION public.spy(v numeric) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  IF current_database() LIKE 'verifier\\_scratch%' AND
     (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch FILE''';
  END IF;
  RETURN true;
END $f$;
"""


@pytest.fixture
def bystander(make_db: Any) -> Iterator[str]:
    """Another database on the scratch server, with a table: nothing may change it."""
    dsn = str(make_db())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE keep (id int PRIMARY KEY, v text); INSERT INTO keep VALUES (1, 'x')")
    yield dsn


def _writes(dsn: str) -> tuple[int, int, int, dict[str, tuple[int, str]]]:
    """Rows inserted, updated and deleted in the tables of ``dsn``'s database (pg_stat_user_tables:
    pg_stat_database also counts the catalog rows autovacuum's ANALYZE writes, which failed a CI run)
    and its digests."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), "
                           "coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables").fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), table_digests(dsn)


def _roles(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}


def _auto_conf(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT name, setting FROM pg_file_settings "
                            "WHERE sourcefile LIKE '%postgresql.auto.conf'").fetchall()


def _plain_dump(path: Path, statements: str) -> Path:
    """A plain snapshot: one table with right cents, then ``statements``."""
    path.write_text("--\n-- PostgreSQL database dump\n--\n\n"  # noqa: S608
                    "CREATE TABLE public.tips (id integer PRIMARY KEY, amount numeric(12,2), "
                    "amount_cents bigint);\n"
                    "INSERT INTO public.tips VALUES (1, 1.50, 150);\n" + statements
                    + "\n--\n-- PostgreSQL database dump complete\n--\n\n")
    return path


def _custom_dump(make_db: Any, tmp_path: Path, setup: str) -> Path:
    dsn = str(make_db())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(setup)
    out = tmp_path / f"snapshot-{secrets.token_hex(3)}.dump"
    pg_dump_custom(dsn, out)
    return out


def _rehearse(tmp_path: Path, dump: Path, scratch: str | None, migrations: dict[str, str] | None = None,
              ) -> tuple[int, str, dict[str, Any]]:
    directory = tmp_path / "migrations"
    directory.mkdir(exist_ok=True)
    for name, text in (migrations or {}).items():
        (directory / name).write_text(text)
    report = tmp_path / "r"
    args = ["verify-cents", "--snapshot", str(dump), "--migrations", str(directory),
            "--report-dir", str(report)]
    if scratch is not None:
        args += ["--scratch", scratch]
    result = run_cli(*args)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return result.code, result.stderr, run_summary(report)


@pytest.mark.parametrize("case", ["drop_database", "create_role", "alter_system", "copy_to_program",
                                  "event_trigger"])
def test_a_hostile_plain_snapshot_fails_inside_postgresql(
        case: str, tmp_path: Path, server_dsn: str, bystander: str, leftovers: None) -> None:
    """Lower case, so that no text filter of ours could catch it: the server refuses each."""
    other = psycopg.conninfo.conninfo_to_dict(bystander)["dbname"]
    role = f"test_hostile_{secrets.token_hex(4)}"
    touched = tmp_path / "touched"
    statement = {
        "drop_database": f'drop database "{other}";',
        "create_role": f"create role {role} superuser login;",
        "alter_system": "alter system set work_mem = '77MB';",
        "copy_to_program": f"copy (select 1) to program 'touch {touched}';",
        "event_trigger": "create function public.et() returns event_trigger language plpgsql as "
                         "$$ begin end $$;\n"
                         "create event trigger et on ddl_command_end execute function public.et();",
    }[case]
    before_writes, before_roles, before_conf = _writes(bystander), _roles(server_dsn), _auto_conf(server_dsn)
    code, stderr, data = _rehearse(tmp_path, _plain_dump(tmp_path / "hostile.sql", statement + "\n"),
                                   server_dsn)
    assert code == 2, stderr
    assert data["stages"][-1]["name"] == "restore", stderr
    assert any(w in stderr for w in ("permission denied", "must be superuser", "must be owner",
                                     "Only roles with")), stderr
    assert _writes(bystander) == before_writes
    appeared = _roles(server_dsn) - before_roles
    # Another verifier running on this server (a demo in another terminal) makes roles of its own.
    assert {n for n in appeared if not n.startswith("verifier_") or _ours({n})} == set()
    assert _auto_conf(server_dsn) == before_conf
    assert not touched.exists()


def test_an_expression_index_calling_copy_to_program_fails_on_the_embedded_server(
        make_db: Any, tmp_path: Path, leftovers: None) -> None:
    """A custom dump whose index builds call a function that runs a program: the default scratch
    server's sandbox refuses it (before: it ran, as the server's user with group root)."""
    touched = tmp_path / "touched"
    dump = _custom_dump(make_db, tmp_path, f"""
        CREATE FUNCTION public.g(a int) RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
        BEGIN
          IF current_database() LIKE 'verifier\\_scratch%' THEN
            EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {touched}''';
          END IF;
          RETURN a;
        END $f$;
        -- An index may only call an immutable function; that one may call any other.
        CREATE FUNCTION public.f(a int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
        BEGIN RETURN public.g(a); END $f$;
        CREATE TABLE tips (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint);
        INSERT INTO tips VALUES (1, 1.00, 100);
        CREATE INDEX ON tips (public.f(id));""")  # noqa: S608
    code, stderr, data = _rehearse(tmp_path, dump, None)
    assert code == 2 and "pg_execute_server_program" in stderr, stderr
    assert not touched.exists()


def test_a_domain_check_never_runs_as_a_superuser(make_db: Any, tmp_path: Path, server_dsn: str,
                                                 leftovers: None) -> None:
    """Recording the originals stores plain values: a domain's CHECK (the snapshot's function) never
    runs with the scratch server's rights; the run verifies the cents as usual."""
    touched = tmp_path / "touched"
    dump = _custom_dump(make_db, tmp_path, SPY.replace("FILE", str(touched)) + """
        CREATE DOMAIN usd AS numeric(12,2) CHECK (public.spy(VALUE));
        CREATE TABLE tips (id int PRIMARY KEY, amount usd, amount_cents bigint);
        INSERT INTO tips VALUES (1, 1.00, 100), (2, 2.50, 250);""")  # noqa: S608
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn)
    assert code == 0, stderr
    assert not touched.exists()
    assert data["provenance"]["sandbox"]["role"].startswith("verifier_sandbox_")


def test_an_operator_in_public_does_not_change_the_verdict(make_db: Any, tmp_path: Path, server_dsn: str,
                                                          leftovers: None) -> None:
    """``=(bigint, numeric)`` in public that says every cents value is right: the wrong cent is found."""
    dump = _custom_dump(make_db, tmp_path, """
        CREATE FUNCTION public.lie(bigint, numeric) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
        CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = public.lie);
        CREATE FUNCTION public.lie_ne(bigint, numeric) RETURNS boolean LANGUAGE sql IMMUTABLE
          AS 'SELECT false';
        CREATE OPERATOR public.<> (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = public.lie_ne);
        CREATE TABLE t (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint);
        INSERT INTO t VALUES (1, 5.00, 1), (2, 1.00, 100);""")
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn)
    assert code == 1, stderr
    assert {f["rule"] for f in data["findings"] if f["severity"] == "error"} >= {"wrong_value"} or any(
        f["table"] == "public.t" and f["severity"] == "error" for f in data["findings"]), data["findings"]


@pytest.mark.parametrize("case", ["copy_to_program", "rewrite_originals", "drop_originals"])
def test_a_hostile_migration_fails_inside_postgresql(case: str, make_db: Any, tmp_path: Path, server_dsn: str,
                                                    bystander: str, leftovers: None) -> None:
    """A migration that runs a program or reaches the verifier's record of the originals fails (exit 1,
    migration_failed); it never makes wrong cents pass."""
    touched = tmp_path / "touched"
    dump = _custom_dump(make_db, tmp_path, """
        CREATE TABLE tips (id int PRIMARY KEY, amount numeric(12,2));
        INSERT INTO tips SELECT g, g FROM generate_series(1, 10) g;""")
    body = {
        "copy_to_program": f"COPY (SELECT 1) TO PROGRAM 'touch {touched}';",
        "rewrite_originals": "UPDATE verifier_originals.t1 SET amount = 0;",
        "drop_originals": "DROP SCHEMA verifier_originals CASCADE;",
    }[case]
    before = _writes(bystander)
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn, {
        "300_add.sql": "ALTER TABLE tips ADD COLUMN amount_cents bigint;\n"
                       "UPDATE tips SET amount_cents = 0;\n",  # every cent wrong
        "301_hostile.sql": body + "\n"})
    assert code == 1, stderr
    failed = [f for f in data["findings"] if f["rule"] == "migration_failed"]
    assert failed and "301_hostile.sql" in failed[0]["message"], data["findings"]
    assert any(w in failed[0]["message"] for w in ("permission denied", "must be owner",
                                                   "pg_execute_server_program")), failed[0]["message"]
    wrong = [f for f in data["findings"] if f["table"] == "public.tips" and f["severity"] == "error"]
    assert sum(f["count"] for f in wrong) >= 10, data["findings"]
    assert not touched.exists()
    assert _writes(bystander) == before


def test_an_extension_only_a_superuser_may_create_is_created_for_the_dump(
        make_db: Any, tmp_path: Path, server_dsn: str, leftovers: None) -> None:
    """pg_stat_statements (not trusted): created by the scratch server's role from the server's own
    script; the dump's COMMENT ON EXTENSION is left out; the rest restores as the sandbox role."""
    dump = _custom_dump(make_db, tmp_path, """
        CREATE EXTENSION pg_stat_statements;
        CREATE EXTENSION citext;
        CREATE TABLE tips (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint, note citext);
        INSERT INTO tips VALUES (1, 1.00, 100, 'a');""")
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn)
    assert code == 0, stderr
    restore = next(s for s in data["stages"] if s["name"] == "restore")
    assert restore["extensions_precreated"] == ["pg_stat_statements"], restore
    as_server = data["provenance"]["sandbox"]["runs_as_the_scratch_server_role"]
    assert "CREATE EXTENSION pg_stat_statements" in as_server


def test_the_sandbox_role_owns_the_scratch_database_only_and_is_dropped(
        tmp_path: Path, server_dsn: str, small_dump: Path, leftovers: None) -> None:
    """The migrations run as the rehearsal's role: not a superuser, no CREATEDB, CREATEROLE or
    BYPASSRLS, owner of the scratch database; gone with it."""
    code, stderr, data = _rehearse(tmp_path, small_dump, server_dsn, {"300_whoami.sql": """
        DO $$ BEGIN
          IF current_user NOT LIKE 'verifier\\_sandbox\\_%' THEN
            RAISE EXCEPTION 'ran as %', current_user;
          END IF;
          IF (SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolbypassrls OR rolreplication
              FROM pg_roles WHERE rolname = current_user) THEN RAISE EXCEPTION 'privileged'; END IF;
          IF (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database())
             <> current_user THEN RAISE EXCEPTION 'not the owner'; END IF;
          IF (SELECT count(*) FROM pg_database WHERE pg_get_userbyid(datdba) = current_user) <> 1
             THEN RAISE EXCEPTION 'owns other databases'; END IF;
        END $$;
"""})
    assert not [f for f in data["findings"] if f["rule"] == "migration_failed"], data["findings"]
    role = data["provenance"]["sandbox"]["role"]
    assert role.startswith("verifier_sandbox_"), data["provenance"]
    assert role not in _roles(server_dsn)


def test_a_control_character_in_a_table_name_keeps_junit_well_formed(make_db: Any, tmp_path: Path) -> None:
    """PostgreSQL allows any character but NUL in a name; XML 1.0 does not (U+0001 here)."""
    dsn = str(make_db())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('CREATE TABLE "tips\x01bell" (id int PRIMARY KEY, amount numeric(12,2), '
                     'amount_cents bigint); INSERT INTO "tips\x01bell" VALUES (1, 1.00, 1)')
    result = run_cli("verify-cents", "--db", dsn, "--report-dir", str(tmp_path))
    assert result.code == 1, result.stderr
    [run] = [p for p in tmp_path.iterdir() if p.is_dir()]
    suite = ElementTree.parse(run / "junit.xml").getroot()  # ill-formed XML raises ParseError
    assert "public.tips\\u0001bell" in ElementTree.tostring(suite, encoding="unicode")
    assert int(suite.get("failures", "0")) >= 1


def test_a_role_that_can_write_is_named_with_the_grant_of_one_that_cannot(
        make_db: Any, tmp_path: Path) -> None:
    """``--db`` as the table's owner (a superuser here): said on the terminal and in summary.json,
    with the one statement that makes a read-only role; run as a role made by that statement, the
    same verdict and nothing to say."""
    from verifier.source.live import READER_GRANT

    dsn = str(make_db())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tips (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint);"
                     "INSERT INTO tips VALUES (1, 1.00, 100), (2, 2.00, 201);"
                     "ALTER TABLE tips ENABLE ROW LEVEL SECURITY")
    owner = run_cli("verify-cents", "--db", dsn, "--report-dir", str(tmp_path / "owner"))
    assert owner.code == 1, owner.stderr
    rights = run_summary(tmp_path / "owner")["provenance"]["target_role_can_write"]
    assert rights[0] == "is a superuser" and "public.tips" in rights[-1], rights
    assert READER_GRANT in owner.stderr and "can write" in owner.stderr
    role = f"test_reader_{secrets.token_hex(4)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(READER_GRANT.replace("verifier_reader", role))
    try:
        reader = run_cli("verify-cents", "--db", psycopg.conninfo.make_conninfo(dsn, user=role),
                         "--report-dir", str(tmp_path / "reader"))
        assert reader.code == 1, reader.stderr
        data = run_summary(tmp_path / "reader")
        assert data["provenance"]["target_role_can_write"] == []
        assert "can write" not in reader.stderr
        assert [f for f in data["findings"] if f["table"] == "public.tips" and f["severity"] == "error"]
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{role}"')


def test_session_settings_of_the_database_and_odd_schemas_hide_nothing(make_db: Any, tmp_path: Path) -> None:
    """ALTER DATABASE ... SET of settings that change what SQL means (a backslash in '\\_' no longer
    an escape, names found in public first, floats printed short, another isolation, a tiny lock
    timeout); wrong cents in a schema named pgpay (which 'pg\\_%' would match without standard
    strings) and in a table created in information_schema: all found."""
    dsn = str(make_db())
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA pgpay;"
                     "CREATE TABLE pgpay.tips (id int PRIMARY KEY, amount numeric(12,2), "
                     "amount_cents bigint);"
                     "INSERT INTO pgpay.tips VALUES (1, 1.00, 1);"
                     "CREATE TABLE information_schema.tips (id int PRIMARY KEY, amount numeric(12,2), "
                     "amount_cents bigint); INSERT INTO information_schema.tips VALUES (1, 2.00, 2);"
                     "CREATE TABLE public.tips (id int PRIMARY KEY, amount real, amount_cents bigint);"
                     "INSERT INTO public.tips VALUES (1, 0.1, 10)")
        for setting in ("standard_conforming_strings = off", "search_path = public, pg_catalog",
                        "extra_float_digits = -15", "default_transaction_isolation = 'serializable'",
                        "DateStyle = 'SQL, DMY'", "IntervalStyle = 'sql_standard'"):
            conn.execute(f'ALTER DATABASE "{name}" SET {setting}')
    result = run_cli("verify-cents", "--db", dsn, "--report-dir", str(tmp_path))
    assert result.code == 1, result.stderr
    wrong = {f["table"] for f in run_summary(tmp_path)["findings"] if f["severity"] == "error"}
    assert {"pgpay.tips", "information_schema.tips"} <= wrong, wrong
    assert "public.tips" not in wrong, wrong  # 0.1 real is 10 cents, read at its shortest decimal


def test_a_set_config_in_public_with_the_databases_search_path_is_never_called(
        make_db: Any, tmp_path: Path) -> None:
    """The database's owner sets search_path = public, pg_catalog and defines public.set_config (which
    keeps public on the path) and an "=" that calls every cent right: the pins are set through
    pg_catalog.set_config, so neither runs in our session and the wrong cents are found."""
    dsn = str(make_db())
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE public.called (who text);
            CREATE FUNCTION public.set_config(name text, val text, is_local boolean) RETURNS text
              LANGUAGE plpgsql AS $f$ BEGIN
                INSERT INTO public.called VALUES (current_user);
                IF name = 'search_path' THEN
                  RETURN pg_catalog.set_config(name, 'public, pg_catalog', is_local);
                END IF;
                RETURN pg_catalog.set_config(name, val, is_local); END $f$;
            CREATE FUNCTION public.lie(bigint, numeric) RETURNS boolean LANGUAGE sql IMMUTABLE
              AS 'SELECT true';
            CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = numeric, FUNCTION = public.lie);
            CREATE TABLE public.payments (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint);
            INSERT INTO public.payments SELECT g, g, 1 FROM generate_series(1, 3) g;""")
        conn.execute(f'ALTER DATABASE "{name}" SET search_path = public, pg_catalog')
    result = run_cli("verify-cents", "--db", dsn, "--report-dir", str(tmp_path))
    assert result.code == 1, result.stderr
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.called").fetchone() == (0,)


_TIPS = """
    CREATE TABLE tips (id int PRIMARY KEY, amount numeric(12,2));
    INSERT INTO tips SELECT g, g FROM generate_series(1, 10) g;"""
_WRONG = "ALTER TABLE tips ADD COLUMN amount_cents bigint;\nUPDATE tips SET amount_cents = amount * 10;\n"


@pytest.mark.parametrize(("case", "sql", "table"), [
    ("rename", "ALTER TABLE tips RENAME TO gratuities; ALTER TABLE gratuities DROP COLUMN amount;",
     "public.gratuities"),
    ("move", "CREATE SCHEMA pay; ALTER TABLE tips SET SCHEMA pay; ALTER TABLE pay.tips DROP COLUMN amount;",
     "pay.tips"),
    ("rename_key", "ALTER TABLE tips RENAME COLUMN id TO tip_id; ALTER TABLE tips DROP COLUMN amount;",
     "public.tips"),
    ("widen_key", "ALTER TABLE tips ALTER COLUMN id TYPE bigint; ALTER TABLE tips DROP COLUMN amount;",
     "public.tips"),
])
def test_a_recorded_table_renamed_or_moved_is_followed_to_its_originals(
        case: str, sql: str, table: str, make_db: Any, tmp_path: Path, server_dsn: str,
        leftovers: None) -> None:
    """Wrong cents, then the table renamed, moved to another schema, its key renamed or widened and
    its decimals dropped: the originals follow the table (by OID, its key by attribute number) and
    every wrong cent is found where the table now is."""
    dump = _custom_dump(make_db, tmp_path, _TIPS)
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn, {"300_cents.sql": _WRONG,
                                                               "301_reshape.sql": sql + "\n"})
    assert code == 1, stderr
    assert not [f for f in data["findings"] if f["rule"] == "migration_failed"], data["findings"]
    wrong = [f for f in data["findings"] if f["table"] == table and f["rule"] == "scale_error"]
    assert [f["count"] for f in wrong] == [10], data["findings"]


@pytest.mark.parametrize(("case", "sql", "why"), [
    ("drop", "DROP TABLE tips;", "dropped the table"),
    ("replace", "CREATE TABLE tips_new AS SELECT id, amount_cents FROM tips; DROP TABLE tips;"
                "ALTER TABLE tips_new RENAME TO tips;", "dropped the table"),
    ("drop_key", "ALTER TABLE tips DROP COLUMN id;", "dropped a column of its primary key"),
    ("key_to_text", "ALTER TABLE tips ALTER COLUMN id TYPE text;", "changed the type of its key"),
])
def test_originals_that_match_nothing_after_the_migrations_fail_the_run(
        case: str, sql: str, why: str, make_db: Any, tmp_path: Path, server_dsn: str,
        leftovers: None) -> None:
    """A table dropped (or replaced by another of its name), its key dropped or retyped: its recorded
    rows cannot be compared, which is an error naming the table and why, never a pass."""
    dump = _custom_dump(make_db, tmp_path, _TIPS)
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn, {
        "300_cents.sql": "ALTER TABLE tips ADD COLUMN amount_cents bigint;\n"
                         "UPDATE tips SET amount_cents = amount * 100;\n",
        "301_reshape.sql": sql + "\n"})
    assert code == 1, stderr
    [lost] = [f for f in data["findings"] if f["rule"] == "originals_unmatched"]
    assert lost["table"] == "public.tips" and lost["count"] == 10 and why in lost["message"], lost


def test_rows_a_migration_copies_after_dropping_the_key_are_counted(
        make_db: Any, tmp_path: Path, server_dsn: str, leftovers: None) -> None:
    """The primary key dropped and every row inserted twice, each copy with right cents: the money
    doubled, found as row_duplicated with the cents the copies add."""
    dump = _custom_dump(make_db, tmp_path, _TIPS)
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn, {
        "300_cents.sql": "ALTER TABLE tips ADD COLUMN amount_cents bigint;\n"
                         "UPDATE tips SET amount_cents = amount * 100;\n",
        "301_copy.sql": "ALTER TABLE tips DROP CONSTRAINT tips_pkey;\n"
                        "INSERT INTO tips SELECT * FROM tips;\n"})
    assert code == 1, stderr
    [dup] = [f for f in data["findings"] if f["rule"] == "row_duplicated"]
    assert dup["table"] == "public.tips" and dup["count"] == 10, dup
    assert dup["cents_impact_net"] == sum(range(1, 11)) * 100, dup


def test_a_snapshot_with_a_schema_named_like_the_record_is_verified(
        make_db: Any, tmp_path: Path, server_dsn: str, leftovers: None) -> None:
    """The snapshot's own verifier_originals schema: the record takes another name, and the wrong
    cents in the user's schema of that name are found."""
    dump = _custom_dump(make_db, tmp_path, """
        CREATE SCHEMA verifier_originals;
        CREATE TABLE verifier_originals.t1 (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint);
        INSERT INTO verifier_originals.t1 VALUES (1, 1.00, 1), (2, 2.00, 200);""")
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn, {"300_touch.sql": (
        "UPDATE verifier_originals.t1 SET amount = amount;\n")})
    assert code == 1, stderr
    wrong = [f for f in data["findings"]
             if f["table"] == "verifier_originals.t1" and f["severity"] == "error"]
    assert wrong and wrong[0]["count"] == 1, data["findings"]


def test_a_cast_from_an_enum_to_text_changes_no_currency(make_db: Any, tmp_path: Path) -> None:
    """The owner of an enum of currency codes casts it to text with a function that says USD for
    every row: the rows in JPY (no minor unit) are still read as JPY, so their wrong cents are found."""
    dsn = str(make_db())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            CREATE TYPE iso AS ENUM ('USD', 'JPY');
            CREATE FUNCTION public.lie(iso) RETURNS text LANGUAGE sql IMMUTABLE AS $$SELECT 'USD'$$;
            CREATE CAST (iso AS text) WITH FUNCTION public.lie(iso);
            CREATE TABLE sales (id int PRIMARY KEY, currency iso, amount numeric(12,2),
                                amount_cents bigint);
            INSERT INTO sales VALUES (1, 'USD', 1.00, 100), (2, 'JPY', 500, 50000)""")
    result = run_cli("verify-cents", "--db", dsn, "--report-dir", str(tmp_path))
    assert result.code == 1, result.stderr
    wrong = [f for f in run_summary(tmp_path)["findings"] if f["table"] == "public.sales"
             and f["severity"] == "error"]
    assert [f["count"] for f in wrong if f["rule"] == "scale_error"] == [1], wrong


def test_database_settings_a_snapshot_makes_neither_stop_the_rehearsal_nor_blind_the_rule_checks(
        tmp_path: Path, server_dsn: str, leftovers: None) -> None:
    """The snapshot, as the scratch database's owner, sets the database read-only for new sessions and
    its search_path to public first, with a public.md5 that hashes everything alike: the migrations
    still run and are tracked, and a migration that changes a row each time it runs is still
    not_idempotent (the rule checks' digests use pg_catalog's md5)."""
    dump = _plain_dump(tmp_path / "settings.sql", """
        ALTER TABLE public.tips ADD COLUMN note text DEFAULT 'n';
        CREATE FUNCTION public.md5(text) RETURNS text LANGUAGE sql IMMUTABLE AS $$SELECT 'same'$$;
        DO $$ BEGIN
          EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database());
          EXECUTE format('ALTER DATABASE %I SET search_path = public, pg_catalog', current_database());
        END $$;
    """)
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn, {
        "300_note.sql": "UPDATE tips SET note = note || 'x';\n"})
    assert code == 1, stderr
    assert not [f for f in data["findings"] if f["rule"] == "migration_failed"], data["findings"]
    assert [f["migration"] for f in data["findings"] if f["rule"] == "not_idempotent"] == ["300_note.sql"]


def test_a_percent_sign_in_a_name_reads_that_table_and_no_other(make_db: Any, tmp_path: Path) -> None:
    """Names holding "%%" and "%s": the currency detection reads the table named, not a decoy whose name
    a placeholder-escaping would make of it ("fx%%orders" -> "fx%orders"), and is no internal error.
    Yen recorded times 100 are found."""
    dsn = str(make_db())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE "fx%%orders" (id bigint PRIMARY KEY, currency text, amount numeric(12,2),
                                       amount_minor bigint);
            INSERT INTO "fx%%orders" SELECT g, 'JPY', g * 100, g * 100 * 100 FROM generate_series(1, 10) g;
            CREATE TABLE "fx%orders" (id bigint PRIMARY KEY, currency text);
            INSERT INTO "fx%orders" VALUES (1, 'yen, cash'), (2, 'yen, card');
            CREATE TABLE "pay%sments" (id bigint PRIMARY KEY, currency text, amount numeric(12,2),
                                       amount_cents bigint);
            INSERT INTO "pay%sments" VALUES (1, 'USD', 1.00, 100);""")
    result = run_cli("verify-cents", "--db", dsn, "--report-dir", str(tmp_path))
    assert result.code == 1, result.stderr
    assert "internal error" not in result.stderr
    wrong = [f for f in run_summary(tmp_path)["findings"] if f["severity"] == "error"]
    assert {f["table"] for f in wrong} == {"public.fx%%orders"}, wrong
    assert sum(f["count"] for f in wrong if f["rule"] == "scale_error") == 10, wrong


@pytest.mark.parametrize("grant", ["column_update", "noinherit_owner"])
def test_a_column_grant_or_a_noinherit_owner_role_is_named_as_able_to_write(
        grant: str, make_db: Any, tmp_path: Path) -> None:
    """UPDATE on one column, or membership without INHERIT in the owner's role (SET ROLE reaches it):
    both can write, and the run says so."""
    dsn = str(make_db())
    role, owner = f"test_w_{secrets.token_hex(4)}", f"test_o_{secrets.token_hex(4)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {owner}; CREATE ROLE {role} LOGIN BYPASSRLS NOINHERIT")
        conn.execute("CREATE TABLE tips (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint);"
                     "INSERT INTO tips VALUES (1, 1.00, 100)")
        conn.execute(f"GRANT SELECT ON tips TO {role}")
        conn.execute(f"GRANT UPDATE (amount_cents) ON tips TO {role}" if grant == "column_update"
                     else f"ALTER TABLE tips OWNER TO {owner}; GRANT {owner} TO {role}")
    try:
        result = run_cli("verify-cents", "--db", psycopg.conninfo.make_conninfo(dsn, user=role),
                         "--report-dir", str(tmp_path))
        assert result.code == 0, result.stderr
        rights = run_summary(tmp_path)["provenance"]["target_role_can_write"]
        assert rights and "public.tips" in rights[-1], rights
        assert "can write" in result.stderr
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}; DROP TABLE tips; DROP ROLE {owner}")


_PAYMENTS = """
    CREATE TABLE payments (id bigint PRIMARY KEY, price numeric(12,2));
    INSERT INTO payments SELECT g, g + 0.25 FROM generate_series(1, 100) g;
    CREATE TABLE tips (id bigint PRIMARY KEY, amount numeric(12,2));
    INSERT INTO tips SELECT g, g * 2 FROM generate_series(1, 100) g;
    CREATE TABLE fx_orders (id bigint PRIMARY KEY, currency text, amount numeric(12,3));
    INSERT INTO fx_orders VALUES (1, 'USD', 1.25), (2, 'KWD', 1.250), (3, 'USD', 3.33);"""
_CONVERT = """
    ALTER TABLE payments ADD COLUMN IF NOT EXISTS price_cents bigint;
    UPDATE payments SET price_cents = round(price * 100);
    ALTER TABLE fx_orders ADD COLUMN IF NOT EXISTS amount_minor bigint;
"""
_FX = ("UPDATE fx_orders SET amount_minor = round(amount * CASE currency WHEN 'KWD' THEN 1000 "
       "WHEN 'JPY' THEN 1 ELSE 100 END);\n")


@pytest.mark.parametrize(("case", "sql", "expected"), [
    ("moved_to_a_new_table",
     "CREATE TABLE tip_amounts (tip_id bigint PRIMARY KEY, amount_cents bigint);"
     "INSERT INTO tip_amounts SELECT id, round(amount * 100) + (id = 7)::int FROM tips;"
     "ALTER TABLE tips DROP COLUMN amount;", {("original_dropped", "public.tips", 1)}),
    ("decimals_changed_without_cents",
     "UPDATE tips SET amount = amount - 0.01 WHERE id <= 3; UPDATE tips SET amount = 0 WHERE id = 5;",
     {("original_changed", "public.tips", 4)}),
    ("rows_deleted_and_added", "DELETE FROM tips WHERE id > 50; INSERT INTO tips VALUES (1000, 999999.99);",
     {("row_missing", "public.tips", 50), ("row_added", "public.tips", 1)}),
    ("renamed_source_changed",
     "ALTER TABLE payments RENAME COLUMN price TO cost; UPDATE payments SET cost = cost + 0.01 WHERE id = 7;"
     "ALTER TABLE payments RENAME COLUMN price_cents TO cost_cents; UPDATE payments SET cost_cents = "
     "round(cost * 100);",
     {("original_changed", "public.payments", 1)}),
    ("currency_relabelled", "UPDATE fx_orders SET currency = 'JPY' WHERE id = 3;",
     {("original_changed", "public.fx_orders", 1)}),
])
def test_every_recorded_amount_is_compared_whether_or_not_cents_replaced_it(
        case: str, sql: str, expected: set[tuple[str, str, int]], make_db: Any, tmp_path: Path,
        server_dsn: str, leftovers: None) -> None:
    """Found by a break-it run, each passed before: money moved to a new table and its column dropped,
    decimals changed where no cents exist yet, rows deleted or added there, a source renamed and
    changed, a row's currency relabelled before its minor units were computed."""
    dump = _custom_dump(make_db, tmp_path, _PAYMENTS)
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn, {"300_convert.sql": _CONVERT,
                                                               "301_hostile.sql": sql + "\n" + _FX})
    assert code == 1, stderr
    errors = {(f["rule"], f["table"], f["count"] or 0) for f in data["findings"] if f["severity"] == "error"}
    assert expected <= errors, data["findings"]
    if case == "renamed_source_changed":  # the cents follow the renamed column to its recorded original
        assert ("value_mismatch", "public.payments", 1) in errors, errors
    if case == "rows_deleted_and_added":  # no cents there: the decimals' cents are what moved
        impacts = {f["rule"]: f["cents_impact"] for f in data["findings"] if f["table"] == "public.tips"}
        assert impacts["row_missing"] == 2 * sum(range(51, 101)) * 100 and impacts["row_added"] == 99999999


def test_a_rehearsal_whose_migrations_change_nothing_recorded_still_passes(
        make_db: Any, tmp_path: Path, server_dsn: str, leftovers: None) -> None:
    """The same tables converted honestly, the decimals and currencies left alone: a pass, with the
    unconverted tips amount still a warning only."""
    dump = _custom_dump(make_db, tmp_path, _PAYMENTS)
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn, {"300_convert.sql": _CONVERT + _FX})
    assert code == 0, [(f["rule"], f["message"]) for f in data["findings"] if f["severity"] == "error"]
    assert {f["rule"] for f in data["findings"]} == {"unpaired_column", "down_missing"}, data["findings"]


_SECOND = """
    CREATE TABLE payments (id serial PRIMARY KEY, amount numeric(12,2) NOT NULL, fee numeric(12,4),
                           currency char(3) NOT NULL DEFAULT 'USD');
    INSERT INTO payments (amount, fee, currency)
      SELECT (g * 1.37)::numeric(12,2), (g * 0.0125)::numeric(12,4),
             CASE WHEN g % 3 = 0 THEN 'EUR' ELSE 'USD' END
      FROM generate_series(1, 200) g;
    CREATE TABLE tips (id bigserial PRIMARY KEY, amount numeric(10,2));
    INSERT INTO tips (amount) SELECT (g * 0.5)::numeric(10,2) FROM generate_series(1, 100) g;
    CREATE TABLE adjustments (ref text UNIQUE NOT NULL, amount numeric(12,2));
    INSERT INTO adjustments SELECT 'r' || g, g FROM generate_series(1, 50) g;"""


@pytest.mark.parametrize(("case", "sql", "expected"), [
    ("attached_as_a_partition",
     "CREATE TABLE tips_all (id bigint NOT NULL, amount numeric(10,2), PRIMARY KEY (id)) "
     "PARTITION BY RANGE (id);"
     "ALTER TABLE tips_all ATTACH PARTITION tips FOR VALUES FROM (MINVALUE) TO (MAXVALUE);"
     "UPDATE tips SET amount = amount * 10 WHERE id < 20; DELETE FROM tips WHERE id > 90;",
     {"original_changed", "row_missing"}),
    ("names_swapped",
     "ALTER TABLE payments RENAME COLUMN amount TO tmp; ALTER TABLE payments RENAME COLUMN fee TO amount;"
     "ALTER TABLE payments RENAME COLUMN tmp TO fee;", {"original_changed"}),
    ("unique_not_null_key",
     "UPDATE adjustments SET amount = amount * 2; DELETE FROM adjustments WHERE ref = 'r7';",
     {"original_changed", "row_missing"}),
    ("currency_column_added_and_relabelled",
     "ALTER TABLE tips ADD COLUMN currency text NOT NULL DEFAULT 'USD'; UPDATE tips SET currency = 'JPY' "
     "WHERE id <= 50; ALTER TABLE tips ADD COLUMN amount_cents bigint; UPDATE tips SET amount_cents = "
     "CASE currency WHEN 'JPY' THEN round(amount) ELSE round(amount * 100) END;", {"scale_error"}),
    ("currency_column_dropped",
     "ALTER TABLE payments ADD COLUMN amount_cents bigint; "
     "UPDATE payments SET amount_cents = round(amount * 100); ALTER TABLE payments DROP COLUMN currency;",
     {"original_dropped"}),
])
def test_what_a_second_break_it_run_found_passing(case: str, sql: str, expected: set[str], make_db: Any,
                                                  tmp_path: Path, server_dsn: str, leftovers: None) -> None:
    """Each passed before: a table attached as a partition and then changed, two money columns'
    names swapped, a table keyed by a unique NOT NULL index changed, rows relabelled in a currency
    column the migrations added, a currency column dropped."""
    dump = _custom_dump(make_db, tmp_path, _SECOND)
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn, {"300_x.sql": sql + "\n"})
    assert code == 1, stderr
    assert expected <= {f["rule"] for f in data["findings"] if f["severity"] == "error"}, data["findings"]


@pytest.mark.parametrize(("case", "sql"), [
    ("converted_in_three_steps",
     "ALTER TABLE tips ADD COLUMN amount_cents bigint; UPDATE tips SET amount_cents = round(amount * 100);"
     "ALTER TABLE tips DROP COLUMN amount; ALTER TABLE tips RENAME COLUMN amount_cents TO amount;"),
    ("converted_in_place", "ALTER TABLE tips ALTER COLUMN amount TYPE bigint USING round(amount * 100);"),
    ("renamed_and_converted",
     "ALTER TABLE tips RENAME COLUMN amount TO amount_dollars; "
     "ALTER TABLE tips ADD COLUMN amount_cents bigint; "
     "UPDATE tips SET amount_cents = round(amount_dollars * 100);"),
    ("currency_widened", "ALTER TABLE payments ALTER COLUMN currency TYPE text;"),
])
def test_honest_conversions_pass(case: str, sql: str, make_db: Any, tmp_path: Path, server_dsn: str,
                                 leftovers: None) -> None:
    """No false alarm: the three-step conversion (add the cents, drop the decimal, give the cents its
    name), the in-place one, a rename with new cents, a currency column widened to text."""
    dump = _custom_dump(make_db, tmp_path, _SECOND)
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn, {"300_x.sql": sql + "\n"})
    errors = [(f["rule"], f["table"], f["message"]) for f in data["findings"] if f["severity"] == "error"]
    assert not [e for e in errors if e[1] in ("public.tips", "public.payments") and e[0] != "not_idempotent"
                and e[0] != "down_mismatch"], errors


def test_rows_lost_from_tables_of_floats_and_sub_cent_decimals_count_their_cents(
        make_db: Any, tmp_path: Path, server_dsn: str, leftovers: None) -> None:
    """A deleted row's impact is its amounts' cents under the rounding mode, whole cents per row
    (a float read at its shortest round-trip decimal), as a pair's expected cents are; before, real
    and double amounts counted 0 and sub-cent decimals left fractions (found by a break-it run)."""
    dump = _custom_dump(make_db, tmp_path, """
        CREATE TABLE t_real (id int PRIMARY KEY, r real, d double precision);
        INSERT INTO t_real VALUES (1, 12.5, 0.25), (2, 1.75, 3);
        CREATE TABLE t_sub (id int PRIMARY KEY, x numeric(12,4));
        INSERT INTO t_sub VALUES (1, 0.004), (2, 0.004), (3, 0.005), (4, -0.005), (5, 2.3456);""")
    code, stderr, data = _rehearse(tmp_path, dump, server_dsn, {
        "300_lose.sql": "DELETE FROM t_real; DELETE FROM t_sub;\n"})
    assert code == 1, stderr
    missing = {f["table"]: (f["count"], f["cents_impact"], f["cents_impact_net"])
               for f in data["findings"] if f["rule"] == "row_missing"}
    # 1,250 + 25 + 175 + 300; 0 + 0 + 1 - 1 + 235 (half away from zero, per row).
    assert missing == {"public.t_real": (2, 1750, -1750), "public.t_sub": (5, 237, -235)}, missing
    with (only_run(tmp_path / "r") / "offenders.csv").open() as fh:
        impacts = [row["cents_impact"] for row in csv.DictReader(fh) if row["rule"] == "row_missing"]
    assert impacts and all(Decimal(i) == Decimal(i).to_integral_value() for i in impacts), impacts
