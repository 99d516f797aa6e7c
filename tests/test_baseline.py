"""Accepted findings (verifier accept, --baseline) and the difference from the previous run, on a
real server through the real CLI: accept, new, changed, stale, and a run that passes only because
of its baseline, saying so."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .conftest import BIN_DIR, only_run, reader_role, run_cli

SETUP = """CREATE TABLE tips (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint);
           INSERT INTO tips SELECT g, g, g * 100 FROM generate_series(1, 100) g;
           UPDATE tips SET amount_cents = 5 WHERE id = 7;   -- a known legacy row: 695 cents short"""


@pytest.fixture
def known(fresh_db: str) -> str:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(SETUP)
    return fresh_db


def _verify(dsn: str, reports: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    result = run_cli("verify-cents", "--db", dsn, "--report-dir", str(reports), *extra)
    assert "Traceback" not in result.stderr
    # The run's own folder, from its verdict line (two runs in one second share a timestamp).
    run_dir = Path(result.stdout.strip().rsplit(" ", 1)[-1]).parent
    return result.code, json.loads((run_dir / "summary.json").read_text()), result.stderr


def test_accept_then_pass_only_because_of_the_baseline_then_new_changed_and_stale(
        known: str, tmp_path: Path) -> None:
    reports, baseline = tmp_path / "reports", tmp_path / "verifier-baseline.json"
    code, first, _ = _verify(known, reports)
    assert code == 1
    run_dir = reports / first["run_id"]
    accepted = run_cli("verifier", "accept", str(run_dir), "--reason", "legacy row, PAY-123",
                       "--baseline", str(baseline))
    assert accepted.code == 0, accepted.stderr
    entries = json.loads(baseline.read_text())["accepted"]
    value = next(e for e in entries if e["rule"] == "value_mismatch")
    assert value["rows"] == ['{"id" : 7}'] and value["cents_impact"] == 695
    assert value["reason"] == "legacy row, PAY-123"

    # The same finding: a pass, only because of the baseline, and saying so.
    code, data, stderr = _verify(known, reports, "--baseline", str(baseline))
    assert code == 0 and data["status"] == "pass", stderr
    assert {f["rule"] for f in data["accepted"]} == {"value_mismatch", "sum_mismatch"}
    assert all(f["accepted"]["reason"] == "legacy row, PAY-123" for f in data["accepted"])
    assert data["provenance"]["baseline"]["accepted"] == 2
    assert "accepted (baseline): 2 finding(s), not failing the run" in stderr
    assert data["provenance"]["previous_run"]["unchanged"] == 2  # against the first run
    html = (reports / data["run_id"] / "report.html").read_text()
    assert "Accepted findings (baseline)" in html and "legacy row, PAY-123" in html

    # Changed: another row of the same rule, table and column.
    with psycopg.connect(known, autocommit=True) as conn:
        conn.execute("UPDATE tips SET amount_cents = 6 WHERE id = 8")
    code, data, stderr = _verify(known, reports, "--baseline", str(baseline))
    assert code == 1
    value = next(f for f in data["findings"] if f["rule"] == "value_mismatch")
    assert value["baseline"].startswith("changed: 2 rows, 1 accepted") and '{"id" : 8}' in value["baseline"]

    # New: a finding of another rule; the old row fixed makes the value entry stale only once gone.
    with psycopg.connect(known, autocommit=True) as conn:
        conn.execute("UPDATE tips SET amount_cents = 800 WHERE id = 8; UPDATE tips SET amount_cents = -300 "
                     "WHERE id = 3")
    code, data, stderr = _verify(known, reports, "--baseline", str(baseline))
    assert code == 1
    assert [f["baseline"] for f in data["findings"] if f["rule"] == "sign_flip"] == ["new"]
    assert "sign_flip public.tips.amount_cents" in data["provenance"]["previous_run"]["new"]

    # Stale: everything fixed; the accepted entries no longer match anything.
    with psycopg.connect(known, autocommit=True) as conn:
        conn.execute("UPDATE tips SET amount_cents = id * 100")
    code, data, stderr = _verify(known, reports, "--baseline", str(baseline))
    assert code == 0, stderr
    stale = [f for f in data["findings"] if f["rule"] == "baseline_stale"]
    assert len(stale) == 2 and all(f["severity"] == "warning" for f in stale)
    assert data["provenance"]["baseline"]["stale"] == 2
    code, _, _ = _verify(known, reports, "--baseline", str(baseline), "--strict")
    assert code == 1  # a stale entry fails a strict run


def test_accept_refuses_a_run_that_did_not_verify_and_a_missing_reason(tmp_path: Path) -> None:
    result = run_cli("verify-cents", "--db", "host=127.0.0.1 port=1 dbname=x connect_timeout=2",
                     "--report-dir", str(tmp_path))
    assert result.code == 2
    refused = run_cli("verifier", "accept", str(only_run(tmp_path)), "--reason", "x",
                      "--baseline", str(tmp_path / "b.json"))
    assert refused.code == 2 and "did not verify" in refused.stderr and not (tmp_path / "b.json").exists()
    empty = run_cli("verifier", "accept", str(only_run(tmp_path)), "--reason", " ")
    assert empty.code == 2 and "needs a reason" in empty.stderr


def test_a_baseline_file_that_is_not_one_is_exit_2(known: str, tmp_path: Path) -> None:
    bad = tmp_path / "b.json"
    bad.write_text('{"accepted": 3}')
    result = run_cli("verify-cents", "--db", known, "--report-dir", str(tmp_path / "r"),
                     "--baseline", str(bad))
    assert result.code == 2 and "is not a verifier baseline" in result.stderr
    assert not (tmp_path / "r").exists()  # a usage error: no run folder


def test_a_constraint_s_rows_are_accepted_for_that_constraint_only(fresh_db: str, tmp_path: Path) -> None:
    """Found by a break-it run: a pending CHECK constraint's finding has no column, and its accepted
    entry matched any rows, even another constraint's. The constraint is part of the identity and
    its rows are recorded: other rows, or a second constraint, fail the run."""
    reports, baseline = tmp_path / "reports", tmp_path / "b.json"
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id int PRIMARY KEY, balance numeric(12,2), balance_cents bigint);"
                     "INSERT INTO users SELECT g, g, g * 100 FROM generate_series(1, 100) g;"
                     "UPDATE users SET balance = -1, balance_cents = -100 WHERE id IN (1, 2);"
                     "ALTER TABLE users ADD CONSTRAINT bal_nonneg CHECK (balance_cents >= 0) NOT VALID")
    code, first, _ = _verify(fresh_db, reports)
    assert code == 1
    assert run_cli("verifier", "accept", str(reports / first["run_id"]), "--reason", "known",
                   "--baseline", str(baseline)).code == 0
    [entry] = [e for e in json.loads(baseline.read_text())["accepted"]
               if e["rule"] == "constraint_violation"]
    assert entry["column"] == "bal_nonneg" and len(entry["rows"]) == 2
    assert _verify(fresh_db, reports, "--baseline", str(baseline))[0] == 0
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE users DROP CONSTRAINT bal_nonneg;"
                     "UPDATE users SET balance = id, balance_cents = id * 100 WHERE id IN (1, 2);"
                     "UPDATE users SET balance = -50000, balance_cents = -5000000 WHERE id IN (50, 60);"
                     "ALTER TABLE users ADD CONSTRAINT bal_nonneg CHECK (balance_cents >= 0) NOT VALID")
    code, data, _ = _verify(fresh_db, reports, "--baseline", str(baseline))
    assert code == 1, data["findings"]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE users DROP CONSTRAINT bal_nonneg;"
                     "UPDATE users SET balance = id, balance_cents = id * 100;"
                     "UPDATE users SET balance = -1, balance_cents = -100 WHERE id IN (1, 2);"
                     "ALTER TABLE users ADD CONSTRAINT bal_nonneg CHECK (balance_cents >= 0) NOT VALID;"
                     "UPDATE users SET balance = 999999.99, balance_cents = 99999999 WHERE id IN (7, 8);"
                     "ALTER TABLE users ADD CONSTRAINT bal_cap CHECK (balance_cents < 1000000) NOT VALID")
    code, data, _ = _verify(fresh_db, reports, "--baseline", str(baseline))
    assert code == 1 and [f["baseline"] for f in data["findings"] if f["rule"] == "constraint_violation"] == [
        "new"], data["findings"]


@pytest.mark.parametrize(("key", "value", "words"), [
    ("count", 1e308, "not a whole number"), ("cents_impact", float("inf"), "not a whole number"),
    ("count", "2", "not a whole number"), ("count", True, "not a whole number"),
    ("cents_impact", -5, "cannot be negative"), ("rows", None, "not a list"),
])
def test_a_hand_edited_baseline_with_figures_that_are_not_whole_numbers_is_exit_2(
        known: str, tmp_path: Path, key: str, value: Any, words: str) -> None:
    """Found by a break-it run: count 1e308 or cents_impact Infinity accepted any amount (every
    comparison with them holds); a string count was an internal error."""
    reports, baseline = tmp_path / "reports", tmp_path / "b.json"
    code, first, _ = _verify(known, reports)
    assert run_cli("verifier", "accept", str(reports / first["run_id"]), "--reason", "known",
                   "--baseline", str(baseline)).code == 0
    data = json.loads(baseline.read_text())
    data["accepted"][0][key] = value
    baseline.write_text(json.dumps(data))
    result = run_cli("verify-cents", "--db", known, "--report-dir", str(tmp_path / "r"),
                     "--baseline", str(baseline))
    assert result.code == 2 and words in result.stderr, result.stderr
    assert "internal error" not in result.stderr


def test_a_net_impact_that_changes_sign_is_changed(known: str, tmp_path: Path) -> None:
    """Accepted: a row 695 cents short; then the same row 695 cents over. Same rows, same absolute
    cents, the other way: changed, and the run fails."""
    reports, baseline = tmp_path / "reports", tmp_path / "b.json"
    code, first, _ = _verify(known, reports)
    assert run_cli("verifier", "accept", str(reports / first["run_id"]), "--reason", "known",
                   "--baseline", str(baseline)).code == 0
    with psycopg.connect(known, autocommit=True) as conn:
        conn.execute("UPDATE tips SET amount_cents = 1395 WHERE id = 7")
    code, data, _ = _verify(known, reports, "--baseline", str(baseline))
    assert code == 1
    assert any("net +695 cents, -695 accepted" in str(f.get("baseline")) for f in data["findings"])


def test_a_finding_that_grew_or_turned_since_the_previous_run_is_changed_not_unchanged(
        known: str, tmp_path: Path) -> None:
    """Found by a tester: a finding of the same identity as the previous run's but with more rows,
    more cents, other rows or a net impact of the other sign was "unchanged". It is changed, with
    what changed (the baseline's comparison), in summary.json, on the terminal and in the report."""
    reports = tmp_path / "reports"
    code, first, _ = _verify(known, reports)
    assert code == 1
    with psycopg.connect(known, autocommit=True) as conn:
        conn.execute("UPDATE tips SET amount_cents = 6 WHERE id = 8")  # another row, 794 cents short
    code, data, stderr = _verify(known, reports)
    since = data["provenance"]["previous_run"]
    assert since["run_id"] == first["run_id"]
    assert (since["new"], since["fixed"], since["unchanged"]) == ([], [], 0), since
    [value] = [c for c in since["changed"] if c.startswith("value_mismatch public.tips.amount_cents")]
    assert "2 rows, 1 in the previous run" in value and "1,489 cents, 695 in the previous run" in value
    assert '1 row(s) not in the previous run, e.g. {"id" : 8}' in value
    marks = {f["rule"]: f["since_previous"] for f in data["findings"]}
    assert marks["value_mismatch"].startswith("changed: 2 rows, 1 in the previous run"), marks
    assert marks["sum_mismatch"].startswith("changed: "), marks
    assert f"since run {first['run_id']} (fail): 0 new, 0 fixed, 2 changed, 0 unchanged" in stderr
    assert "    changed: value_mismatch public.tips.amount_cents" in stderr
    html = (reports / data["run_id"] / "report.html").read_text()
    assert "0 new, 0 fixed, 2 changed, 0 unchanged" in html and "<p>Changed (" in html
    assert f"changed since {first['run_id']}" in html

    # Fewer rows and cents, but the net impact turned: 695 cents over where 1,489 were short.
    with psycopg.connect(known, autocommit=True) as conn:
        conn.execute("UPDATE tips SET amount_cents = 800 WHERE id = 8; UPDATE tips SET amount_cents = 1395 "
                     "WHERE id = 7")
    code, data, _ = _verify(known, reports)
    assert len(data["provenance"]["previous_run"]["changed"]) == 2
    assert all("net +695 cents, -1,489 in the previous run" in f["since_previous"] for f in data["findings"])

    # Nothing changed: unchanged.
    code, data, _ = _verify(known, reports)
    since = data["provenance"]["previous_run"]
    assert (since["changed"], since["unchanged"]) == ([], 2)
    assert {f["since_previous"] for f in data["findings"]} == {"unchanged"}


def test_baseline_stale_warnings_are_left_out_of_the_previous_run_diff(known: str, tmp_path: Path) -> None:
    """Found by a tester: a baseline_stale warning describes the baseline file, not the database, yet
    it appeared as a new finding since the previous run (and as fixed once the file was cleaned)."""
    reports, baseline = tmp_path / "reports", tmp_path / "b.json"
    code, first, _ = _verify(known, reports)
    assert run_cli("verifier", "accept", str(reports / first["run_id"]), "--reason", "known",
                   "--baseline", str(baseline)).code == 0
    with psycopg.connect(known, autocommit=True) as conn:
        conn.execute("UPDATE tips SET amount_cents = id * 100")
    code, data, _ = _verify(known, reports, "--baseline", str(baseline))
    assert code == 0 and data["provenance"]["baseline"]["stale"] == 2
    since = data["provenance"]["previous_run"]
    assert since["run_id"] == first["run_id"] and since["new"] == [], since
    assert sorted(since["fixed"]) == ["sum_mismatch public.tips.amount_cents",
                                      "value_mismatch public.tips.amount_cents"]
    assert not any("since_previous" in f for f in data["findings"])
    code, data, _ = _verify(known, reports)  # the baseline left out: nothing fixed since
    since = data["provenance"]["previous_run"]
    assert (since["new"], since["fixed"], since["changed"], since["unchanged"]) == ([], [], [], 0), since


def test_the_previous_run_is_found_by_the_database_s_identity_not_its_connection_string(
        known: str, make_db: Any, tmp_path: Path) -> None:
    """Found by a tester: two runs on one database were compared only when their connection strings
    described it alike. The server's system identifier and the database's name decide: the same
    database reached as another role is the same target; another database of the server is not."""
    reports = tmp_path / "reports"
    code, first, _ = _verify(known, reports)
    with psycopg.connect(known) as conn:
        row = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    assert row is not None and first["provenance"]["target_system_identifier"] == row[0]
    with reader_role(known) as reader:
        code, data, _ = _verify(reader, reports)
    assert data["provenance"]["target"] != first["provenance"]["target"]
    assert data["provenance"]["previous_run"]["run_id"] == first["run_id"]
    other = str(make_db())
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute(SETUP)
    code, data, _ = _verify(other, reports)
    assert code == 1 and "previous_run" not in data["provenance"]


def test_a_role_that_may_not_read_the_system_identifier_is_matched_by_its_connection_string(
        known: str, tmp_path: Path) -> None:
    """pg_control_system() may be revoked from PUBLIC: the run records no identifier (it does not
    fail), and the previous run is the one of the same connection string."""
    reports = tmp_path / "reports"
    with psycopg.connect(known, autocommit=True) as conn:
        conn.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")  # in this database only
    with reader_role(known) as reader:
        code, first, stderr = _verify(reader, reports)
        assert code == 1, stderr
        assert "target_system_identifier" not in first["provenance"]
        code, data, _ = _verify(reader, reports)
    assert data["provenance"]["previous_run"]["run_id"] == first["run_id"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_the_baseline_is_written_with_the_ordinary_mode(known: str, tmp_path: Path, umask: int,
                                                        mode: int) -> None:
    """Found by a tester: the baseline, a file for the team's repository, was written 0600 (the
    temporary file's mode). It is 0644 less the umask, and still written whole (no file left aside)."""
    reports, baseline = tmp_path / "reports", tmp_path / "repo" / "b.json"
    baseline.parent.mkdir()
    code, first, _ = _verify(known, reports)
    old = os.umask(umask)
    try:
        for _ in range(2):  # created, then replaced
            result = run_cli("verifier", "accept", str(reports / first["run_id"]), "--reason", "known",
                             "--baseline", str(baseline))
            assert result.code == 0, result.stderr
            assert stat.S_IMODE(baseline.stat().st_mode) == mode
    finally:
        os.umask(old)
    assert sorted(p.name for p in baseline.parent.iterdir() if not p.name.endswith(".lock")) == ["b.json"]


def test_accept_writes_through_a_symbolic_link_to_its_target(known: str, tmp_path: Path) -> None:
    """Found by a tester: accepting on a baseline path that is a symbolic link replaced the link with
    a regular file. The link stays; its target (created if missing) gets the entries."""
    reports, repo, elsewhere = tmp_path / "reports", tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    elsewhere.mkdir()
    target, link = repo / "verifier-baseline.json", elsewhere / "b.json"
    link.symlink_to(target)
    code, first, _ = _verify(known, reports)
    for rule in ("value_mismatch", "sum_mismatch"):
        result = run_cli("verifier", "accept", str(reports / first["run_id"]), "--reason", "known",
                         "--rule", rule, "--baseline", str(link))
        assert result.code == 0, result.stderr
        assert link.is_symlink() and link.resolve() == target.resolve() and target.is_file()
    assert {e["rule"] for e in json.loads(target.read_text())["accepted"]} == {"value_mismatch",
                                                                              "sum_mismatch"}
    assert [p.name for p in elsewhere.iterdir()] == ["b.json"]
    assert not [p for p in repo.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]


def test_two_accepts_at_once_keep_both_sets_of_entries(make_db: Any, tmp_path: Path) -> None:
    """Found by a tester: two ``verifier accept`` at once on one baseline each read the file, added
    their own entries and wrote it: the later write lost the other's. They take turns now (a lock
    beside the file). The baseline already holds a large entry, as a long-lived one may, so that each
    read and write takes long enough for two processes started together to overlap; every round
    must keep both."""
    dsn = str(make_db())
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in ("tips", "fees"):
            conn.execute(SETUP.replace("tips", name))
    reports, baseline = tmp_path / "reports", tmp_path / "b.json"
    code, first, _ = _verify(dsn, reports)
    assert code == 1
    run_dir = reports / first["run_id"]
    big = {"rule": "value_mismatch", "table": "public.legacy", "column": "amount_cents", "migration": None,
           "count": 200_000, "cents_impact": 200_000, "cents_impact_net": -200_000,
           "rows": [f'{{"id" : {i}}}' for i in range(200_000)], "reason": "legacy", "accepted_by": "test",
           "accepted_at": "2024-01-01T00:00:00+00:00", "run_id": "r"}
    for _ in range(3):
        baseline.write_text(json.dumps({"format": "verifier-baseline", "version": 1, "accepted": [big]}))
        accepts = [subprocess.Popen([str(BIN_DIR / "verifier"), "accept", str(run_dir), "--reason", table,
                                     "--table", table, "--baseline", str(baseline)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for table in ("public.tips", "public.fees")]
        for p in accepts:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        tables = sorted(e["table"] for e in json.loads(baseline.read_text())["accepted"])
        assert tables == ["public.fees", "public.fees", "public.legacy", "public.tips", "public.tips"]
