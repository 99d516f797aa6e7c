"""The pre-release rehearsal on the platform's own shapes, on the default (embedded) scratch server.

The snapshot is the platform's database just before the 300-series
(``tests/platform/pre300.sql``: pgcrypto and uuid-ossp in schema
``extensions``, uuid keys defaulting to ``uuid_generate_v4()``, DECIMAL
dollars, row level security, ``schema_migrations`` with integer versions
and the seed's shared 004). The migrations reproduce the real files where it
matters (``tests/platform/migrations``): 300 adds cents defaulting to 0, 301
backfills in batches that pick rows whose cents are still 0 (so a balance of
0.00 spins it for ever), 302 verifies, and 400 is the platform's layout with
its row-level balance trigger (our 400 with the platform's trigger in place
of our deferred one). One rehearsal after another, as a user would run them:

1. as delivered: the snapshot restores on the embedded server (stand-ins
   for the extensions), 301 is cancelled at the time limit with its stall
   report, and the state reached (no cents) fails;
2. with 301 fixed: the series reaches 400, the cents are right, and the
   probe reports ``ledger_rejects_balanced`` with the trigger's message;
3. with our own 400: the probe passes and so does the run.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from verifier.paths import project_migrations_dir

from .conftest import pg_dump_custom, run_cli, run_summary
from .test_ledger_probe import PLATFORM_ROW_TRIGGER

PLATFORM = Path(__file__).parent / "platform"
OUR_400 = project_migrations_dir() / "400_create_double_entry_ledger.sql"


def _platform_400() -> str:
    """Our 400 with the platform's balance rule: the row trigger in place of our deferred one."""
    text = OUR_400.read_text()
    up, marker, down = text.partition("-- Down Migration")
    return up + PLATFORM_ROW_TRIGGER + "\n" + marker + down


@pytest.fixture(scope="module")
def platform_dump(make_module_db: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dsn = make_module_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((PLATFORM / "pre300.sql").read_text())
    out = tmp_path_factory.mktemp("platform") / "platform.dump"
    pg_dump_custom(dsn, out)
    return out


def _migrations(tmp_path: Path, *, fixed_301: bool, ledger: str) -> Path:
    directory = tmp_path / "migrations"
    shutil.copytree(PLATFORM / "migrations", directory)
    if fixed_301:
        shutil.copy(PLATFORM / "fixed" / "301_backfill_cents.sql", directory / "301_backfill_cents.sql")
    (directory / "400_create_double_entry_ledger.sql").write_text(ledger)
    return directory


def _rehearse(tmp_path: Path, dump: Path, migrations: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    # No --scratch: the default, the embedded server.
    result = run_cli("verify-cents", "--snapshot", str(dump), "--migrations", str(migrations),
                     "--skip-rule-checks", "--report-dir", str(tmp_path / "r"), *extra)
    assert "Traceback" not in result.stderr, result.stderr
    return result.code, run_summary(tmp_path / "r"), result.stderr


def _stage(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in data["stages"] if s["name"] == name)


def _errors(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["rule"]: f for f in data["findings"] if f["severity"] == "error"}


def test_as_delivered_301_spins_and_is_stopped_with_a_stall_report(
        platform_dump: Path, tmp_path: Path, leftovers: None) -> None:
    migrations = _migrations(tmp_path, fixed_301=False, ledger=_platform_400())
    config = tmp_path / "verifier.toml"
    # The default limit is 3,600 s (test 2 shows it in force); the same path, sooner.
    config.write_text("migration_timeout_s = 4\n")
    code, data, stderr = _rehearse(tmp_path, platform_dump, migrations, "--config", str(config))
    assert code == 1
    restore = _stage(data, "restore")
    assert restore["extensions"] == restore["extensions_standin"] == ["pgcrypto", "uuid-ossp"]
    assert data["provenance"]["scratch_kind"] == "embedded"
    assert ("Migrating from " + str(migrations) + ": 4 pending file(s), in this order: "
            "300_migrate_to_cents.sql, 301_backfill_cents.sql, 302_verification_queries.sql, "
            "400_create_double_entry_ledger.sql (3 file(s) already applied).") in stderr
    migrate = _stage(data, "migrate")
    assert migrate["time_limit"] == "4 s per file (migration_timeout_s)"
    assert [(t["file"], t["ok"]) for t in migrate["timeline"]] == [
        ("300_migrate_to_cents.sql", True), ("301_backfill_cents.sql", False)]
    [failed] = [f for f in data["findings"] if f["rule"] == "migration_failed"]
    failure = failed["detail"]["failure"]
    assert (failure["file"], failure["line"], failure["sqlstate"]) == ("301_backfill_cents.sql", 7, "57014")
    stall = failure["stall"]
    assert stall["excerpt"].startswith("DO $$") and stall["state"] == "active"
    assert float(stall["statement_running_s"]) >= 3.5
    assert "RowExclusiveLock on public.users" in stall["locks"]
    # The state reached is verified too: 300 added cents of 0, the backfill's work was rolled back.
    errors = _errors(data)
    assert errors["missing_backfill"]["count"] > 0
    assert data["provenance"]["ledger"].startswith("none")  # 400 never ran
    ambiguous = [f for f in data["findings"] if f["rule"] == "migration_version_ambiguous"]
    assert [f["detail"]["files"] for f in ambiguous] == [
        ["004_create_call_requests.sql", "004_supabase_auth_migration.sql"]]


def test_with_301_fixed_the_platforms_400_rejects_every_balanced_journal(
        platform_dump: Path, tmp_path: Path, leftovers: None) -> None:
    migrations = _migrations(tmp_path, fixed_301=True, ledger=_platform_400())
    code, data, _ = _rehearse(tmp_path, platform_dump, migrations)
    assert code == 1
    migrate = _stage(data, "migrate")
    assert migrate["time_limit"] == "3600 s per file (migration_timeout_s)"  # the default, with no flag
    assert all(t["ok"] for t in migrate["timeline"]) and len(migrate["timeline"]) == 4
    errors = _errors(data)
    assert set(errors) == {"ledger_rejects_balanced"}, errors  # every cent right; the ledger is not
    rejects = errors["ledger_rejects_balanced"]
    assert {s["id"] for s in rejects["sample"]} == {"balanced_two_legs", "balanced_three_legs",
                                                    "posting_function"}
    cases = {c["case"]: c for c in _stage(data, "ledger probe")["cases"]}
    assert cases["balanced_two_legs"]["sqlstate"] == "P0001"
    assert "is not balanced" in cases["balanced_two_legs"]["message"]
    assert cases["posting_function"]["statement"].startswith("SELECT transfer_tokens(")
    assert cases["unbalanced"]["outcome"] == cases["one_leg"]["outcome"] == "rejected"
    # Every money column of the six tables was paired and every row checked against its original.
    assert (_stage(data, "pairs")["pairs"], _stage(data, "pairs")["with_originals"]) == (8, 6)
    assert _stage(data, "verify")["rows_checked"] == 7500


def test_with_our_400_the_probe_passes_and_so_does_the_run(
        platform_dump: Path, tmp_path: Path, leftovers: None) -> None:
    migrations = _migrations(tmp_path, fixed_301=True, ledger=OUR_400.read_text())
    code, data, _ = _rehearse(tmp_path, platform_dump, migrations)
    assert code == 0, _errors(data)
    cases = {c["case"]: c["outcome"] for c in _stage(data, "ledger probe")["cases"]}
    assert cases == {"balanced_two_legs": "accepted", "balanced_three_legs": "accepted",
                     "posting_function": "accepted", "unbalanced": "rejected", "one_leg": "rejected"}
    assert data["provenance"]["ledger"] == "audited and probed after the migrations"
    assert data["status"] == "pass"
