"""The rehearsal with migrations, end to end through the command line.

The project's own series applies to the generated platform and passes its
idempotency and down checks, on the test server (PostgreSQL 15 in CI) as on
the embedded one (18, via --demo). A failing migration stops the series,
is a finding (exit 1) with file and line, and later files are not applied.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import psycopg
from psycopg import sql

from .conftest import run_cli, run_summary


def _stage(data: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(s for s in data["stages"] if s["name"] == name)  # type: ignore[no-any-return]


def _timeline(data: dict) -> list[dict]:  # type: ignore[type-arg]
    return _stage(data, "migrate")["timeline"]  # type: ignore[no-any-return]


def test_project_migrations_apply_and_obey_the_rules(tmp_path: Path, small_dump: Path,
                                                     server_dsn: str, leftovers: None) -> None:
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--report-dir", str(tmp_path))
    data = run_summary(tmp_path)
    # Only warnings: sub-cent token values, the legacy float column, and the default reconciliation
    # of users.balance_cents with the new ledger, whose key cannot fit (the demo's users have bigint ids).
    assert {(f["rule"], f["severity"]) for f in data["findings"]} <= {
        ("sub_cent_loss", "warning"), ("float_artifact", "warning"),
        ("ledger_rule_not_checked", "warning")}, data["findings"]
    not_checked = [f for f in data["findings"] if f["rule"] == "ledger_rule_not_checked"]
    assert [s["id"] for f in not_checked for s in f["sample"]] == ["reconciliation_mismatch"]
    # 400 created the ledger: audited (empty but for its system accounts) and probed; our 400 holds.
    assert data["provenance"]["ledger"] == "audited and probed after the migrations"
    assert _stage(data, "layout")["layout"] == "platform 400"
    outcomes = {c["case"]: c["outcome"] for c in _stage(data, "ledger probe")["cases"]}
    assert outcomes == {"balanced_two_legs": "accepted", "balanced_three_legs": "accepted",
                        "posting_function": "accepted", "unbalanced": "rejected", "one_leg": "rejected"}
    timeline = _timeline(data)
    assert [t["file"] for t in timeline] == [
        "300_add_cents_columns.sql", "301_backfill_cents.sql", "302_verification_queries.sql",
        "303_enforce_cents_drop_decimals.sql", "400_create_double_entry_ledger.sql"]
    assert all(t["ok"] for t in timeline)
    # 300 takes ACCESS EXCLUSIVE on each money table, briefly (catalog-only changes).
    locks_300 = timeline[0]["locks"]
    assert {lk["relation"] for lk in locks_300 if lk["mode"] == "AccessExclusiveLock"} >= {
        "public.payments", "public.tips", "public.users"}
    assert len(data["provenance"]["migrations"]) == 6
    assert result.code == 0 and data["status"] == "pass", result.stderr
    assert _stage(data, "migrate")["rule_checks"] == "checked"


def test_failing_migration_stops_the_series_and_is_a_finding(tmp_path: Path, small_dump: Path,
                                                             server_dsn: str, leftovers: None) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "300_add.sql").write_text(
        "BEGIN;\nALTER TABLE tips ADD COLUMN IF NOT EXISTS amount_cents BIGINT;\nCOMMIT;\n"
        "-- Down Migration\n-- ALTER TABLE tips DROP COLUMN IF EXISTS amount_cents;\n")
    (migrations / "301_bad_backfill.sql").write_text(
        "BEGIN;\nUPDATE tips SET amount_cents = round(amount * 100);\n"
        "ALTER TABLE tips ADD CONSTRAINT tiny CHECK (amount_cents < 100);\nCOMMIT;\n")
    (migrations / "302_never.sql").write_text("CREATE TABLE IF NOT EXISTS never_applied (id int);\n")
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--migrations", str(migrations), "--report-dir", str(tmp_path / "r"))
    assert result.code == 1, result.stderr
    data = run_summary(tmp_path / "r")
    assert data["status"] == "fail"
    failed = [f for f in data["findings"] if f["rule"] == "migration_failed"]
    assert len(failed) == 1
    failure = failed[0]["detail"]["failure"]
    assert (failure["file"], failure["line"], failure["sqlstate"]) == ("301_bad_backfill.sql", 3, "23514")
    assert [t["file"] for t in _timeline(data)] == ["300_add.sql", "301_bad_backfill.sql"]
    # 301 is not guarded, 300 is: only the failed file's absence of a down block matters here.
    assert not [f for f in data["findings"] if f["rule"] == "not_idempotent"]


def test_migration_timeout_via_the_command_line(tmp_path: Path, small_dump: Path, server_dsn: str,
                                                leftovers: None) -> None:
    migrations = tmp_path / "m"
    migrations.mkdir()
    (migrations / "300_forever.sql").write_text(
        "DO $$ BEGIN LOOP PERFORM pg_sleep(0.05); END LOOP; END $$;\n")
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--migrations", str(migrations), "--migration-timeout", "1",
                     "--report-dir", str(tmp_path / "r"))
    assert result.code == 1
    found = run_summary(tmp_path / "r")["findings"]
    [finding] = [f for f in found if f["severity"] == "error"] or [found]
    assert finding["rule"] == "migration_failed" and "--migration-timeout" in finding["message"], found


# The real 301's shape: batches of rows whose cents are still 0, until a batch changes nothing. A
# balance of exactly 0.00 keeps its cents at 0, so that row is picked again and again, for ever.
SPINNING_BACKFILL = """ALTER TABLE tips ADD COLUMN IF NOT EXISTS amount_cents BIGINT NOT NULL DEFAULT 0;
UPDATE tips SET amount = 0.00 WHERE id = (SELECT min(id) FROM tips);
DO $$
DECLARE changed INT;
BEGIN
  LOOP
    UPDATE tips SET amount_cents = round(amount * 100)
    WHERE id IN (SELECT id FROM tips WHERE amount_cents = 0 LIMIT 500);
    GET DIAGNOSTICS changed = ROW_COUNT;
    EXIT WHEN changed = 0;
  END LOOP;
END $$;
"""


def test_a_backfill_that_never_ends_stops_at_the_default_limit_with_a_stall_report(
        tmp_path: Path, small_dump: Path, server_dsn: str, leftovers: None) -> None:
    migrations = tmp_path / "m"
    migrations.mkdir()
    (migrations / "301_backfill_cents.sql").write_text(SPINNING_BACKFILL)
    config = tmp_path / "verifier.toml"
    config.write_text("migration_timeout_s = 2\n")  # the default is 3600 s; the same path, sooner
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--migrations", str(migrations), "--config", str(config), "--skip-rule-checks",
                     "--report-dir", str(tmp_path / "r"))
    assert result.code == 1, result.stderr
    data = run_summary(tmp_path / "r")
    assert _stage(data, "migrate")["time_limit"] == "2 s per file (migration_timeout_s)"
    [finding] = [f for f in data["findings"] if f["rule"] == "migration_failed"]
    failure = finding["detail"]["failure"]
    assert (failure["file"], failure["line"], failure["sqlstate"]) == ("301_backfill_cents.sql", 3, "57014")
    assert "after 2 s" in failure["message"] and "0 for no limit" in failure["message"]
    stall = failure["stall"]
    assert stall["limit_s"] == 2 and stall["state"] == "active" and stall["excerpt"].startswith("DO $$")
    assert 1.5 <= float(stall["statement_running_s"]) <= float(stall["transaction_running_s"])
    assert "RowExclusiveLock on public.tips" in stall["locks"]
    assert stall["rows_changed"].startswith("not known")
    report = next((tmp_path / "r").glob("*/report.html")).read_text().replace("<wbr>", "")  # names' breaks
    assert "statement_running_s" in report


def test_migration_timeout_zero_is_no_limit(tmp_path: Path, small_dump: Path, server_dsn: str,
                                            leftovers: None) -> None:
    migrations = tmp_path / "m"
    migrations.mkdir()
    (migrations / "300_slow.sql").write_text(
        "ALTER TABLE tips ADD COLUMN IF NOT EXISTS amount_cents BIGINT;\n"
        "UPDATE tips SET amount_cents = round(amount * 100);\nSELECT pg_sleep(1.5);\n")
    config = tmp_path / "verifier.toml"
    config.write_text("migration_timeout_s = 0.5\n")
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--migrations", str(migrations), "--config", str(config), "--migration-timeout", "0",
                     "--skip-rule-checks", "--report-dir", str(tmp_path / "r"))
    data = run_summary(tmp_path / "r")
    assert result.code == 0, data["findings"]
    assert _stage(data, "migrate")["time_limit"] == "none (--migration-timeout 0)"


def test_the_users_migrations_by_default_never_ours(tmp_path: Path, small_dump: Path, server_dsn: str,
                                                    leftovers: None) -> None:
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--report-dir", str(tmp_path / "none"), cwd=empty)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "No migrations to rehearse: there is no ./migrations in" in result.stderr
    assert "Give --migrations DIR" in result.stderr
    assert "Migrating" not in result.stderr  # stopped before any scratch database was made
    # ./migrations of the directory the user runs in.
    project = tmp_path / "project"
    (project / "migrations").mkdir(parents=True)
    (project / "migrations" / "300_add.sql").write_text(
        "ALTER TABLE tips ADD COLUMN IF NOT EXISTS amount_cents BIGINT;\n"
        "UPDATE tips SET amount_cents = round(amount * 100);\n")
    (project / "migrations" / "301_more.sql").write_text("SELECT 1;\n")
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--skip-rule-checks", "--report-dir", str(tmp_path / "here"), cwd=project)
    assert result.code == 0, result.stderr
    assert (f"Migrating from {project / 'migrations'}: 2 pending file(s), in this order: "
            "300_add.sql, 301_more.sql") in result.stderr
    data = run_summary(tmp_path / "here")
    assert (_stage(data, "plan")["chosen_by"], _stage(data, "plan")["directory"]) == (
        "./migrations", str(project / "migrations"))
    assert [m["file"] for m in data["provenance"]["migrations"]] == ["300_add.sql", "301_more.sql"]
    # The configuration's migrations key, relative to the file's folder, wins over ./migrations.
    (project / "conf").mkdir()
    (project / "db").mkdir()
    (project / "db" / "300_only.sql").write_text(
        "ALTER TABLE tips ADD COLUMN IF NOT EXISTS amount_cents BIGINT;\n"
        "UPDATE tips SET amount_cents = round(amount * 100);\n")
    (project / "conf" / "verifier.toml").write_text('migrations = "../db"\n')
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--skip-rule-checks", "--config", str(project / "conf" / "verifier.toml"),
                     "--report-dir", str(tmp_path / "conf"), cwd=project)
    assert result.code == 0, result.stderr
    assert [m["file"] for m in run_summary(tmp_path / "conf")["provenance"]["migrations"]] == ["300_only.sql"]
    bad = project / "bad.toml"
    bad.write_text("migrations = 3\n")
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--config", str(bad),
                     "--report-dir", str(tmp_path / "bad"), cwd=project)
    assert result.code == 2 and "migrations must be the path of a directory" in result.stderr


def test_housekeeping_commands(tmp_path: Path, make_db) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path / "mig"
    created = run_cli("verifier", "migrations", "create", "add tips table", "--dir", str(directory))
    assert created.code == 0 and created.stdout.strip().endswith("001_add_tips_table.sql")
    second = run_cli("verifier", "migrations", "create", "Second one", "--dir", str(directory))
    assert second.stdout.strip().endswith("002_second_one.sql")
    assert "-- Dependencies: 001" in (directory / "002_second_one.sql").read_text()
    assert run_cli("verifier", "migrations", "validate", "--dir", str(directory)).code == 0

    url = make_db()
    dbname = url.rsplit("dbname=", 1)[-1].split()[0] if "dbname=" in url else url.rsplit("/", 1)[-1]
    refused = run_cli("verifier", "migrations", "up", "--dir", str(directory), "--db", url)
    assert refused.code == 2 and "--confirm-write" in refused.stderr
    applied = run_cli("verifier", "migrations", "up", "--dir", str(directory), "--db", url,
                      "--confirm-write", dbname)
    assert applied.code == 0, applied.stderr
    assert applied.stdout.count(": ok in") == 2  # 002 creates the same table: a no-op, still ok
    status = run_cli("verifier", "migrations", "status", "--dir", str(directory), "--db", url)
    assert "applied  001_add_tips_table.sql" in status.stdout
    assert "applied  002_second_one.sql" in status.stdout
    undone = run_cli("verifier", "migrations", "down", "--dir", str(directory), "--db", url,
                     "--confirm-write", dbname)
    assert undone.code == 0, undone.stderr
    status = run_cli("verifier", "migrations", "status", "--dir", str(directory), "--db", url)
    assert "pending  002_second_one.sql" in status.stdout


def test_validate_reports_each_kind_of_problem(tmp_path: Path) -> None:
    directory = tmp_path / "v"
    directory.mkdir()
    (directory / "004_a.sql").write_text("-- Migration: 004_a\n-- Description: x\n-- Dependencies: none\n"
                                         "CREATE TABLE a (id int);\n")
    (directory / "004_b.sql").write_text("-- Migration: 004_b\n-- Description: x\n-- Dependencies: 003\n"
                                         "ALTER TABLE a ADD CONSTRAINT c CHECK (id > 0);\n")
    (directory / "005_c.sql").write_text("-- Migration: 005_c\n-- Description: x\n-- Dependencies: 004\n"
                                         "BEGIN;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON a (id);\n"
                                         "COMMIT;\nSELECT 1;\nSELEC 2;\n")
    result = run_cli("verifier", "migrations", "validate", "--dir", str(directory))
    assert result.code == 1
    out = result.stdout
    assert "number 004 is shared by 004_a.sql, 004_b.sql" in out
    assert "004_b.sql: depends on 003" in out
    assert "004_a.sql:4: not idempotent: CREATE TABLE without IF NOT EXISTS" in out
    assert "004_b.sql:4: not idempotent: ADD CONSTRAINT is not guarded" in out
    assert "error: 005_c.sql:8: invalid SQL" in out


def test_skipping_rule_checks_is_said_not_hidden(tmp_path: Path, small_dump: Path, server_dsn: str,
                                                 leftovers: None) -> None:
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--skip-rule-checks", "--report-dir", str(tmp_path))
    assert result.code == 0, result.stderr
    assert _stage(run_summary(tmp_path), "migrate")["rule_checks"] == "skipped (--skip-rule-checks)"


def test_a_migration_that_catches_the_cancel_is_terminated(tmp_path: Path, small_dump: Path, server_dsn: str,
                                                           leftovers: None) -> None:
    migrations = tmp_path / "m"
    migrations.mkdir()
    # A retrying backfill: every cancel is caught and the loop goes on.
    (migrations / "350_spin.sql").write_text(
        "DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(0.2); EXCEPTION WHEN query_canceled THEN NULL; END; "
        "END LOOP; END $$;\n")
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--migrations", str(migrations), "--migration-timeout", "1", "--skip-rule-checks",
                     "--report-dir", str(tmp_path / "r"), timeout=120)
    assert result.code == 1, result.stderr
    [finding] = [f for f in run_summary(tmp_path / "r")["findings"] if f["rule"] == "migration_failed"]
    stall = finding["detail"]["failure"]["stall"]
    assert "its backend was terminated 10 s later" in stall["terminated"]


def test_a_migration_that_rewrites_the_recorded_originals_is_not_a_pass(
        tmp_path: Path, small_dump: Path, server_dsn: str, leftovers: None) -> None:
    migrations = tmp_path / "m"
    migrations.mkdir()
    (migrations / "301_all.sql").write_text(TRUNCATING_LOOP)
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--migrations", str(migrations), "--skip-rule-checks",
                     "--report-dir", str(tmp_path / "r"))
    # The sandbox role cannot see the record (information_schema shows only what a role may use) nor
    # change it: the loop passes over it, and the cents are compared with the amounts before the loop.
    assert result.code == 1 and "Traceback" not in result.stderr, result.stderr
    data = run_summary(tmp_path / "r")
    assert data["provenance"]["sandbox"]["role"] is not None
    assert [f for f in data["findings"] if f["table"] == "public.tips" and f["severity"] == "error"], \
        data["findings"]


# A loop over every table with an amount column, ours included: it truncates every amount to whole
# dollars, then backfills the cents from what it left.
TRUNCATING_LOOP = """DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT table_schema, table_name FROM information_schema.columns
           WHERE column_name = 'amount' AND data_type = 'numeric' LOOP
    EXECUTE format('UPDATE %I.%I SET amount = trunc(amount)', r.table_schema, r.table_name);
  END LOOP;
END $$;
ALTER TABLE tips ADD COLUMN IF NOT EXISTS amount_cents BIGINT;
UPDATE tips SET amount_cents = amount * 100;
"""


def test_without_a_sandbox_a_migration_that_rewrites_the_recorded_originals_is_exit_2(
        tmp_path: Path, small_dump: Path, server_dsn: str, leftovers: None) -> None:
    """A scratch server whose role is not a superuser has no sandbox: the migrations run as that role,
    which owns the record; the record's digest catches the rewrite (exit 2, not a pass)."""
    role = f"test_nosandbox_{secrets.token_hex(4)}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(role)))
    try:
        migrations = tmp_path / "m"
        migrations.mkdir()
        (migrations / "301_all.sql").write_text(TRUNCATING_LOOP)
        result = run_cli("verify-cents", "--snapshot", str(small_dump),
                         "--scratch", psycopg.conninfo.make_conninfo(server_dsn, user=role),
                         "--migrations", str(migrations), "--skip-rule-checks",
                         "--report-dir", str(tmp_path / "r"))
        assert result.code == 2 and "Traceback" not in result.stderr, result.stderr
        assert "No sandbox" in result.stderr
        assert "changed or dropped the verifier's record of the original amounts" in result.stderr
        data = run_summary(tmp_path / "r")
        assert data["status"] == "error" and data["provenance"]["sandbox"]["role"] is None
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
