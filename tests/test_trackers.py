"""Which migrations a database already has, read the ways teams record it; which files are read at all.

Each case is a real database (dumped and rehearsed, or changed by
``verifier migrations``) whose tracker says what ran:
the seed's ``schema_migrations`` with integer versions (a shared number
recorded once counts for both twins, never applied again, and is named in a
warning), with text versions (a twin recorded by its stem), another tool's
file-name tracker (node-pg-migrate's ``pgmigrations`` with a NOT NULL
``run_on``, Sequelize's ``"SequelizeMeta"``), a configured tracker that is
missing (exit 2), and plain file-name order. The files a rehearsal refuses
(a FIFO, a link out of the directory, a directory) stop it with exit 2
before any scratch database is made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .conftest import pg_dump_custom, run_cli, run_summary

TIPS = ("CREATE TABLE tips (id int PRIMARY KEY, amount numeric(12,2) NOT NULL);\n"
        "INSERT INTO tips SELECT g, g + 0.25 FROM generate_series(1, 50) g;\n")
# Each migration notes that it ran, in order, so a test can read which ran and in which order.
LOGGED = "CREATE TABLE IF NOT EXISTS ran (n serial, file text);\nINSERT INTO ran (file) VALUES ('{stem}');\n"
# A schema_migrations beside another tool's tracker: it must not be the one read.
NUMBERED_302 = ("CREATE TABLE schema_migrations (version integer);\n"
                "INSERT INTO schema_migrations VALUES (302);\n")
BACKFILL = ("ALTER TABLE tips ADD COLUMN IF NOT EXISTS amount_cents BIGINT;\n"
            "UPDATE tips SET amount_cents = round(amount * 100);\n")


def _dump(make_db: Any, tmp_path: Path, setup: str) -> Path:
    dsn = make_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TIPS + setup)
    out = tmp_path / "snapshot.dump"
    pg_dump_custom(dsn, out)
    return out


def _migrations(tmp_path: Path, *stems: str) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    for stem in stems:
        body = BACKFILL if stem.startswith("301") else LOGGED.format(stem=stem)
        (directory / f"{stem}.sql").write_text(body)
    return directory


def _rehearse(tmp_path: Path, dump: Path, server_dsn: str, migrations: Path, *extra: str,
              config: str | None = None, name: str = "r") -> tuple[int, dict[str, Any], str]:
    args = ["verify-cents", "--snapshot", str(dump), "--scratch", server_dsn, "--migrations", str(migrations),
            "--skip-rule-checks", "--report-dir", str(tmp_path / name), *extra]
    if config is not None:
        (tmp_path / "verifier.toml").write_text(config)
        args += ["--config", str(tmp_path / "verifier.toml")]
    result = run_cli(*args)
    assert "Traceback" not in result.stderr, result.stderr
    return result.code, run_summary(tmp_path / name), result.stderr


def _ran(data: dict[str, Any]) -> list[str]:
    migrate = next(s for s in data["stages"] if s["name"] == "migrate")
    return [t["file"] for t in migrate["timeline"]]


def test_an_integer_version_shared_by_twins_counts_for_both_and_is_named(
        make_db: Any, tmp_path: Path, server_dsn: str, leftovers: None) -> None:
    # The seed's README: versions recorded by number, 004 shared by two files, "all migrations have been
    # applied ... these duplicates exist in the file system only".
    dump = _dump(make_db, tmp_path, "CREATE TABLE schema_migrations (version integer PRIMARY KEY);\n"
                                    "INSERT INTO schema_migrations VALUES (1), (4), (300);\n")
    migrations = _migrations(tmp_path, "001_base", "004_create_call_requests", "004_supabase_auth_migration",
                             "300_add", "301_backfill")
    code, data, stderr = _rehearse(tmp_path, dump, server_dsn, migrations)
    assert code == 0, data["findings"]
    assert _ran(data) == ["301_backfill.sql"]  # neither twin applied again
    assert "1 pending file(s), in this order: 301_backfill.sql (4 file(s) already applied)" in stderr
    [finding] = [f for f in data["findings"] if f["rule"] == "migration_version_ambiguous"]
    assert finding["severity"] == "warning" and finding["count"] == 2
    assert finding["detail"] == {"version": "4", "files": ["004_create_call_requests.sql",
                                                           "004_supabase_auth_migration.sql"]}
    assert "public.schema_migrations(version) records 4 once for" in finding["message"]
    migrate = next(s for s in data["stages"] if s["name"] == "migrate")
    assert migrate["tracker"] == "public.schema_migrations(version), records version"
    strict, _, _ = _rehearse(tmp_path, dump, server_dsn, migrations, "--strict", name="strict")
    assert strict == 1


def test_a_text_version_tells_twins_apart_by_their_stems(make_db: Any, tmp_path: Path, server_dsn: str,
                                                         leftovers: None) -> None:
    dump = _dump(make_db, tmp_path, "CREATE TABLE schema_migrations (version text PRIMARY KEY);\n"
                                    "INSERT INTO schema_migrations VALUES ('004_a'), ('300');\n")
    migrations = _migrations(tmp_path, "004_a", "004_b", "300_add", "301_backfill")
    code, data, _ = _rehearse(tmp_path, dump, server_dsn, migrations)
    assert code == 0, data["findings"]
    assert _ran(data) == ["004_b.sql", "301_backfill.sql"]
    assert not [f for f in data["findings"] if f["rule"] == "migration_version_ambiguous"]


@pytest.mark.parametrize(("setup", "tracker", "recorded"), [
    # node-pg-migrate: the stem, and a NOT NULL run_on without a default.
    ("CREATE TABLE pgmigrations (id serial PRIMARY KEY, name varchar(255) NOT NULL, "
     "run_on timestamp NOT NULL);\nINSERT INTO pgmigrations (name, run_on) VALUES ('300_add', now());\n",
     'table = "pgmigrations"\ncolumn = "name"\nrecords = "file_stem"\n', "300_add"),
    # Sequelize: the file name, in a table whose name needs quoting.
    ('CREATE TABLE "SequelizeMeta" (name varchar(255) PRIMARY KEY);\n'
     "INSERT INTO \"SequelizeMeta\" VALUES ('300_add.sql');\n",
     'table = "public.SequelizeMeta"\ncolumn = "name"\nrecords = "file_name"\n', "300_add.sql"),
], ids=["node-pg-migrate", "sequelize"])
def test_a_file_name_tracker_of_another_tool(make_db: Any, tmp_path: Path, server_dsn: str, leftovers: None,
                                             setup: str, tracker: str, recorded: str) -> None:
    dump = _dump(make_db, tmp_path, setup + NUMBERED_302)
    migrations = _migrations(tmp_path, "300_add", "301_backfill", "302_gate")
    config = f"[migration_tracker]\n{tracker}"
    code, data, _ = _rehearse(tmp_path, dump, server_dsn, migrations, config=config)
    assert code == 0, data["findings"]
    # schema_migrations' 302 means nothing here: the configured tracker is the one read.
    assert _ran(data) == ["301_backfill.sql", "302_gate.sql"]
    migrate = next(s for s in data["stages"] if s["name"] == "migrate")
    assert migrate["already_applied"] == [recorded]

    # The same tracker, written by `verifier migrations up` on a database of ours, then read by status.
    url = make_db()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TIPS + setup)
    dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    up = run_cli("verifier", "migrations", "up", "--dir", str(migrations), "--db", url, "--confirm-write",
                 str(dbname), "--config", str(tmp_path / "verifier.toml"))
    assert up.code == 0, up.stderr
    assert [line.split(":")[0] for line in up.stdout.splitlines() if ": ok in" in line] == [
        "up   301_backfill.sql", "up   302_gate.sql"]
    column = "name"
    table = "pgmigrations" if "pgmigrations" in setup else '"SequelizeMeta"'
    with psycopg.connect(url) as conn:
        rows = [r[0] for r in conn.execute(f"SELECT {column} FROM {table} ORDER BY 1").fetchall()]  # noqa: S608
    suffix = ".sql" if recorded.endswith(".sql") else ""
    assert rows == [recorded, f"301_backfill{suffix}", f"302_gate{suffix}"]
    status = run_cli("verifier", "migrations", "status", "--dir", str(migrations), "--db", url,
                     "--config", str(tmp_path / "verifier.toml"))
    assert status.code == 0 and status.stdout.count("applied ") == 3, status.stdout


@pytest.mark.parametrize(("tracker", "expected"), [
    ('table = "knex_migrations"\ncolumn = "name"\n',
     "The migration tracker public.knex_migrations does not exist in the database"),
    ('table = "schema_migrations"\ncolumn = "filename"\n',
     "The migration tracker public.schema_migrations has no column filename"),
    ('table = "audit"\ncolumn = "name"\n',
     "has NOT NULL column(s) without a default (actor)"),
], ids=["missing-table", "missing-column", "unfillable"])
def test_a_configured_tracker_that_cannot_be_used_is_exit_2(
        make_db: Any, tmp_path: Path, server_dsn: str, leftovers: None, tracker: str, expected: str) -> None:
    dump = _dump(make_db, tmp_path, "CREATE TABLE schema_migrations (version integer);\n"
                                    "CREATE TABLE audit (name text, actor text NOT NULL);\n")
    migrations = _migrations(tmp_path, "300_add")
    (tmp_path / "verifier.toml").write_text(f"[migration_tracker]\n{tracker}")
    result = run_cli("verify-cents", "--snapshot", str(dump), "--scratch", server_dsn, "--migrations",
                     str(migrations), "--config", str(tmp_path / "verifier.toml"), "--skip-rule-checks",
                     "--report-dir", str(tmp_path / "r"))
    assert result.code == 2 and "Traceback" not in result.stderr
    assert expected in result.stderr, result.stderr
    assert "Migrating" not in result.stderr  # nothing applied


def test_plain_file_name_order(make_db: Any, tmp_path: Path) -> None:
    migrations = _migrations(tmp_path, "9_payouts", "10_tips", "add_indexes")
    url = make_db()
    dbname = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
    config = tmp_path / "verifier.toml"
    config.write_text('migration_order = "name"\n[migration_tracker]\ntable = "schema_migrations"\n'
                      'column = "version"\nrecords = "file_stem"\n')
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY)")
    up = run_cli("verifier", "migrations", "up", "--dir", str(migrations), "--db", url, "--confirm-write",
                 dbname, "--config", str(config))
    assert up.code == 0, up.stderr
    with psycopg.connect(url) as conn:
        ran = [r[0] for r in conn.execute("SELECT file FROM ran ORDER BY n").fetchall()]
        recorded = sorted(r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall())
    assert ran == ["10_tips", "9_payouts", "add_indexes"]  # code-point order of the names
    assert recorded == ["10_tips", "9_payouts", "add_indexes"]
    # In number order, add_indexes.sql has no number: it is named and skipped.
    other = make_db()
    status = run_cli("verifier", "migrations", "status", "--dir", str(migrations), "--db", other)
    assert "note: add_indexes.sql is not numbered and is skipped" in status.stdout
    assert status.stdout.index("9_payouts") < status.stdout.index("10_tips")


@pytest.mark.parametrize("kind", ["fifo", "symlink_out", "directory"])
def test_a_file_that_is_not_a_regular_migration_stops_the_rehearsal_first(
        tmp_path: Path, small_dump: Path, server_dsn: str, leftovers: None, kind: str) -> None:
    migrations = _migrations(tmp_path, "300_add")
    bad = migrations / "301_bad.sql"
    if kind == "fifo":
        os.mkfifo(bad)
    elif kind == "symlink_out":
        secret = tmp_path / "credentials.sql"
        secret.write_text("-- password=hunter2\nSELECT 1;\n")
        bad.symlink_to(secret)
    else:
        bad.mkdir()
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn, "--migrations",
                     str(migrations), "--report-dir", str(tmp_path / "r"), timeout=60)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert f"The migration {bad}" in result.stderr
    assert "hunter2" not in result.stderr + "".join(p.read_text() for p in (tmp_path / "r").rglob("*.*"))
    assert "Migrating" not in result.stderr


def test_versions_as_teams_write_them_and_recorded_values_without_a_file(
        make_db: Any, tmp_path: Path, server_dsn: str, leftovers: None) -> None:
    dump = _dump(make_db, tmp_path, "CREATE TABLE schema_migrations (version text PRIMARY KEY);\n"
                                    "INSERT INTO schema_migrations VALUES ('0001'), (' 4 '), ('099');\n")
    migrations = _migrations(tmp_path, "001_base", "004_only", "300_add", "301_backfill")
    code, data, stderr = _rehearse(tmp_path, dump, server_dsn, migrations)
    assert code == 0, data["findings"]
    assert _ran(data) == ["300_add.sql", "301_backfill.sql"]
    migrate = next(s for s in data["stages"] if s["name"] == "migrate")
    assert migrate["recorded_without_file"] == ["99"]
    assert "records 1 value(s) that name no file here, e.g. 99" in stderr


@pytest.mark.parametrize(("column", "files", "expected"), [
    ("version boolean", ("300_add",), "holds neither text nor integers"),
    ("version varchar(5)", ("300_add",), "'300_add' is longer than 5 characters"),
    ("version smallint", ("99999_big",),
     "99999_big.sql cannot be recorded in public.schema_migrations(version), of type smallint: its number is "
     "too large"),
], ids=["boolean", "too-narrow", "out-of-range"])
def test_a_file_the_tracker_cannot_record_stops_the_run_before_anything_runs(
        make_db: Any, tmp_path: Path, server_dsn: str, leftovers: None, column: str, files: tuple[str, ...],
        expected: str) -> None:
    dump = _dump(make_db, tmp_path, f"CREATE TABLE schema_migrations ({column});\n")
    migrations = _migrations(tmp_path, *files)
    config = ('migration_tracker = { table = "schema_migrations", column = "version", '
              'records = "file_stem" }\n') if "varchar" in column else None
    args = ["verify-cents", "--snapshot", str(dump), "--scratch", server_dsn, "--migrations", str(migrations),
            "--skip-rule-checks", "--report-dir", str(tmp_path / "r")]
    if config:
        (tmp_path / "verifier.toml").write_text(config)
        args += ["--config", str(tmp_path / "verifier.toml")]
    result = run_cli(*args)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert expected in result.stderr, result.stderr
    assert "Migrating" not in result.stderr


def test_odd_file_names(tmp_path: Path) -> None:
    from verifier.migrate import plan

    for name in ("300_add.sql", "302_upper.SQL", "301_fill-down.sql", "301_fill.undo.sql", "301_fill.sql",
                 "３０５_wide.sql", "303_x_Rollback.sql"):
        (tmp_path / name).write_text("SELECT 1;\n")
    found = plan.discover(tmp_path)
    assert [f.path.name for f in found.files] == ["300_add.sql", "301_fill.sql", "302_upper.SQL"]
    assert sorted(p.name for p in found.down_files) == ["301_fill-down.sql", "301_fill.undo.sql",
                                                        "303_x_Rollback.sql"]
    assert [p.name for p in found.unnumbered] == ["３０５_wide.sql"]
