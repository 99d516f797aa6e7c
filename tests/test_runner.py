"""The runner against a real server: it applies, traces, stops, and explains.

Failures must name the file, statement and line, with SQLSTATE and message:
a constraint violation, a syntax error, an endless loop (cancelled by the
timeout), a statement that cannot run in a transaction block. Locks are
traced with how long they were held. An existing schema_migrations with an
integer version is honoured. The team's rules (idempotent, reversible) are
checked on copies, and break when a migration breaks them.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from verifier.migrate import plan, rule_checks
from verifier.migrate.runner import Runner
from verifier.scratch import provision


def _files(directory: Path, files: dict[str, str]) -> list[plan.MigrationFile]:
    directory.mkdir(exist_ok=True)
    for name, body in files.items():
        (directory / name).write_text(body)
    return list(plan.discover(directory).files)


def _one(dsn: str, query: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
        return None if row is None else row[0]


def test_constraint_violation_names_file_line_and_sqlstate(tmp_path: Path, fresh_db: str) -> None:
    [f] = _files(tmp_path, {"010_bad.sql": (
        "-- Migration: 010_bad\n"
        "BEGIN;\n"
        "CREATE TABLE t (amount_cents BIGINT CHECK (amount_cents >= 0));\n"
        "INSERT INTO t VALUES (5);\n"
        "INSERT INTO t\n"
        "  VALUES (-1);\n"
        "COMMIT;\n")})
    with Runner(fresh_db) as runner:
        runner.applied()
        result = runner.apply(f)
        assert runner.applied() == set()  # a failed file is not recorded
    failure = result.failure
    assert failure is not None
    assert (failure.file, failure.statement_number, failure.line, failure.sqlstate) == (
        "010_bad.sql", 4, 5, "23514")
    assert "violates check constraint" in failure.message and "Failing row" in (failure.detail or "")
    assert "INSERT INTO t VALUES (-1)" in failure.excerpt
    # The transaction was rolled back: nothing of the file remains.
    assert _one(fresh_db, "SELECT to_regclass('t')") is None


def test_syntax_error_names_its_line(tmp_path: Path, fresh_db: str) -> None:
    [f] = _files(tmp_path, {
        "011_typo.sql": "BEGIN;\nCREATE TABLE ok (id int);\nCREATE TABEL nope (id int);\nCOMMIT;\n"})
    with Runner(fresh_db) as runner:
        result = runner.apply(f)
    assert result.failure is not None
    assert result.failure.line == 3 and result.failure.sqlstate == "42601"
    assert "TABEL" in result.failure.message or "TABEL" in result.failure.excerpt
    assert _one(fresh_db, "SELECT to_regclass('ok')") is None  # nothing ran


def test_runtime_error_position_points_at_the_line(tmp_path: Path, fresh_db: str) -> None:
    [f] = _files(tmp_path, {"012_col.sql": "SELECT 1;\nSELECT\n  1,\n  no_such_column\nFROM pg_class;\n"})
    with Runner(fresh_db) as runner:
        result = runner.apply(f)
    assert result.failure is not None
    assert (result.failure.statement_number, result.failure.line, result.failure.sqlstate) == (2, 4, "42703")


def test_endless_loop_is_cancelled_by_the_timeout(tmp_path: Path, fresh_db: str) -> None:
    [f] = _files(tmp_path, {"013_loop.sql": (
        "CREATE TABLE IF NOT EXISTS k (id int);\n"
        "DO $$ BEGIN LOOP PERFORM pg_sleep(0.01); END LOOP; END $$;\n")})
    started = time.monotonic()
    with Runner(fresh_db, timeout_s=1.0) as runner:
        result = runner.apply(f)
    elapsed = time.monotonic() - started
    assert result.failure is not None
    assert result.failure.sqlstate == "57014" and "--migration-timeout" in result.failure.message
    assert (result.failure.statement_number, result.failure.line) == (2, 2)
    assert elapsed < 30  # it ended; the loop alone would never end


def test_statement_that_cannot_run_in_a_transaction_block(tmp_path: Path, fresh_db: str) -> None:
    [good, bad] = _files(tmp_path, {
        "020_cic.sql": ("CREATE TABLE IF NOT EXISTS c (x int);\n"
                        "CREATE INDEX CONCURRENTLY IF NOT EXISTS c_x ON c (x);\nVACUUM c;\n"),
        "021_cic_in_block.sql": "BEGIN;\nCREATE INDEX CONCURRENTLY c_x2 ON c (x);\nCOMMIT;\n",
    })
    with Runner(fresh_db) as runner:
        assert runner.apply(good).failure is None
        result = runner.apply(bad)
    assert result.failure is not None
    assert (result.failure.line, result.failure.sqlstate) == (2, "25001")
    assert "transaction block" in result.failure.message


def test_locks_are_traced_with_how_long_they_were_held(tmp_path: Path, fresh_db: str) -> None:
    [f] = _files(tmp_path, {"030_lock.sql": (
        "CREATE TABLE IF NOT EXISTS payments (id int);\n"
        "BEGIN;\n"
        "ALTER TABLE payments ADD COLUMN IF NOT EXISTS amount_cents BIGINT;\n"
        "SELECT pg_sleep(0.3);\n"
        "COMMIT;\n")})
    with Runner(fresh_db) as runner:
        result = runner.apply(f)
    assert result.failure is None
    exclusive = [lk for lk in result.locks if lk.mode == "AccessExclusiveLock"
                 and lk.relation == "public.payments" and lk.from_line == 3]
    assert len(exclusive) == 1 and exclusive[0].held_s >= 0.3
    assert exclusive[0].describe().startswith("ACCESS EXCLUSIVE on public.payments for 0.")
    alter = next(s for s in result.statements if s.line == 3)
    assert ("public.payments", "AccessExclusiveLock") in alter.locks
    # A table created in the same transaction is named once it is committed.
    assert any(lk.relation == "public.payments" for lk in result.locks if lk.from_line == 1)


def test_existing_integer_schema_migrations_is_honoured(tmp_path: Path, fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO schema_migrations VALUES (1)")
    files = _files(tmp_path, {"001_a.sql": "CREATE TABLE a (id int);\n",
                              "002_b.sql": "CREATE TABLE IF NOT EXISTS b (id int);\n"})
    with Runner(fresh_db) as runner:
        todo = plan.pending(files, runner.applied())
        assert [f.path.name for f in todo] == ["002_b.sql"]
        assert runner.apply(todo[0]).failure is None
        assert runner.applied() == {"1", "2", "001", "002"}  # as recorded, and padded


def test_file_ending_inside_a_transaction_is_rolled_back(tmp_path: Path, fresh_db: str) -> None:
    [f] = _files(tmp_path, {"040_open.sql": "BEGIN;\nCREATE TABLE dangling (id int);\n"})
    with Runner(fresh_db) as runner:
        result = runner.apply(f)
    assert result.failure is not None and "BEGIN without COMMIT" in result.failure.message
    assert _one(fresh_db, "SELECT to_regclass('dangling')") is None


@pytest.fixture
def scratch(server_dsn: str):  # type: ignore[no-untyped-def]
    with provision(server_dsn) as server, server.database("test") as db:
        yield db


def _apply_and_check(db, f):  # type: ignore[no-untyped-def]
    before = rule_checks.fingerprint(db.dsn, with_data=False)
    with Runner(db.dsn) as runner:
        runner.applied()
        assert runner.apply(f).failure is None
    after = rule_checks.fingerprint(db.dsn)
    return (rule_checks.check_idempotent(db, f, after, None), rule_checks.check_down(db, f, before, None))


def test_rules_hold_for_a_well_behaved_migration(tmp_path: Path, scratch) -> None:  # type: ignore[no-untyped-def]
    [f] = _files(tmp_path, {"050_good.sql": (
        "BEGIN;\nCREATE TABLE IF NOT EXISTS g (id int PRIMARY KEY);\n"
        "INSERT INTO g VALUES (1) ON CONFLICT DO NOTHING;\nCOMMIT;\n"
        "-- Down Migration\n-- DROP TABLE IF EXISTS g;\n")})
    assert _apply_and_check(scratch, f) == (None, None)


def test_second_run_that_fails_is_not_idempotent(tmp_path: Path, scratch) -> None:  # type: ignore[no-untyped-def]
    [f] = _files(tmp_path, {
        "051_plain_create.sql": "CREATE TABLE p (id int);\n-- Down Migration\n-- DROP TABLE p;\n"})
    idem, down = _apply_and_check(scratch, f)
    assert down is None
    assert idem is not None and idem.rule == "not_idempotent" and "42P07" in idem.message


def test_second_run_that_changes_data_is_not_idempotent(tmp_path: Path, scratch) -> None:  # type: ignore[no-untyped-def]
    [f] = _files(tmp_path, {"052_insert.sql": (
        "CREATE TABLE IF NOT EXISTS fees (amount_cents bigint);\nINSERT INTO fees VALUES (30);\n"
        "-- Down Migration\n-- DROP TABLE IF EXISTS fees;\n")})
    idem, _ = _apply_and_check(scratch, f)
    assert idem is not None and idem.table == "public.fees"
    assert idem.detail["tables_changed"] == ["public.fees"]


def test_down_that_does_not_restore_the_schema(tmp_path: Path, scratch) -> None:  # type: ignore[no-untyped-def]
    [f, g] = _files(tmp_path, {
        "053_addcol.sql": ("CREATE TABLE IF NOT EXISTS d (id int);\n"
                           "ALTER TABLE d ADD COLUMN IF NOT EXISTS amount_cents bigint;\n"
                           "-- Down Migration\n-- -- forgets the column\n-- DROP TABLE IF EXISTS nothing;\n"),
        "054_nodown.sql": "CREATE TABLE IF NOT EXISTS e (id int);\n",
    })
    _, down = _apply_and_check(scratch, f)
    assert down is not None and down.rule == "down_mismatch"
    assert any("amount_cents" in change for change in down.detail["schema_changes"])
    _, missing = _apply_and_check(scratch, g)
    assert missing is not None and missing.rule == "down_missing" and missing.severity == "warning"


def test_locks_inside_a_committing_call_are_bounded_by_its_transactions(
    tmp_path: Path, fresh_db: str
) -> None:
    """A CALL that commits holds each lock for one of its transactions, not the whole call."""
    [f] = _files(tmp_path, {"060_call.sql": (
        "CREATE TABLE IF NOT EXISTS batches (id int);\n"
        "CREATE OR REPLACE PROCEDURE step() LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "  INSERT INTO batches VALUES (1); PERFORM pg_sleep(0.3); COMMIT;\n"
        "  PERFORM pg_sleep(0.7);\n"
        "END $$;\n"
        "CALL step();\n")})
    with Runner(fresh_db) as runner:
        result = runner.apply(f)
    assert result.failure is None
    call = next(s for s in result.statements if s.line == 7)
    assert call.duration_s >= 1.0
    [held] = [lk for lk in result.locks if lk.relation == "public.batches" and lk.sampled
              and lk.mode == "RowExclusiveLock"]
    assert 0.2 <= held.held_s < 0.7, held
    assert "longest transaction seen" in held.describe()
