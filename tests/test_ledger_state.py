"""Scheduled ledger audits (verify-ledger --state): incremental, tamper-evident, never half-written.

Against a real server, as a role that may only SELECT: an incremental audit
reports exactly what a full audit of the same ledger reports (new defects
and those found earlier in proven history); a change to a proven entry or
journal that keeps every arithmetic invariant true is history_tampered,
named by its id, until --full starts a new history; a rotating share of the
history finds it within its rotation; audits under concurrent postings
raise no false alarm; a corrupt, foreign or busy state file, a timeout and
a killed connection end with exit 2 and leave the state file as it was.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import hashlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from verifier.demo import ledger, load
from verifier.errors import UsageError
from verifier.ledger import gaps, history, proven
from verifier.ledger import state as st
from verifier.pg import conninfo

from .conftest import BIN_DIR, copy_db, only_run, reader_role, run_cli, run_summary
from .test_faults import FAULTS, _small_disk
from .test_ledger import DEMO_CONFIG


@pytest.fixture(scope="module")
def clean_ledger(make_module_db) -> str:  # type: ignore[no-untyped-def]
    dsn = str(make_module_db())
    ledger.build(dsn, entries=20_000, seed=5)
    return dsn


@pytest.fixture
def ledger_copy(clean_ledger: str, make_db: Any) -> str:
    return copy_db(make_db, clean_ledger)


class Auditor:
    """Runs verify-ledger on one database with one state file, each run in its own report folder."""

    def __init__(self, dsn: str, tmp_path: Path) -> None:
        self.dsn, self.tmp_path, self.runs = dsn, tmp_path, 0
        self.state = tmp_path / "ledger.state"

    def __call__(self, *extra: str, state: bool = True, dsn: str | None = None
                 ) -> tuple[int, dict[str, Any], str, dict[tuple[str, str], set[str]]]:
        self.runs += 1
        report_dir = self.tmp_path / f"run{self.runs}"
        args = ["--state", str(self.state)] if state else []
        if "--config" not in extra:  # the demo ledger's legacy wallets to reconcile
            config = self.tmp_path / "demo.verifier.toml"
            config.write_text(DEMO_CONFIG)
            args += ["--config", str(config)]
        result = run_cli("verify-ledger", "--db", dsn or self.dsn, "--report-dir", str(report_dir),
                         *args, *extra)
        assert "Traceback" not in result.stderr
        data = run_summary(report_dir)
        found: dict[tuple[str, str], set[str]] = {}
        offenders = only_run(report_dir) / "offenders.csv"
        if offenders.exists():
            with offenders.open() as fh:
                for row in csv.DictReader(fh):
                    found.setdefault((row["rule"], row["table"]), set()).add(row["id"])
        return result.code, data, result.stderr, found

    def prove(self, *extra: str, code: int = 0
              ) -> tuple[int, dict[str, Any], str, dict[tuple[str, str], set[str]]]:
        """Two audits with the state: the first records what it sees, the second proves it (audit.settle)."""
        for _ in range(2):
            result = self(*extra)
            assert result[0] == code, (result[2], result[1]["findings"])
        return result


def _as_an_earlier_release_wrote_it(state: Path) -> None:
    """A state file as releases before the accounts' last proven entries were kept wrote it."""
    db = sqlite3.connect(state)
    db.execute("DROP TABLE last_entries")
    db.commit()
    db.close()


def _stage(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in data["stages"] if s["name"] == name)


def _checked_entries(data: dict[str, Any]) -> int:
    return int(next(p for p in _stage(data, "audit")["passes"] if p["pass"] == "journals")["entries"])


def _counts(data: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int]]:
    totals: dict[tuple[str, str], tuple[int, int]] = {}
    for f in data["findings"]:
        count, impact = totals.get((f["rule"], f["table"]), (0, 0))
        totals[f["rule"], f["table"]] = (count + f["count"], impact + f["cents_impact"])
    return totals


def _identity(path: Path) -> dict[str, Any]:
    """The identity a state file holds (``verifier.ledger.proven.identity``)."""
    state = sqlite3.connect(path)
    row = state.execute("SELECT value FROM meta WHERE key = 'identity'").fetchone()
    state.close()
    return dict(json.loads(row[0]))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_incremental_audit_reports_what_a_full_audit_reports(ledger_copy: str, tmp_path: Path) -> None:
    with reader_role(ledger_copy, sql.SQL("ALTER ROLE {} BYPASSRLS")) as reader:
        audit = Auditor(reader, tmp_path)
        code, data, stderr, _ = audit.prove()
        assert _stage(data, "state")["mode"] == "full" and _checked_entries(data) > 19_000
        planted = ledger.plant(ledger_copy)  # new defects of every rule, beyond the watermark

        full_code, full, _, full_found = audit(state=False)
        assert full_code == 1
        # The second audit after planting proves what the first saw: the defects are then in
        # proven history, reported from the state from the third audit on.
        for round_ in ("new defects", "defects being proven", "defects in proven history"):
            code, data, stderr, found = audit()
            assert code == 1, (round_, stderr)
            assert _stage(data, "state")["mode"] == "incremental"
            assert found == full_found, round_
            assert _counts(data) == _counts(full), round_
        # The third incremental audit read no entry again: the defects came from the state.
        assert _checked_entries(data) == 0
        assert {p.rule for p in planted} <= {rule for rule, _ in found}


def test_new_entries_are_checked_and_nothing_else(ledger_copy: str, tmp_path: Path) -> None:
    audit = Auditor(ledger_copy, tmp_path)
    code, data, _, _ = audit.prove()
    proven = _stage(data, "state saved")["proven"]["entries"]
    assert proven > 19_000
    with load.posting(ledger_copy, writers=1) as posted:
        time.sleep(0.5)
    assert posted[0] > 0
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")  # transfer_tokens leaves the legacy balances alone
    code, data, stderr, _ = audit("--config", str(config))
    assert code == 0, (stderr, data["findings"])
    with psycopg.connect(ledger_copy) as conn:
        new = conn.execute("SELECT count(*) FROM entries WHERE id > %s", (proven,)).fetchone()
    assert new and new[0] > 0 and _checked_entries(data) == new[0], "only the new entries were read"


def test_a_change_that_keeps_every_invariant_is_history_tampered(ledger_copy: str, tmp_path: Path) -> None:
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("UPDATE entries SET created_at = created_at - interval '1 day' WHERE id = 4242")
        conn.execute("UPDATE journals SET description = 'edited' WHERE id = 1500")
        # Two changes in one chunk of ids: found, named by the chunk's range.
        conn.execute("UPDATE entries SET created_at = now() WHERE id IN (10240, 10250)")
    code, data, _, _ = audit(state=False)
    assert code == 0, "the arithmetic invariants still hold: only the history can tell"
    for _ in range(2):  # reported until someone starts a new history
        code, data, stderr, found = audit()
        assert code == 1, stderr
        assert found == {("history_tampered", "public.entries"): {"4242", "10240..11263"},
                         ("history_tampered", "public.journals"): {"1500"}}
    code, data, stderr, found = audit("--full")
    assert code == 0 and found == {}, (stderr, data["findings"])
    assert audit()[0] == 0
    # The state keeps every audit for the trend charts.
    modes = [h["mode"] for h in data["provenance"]["ledger_history"]]
    assert modes == ["full", "full", "incremental", "incremental", "full"]


def test_deleted_and_inserted_entries_are_named(ledger_copy: str, tmp_path: Path) -> None:
    columns = sql.SQL("id, journal_id, account_id, entry_type, amount_cents, description, "
                      "balance_before_cents, balance_after_cents, created_at")
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # past the ledger's own triggers
        saved = conn.execute(sql.SQL("DELETE FROM entries WHERE id = 9000 RETURNING {}").format(columns)
                             ).fetchone()
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove(code=1)  # the gap breaks a chain: that finding is part of the proven history now
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        deleted = conn.execute("DELETE FROM entries WHERE id = 777 RETURNING amount_cents").fetchone()
        conn.execute(sql.SQL("INSERT INTO entries ({}) VALUES ({})").format(
            columns, sql.SQL(", ").join([sql.Placeholder()] * 9)), saved)
    assert saved and deleted
    code, data, stderr, found = audit()
    assert code == 1, stderr
    assert found[("history_tampered", "public.entries")] == {"777", "9000"}
    samples = {s["id"]: s for f in data["findings"] if f["rule"] == "history_tampered" for s in f["sample"]}
    assert samples["777"]["detail"].startswith("deleted")
    assert samples["777"]["cents_impact"] == abs(deleted[0])
    assert samples["9000"]["detail"].startswith("inserted")
    assert samples["9000"]["cents_impact"] == abs(saved[4])


@pytest.mark.parametrize("share", ["1", "0.25"])
def test_rows_inserted_below_every_proven_id_are_found_by_the_next_audit(ledger_copy: str, tmp_path: Path,
                                                                        share: str) -> None:
    # Found by a break-it run: the re-hash plan started at chunk 0, so an incremental audit never
    # looked below it, and a journal or entry with a negative id passed (a full audit finds them).
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # past the ledger's own triggers
        conn.execute("INSERT INTO journals (id, ref_type, ref_id) "
                     "SELECT -424242, ref_type, ref_id FROM journals WHERE id = 1")
        conn.execute("INSERT INTO journals (id, ref_type, ref_id) "
                     "SELECT -77, ref_type, ref_id FROM journals WHERE id = 1")
        conn.execute("INSERT INTO entries (id, journal_id, account_id, entry_type, amount_cents, "
                     "balance_before_cents, balance_after_cents) "
                     "SELECT -9, -424242, account_id, entry_type, amount_cents, 0, 0 "
                     "FROM entries WHERE id = 1")
    code, data, stderr, found = audit("--verify-history-share", share)
    assert code == 1, stderr
    assert _stage(data, "state")["mode"] == "incremental"
    assert found[("history_tampered", "public.journals")] == {"-424242", "-77"}
    assert found[("history_tampered", "public.entries")] == {"-9"}
    # The range below every chunk is not counted as re-hashed history.
    chunks = 20_000 // (1 << history.CHUNK_BITS) + 1 + 7
    assert _stage(data, "state saved")["rehashed_chunks"] <= chunks, data["stages"]
    code, data, stderr, found = audit("--full")
    assert code == 1 and ("empty_journal", "public.journals") in found, data["findings"]


def test_a_rotating_share_of_history_finds_a_change_within_its_rotation(ledger_copy: str,
                                                                      tmp_path: Path) -> None:
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("UPDATE entries SET created_at = created_at + interval '1 hour' WHERE id = 19000")
    rehashed, found_at = [], None
    for i in range(4):
        code, data, _, found = audit("--verify-history-share", "0.25")
        rehashed.append(_stage(data, "state saved")["rehashed_chunks"])
        if code == 1:
            assert found == {("history_tampered", "public.entries"): {"19000"}}
            found_at = i
            break
        assert code == 0
    assert found_at is not None, "a quarter per audit covers all history in four audits"
    chunks = 20_000 // (1 << history.CHUNK_BITS) + 1 + 7  # entries' and journals' chunks
    assert all(r <= chunks // 4 + 2 for r in rehashed), rehashed
    # Once found, reported by every audit (the nights its chunk is not re-hashed too), until --full
    # starts a new history (before, it vanished the next night: found by a break-it run).
    told = []
    for _ in range(3):
        code, data, _, found = audit("--verify-history-share", "0.25")
        assert code == 1 and found == {("history_tampered", "public.entries"): {"19000"}}, data["findings"]
        told += [s["detail"] for f in data["findings"] for s in f["sample"]]
    # Nights that did not re-hash its chunk report it as an earlier audit found it.
    assert any("(found by audit " in d for d in told), told
    code, data, _, _ = audit("--full")
    assert code == 0, data["findings"]


def test_audits_under_concurrent_postings_raise_no_false_alarm(ledger_copy: str, tmp_path: Path) -> None:
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    audit = Auditor(ledger_copy, tmp_path)
    proven = []
    with load.posting(ledger_copy):
        time.sleep(0.3)
        for _ in range(4):
            code, data, stderr, found = audit("--config", str(config))
            assert code == 0, (stderr, found)
            proven.append(_stage(data, "state saved")["proven"]["entries"])
    code, data, stderr, found = audit("--config", str(config))
    assert code == 0, (stderr, found)
    assert proven == sorted(proven) and proven[-1] > 20_000, proven


def test_soak_audits_back_to_back_under_writers_find_nothing(ledger_copy: str, tmp_path: Path) -> None:
    """A longer soak, bounded in time: VERIFIER_SOAK_S seconds (20 by default) of audits, one after
    another, while four writers post; incremental (with a history share) and stateless full audits
    alternate. Not one finding, and the watermark keeps up."""
    seconds = float(os.environ.get("VERIFIER_SOAK_S", "20"))
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    audit = Auditor(ledger_copy, tmp_path)
    kinds: dict[str, int] = {"incremental": 0, "full": 0}
    proven = []
    with load.posting(ledger_copy) as posted:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            full = kinds["full"] < kinds["incremental"] // 2
            share = () if full else ("--verify-history-share", "0.5")
            code, data, stderr, found = audit("--config", str(config), *share, state=not full)
            assert code == 0, (stderr, found, data["findings"])
            kinds["full" if full else "incremental"] += 1
            if not full:
                proven.append(_stage(data, "state saved")["proven"]["entries"])
    assert kinds["incremental"] >= 2 and kinds["full"] >= 1, kinds
    assert sum(posted) > 0 and proven == sorted(proven)
    code, data, stderr, found = audit("--config", str(config), "--full")  # after the writers: all of it
    assert code == 0, (stderr, found)
    print(f"soak: {seconds:.0f} s, audits {kinds}, postings {sum(posted)}")


def test_corrupt_foreign_and_busy_state_files_are_left_as_they_are(
        clean_ledger: str, ledger_copy: str, tmp_path: Path) -> None:
    audit = Auditor(ledger_copy, tmp_path)
    audit.state.write_bytes(b"not a state file\x00" * 64)
    before = _sha(audit.state)
    code, data, stderr, _ = audit()
    assert code == 2 and data["status"] == "error"
    assert f"The state file {audit.state} is not a ledger audit state" in stderr
    assert _sha(audit.state) == before

    audit.state.write_bytes(b"")  # an empty file (touch), as the README says: a new state
    code, data, stderr, _ = audit()
    assert code == 0, stderr
    assert st.load(audit.state) is not None

    audit.state.unlink()
    assert audit(dsn=clean_ledger)[0] == 0  # the state of another database
    before = _sha(audit.state)
    code, _, stderr, _ = audit()
    assert code == 2 and "was written for another ledger (database:" in stderr
    code, _, stderr, _ = audit("--full")
    assert code == 2 and "was written for another ledger" in stderr
    assert _sha(audit.state) == before

    with audit.state.with_name(audit.state.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        code, _, stderr, _ = audit(dsn=clean_ledger)
    assert code == 2 and "is in use by another ledger audit" in stderr
    assert _sha(audit.state) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_a_state_path_that_is_a_link_is_its_targets_state(clean_ledger: str, tmp_path: Path) -> None:
    """Found by a break-it run: --state through a symbolic link replaced the link with a file of its
    own (the state forked, its target left behind), and an audit through the link and one through
    its target held two locks. The link is followed: its target is written and locked."""
    audit = Auditor(clean_ledger, tmp_path)
    audit.prove()
    real = audit.state
    runs = sqlite3.connect(real).execute("SELECT count(*) FROM runs").fetchone()[0]
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "link.state"
    link.symlink_to(real)
    audit.state = link
    code, data, stderr, _ = audit()
    assert code == 0, (stderr, data["findings"])
    assert link.is_symlink() and link.resolve() == real.resolve()
    db = sqlite3.connect(real)
    assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == runs + 1
    db.close()
    with real.with_name(real.name + ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        code, _, stderr, _ = audit()
    assert code == 2 and "is in use by another ledger audit" in stderr
    loop = tmp_path / "elsewhere" / "loop.state"
    loop.symlink_to(loop.name)
    result = run_cli("verify-ledger", "--db", clean_ledger, "--report-dir", str(tmp_path / "loop"),
                     "--state", str(loop))
    assert result.code == 2 and "cannot be followed to a file" in result.stderr, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_the_partial_file_of_an_audit_killed_while_saving_is_removed_by_the_next_save(
        clean_ledger: str, tmp_path: Path) -> None:
    """Found by a break-it run: an audit killed (SIGKILL) while writing the state left its partial
    file, which no later audit removed. The next save removes those of the state's own name and of
    another process; nothing else. A full audit writes its last proven entries into its own partial
    file as it reads them (``state.spill_file``), which its save completes: none is left."""
    audit = Auditor(clean_ledger, tmp_path)
    leftover = tmp_path / f".{audit.state.name}.4194304.partial"
    leftover.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    journal = tmp_path / f".{audit.state.name}.4194304.partial-journal"  # SQLite's, beside it
    journal.write_bytes(b"\x00" * 100)
    kept = [tmp_path / f".{audit.state.name}.x1.partial", tmp_path / ".other.state.12.partial",
            tmp_path / f"{audit.state.name}.12.partial"]
    for path in kept:
        path.write_bytes(b"")
    code, data, stderr, _ = audit()
    assert code == 0, (stderr, data["findings"])
    assert not leftover.exists() and not journal.exists() and all(p.exists() for p in kept)
    for _ in range(2):  # (the second audit is still a full one: it proves every entry)
        code, data, stderr, _ = audit()
        assert code == 0, (stderr, data["findings"])
    assert _stage(data, "state")["mode"] == "incremental"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{audit.state.name}.")) == sorted(
        p.name for p in kept if p.name.startswith(f".{audit.state.name}."))


def test_a_timeout_or_a_killed_connection_leaves_the_state_as_it_was(ledger_copy: str,
                                                                     tmp_path: Path) -> None:
    audit = Auditor(ledger_copy, tmp_path)
    assert audit()[0] == 0
    before = _sha(audit.state)
    config = tmp_path / "verifier.toml"
    config.write_text("statement_timeout_s = 0.001\n")
    code, data, stderr, _ = audit("--config", str(config))
    assert code == 2 and "statement_timeout" in stderr
    assert _sha(audit.state) == before

    # An audit stuck behind a lock, whose connections are then terminated.
    config.write_text("lock_timeout_s = 60\n")
    with psycopg.connect(ledger_copy) as locker:
        locker.execute("LOCK TABLE pending_transactions IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen([str(BIN_DIR / "verify-ledger"), "--db", ledger_copy,
                                 "--state", str(audit.state), "--config", str(config),
                                 "--report-dir", str(tmp_path / "killed")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with psycopg.connect(ledger_copy, autocommit=True) as admin:
            for _ in range(600):
                waiting = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                    "AND wait_event_type = 'Lock'", (conninfo.APPLICATION_NAME,)).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the audit never waited on the lock")
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # (this test's only)
                          "WHERE application_name = %s AND datname = current_database()",
                          (conninfo.APPLICATION_NAME,))
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr and "connection" in stderr.lower()
    assert run_summary(tmp_path / "killed")["status"] == "error"
    assert _sha(audit.state) == before
    assert audit()[0] == 0  # and the next audit carries on from it


def test_history_settles_only_when_no_transaction_can_still_add_below() -> None:
    from verifier.ledger.proven import settle

    proven = {"entries": 100, "journals": 40}
    last_seen = {"entries": 300, "journals": 90}
    assert settle(proven, None, None, xmin=10) == proven  # a first audit proves nothing
    # Every transaction running at the previous audit (xids below 50) has ended: what it saw settles.
    assert settle(proven, last_seen, 50, xmin=50) == last_seen
    # One of them may still be running: nothing new settles.
    assert settle(proven, last_seen, 50, xmin=49) == proven


def test_a_transfer_that_commits_late_below_what_an_audit_saw_is_not_tampering(
        ledger_copy: str, tmp_path: Path) -> None:
    """The hole this closes: transaction A takes its xid after B's, holds journal id j, B posts
    j + 1 and commits. A snapshot then sees j + 1 but not j, and A is not in its list of running
    transactions (its xid is above the newest completed one). Proving up to j + 1 at that audit
    would call A's late commit history_tampered."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    audit = Auditor(ledger_copy, tmp_path)
    assert audit("--config", str(config))[0] == 0
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        rich = [r[0] for r in conn.execute(
            "SELECT id FROM accounts WHERE type = 'user' AND balance_cents >= 1000 "
            "ORDER BY id LIMIT 4").fetchall()]
    assert len(rich) == 4

    def transfer(conn: psycopg.Connection, payer: int, payee: int) -> None:
        conn.execute("SELECT transfer_tokens(%s, %s, 100, 'token_transfer', gen_random_uuid())",
                     (payer, payee))

    with psycopg.connect(ledger_copy) as b, psycopg.connect(ledger_copy) as a:
        b.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (rich[0],))  # B's xid first
        a.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (rich[2],))  # then A's
        transfer(a, rich[2], rich[3])  # journal j
        transfer(b, rich[0], rich[1])  # journal j + 1
        b.commit()
        code, data, stderr, found = audit("--config", str(config))  # sees j + 1, not j
        assert code == 0, (stderr, found)
        a.commit()
    for _ in range(3):
        code, data, stderr, found = audit("--config", str(config))
        assert code == 0, (stderr, found, data["findings"])
    with psycopg.connect(ledger_copy) as conn:
        newest = conn.execute("SELECT max(id) FROM journals").fetchone()
    assert newest is not None and _stage(data, "state saved")["proven"]["journals"] == newest[0]


def test_the_platforms_rows_are_hashed_by_value_and_an_older_state_goes_on_as_it_was_written(
        ledger_copy: str, tmp_path: Path) -> None:
    """New states hash rows "exact"ly (by value where a type's hash tells every two texts apart, as
    text elsewhere). A state written by an earlier release ("text", or "record" where every type
    had a hash) is the same ledger, and goes on hashing as it was written until --full."""
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    identity = _identity(audit.state)
    assert identity["row_hash"] == {"entries": "exact", "journals": "exact"}
    for kinds in ({"entries": "text", "journals": "record"}, {"entries": "record", "journals": "text"}):
        older = {**identity, "row_hash": kinds}
        assert proven.as_written(older, identity) == older
    # A state written "exact" that meets a "text" identity (a server before PostgreSQL 14) is another.
    older = {**identity, "row_hash": {"entries": "text", "journals": "text"}}
    assert proven.as_written(identity, older) == older != identity


@pytest.mark.parametrize("column, before, after", [
    ("metadata", "'{\"fee\": 1.5}'", "'{\"fee\": 1.50}'"),  # jsonb: equal numbers, other text
    ("fee numeric", "1.0", "1.00"),
    ("rate float8", "'0'", "'-0'"),
    ("took interval", "'1 day'", "'24 hours'"),
    ("code bpchar", "'a'", "'a '")])
def test_an_edit_that_keeps_a_value_equal_but_changes_its_text_is_history_tampered(
        ledger_copy: str, tmp_path: Path, column: str, before: str, after: str) -> None:
    """Found by a break-it run: hashed by their types' hash functions, values that compare equal but
    read differently (jsonb 1.5 and 1.50, numeric scale, -0, an interval's units, trailing blanks)
    hashed alike, and such an edit of a proven row passed; such columns are hashed as their text."""
    name = column.split()[0]
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        if " " in column:
            conn.execute(f"ALTER TABLE entries ADD COLUMN {column}")  # noqa: S608 (constant cases)
        conn.execute(f"UPDATE entries SET {name} = {before} WHERE id = 321")  # noqa: S608
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute(f"UPDATE entries SET {name} = {after} WHERE id = 321")  # noqa: S608
    code, data, stderr, found = audit()
    assert code == 1 and found == {("history_tampered", "public.entries"): {"321"}}, (stderr, found)


def test_rows_with_a_column_without_hash_function_are_hashed_with_its_text(ledger_copy: str,
                                                                           tmp_path: Path) -> None:
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("ALTER TABLE entries ADD COLUMN meta json")  # json has no hash operator class
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    identity = _identity(audit.state)
    assert identity["row_hash"] == {"entries": "exact", "journals": "exact"}
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("""UPDATE entries SET meta = '{"note": "edited"}' WHERE id = 321""")
    code, data, _, found = audit()
    assert code == 1 and found == {("history_tampered", "public.entries"): {"321"}}


def test_audits_that_cannot_prove_new_history_say_why_and_then_fail(ledger_copy: str, tmp_path: Path) -> None:
    """Another session holds a transaction open (an xid taken) while new entries arrive: the audit
    after the one that saw them cannot prove them. It says so as a warning naming that session's
    pid and application; from ledger.unsettled_audits_max audits in a row it is an error. Once the
    transaction ends, the next audit proves them and says nothing."""
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\nunsettled_audits_max = 2\n")
    holder = psycopg.connect(ledger_copy, application_name="long-report")
    try:
        holder.execute("SELECT pg_current_xact_id()")  # an xid below everything posted from now on
        with load.posting(ledger_copy, writers=1) as posted:
            time.sleep(0.5)
        assert posted[0] > 0
        code, data, stderr, _ = audit("--config", str(config))  # sees the new entries
        assert code == 0, (stderr, data["findings"])
        code, data, stderr, _ = audit("--config", str(config))  # cannot prove them: a warning
        [held] = [f for f in data["findings"] if f["rule"] == "history_not_settled"]
        assert code == 0 and held["severity"] == "warning", data["findings"]
        assert f"pid {holder.info.backend_pid} (long-report" in held["message"]
        code, data, stderr, _ = audit("--config", str(config))  # the second in a row: an error
        [held] = [f for f in data["findings"] if f["rule"] == "history_not_settled"]
        assert code == 1 and held["severity"] == "error" and held["detail"]["audits_in_a_row"] == 2, held
    finally:
        holder.close()
    code, data, stderr, _ = audit("--config", str(config))
    assert code == 0 and data["findings"] == [], (stderr, data["findings"])
    assert _stage(data, "state saved")["proven"]["entries"] > 20_000 - 1


@pytest.mark.parametrize("kept", [True, False])
def test_accounts_are_held_against_their_last_proven_entry_kept_in_the_state(
        ledger_copy: str, tmp_path: Path, kept: bool) -> None:
    """The state keeps each account's last proven entry (seq, balance after), so that an incremental
    audit seeds the new entries' chains and checks the other accounts without reading every entry.
    A state written before it kept them (``kept`` False: the table dropped) does not say which
    currency each account's entries were proven in: its next audit is a full one, which finds the
    same drift, and writes them."""
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        wanted = {str(a): (int(s), str(b)) for a, s, b in conn.execute(
            "SELECT DISTINCT ON (account_id) account_id, id, balance_after_cents FROM entries "
            "ORDER BY account_id, id DESC")}
        # An account whose last entry is proven and which has no new one: its balance moves.
        account = conn.execute("SELECT a.id FROM accounts a WHERE EXISTS (SELECT 1 FROM entries e "
                               "WHERE e.account_id = a.id) ORDER BY a.id LIMIT 1 OFFSET 3").fetchone()
        assert account
        conn.execute("UPDATE accounts SET balance_cents = balance_cents + 7 WHERE id = %s", account)
    db = sqlite3.connect(audit.state)
    assert {a: (s, b) for a, s, b in db.execute("SELECT account, seq, after FROM last_entries")} == wanted
    assert {c for (c,) in db.execute("SELECT currency FROM last_entries")} == {"USD"}
    if not kept:
        db.execute("DROP TABLE last_entries")
        db.commit()
    db.close()
    code, data, stderr, found = audit()
    assert code == 1, stderr
    assert _stage(data, "state")["mode"] == ("incremental" if kept else "full")
    assert ("full_because" in _stage(data, "state")) is not kept
    # (The legacy wallet of its owner no longer matches it either.)
    assert found[("account_balance_drift", "public.accounts")] == {str(account[0])}, data["findings"]
    assert set(found) <= {("account_balance_drift", "public.accounts"),
                          ("reconciliation_mismatch", "public.accounts")}, found
    drift = next(f for f in data["findings"] if f["rule"] == "account_balance_drift")
    assert drift["cents_impact"] == 7
    db = sqlite3.connect(audit.state)
    assert {a: (s, b) for a, s, b in db.execute("SELECT account, seq, after FROM last_entries")} == wanted
    db.close()



def test_an_account_deleted_or_moved_to_another_currency_after_its_entries_were_proven(
        ledger_copy: str, tmp_path: Path) -> None:
    """Found by a break-it run: both passed incremental audits (exit 0, every night), while a full
    audit finds the proven journals in two currencies, the trial balance off, and orphan entries.
    Accounts are mutable; the state keeps the currency each account's entries were proven in."""
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        moved, deleted = [str(r[0]) for r in conn.execute(
            "SELECT a.id FROM accounts a WHERE a.type = 'user' AND EXISTS (SELECT 1 FROM entries e "
            "WHERE e.account_id = a.id) ORDER BY a.id LIMIT 2 OFFSET 5")]
        conn.execute("SET session_replication_role = replica")  # past the foreign keys
        conn.execute("UPDATE accounts SET currency = 'EUR' WHERE id = %s", (moved,))
        conn.execute("DELETE FROM accounts WHERE id = %s", (deleted,))
    for _ in range(2):  # every night, until --full
        code, data, stderr, found = audit()
        assert code == 1, stderr
        assert found[("history_tampered", "public.accounts")] == {moved, deleted}, data["findings"]
    samples = {s["id"]: s["detail"] for f in data["findings"] if f["rule"] == "history_tampered"
               for s in f["sample"]}
    assert samples[moved] == "in EUR, but an earlier audit proved its entries in USD"
    assert samples[deleted].startswith("deleted, though an earlier audit proved its entries")
    code, data, stderr, found = audit("--full")
    assert code == 1 and ("journal_mixed_currency", "public.journals") in found, data["findings"]
    assert ("orphan_entry", "public.entries") in found


def test_an_account_moved_before_a_state_of_an_earlier_release_goes_on_is_found(
        ledger_copy: str, tmp_path: Path) -> None:
    """A state written before the accounts' currencies were kept (its last_entries table dropped):
    an account moved to another currency since its last audit passed the next one (exit 0), which
    filled the table in from the accounts as they are now. That audit is now a full one, which finds
    the journals in two currencies, and the proven entries' sums per currency moved (the state file
    is left as it was)."""
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    _as_an_earlier_release_wrote_it(audit.state)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        moved = conn.execute(
            "SELECT a.id FROM accounts a WHERE a.type = 'user' AND EXISTS (SELECT 1 FROM entries e "
            "WHERE e.account_id = a.id) ORDER BY a.id LIMIT 1 OFFSET 5").fetchone()
        assert moved
        conn.execute("UPDATE accounts SET currency = 'EUR' WHERE id = %s", moved)
    code, data, stderr, found = audit()
    assert code == 1, (stderr, data["findings"])
    assert _stage(data, "state")["mode"] == "full"
    assert ("journal_mixed_currency", "public.journals") in found, data["findings"]
    assert found[("history_tampered", "public.entries")] == {"USD", "EUR"}, data["findings"]
    assert _stage(data, "state saved")["saved"] is False


@pytest.mark.parametrize("change", ["balances", "currency", "journal"])
def test_history_changed_before_a_state_of_an_earlier_release_goes_on_is_found_every_night(
        ledger_copy: str, tmp_path: Path, change: str) -> None:
    """Found by two break-it runs: the full audit that continues a state of an earlier release (no
    last_entries) started the state anew from the ledger as it is, and passed (exit 0, every night
    after) an account's balances raised by $1,000 consistently in every entry and balance, which only
    the proven history's digests can see, every account moved to another currency, which only its
    trial sums per currency can, and entries added to a journal it proved complete. It now re-hashes
    all of that proven history, sums its entries per currency and looks for such journals first;
    changed, it is history_tampered, and the state file is left as it was, every night, until
    --full."""
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    _as_an_earlier_release_wrote_it(audit.state)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        row = conn.execute("SELECT account_id FROM entries GROUP BY 1 ORDER BY count(*) DESC, 1 "
                           "LIMIT 1").fetchone()
        assert row
        if change == "currency":
            conn.execute("UPDATE accounts SET currency = 'EUR'")
        elif change == "journal":  # two entries more in a journal proven complete: it still balances
            journal, a, b = conn.execute(
                "SELECT e.journal_id, min(e.account_id), max(e.account_id) FROM entries e "
                "GROUP BY 1 HAVING min(e.account_id) <> max(e.account_id) ORDER BY 1 DESC LIMIT 1").fetchone()
            with conn.transaction():
                conn.execute("SELECT ledger_add_entry(%s, %s, 100, 'late')", (journal, a))
                conn.execute("SELECT ledger_add_entry(%s, %s, -100, 'late')", (journal, b))
        else:
            _raise_consistently(conn, row[0])
    written = audit.state.read_bytes()
    for _ in range(2):  # every night, until --full
        code, data, stderr, found = audit()
        assert code == 1, (stderr, data["findings"])
        assert _stage(data, "state")["mode"] == "full"
        table = "public.journals" if change == "journal" else "public.entries"
        assert found.get(("history_tampered", table)), data["findings"]
        if change == "currency":
            assert found[("history_tampered", "public.entries")] == {"USD", "EUR"}, data["findings"]
        assert _stage(data, "state saved")["saved"] is False
        assert audit.state.read_bytes() == written
    code, data, stderr, found = audit("--full")
    assert _stage(data, "state")["mode"] == "full" and "full_because" not in _stage(data, "state")
    assert ("history_tampered", table) not in found, data["findings"]
    db = sqlite3.connect(audit.state)
    assert db.execute("SELECT count(*) FROM last_entries").fetchone()[0] > 0
    db.close()


def test_a_transaction_open_across_the_upgrade_does_not_make_the_state_forget_its_proven_history(
        ledger_copy: str, tmp_path: Path) -> None:
    """Found by a break-it run: the full audit that goes on from an earlier release's state started
    the new state from nothing proven; with a transaction open since the last audit, nothing settled,
    so the state forgot all it had proven, and an entry forged just after passed every audit. The new
    state keeps what the earlier one proved (held against its digests by that audit)."""
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    with psycopg.connect(ledger_copy) as open_tx:
        open_tx.execute("SELECT txid_current()")  # an xid, running across the next two audits
        code, data, stderr, _ = audit()
        assert code == 0, (stderr, data["findings"])
        db = sqlite3.connect(audit.state)
        proven = json.loads(db.execute("SELECT value FROM meta WHERE key = 'proven'").fetchone()[0])
        db.close()
        assert proven["entries"] > 0
        _as_an_earlier_release_wrote_it(audit.state)
        code, data, stderr, _ = audit()
        assert code == 0 and _stage(data, "state")["mode"] == "full", (stderr, data["findings"])
        open_tx.rollback()
    db = sqlite3.connect(audit.state)
    assert json.loads(db.execute("SELECT value FROM meta WHERE key = 'proven'").fetchone()[0]) == proven
    db.close()
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("UPDATE entries SET description = 'forged' WHERE id = (SELECT min(id) + 5 FROM entries)")
    code, data, stderr, found = audit()
    assert code == 1 and ("history_tampered", "public.entries") in found, (stderr, data["findings"])


def _raise_consistently(conn: psycopg.Connection, account: object) -> None:
    """Raise ``account``'s balance by $1,000 in every entry, its balance and its snapshots: every
    arithmetic rule still holds."""
    row = (account,)
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE entries SET balance_before_cents = balance_before_cents + 100000, "
                     "balance_after_cents = balance_after_cents + 100000 WHERE account_id = %s", row)
        conn.execute("UPDATE accounts SET balance_cents = balance_cents + 100000 WHERE id = %s", row)
        conn.execute("UPDATE ledger_snapshots SET balance_cents = balance_cents + 100000 "
                     "WHERE account_id = %s", row)


def test_a_passing_audit_with_warnings_is_recorded_as_passing(ledger_copy: str, tmp_path: Path) -> None:
    """Found by a break-it run: the state's history (and the report's trend) said "fail" for audits
    that exited 0 with only warnings (the platform's missing reconciliation, here)."""
    audit = Auditor(ledger_copy, tmp_path)
    config = tmp_path / "none.toml"
    config.write_text("")
    code, data, stderr, _ = audit("--config", str(config))
    assert code == 0 and data["findings"], (stderr, data["findings"])
    assert {f["severity"] for f in data["findings"]} == {"warning"}
    db = sqlite3.connect(audit.state)
    assert [s for (s,) in db.execute("SELECT status FROM runs")] == ["pass"]
    db.close()


@pytest.mark.parametrize("damage", [
    "UPDATE last_entries SET after = 'xyz'", "UPDATE last_entries SET after = 'Infinity'",
    "UPDATE last_entries SET seq = 'abc' WHERE account = (SELECT max(account) FROM last_entries)",
    "UPDATE last_entries SET after = '1e999999999' WHERE account = (SELECT min(account) FROM last_entries)",
    "INSERT INTO last_entries VALUES ('zzz', 5, '0', 'USD', 'user', 1); "
    "UPDATE meta SET value = value + 1 WHERE key = 'last_entries'",
    "DELETE FROM last_entries WHERE account = (SELECT max(account) FROM last_entries)",
    "INSERT INTO last_entries VALUES ('999999999', 5, '0', 'USD', 'user', 1)",
    "UPDATE last_entries SET after = '100.5' WHERE account = (SELECT max(account) FROM last_entries)",
    "UPDATE trial SET total = 'abc'", "UPDATE trial SET total = 'NaN'",
    "UPDATE runs SET entries = 'many'", "UPDATE runs SET checked_entries = 'x'",
    "UPDATE runs SET cents_impact = '1.5e'",
    "INSERT INTO offenders VALUES ('chain', 99, '1', '1', 1, NULL, 'r')",
    "INSERT INTO offenders VALUES ('nope', 0, '1', '1', 1, NULL, 'r')",
    "INSERT INTO offenders VALUES ('chain', 0, '1', 'abc', 1, NULL, 'r')",
    "INSERT INTO tampered VALUES ('bogus', 0, '1', 'changed', 0, 'x', 'r')",
    "UPDATE meta SET value = 'zz' WHERE key = 'salt'",
    "UPDATE meta SET value = '\"abc\"' WHERE key = 'seen_xmax'",
    "UPDATE meta SET value = '{\"entries\": \"x\", \"journals\": 0}' WHERE key = 'proven'",
    "UPDATE meta SET value = 'Mars/Olympus' WHERE key = 'digest_timezone'",
    # (helper-47: internal errors, or every chunk tampered)
    "UPDATE meta SET value = x'00ff' WHERE key = 'digest_timezone'",
    "UPDATE meta SET value = 'null' WHERE key = 'identity'",
    "UPDATE meta SET value = '[]' WHERE key = 'identity'",
    "UPDATE meta SET value = '[]' WHERE key = 'rotation'",
    "UPDATE meta SET value = '1' WHERE key = 'rotation'",
    "INSERT INTO offenders VALUES ('chain', 0, '1', '1', -3, NULL, 'r')",
    "UPDATE chunks SET amount = 'NaN' WHERE rowid = (SELECT min(rowid) FROM chunks)",
    "UPDATE meta SET value = '1' WHERE key = 'salt'"])
def test_a_state_with_damaged_figures_is_exit_2_and_left_as_it_was(ledger_copy: str, tmp_path: Path,
                                                                  damage: str) -> None:
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    db = sqlite3.connect(audit.state)
    db.executescript(damage)
    db.commit()
    db.close()
    before = _sha(audit.state)
    code, data, stderr, _ = audit()
    assert code == 2 and "is not a ledger audit state, or is damaged" in stderr, stderr
    assert _sha(audit.state) == before



def test_an_audit_in_another_time_zone_finds_the_proven_history_unchanged(ledger_copy: str,
                                                                         tmp_path: Path) -> None:
    """Found by a break-it run: rows hashed as text (the platform's were, while varchar counted as
    unhashable) print created_at in the session's time zone; an audit from a host with another
    PGTZ, or after ALTER DATABASE ... SET timezone, reported every chunk as tampered. The digests
    are computed in UTC, whatever the session's zone; a new state hashes timestamps by value, and
    a json column here is hashed as its text."""
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("ALTER TABLE entries ADD COLUMN meta json")  # json has no hash operator class
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    config = tmp_path / "demo.verifier.toml"
    for zone in ("Asia/Kolkata", "America/St_Johns"):
        report_dir = tmp_path / zone.replace("/", "-")
        result = run_cli("verify-ledger", "--db", ledger_copy, "--report-dir", str(report_dir),
                         "--state", str(audit.state), "--config", str(config), env={"PGTZ": zone})
        assert result.code == 0, (zone, result.stderr)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET timezone = 'Pacific/Chatham'").format(
            sql.Identifier(conn.info.dbname)))
    code, data, stderr, _ = audit()
    assert code == 0, (stderr, data["findings"])


def test_an_empty_state_path_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("verify-ledger", "--db", "postgresql://nowhere.invalid/x", "--state", "",
                     "--report-dir", str(tmp_path))
    assert result.code == 2 and "--state needs a file name" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("column, words", [
    ("entries.amount_cents", "public.entries.amount_cents is the amount the audit checks"),
    ("entries.account_id", "public.entries.account_id is the account the audit checks"),
    ("entries.journal_id", "public.entries.journal_id is the journal the audit checks"),
    ("journals.id", "public.journals.id is the id the audit checks"),
    ("journals.metdata", "public.journals has no column metdata")])
def test_mutable_columns_refuse_what_the_audit_checks_and_what_does_not_exist(
        ledger_copy: str, tmp_path: Path, column: str, words: str) -> None:
    """Found by a break-it run: an entry's account or journal listed as mutable was left out of the
    history digests, so an incremental audit passed an entry moved to another account."""
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    before = _sha(audit.state)
    config = tmp_path / "mutable.toml"
    config.write_text(f"[ledger]\nmutable_columns = [\"{column}\"]\n" + DEMO_CONFIG)
    code, data, stderr, _ = audit("--config", str(config))
    assert code == 2 and words in stderr, stderr
    assert _sha(audit.state) == before
    allowed = tmp_path / "allowed.toml"
    allowed.write_text("[ledger]\nmutable_columns = [\"journals.metadata\", \"journals.is_reversed\"]\n"
                       + DEMO_CONFIG)
    code, data, stderr, _ = audit("--config", str(allowed), state=False)
    assert code == 0, stderr


def test_a_renamed_enum_label_is_history_tampered_and_bytea_output_is_no_edit(ledger_copy: str,
                                                                                 tmp_path: Path) -> None:
    """Found by a break-it run: enums were hashed by value (the label's oid), so renaming a label
    changed what every proven row reads and passed; a bytea inside an array is hashed as its text,
    which bytea_output printed differently, and a database's bytea_output raised a false alarm."""
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("CREATE TYPE mood AS ENUM ('ok', 'hold')")
        conn.execute("ALTER TABLE journals ADD COLUMN en mood, ADD COLUMN blobs bytea[]")
        conn.execute("UPDATE journals SET en = 'ok', blobs = '{\"\\\\x01ff\"}' WHERE id <= 50")
    audit = Auditor(ledger_copy, tmp_path)
    audit.prove()
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET bytea_output = 'escape'").format(
            sql.Identifier(conn.info.dbname)))
    code, data, stderr, found = audit()
    assert code == 0, (stderr, found)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("ALTER TYPE mood RENAME VALUE 'ok' TO 'reversed'")
    code, data, stderr, found = audit()
    assert code == 1 and ("history_tampered", "public.journals") in found, (stderr, found)


def _post_with_journal_id(conn: psycopg.Connection, journal_id: int) -> None:
    """A transfer posted through ``transfer_tokens`` whose journal takes ``journal_id``, the journals'
    sequence put back where it stood: a journal inserted by hand with an explicit id."""
    stood = conn.execute("SELECT last_value FROM journals_id_seq").fetchone()
    assert stood is not None
    conn.execute("SELECT setval('journals_id_seq', %s, false)", (journal_id,))
    conn.execute("SELECT transfer_tokens(a, b, 100, 'tip', gen_random_uuid()) FROM "
                 "(SELECT min(id) AS a, max(id) AS b FROM accounts WHERE type = 'user') u")
    conn.execute("SELECT setval('journals_id_seq', %s)", (stood[0],))


def test_a_journal_with_an_id_beyond_its_sequence_is_checked_as_new_and_proves_no_later_journal_tampered(
        ledger_copy: str, tmp_path: Path) -> None:
    # Found by a break-it run: a journal inserted with the explicit id 900001 became the journals'
    # watermark once proven, and each journal the application posted after it, below that id, was
    # history_tampered every night; --full proved the same watermark again.
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")  # the transfers leave the legacy wallets as they are
    auditor = Auditor(ledger_copy, tmp_path)

    def audit(*extra: str, state: bool = True
              ) -> tuple[int, dict[str, Any], str, dict[tuple[str, str], set[str]]]:
        return auditor("--config", str(config), *extra, state=state)

    audit(), audit()
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        _post_with_journal_id(conn, 900_001)
        position = conn.execute("SELECT last_value FROM journals_id_seq").fetchone()
    for night in range(3):
        code, data, stderr, found = audit()
        assert code == 0, (night, data["findings"])
        assert _stage(data, "state")["mode"] == "incremental"
        assert not found, data["findings"]
        [warning] = data["findings"]
        assert (warning["rule"], warning["table"], warning["count"]) == (
            "id_beyond_sequence", "public.journals", 1)
        assert [s["id"] for s in warning["sample"]] == ["900001"]
        assert _stage(data, "state")["seen"]["journals"] == position[0] + night  # not 900001
        with psycopg.connect(ledger_copy, autocommit=True) as conn:  # the application posts on
            conn.execute("SELECT transfer_tokens(a, b, 100, 'tip', gen_random_uuid()) FROM "
                         "(SELECT min(id) AS a, max(id) AS b FROM accounts WHERE type = 'user') u")
    # Not proven: each audit checks it as a new journal, as a full audit does. (Its entries' ids
    # are the sequence's: proven, so the edit is history_tampered of that entry too.)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        edited = conn.execute(
            "UPDATE entries SET amount_cents = amount_cents + 1, "
            "balance_after_cents = balance_after_cents + 1 "
            "WHERE id = (SELECT min(id) FROM entries WHERE journal_id = 900001) RETURNING id").fetchone()
    assert edited is not None
    code, data, stderr, found = audit()
    full = audit(state=False)
    assert code == full[0] == 1
    unbalanced = ("journal_unbalanced", "public.journals")
    assert found[unbalanced] == full[3][unbalanced] == {"900001"}
    assert ("history_tampered", "public.journals") not in found, data["findings"]
    assert found[("history_tampered", "public.entries")] == {str(edited[0])}
    with psycopg.connect(ledger_copy, autocommit=True) as conn:  # put back as it was
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE entries SET amount_cents = amount_cents - 1, "
                     "balance_after_cents = balance_after_cents - 1 WHERE id = %s", edited)
    # Once the sequence passes it, it is proven as any other journal.
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("SELECT setval('journals_id_seq', 900001)")
    audit("--full")
    audit()
    code, data, stderr, found = audit()
    assert code == 0, data["findings"]
    assert "id_beyond_sequence" not in {f["rule"] for f in data["findings"]}
    assert _stage(data, "state")["proven_before"]["journals"] >= 900_001


def test_the_sequence_an_id_column_draws_from_and_how_far_it_has_handed_out(make_db: Any) -> None:
    dsn = str(make_db())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("""
            CREATE SEQUENCE shared_seq; CREATE SEQUENCE down_seq INCREMENT -1;
            CREATE TABLE serial_ids (id bigserial PRIMARY KEY);
            CREATE TABLE identity_ids (id bigint GENERATED ALWAYS AS IDENTITY);
            CREATE TABLE default_ids (id bigint DEFAULT nextval('shared_seq'));
            CREATE TABLE fresh_ids (id bigserial);
            CREATE TABLE down_ids (id bigint DEFAULT nextval('down_seq'));
            CREATE TABLE plain_ids (id bigint);
            INSERT INTO serial_ids DEFAULT VALUES; INSERT INTO serial_ids DEFAULT VALUES;
            INSERT INTO identity_ids DEFAULT VALUES;
            SELECT setval('shared_seq', 41); INSERT INTO down_ids DEFAULT VALUES;""")

        def read(table: str, role: str | None = None) -> list[tuple[str, int | None]]:
            if role:
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            try:
                return [tuple(r) for r in conn.execute(proven.SEQUENCE_SQL, {
                    "schema": "public", "table": table, "column": "id"}).fetchall()]
            finally:
                conn.execute("RESET ROLE")

        assert read("serial_ids") == [("serial_ids_id_seq", True, 2)]
        assert read("identity_ids") == [("identity_ids_id_seq", True, 1)]
        assert read("default_ids") == [("shared_seq", True, 41)]
        assert read("fresh_ids") == [("fresh_ids_id_seq", True, None)]  # never handed out a value
        assert read("down_ids") == [("down_seq", True, None)]  # counts down
        assert read("plain_ids") == []
        with reader_role(dsn) as reader:  # may select the tables, not the sequences
            role = psycopg.conninfo.conninfo_to_dict(reader)["user"]
            assert read("serial_ids", str(role)) == [("serial_ids_id_seq", False, None)]


@pytest.mark.parametrize("idle_accounts", [0, 3_000])
def test_accounts_as_their_entries_were_proven_are_not_sent_and_still_hold_entries(
        ledger_copy: str, tmp_path: Path, idle_accounts: int) -> None:
    """An incremental audit sends the server the last proven entries of only the accounts that need
    them (new entries, or not as proven: here a drifted balance); it names the others as unchanged,
    or names the accounts without proven entries where those are fewer (``idle_accounts`` 0), and
    its accounts pass totals and findings are a full audit's either way. (Every account's were
    sent to every statement that read them: 14.7 s for an incremental audit of 400,000 accounts,
    against 2.3 s for a full one.)"""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")  # the transfers leave the legacy wallets as they are
    auditor = Auditor(ledger_copy, tmp_path)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        # Accounts without a single entry, three of them holding money (an opening balance).
        conn.execute("INSERT INTO accounts (owner_id, type, currency, balance_cents, "
                     "available_balance_cents) SELECT gen_random_uuid(), 'user', 'USD', m, m FROM "
                     "(SELECT CASE WHEN i <= 3 THEN 100 * i ELSE 0 END FROM generate_series(1, %s) i) b(m)",
                     (idle_accounts,))
        accounts = conn.execute("SELECT count(*) FROM accounts").fetchone()
        with_entries = conn.execute("SELECT count(DISTINCT account_id) FROM entries").fetchone()
    assert accounts and with_entries
    auditor("--config", str(config)), auditor("--config", str(config))
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        proven = conn.execute("SELECT max(id) FROM entries").fetchone()
        for _ in range(3):
            conn.execute("SELECT transfer_tokens(a, b, 100, 'tip', gen_random_uuid()) FROM "
                         "(SELECT min(id) AS a, max(id) AS b FROM accounts WHERE type = 'user' "
                         "AND id IN (SELECT account_id FROM entries)) u")
        drifted = conn.execute(  # an account without new entries
            "UPDATE accounts SET balance_cents = balance_cents + 7 WHERE id = (SELECT min(account_id) FROM "
            "entries WHERE account_id > 20 AND account_id NOT IN (SELECT account_id FROM entries "
            "WHERE id > %s)) RETURNING id", proven).fetchone()
        touched = conn.execute("SELECT count(DISTINCT account_id) FROM entries WHERE id > %s",
                               proven).fetchone()
    assert drifted and touched and touched[0] > 1
    code, data, stderr, found = auditor("--config", str(config))
    full = auditor("--config", str(config), state=False)
    assert _stage(data, "state")["mode"] == "incremental"
    assert code == full[0] == 1, data["findings"]
    assert found == full[3] == {("account_balance_drift", "public.accounts"): {str(drifted[0])}}
    assert _counts(data) == _counts(full[1])

    def totals(summary: dict[str, Any]) -> dict[str, Any]:  # (a full audit's chain pass finds the drift)
        figures = next(p for p in _stage(summary, "audit")["passes"] if p["pass"] == "accounts")
        return {k: v for k, v in figures.items() if k not in ("duration_s", "rules", "offending")}

    assert totals(data) == totals(full[1])
    assert totals(data)["accounts_without_entries_holding_money"] == (3 if idle_accounts else 0)
    sent = _stage(data, "state")["last_entries"]
    assert sent == {"sent": touched[0] + 1, "unchanged": with_entries[0] - touched[0] - 1}, sent


def test_a_sequence_the_ids_do_not_come_from_or_this_role_cannot_read_is_not_followed(
        ledger_copy: str, tmp_path: Path) -> None:
    """More rows beyond the sequence than ``BEYOND_HELD_MAX`` (here: the sequence moved back; an
    application drawing ids from another sequence than the column's default looks the same): the
    ids do not come from it, and the newest id is the watermark, as before (found by a break-it
    run: such journals were never proven again, not even after --full). A role that may not read
    the sequence: the same, said in the state stage."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(ledger_copy, tmp_path)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        newest = conn.execute("SELECT max(id) FROM journals").fetchone()
        assert newest and newest[0] > proven.BEYOND_HELD_MAX + 100
        conn.execute("SELECT setval('journals_id_seq', %s)", (newest[0] - proven.BEYOND_HELD_MAX - 100,))
    for _ in range(2):
        code, data, stderr, found = auditor("--config", str(config))
        assert code == 0 and not data["findings"], data["findings"]
        assert "1,100 rows have ids beyond the last value of public.journals_id_seq" in \
            _stage(data, "state")["sequences"]["journals"]
    assert _stage(data, "state saved")["proven"]["journals"] == newest[0]
    with reader_role(ledger_copy, sql.SQL("ALTER ROLE {} BYPASSRLS")) as reader:
        code, data, stderr, found = auditor("--config", str(config), dsn=reader)
    assert code == 0, data["findings"]
    assert "may not read the sequence public.entries_id_seq" in _stage(data, "state")["sequences"]["entries"]


@pytest.mark.parametrize("idle_accounts", [0, 3_000])
def test_account_ids_twice_or_null_are_counted_as_a_full_audit_counts_them(
        ledger_copy: str, tmp_path: Path, idle_accounts: int) -> None:
    """Found by a break-it run: in an accounts table without a primary key, an id named twice in
    the list of unchanged accounts counted each of its rows twice, and an account with a NULL id
    counted as one with entries (its opening balance left out). An id twice whose second row
    drifted from its last entry is found."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(ledger_copy, tmp_path)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("ALTER TABLE accounts DROP CONSTRAINT accounts_pkey CASCADE")
        conn.execute("ALTER TABLE accounts DROP CONSTRAINT accounts_owner_id_type_currency_key")
        conn.execute("ALTER TABLE accounts ALTER COLUMN id DROP NOT NULL")
        conn.execute("INSERT INTO accounts (owner_id, type, currency, balance_cents) "
                     "SELECT gen_random_uuid(), 'user', 'USD', 0 FROM generate_series(1, %s)",
                     (idle_accounts,))
        idle = conn.execute("INSERT INTO accounts (owner_id, type, currency, balance_cents) "
                            "VALUES (gen_random_uuid(), 'user', 'USD', 500) RETURNING id").fetchone()
    auditor("--config", str(config)), auditor("--config", str(config))
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("INSERT INTO accounts SELECT * FROM accounts WHERE id = %s", idle)
        conn.execute("INSERT INTO accounts (id, owner_id, type, currency, balance_cents) "
                     "VALUES (NULL, gen_random_uuid(), 'user', 'USD', 777)")
    code, data, stderr, found = auditor("--config", str(config))
    full = auditor("--config", str(config), state=False)
    assert _stage(data, "state")["mode"] == "incremental"
    # The id twice is named, in both (it had no rule; an exact copy of an account with entries made a
    # full audit's trial balance off, while an incremental audit passed).
    for summary in (data, full[1]):
        [twice] = summary["findings"]
        assert (twice["rule"], twice["count"], [s["id"] for s in twice["sample"]]) == (
            "account_id_duplicate", 1, [str(idle[0])]), summary["findings"]
        assert twice["cents_impact"] == 500
    twice_key = ("account_id_duplicate", "public.accounts")
    assert found[twice_key] == full[3][twice_key] == {str(idle[0])}  # in offenders.csv too
    assert code == full[0] == 1

    def totals(summary: dict[str, Any]) -> dict[str, Any]:
        figures = next(p for p in _stage(summary, "audit")["passes"] if p["pass"] == "accounts")
        return {k: v for k, v in figures.items() if k not in ("duration_s", "rules", "offending")}

    assert totals(data) == totals(full[1])
    assert totals(data)["opening_without_entries_by_currency"] == {"USD": "1777"}
    with psycopg.connect(ledger_copy, autocommit=True) as conn:  # a second row of an account with entries
        drifted = conn.execute("INSERT INTO accounts SELECT id, owner_id, type, currency, balance_cents + 5 "
                               "FROM accounts WHERE id = (SELECT min(account_id) FROM entries "
                               "WHERE account_id > 20) RETURNING id").fetchone()
    code, data, stderr, found = auditor("--config", str(config))
    assert code == 1 and found[("account_balance_drift", "public.accounts")] == {str(drifted[0])}, found
    twice_ids = {s["id"] for f in data["findings"] if f["rule"] == "account_id_duplicate"
                 for s in f["sample"]}
    assert twice_ids == {str(idle[0]), str(drifted[0])}


def test_a_state_that_goes_on_rewrites_only_the_changed_last_entries_and_reads_as_one_written_whole(
        ledger_copy: str, tmp_path: Path) -> None:
    """An incremental audit's save copies the state file and rewrites the last proven entries of the
    accounts whose changed only (``State.last_changed``): what it holds is each account's last entry
    up to the proven watermark, and it loads as the same state as a file written whole."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(ledger_copy, tmp_path)
    auditor("--config", str(config)), auditor("--config", str(config))
    backup = tmp_path / "backup.state"
    backup.write_bytes(auditor.state.read_bytes())
    for _ in range(2):
        with psycopg.connect(ledger_copy, autocommit=True) as conn:
            for _ in range(3):
                conn.execute("SELECT transfer_tokens(a, b, 100, 'tip', gen_random_uuid()) FROM "
                             "(SELECT min(id) AS a, max(id) AS b FROM accounts WHERE type = 'user' "
                             "AND id IN (SELECT account_id FROM entries)) u")
        code, data, stderr, found = auditor("--config", str(config))
        assert code == 0 and _stage(data, "state")["mode"] == "incremental", data["findings"]
    watermark = _stage(data, "state saved")["proven"]["entries"]
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        wanted = {str(a): (int(s), str(b)) for a, s, b in conn.execute(
            "SELECT DISTINCT ON (account_id) account_id, id, balance_after_cents FROM entries "
            "WHERE id <= %s ORDER BY account_id, id DESC", (watermark,))}
        newest = conn.execute("SELECT max(id) FROM entries").fetchone()
    assert newest and newest[0] > watermark > 20_000  # the first night's transfers proven, not the second's
    db = sqlite3.connect(auditor.state)
    assert {a: (s, b) for a, s, b in db.execute("SELECT account, seq, after FROM last_entries")} == wanted
    db.close()
    went_on = st.load(auditor.state)
    assert went_on is not None
    whole = tmp_path / "whole.state"
    st.save(whole, went_on)  # (loaded: last_changed None, every row written)
    assert st.load(whole) == went_on
    # Found by a break-it run: a backup put back over the file while an audit ran was the file the
    # save copied (its last entries under this audit's watermarks: false drifts every night after).
    # The last entries are read from the file as the audit needs them: the save refuses (exit 2) and
    # leaves the backup, from which the next audit goes on.
    went_on.last_changed = set()
    anew = st.new(went_on.identity)  # (a full audit's, started anew from the file it loaded: break-it run)
    anew.loaded_from, anew.loaded_path = went_on.loaded_from, went_on.loaded_path
    auditor.state.write_bytes(backup.read_bytes())
    for state in (went_on, anew):
        with pytest.raises(UsageError, match="changed while this audit ran"):
            st.save(auditor.state, state)
        assert auditor.state.read_bytes() == backup.read_bytes()
    # Read while it is being replaced: that it changed, not that it is damaged (whose advice, to move
    # it away, would lose a good state: found by a break-it run).
    reading = st.load(auditor.state)
    assert reading is not None
    auditor.state.write_bytes(b"SQLite format 3\x00" + b"\xff" * 8192)
    with pytest.raises(UsageError, match="changed while this audit ran"):
        dict(reading.last or {})


def test_a_state_that_cannot_be_written_for_want_of_space_is_a_clear_error(tmp_path: Path) -> None:
    # Found by a break-it run: SQLite's "database or disk is full" was "internal error".
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from verifier.errors import UsageError\n"
        "from verifier.ledger import state as st\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
        "state = st.new({'ledger': 'test'})\n"
        "state.last = {str(i): (i, '100', 'USD', 'user', True) for i in range(20000)}\n"
        "try:\n"
        "    st.save(Path(sys.argv[1]), state)\n"
        "except UsageError as exc:\n"
        "    print('UsageError:', exc)\n")
    result = subprocess.run([str(BIN_DIR / "python"), "-c", script, str(tmp_path / "ledger.state")],
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("UsageError: Cannot write the state file"), (result.stdout, result.stderr)
    assert not (tmp_path / "ledger.state").exists()
    assert list(tmp_path.iterdir()) == []  # (no partial file left)


def _transfer(conn: psycopg.Connection, payer: int, payee: int) -> None:
    conn.execute("SELECT transfer_tokens(%s, %s, 100, 'token_transfer', gen_random_uuid())", (payer, payee))


@contextlib.contextmanager
def _posted_below_proven(dsn: str, audit: Callable[[], tuple[int, dict[str, Any], str, Any]],
                         a_pays: tuple[int, int], b_pays: tuple[int, int]) -> Iterator[psycopg.Connection]:
    """Two sessions of cached sequences (``CACHE 50``): A posts (and caches 50 ids of each), B posts
    (from the next 50), audits prove B's ids, past A's cached ones (two, or more while a transaction
    elsewhere on the server holds history back), and A posts again, below what is proven. Yields A's
    session."""
    with psycopg.connect(dsn, autocommit=True) as a, psycopg.connect(dsn, autocommit=True) as b:
        _transfer(a, *a_pays)
        _transfer(b, *b_pays)
        newest = b.execute("SELECT max(id) FROM entries").fetchone()
        assert newest is not None
        for _ in range(10):
            if _stage(audit()[1], "state saved")["proven"]["entries"] >= newest[0]:
                break
        else:
            pytest.fail("ten audits did not prove B's entries")
        _transfer(a, *a_pays)
        yield a


def test_rows_a_cached_sequence_hands_out_below_proven_ids_are_read_as_new_not_as_tampering(
        ledger_copy: str, tmp_path: Path) -> None:
    """Found by a break-it run: with sequences that cache values (``CACHE 50``) and two sessions
    posting, a session posts ids below what an earlier audit proved. Each such row was
    history_tampered, and its account's balance drift, on every audit, though a full audit passed.
    They are read as new (rows of a gap the proven ids left), proven, and a defect among them is
    named as a full audit names it."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(ledger_copy, tmp_path)

    def audit(state: bool = True) -> tuple[int, dict[str, Any], str, dict[tuple[str, str], set[str]]]:
        return auditor("--config", str(config), state=state)

    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("ALTER SEQUENCE entries_id_seq CACHE 50; ALTER SEQUENCE journals_id_seq CACHE 50")
        rich = [r[0] for r in conn.execute(
            "SELECT id FROM accounts WHERE type = 'user' AND balance_cents >= 1000 "
            "ORDER BY id LIMIT 4").fetchall()]
    assert len(rich) == 4
    with _posted_below_proven(ledger_copy, audit, (rich[0], rich[1]), (rich[2], rich[3])):
        pass
    code, data, stderr, found = audit()
    assert code == 0, data["findings"]
    assert not data["findings"] and not found
    assert _stage(data, "state")["mode"] == "incremental"
    assert _stage(data, "state")["late"] == {"entries": {"read_as_new": 2, "proven_now": 2},
                                             "journals": {"read_as_new": 1, "proven_now": 1}}
    code, data, stderr, found = audit()  # proven: no longer in a gap, and unchanged
    assert code == 0 and not found, data["findings"]
    assert "late" not in _stage(data, "state")
    # A full audit that goes on from the state (other rules than its entries were proven under)
    # re-hashes its proven history without the rows of its gaps: intact, it starts anew.
    with _posted_below_proven(ledger_copy, audit, (rich[0], rich[1]), (rich[2], rich[3])):
        pass
    config.write_text('[ledger]\nreconcile = []\nnon_negative_account_types = ["user"]\n')
    code, data, stderr, found = audit()
    assert code == 0, data["findings"]
    assert "full_because" in _stage(data, "state") and _stage(data, "state saved").get("saved", True)
    config.write_text("[ledger]\nreconcile = []\n")
    # A defect among such rows is named as a full audit names it.
    with _posted_below_proven(ledger_copy, audit, (rich[0], rich[1]), (rich[2], rich[3])) as a:
        a.execute("SET session_replication_role = replica")
        a.execute("UPDATE entries SET amount_cents = amount_cents + 5, "
                  "balance_after_cents = balance_after_cents - 5 "
                  "WHERE id = (SELECT max(id) FROM entries WHERE account_id = %s)", (rich[0],))
    code, data, stderr, found = audit()
    full = audit(state=False)
    assert code == full[0] == 1
    assert found == full[3], (found, full[3])
    assert ("journal_unbalanced", "public.journals") in found
    assert not any(rule == "history_tampered" for rule, _ in found)


def test_a_row_of_a_gap_below_its_accounts_last_proven_entry_is_history_tampered(
        ledger_copy: str, tmp_path: Path) -> None:
    """Two sessions of a cached sequence posting on one account: the one that posts later, below the
    other's proven entry, breaks the account's chain in seq order, as a full audit finds. It is not
    read as new; it is history_tampered, and the state stage says why."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(ledger_copy, tmp_path)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("ALTER SEQUENCE entries_id_seq CACHE 50; ALTER SEQUENCE journals_id_seq CACHE 50")
        rich = [r[0] for r in conn.execute(
            "SELECT id FROM accounts WHERE type = 'user' AND balance_cents >= 1000 ORDER BY id LIMIT 3"
        ).fetchall()]
    # B's entry is the payer's newest, proven; A's second lies below it.
    with _posted_below_proven(ledger_copy, lambda: auditor("--config", str(config)), (rich[0], rich[1]),
                              (rich[0], rich[2])) as a:
        row = a.execute("SELECT max(id) FROM entries WHERE account_id = %s AND id < "
                        "(SELECT max(id) FROM entries WHERE account_id = %s)", (rich[0], rich[0])).fetchone()
    assert row is not None
    payer_entry = row[0]
    code, data, stderr, found = auditor("--config", str(config))
    full = auditor("--config", str(config), state=False)
    assert code == full[0] == 1
    assert ("history_tampered", "public.entries") in found, data["findings"]
    assert "lie below their account's last proven entry" in _stage(data, "state")["gaps"]["entries"]
    assert set(_stage(data, "state")["gaps"]) == {"entries"}  # (not said of the journals too)
    assert ("running_balance_break", "public.entries") in full[3]
    # The other entry of its journal (the payee's, after its own last proven entry) is read as new and
    # proven; the trial balance counts both (it was off by the payer's, found by a break-it run).
    assert {rule for rule, _ in found} == {"history_tampered", "account_balance_drift"}, found
    assert found[("history_tampered", "public.entries")] == {str(payer_entry)}
    assert _stage(data, "state")["late"]["entries"] == {"read_as_new": 1, "proven_now": 1}
    for _ in range(2):  # found on every audit while it is there, whatever share is re-hashed
        code, data, stderr, found = auditor("--config", str(config), "--verify-history-share", "0.01")
        assert code == 1 and {rule for rule, _ in found} == {"history_tampered", "account_balance_drift"}
        assert found[("history_tampered", "public.entries")] == {str(payer_entry)}, found


@pytest.mark.parametrize("read_every_id", [False, True])
def test_the_gaps_among_a_tables_ids(make_db: Any, monkeypatch: pytest.MonkeyPatch,
                                     read_every_id: bool) -> None:
    """``history.gaps``: the ids of a range that hold no row, from a first proof's first row on, read
    only in the chunks of ids with a gap inside (or, with more of those than
    ``GAP_CHUNKS_READ_MAX``, every id); none kept where they are more than ``HOLES_NEW_MAX``."""
    if read_every_id:
        monkeypatch.setattr(history, "GAP_CHUNKS_READ_MAX", 0)
    with psycopg.connect(str(make_db()), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t VALUES (1), (2), (5), (9), (10), "
                     "(1020), (1021), (1022), (1023), (1024), (1025), (2049), (2050)")
        ident, name = sql.Identifier("id"), sql.Identifier("public", "t")

        def gaps(old: int, new: int) -> list[tuple[int, int]] | None:
            spans = {int(c): (int(n), int(a), int(b)) for c, n, a, b in conn.execute(
                "SELECT id >> %s, count(*), min(id), max(id) FROM t WHERE id > %s AND id <= %s GROUP BY 1",
                (history.CHUNK_BITS, max(old, -(1 << 63)), new))}
            return history.gaps(conn, ident, name, old, new, spans)

        assert gaps(proven.FULL_FROM, 2050) == [(3, 4), (6, 8), (11, 1019), (1026, 2048)]
        assert gaps(2, 12) == [(3, 4), (6, 8), (11, 12)]
        assert gaps(10, 14) == [(11, 14)]
        assert gaps(1019, 1025) == []  # every id holds a row
        assert gaps(1021, 2060) == [(1026, 2048), (2051, 2060)]
        assert gaps(proven.FULL_FROM, 0) == []
        top = (1 << 63) - 1  # ids up to the largest bigint
        conn.execute("INSERT INTO t VALUES (%s), (%s), (%s)", (top - 1030, top - 3, top))
        assert gaps(2050, top) == [(2051, top - 1031), (top - 1029, top - 4), (top - 2, top - 1)]
        monkeypatch.setattr(history, "HOLES_NEW_MAX", 2)
        assert gaps(2, 12) is None


def test_rows_of_gaps_are_read_by_one_index_probe_per_gap(make_db: Any) -> None:
    """``gaps.LATE_SQL``'s plan: a probe of the id's index per gap, not a walk of the whole index
    testing each row against every gap (1.1 s for 2 gaps in 2*10^6 entries, against 0.6 ms)."""
    with psycopg.connect(str(make_db()), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, account bigint, journal bigint)")
        conn.execute("INSERT INTO t SELECT i, i % 7, i / 2 FROM generate_series(1, 200000) i "
                     "WHERE i <> 150000")
        conn.execute("ANALYZE t")
        query = sql.SQL(gaps.LATE_SQL).format(
            id=sql.Identifier("id"), account=sql.SQL("r.account::text"), amount=sql.SQL("r.journal::text"),
            journal=sql.SQL("NULL"),
            table=sql.Identifier("t"), lo=history.ids([150000, 200001]), hi=history.ids([150000, 200010]),
            limit=sql.Literal(gaps.LATE_MAX + 1))
        plan = json.dumps(conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query)).fetchone())
        assert '"Index Cond": "((id >= h.lo) AND (id <= h.hi))"' in plan, plan
        assert "Join Filter" not in plan, plan


@pytest.mark.parametrize("third_leg", ["in the gap", "beyond the watermark"])
def test_a_journal_of_a_gap_with_one_leg_below_its_accounts_last_proven_entry(
        ledger_copy: str, tmp_path: Path, third_leg: str) -> None:
    """Found by a break-it run: a journal inserted into gaps of proven ids, one leg below its account's
    last proven entry. That leg is history_tampered at once, whatever share is re-hashed (it passed
    at share 0.1), and counts in the trial balance (a false trial_balance_nonzero where another leg
    was read as new); the other legs are read as new (a false drift of their accounts where they
    were not). The payer's drift is a full audit's too."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(ledger_copy, tmp_path)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        rich = [r[0] for r in conn.execute(
            "SELECT id FROM accounts WHERE type = 'user' AND balance_cents >= 1000 ORDER BY id LIMIT 4"
        ).fetchall()]
        newest_ids = conn.execute("SELECT (SELECT max(id) FROM entries), (SELECT max(id) FROM journals)"
                                  ).fetchone()
        assert newest_ids is not None
        entry, journal = newest_ids
        conn.execute("SELECT setval('entries_id_seq', %s), setval('journals_id_seq', %s)",
                     (entry + 10, journal + 3))
        _transfer(conn, rich[0], rich[3])  # the payer's last entry, beyond the gaps
        newest = conn.execute("SELECT max(id) FROM entries").fetchone()
    assert newest is not None
    for _ in range(10):
        if _stage(auditor("--config", str(config))[1], "state saved")["proven"]["entries"] >= newest[0]:
            break
    legs = [(entry + 1, rich[0], 30), (entry + 2, rich[1], -10), (entry + 3, rich[2], -20)]
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        if third_leg != "in the gap":
            drawn = conn.execute("SELECT nextval('entries_id_seq')").fetchone()
            assert drawn is not None
            legs[2] = (drawn[0], rich[2], -20)
        conn.execute("INSERT INTO journals (id, ref_type, ref_id) SELECT %s, ref_type, ref_id FROM journals "
                     "WHERE id = 1", (journal + 1,))
        for seq, account, cents in legs:
            conn.execute(
                "WITH a AS (UPDATE accounts SET balance_cents = balance_cents - %(c)s WHERE id = %(a)s "
                "RETURNING balance_cents) "
                "INSERT INTO entries (id, journal_id, account_id, entry_type, amount_cents, "
                "balance_before_cents, balance_after_cents) SELECT %(s)s, %(j)s, %(a)s, "
                "CASE WHEN %(c)s > 0 THEN 'debit' ELSE 'credit' END, %(c)s, balance_cents + %(c)s, "
                "balance_cents FROM a", {"s": seq, "j": journal + 1, "a": account, "c": cents})
    full = auditor("--config", str(config), state=False)
    assert full[0] == 1 and str(legs[0][0]) in full[3][("running_balance_break", "public.entries")]
    assert ("trial_balance_nonzero", "public.entries") not in full[3], full[3]
    for share in ("1", "0.1", "0.1"):
        code, data, stderr, found = auditor("--config", str(config), "--verify-history-share", share)
        assert code == 1, (data["findings"], stderr)
        assert {rule for rule, _ in found} == {"history_tampered", "account_balance_drift"}, found
        assert found[("history_tampered", "public.entries")] == {str(legs[0][0])}
        assert found[("account_balance_drift", "public.accounts")] == \
            full[3][("account_balance_drift", "public.accounts")] == {str(rich[0])}
    # The leg below deleted, its account put back: the journal, never proven while that leg was there,
    # is read again and found unbalanced, as a full audit finds it (proven complete with it, a journal
    # left short passed every incremental audit after: found by a break-it run).
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM entries WHERE id = %s", (legs[0][0],))
        conn.execute("UPDATE accounts SET balance_cents = balance_cents + %s WHERE id = %s",
                     (legs[0][2], legs[0][1]))
    full = auditor("--config", str(config), state=False)
    code, data, stderr, found = auditor("--config", str(config), "--verify-history-share", "0.1")
    assert code == full[0] == 1
    unbalanced = ("journal_unbalanced", "public.journals")
    assert found[unbalanced] == full[3][unbalanced] == {str(journal + 1)}, (found, full[3])
    # The journal deleted, the balances put back: its proven legs' deletion is history_tampered, and
    # the proven trial sums never held their amounts (they were off by them: found by a break-it run).
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        for _, account, cents in legs[1:]:
            conn.execute("UPDATE accounts SET balance_cents = balance_cents + %s WHERE id = %s",
                         (cents, account))
        conn.execute("DELETE FROM entries WHERE journal_id = %s", (journal + 1,))
        conn.execute("DELETE FROM journals WHERE id = %s", (journal + 1,))
    assert auditor("--config", str(config), state=False)[0] == 0
    code, data, stderr, found = auditor("--config", str(config))
    assert code == 1 and ("trial_balance_nonzero", "public.entries") not in found, found
    assert ("history_tampered", "public.entries") in found, found  # (a range: several rows in one chunk)


def test_a_balance_of_nan_or_infinity_is_named_by_every_audit(ledger_copy: str, tmp_path: Path) -> None:
    """Found by a break-it run: in a numeric balance column, NaN on an account without entries passed
    every audit (it only states its opening balance), and on an account with entries every audit was
    an internal error (its drift's cents impact, NaN, made into an integer). Both are
    ``balance_not_finite``, in an incremental audit and a stateless one; the drift is still named."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(ledger_copy, tmp_path)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("ALTER TABLE accounts ALTER COLUMN balance_cents TYPE numeric")  # (Infinity: no scale)
        idle = conn.execute("INSERT INTO accounts (owner_id, type, currency, balance_cents) "
                            "VALUES (gen_random_uuid(), 'user', 'USD', 0) RETURNING id").fetchone()
        busy = conn.execute("SELECT max(account_id) FROM entries").fetchone()
    assert idle and busy
    for _ in range(3):
        assert auditor("--config", str(config))[0] == 0
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("UPDATE accounts SET balance_cents = 'NaN' WHERE id = %s", idle)
        conn.execute("UPDATE accounts SET balance_cents = 'Infinity' WHERE id = %s", busy)
    incremental = auditor("--config", str(config))
    assert _stage(incremental[1], "state")["mode"] == "incremental"
    for code, data, stderr, found in (incremental, auditor("--config", str(config), state=False)):
        assert code == 1 and "internal error" not in stderr, stderr
        assert found[("balance_not_finite", "public.accounts")] == {str(idle[0]), str(busy[0])}, found
        assert found[("account_balance_drift", "public.accounts")] == {str(busy[0])}, found
        [nan] = [f for f in data["findings"] if f["rule"] == "balance_not_finite"]
        assert nan["cents_impact"] == 0 and nan["count"] == 2


def _payer_payee(conn: psycopg.Connection) -> tuple[int, int]:
    """The first and the last user account with entries: a transfer's payer and payee."""
    return conn.execute("SELECT min(id), max(id) FROM accounts WHERE type = 'user' "
                        "AND id IN (SELECT account_id FROM entries)").fetchone() or (0, 0)


def _numeric_ledger(dsn: str, tmp_path: Path, audits: int) -> tuple[Auditor, Path]:
    """The ledger's amounts and balances made numeric (which hold NaN and Infinity), after ``audits``
    passing audits with a state, and the configuration they ran with."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(dsn, tmp_path)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE entries ALTER COLUMN amount_cents TYPE numeric, ALTER COLUMN "
                     "balance_before_cents TYPE numeric, ALTER COLUMN balance_after_cents TYPE numeric")
    for _ in range(audits):
        assert auditor("--config", str(config))[0] == 0
    return auditor, config


def test_an_amount_of_nan_fails_every_audit_and_leaves_a_state_that_goes_on(ledger_copy: str,
                                                                            tmp_path: Path) -> None:
    """Found by a break-it run: in numeric entry columns, an amount of NaN made every audit an internal
    error (the report's trial balance chart), and an audit that proved it saved a state whose trial
    sums were NaN, which every later audit refused as damaged, even once the amount was mended."""
    auditor, config = _numeric_ledger(ledger_copy, tmp_path, audits=3)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        payer, payee = _payer_payee(conn)
        _transfer(conn, payer, payee)
        debit = conn.execute("SELECT max(id) FROM entries WHERE amount_cents > 0").fetchone()
        assert debit
        conn.execute("ALTER TABLE entries DISABLE TRIGGER USER")
        conn.execute("UPDATE entries SET amount_cents = 'NaN' WHERE id = %s", debit)
    for _ in range(3):  # (the first sees it, the next would prove it)
        code, data, stderr, found = auditor("--config", str(config))
        assert code == 1 and "internal error" not in stderr, stderr
        assert found[("journal_unbalanced", "public.journals")], found
    assert _stage(data, "state saved")["saved"] is False
    full = auditor("--config", str(config), state=False)
    assert full[0] == 1 and "internal error" not in full[2], full[2]
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("UPDATE entries SET amount_cents = 100 WHERE id = %s", debit)
    code, data, stderr, _ = auditor("--config", str(config))
    assert code == 0 and _stage(data, "state")["mode"] == "incremental", (stderr, data["findings"])


@pytest.mark.parametrize("full", [False, True], ids=["incremental", "full"])
def test_a_balance_after_of_nan_is_not_proven_as_an_accounts_last_entry(ledger_copy: str, tmp_path: Path,
                                                                        full: bool) -> None:
    """Found by a break-it run: in numeric entry columns, a balance after of NaN or Infinity on an
    account's newest entry was proven as its last entry, and every later audit refused the state file
    as damaged, even once the balance was mended (only ``--full`` went on)."""
    auditor, config = _numeric_ledger(ledger_copy, tmp_path, audits=2)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        payer, payee = _payer_payee(conn)
        _transfer(conn, payer, payee)
        newest, after = conn.execute("SELECT id, balance_after_cents FROM entries ORDER BY id DESC LIMIT 1"
                                     ).fetchone() or (0, 0)
        conn.execute("ALTER TABLE entries DISABLE TRIGGER USER")
    extra = ("--full",) if full else ()
    for bad in ("NaN", "Infinity"):
        with psycopg.connect(ledger_copy, autocommit=True) as conn:
            conn.execute("UPDATE entries SET balance_after_cents = %s WHERE id = %s", (bad, newest))
        for _ in range(2):  # (the first sees it, the next would prove it)
            code, data, stderr, found = auditor("--config", str(config), *extra)
            assert code == 1 and "internal error" not in stderr, stderr
            assert found[("running_balance_break", "public.entries")], found
        assert _stage(data, "state saved")["saved"] is False, _stage(data, "state saved")
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("UPDATE entries SET balance_after_cents = %s WHERE id = %s", (after, newest))
    code, data, stderr, _ = auditor("--config", str(config))
    assert code == 0 and _stage(data, "state")["mode"] == "incremental", (stderr, data["findings"])


def _break_after(conn: psycopg.Connection, entry: int, by: int) -> None:
    conn.execute("ALTER TABLE entries DISABLE TRIGGER USER")
    conn.execute("UPDATE entries SET balance_after_cents = balance_after_cents + %s WHERE id = %s",
                 (by, entry))
    conn.execute("ALTER TABLE entries ENABLE TRIGGER USER")


@pytest.mark.parametrize("share", ["1", "0.05"])
def test_a_broken_balance_proven_then_mended_is_history_tampered_at_once_until_full(
        ledger_copy: str, tmp_path: Path, share: str) -> None:
    """An account's last proven entry changed since proven (here a balance after proven broken, then
    mended) is history_tampered from the next audit on, also where no re-hash reads its chunk yet
    (found by a break-it run: with a share below 1 the audits after the mend named only a drift
    and the account's next entries as breaks, as chained from the proven value)."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(ledger_copy, tmp_path)
    run = functools.partial(auditor, "--config", str(config), "--verify-history-share", share)
    assert run()[0] == 0
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        payer, payee = _payer_payee(conn)
        _transfer(conn, payer, payee)
        (entry,) = conn.execute("SELECT max(id) FROM entries WHERE account_id = %s",
                                (payee,)).fetchone() or (0,)
        _break_after(conn, entry, 1)
    for _ in range(2):  # (the second proves it, broken)
        code, _, stderr, found = run()
        assert code == 1 and found[("running_balance_break", "public.entries")] == {str(entry)}, stderr
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        _break_after(conn, entry, -1)
    code, _, stderr, found = run()
    assert code == 1 and found[("history_tampered", "public.entries")] == {str(entry)}, (stderr, found)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        _transfer(conn, payer, payee)
    for _ in range(3):  # (sees the next transfer, proves it, then goes on)
        code, _, stderr, found = run()
        assert code == 1 and found[("history_tampered", "public.entries")] == {str(entry)}, (stderr, found)
    assert auditor("--config", str(config), "--full")[0] == 0


@pytest.mark.parametrize("share", ["1", "0.1"])
def test_entries_posted_from_a_changed_last_entry_stay_breaks_once_it_is_changed_back(
        ledger_copy: str, tmp_path: Path, share: str) -> None:
    """Found by a break-it run: a last proven entry and its account's balance raised alike, a transfer
    posted from that balance, audited and proven, then the entry changed back: chained from the row
    as it stood, the transfer was proven without a break, and every audit after passed a ledger
    whose chain breaks there (a full audit: running_balance_break). The change is history_tampered
    at once, whatever the share, and after the transfer is proven."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(ledger_copy, tmp_path)
    run = functools.partial(auditor, "--config", str(config), "--verify-history-share", share)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        payer, payee = _payer_payee(conn)
        (entry,) = conn.execute("SELECT max(id) FROM entries WHERE account_id = %s",
                                (payee,)).fetchone() or (0,)
    for _ in range(2):
        assert run()[0] == 0
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        _break_after(conn, entry, 500)
        conn.execute("UPDATE accounts SET balance_cents = balance_cents + 500 WHERE id = %s", (payee,))
        _transfer(conn, payee, payer)
    for _ in range(3):  # (the second proves the transfer; the change stays named after it)
        code, data, stderr, found = run()
        assert code == 1 and str(entry) in found[("history_tampered", "public.entries")], (stderr, found)
    assert _stage(data, "state")["mode"] == "incremental"
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        _break_after(conn, entry, -500)
    stateless = auditor("--config", str(config), state=False)
    assert stateless[0] == 1 and stateless[3][("running_balance_break", "public.entries")], stateless[3]
    for _ in range(3):
        code, _, stderr, found = run()
        assert code == 1 and found[("running_balance_break", "public.entries")] \
            == stateless[3][("running_balance_break", "public.entries")], (stderr, found)


def test_a_null_balance_drifts_by_its_last_entry_in_every_audit(ledger_copy: str, tmp_path: Path) -> None:
    """Found by a break-it run: an account with entries whose balance is NULL drifted by 0 cents in a
    full audit and by its last entry's balance after in an incremental one."""
    auditor = Auditor(ledger_copy, tmp_path)
    auditor.prove()
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        account, after = conn.execute(
            "SELECT account_id, balance_after_cents FROM entries WHERE balance_after_cents > 0 "
            "ORDER BY id DESC LIMIT 1").fetchone() or (0, 0)
        conn.execute("ALTER TABLE accounts ALTER COLUMN balance_cents DROP NOT NULL")
        conn.execute("UPDATE accounts SET balance_cents = NULL WHERE id = %s", (account,))
    for state in (True, False):
        code, data, stderr, found = auditor(state=state)
        assert code == 1 and found[("account_balance_drift", "public.accounts")] == {str(account)}, stderr
        assert _counts(data)[("account_balance_drift", "public.accounts")] == (1, after), data["findings"]


def _gap(conn: psycopg.Connection, payer: int, payee: int) -> int:
    """A journal id the sequence handed out to a transfer rolled back: a gap below what comes next."""
    conn.execute("BEGIN")
    journal = conn.execute("SELECT transfer_tokens(%s, %s, 1, 'tip', gen_random_uuid())",
                           (payer, payee)).fetchone()
    conn.execute("ROLLBACK")
    assert journal
    return int(journal[0])


def _post_into(conn: psycopg.Connection, journal: int | None, payer: int, payee: int, cents: int,
               columns: str, values: str) -> None:
    """A journal of ``cents`` from ``payer`` to ``payee`` with ``columns`` set to ``values``, committed
    into the gap ``journal`` (None: the next id)."""
    with conn.transaction():
        (journal,) = conn.execute(
            f"INSERT INTO journals (id, ref_type, ref_id, {columns}) "  # noqa: S608 (the test's own)
            f"VALUES (coalesce(%s, nextval('journals_id_seq')), 'tip', gen_random_uuid(), {values}) "
            "RETURNING id", (journal,)).fetchone() or (0,)
        conn.execute("SELECT ledger_add_entry(%s, %s, %s)", (journal, payer, cents))
        conn.execute("SELECT ledger_add_entry(%s, %s, %s)", (journal, payee, -cents))


@pytest.mark.parametrize("reused", ["idempotency key", "reversal"])
def test_a_journal_committed_into_a_gap_before_a_proven_one_makes_that_one_the_second(
        ledger_copy: str, tmp_path: Path, reused: str) -> None:
    """Found by a break-it run: a journal committed late into a gap of proven journal ids, with the
    idempotency key (or the original, where the reversal link is on the reversing journal) of a
    proven journal above it, made that one the second use: a full audit names it
    (idempotency_conflict, reversal_mismatch), while every incremental audit passed, at any share."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(ledger_copy, tmp_path)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        payer, payee = _payer_payee(conn)
        if reused == "reversal":  # (the earlier layout's link: the platform's runs over every journal)
            conn.execute("ALTER TABLE journals DROP COLUMN reversed_by, DROP COLUMN is_reversed, "
                         "ADD COLUMN reverses_journal_id bigint")
            (original,) = conn.execute("SELECT transfer_tokens(%s, %s, 100, 'tip', gen_random_uuid())",
                                       (payer, payee)).fetchone() or (0,)
            gap = _gap(conn, payer, payee)
            _post_into(conn, None, payee, payer, 100, "reverses_journal_id", str(original))
            columns, values, rule = "reverses_journal_id", str(original), "reversal_mismatch"
        else:
            conn.execute("ALTER TABLE journals DROP CONSTRAINT journals_idempotency_key_key")
            gap = _gap(conn, payer, payee)
            conn.execute("SELECT transfer_tokens(%s, %s, 100, 'tip', gen_random_uuid(), NULL, 'k-1')",
                         (payer, payee))
            columns, values, rule = "idempotency_key", "'k-1'", "idempotency_conflict"
    for _ in range(3):
        assert auditor("--config", str(config))[0] == 0
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        _post_into(conn, gap, payee, payer, 100, columns, values)
    full = auditor("--config", str(config), state=False)
    assert full[0] == 1 and full[3][(rule, "public.journals")] == {str(gap + 1)}, full[3]
    for _ in range(3):  # (the second proves the late journal)
        code, data, stderr, found = auditor("--config", str(config))
        assert code == 1 and found[(rule, "public.journals")] == {str(gap + 1)}, (stderr, found)
        assert _counts(data)[(rule, "public.journals")][0] == 1, data["findings"]


def test_a_deleted_transfer_of_last_proven_entries_is_counted_alike_every_night(ledger_copy: str,
                                                                                tmp_path: Path) -> None:
    """Found by a break-it run: a proven transfer deleted whose entries were their accounts' last
    proven entries, at a share below 1 (half the chunks a night, here): the nights that did not
    re-hash its chunk named the chunk's range (found by the last re-hash) and each deleted last entry
    again, 1 and 3 rows by turns."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(ledger_copy, tmp_path)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        payer, payee = _payer_payee(conn)
        (journal,) = conn.execute("SELECT transfer_tokens(%s, %s, 100, 'tip', gen_random_uuid())",
                                  (payer, payee)).fetchone() or (0,)
    for _ in range(2):
        assert auditor("--config", str(config), "--verify-history-share", "0.5")[0] == 0
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM entries WHERE journal_id = %s", (journal,))
        conn.execute("DELETE FROM journals WHERE id = %s", (journal,))
        conn.execute("UPDATE accounts SET balance_cents = balance_cents "
                     "+ CASE id WHEN %s THEN 100 ELSE -100 END WHERE id IN (%s, %s)", (payer, payer, payee))
    counts = []
    for _ in range(6):
        code, data, stderr, _ = auditor("--config", str(config), "--verify-history-share", "0.5")
        assert code == 1, stderr
        counts.append(_counts(data)[("history_tampered", "public.entries")][0])
    assert len(set(counts[1:])) == 1, counts  # (the first names each row; a re-hash, their chunk)


@pytest.mark.parametrize("where", ["gap", "above"])
def test_entries_of_a_missing_journal_proven_in_turns_are_all_counted(ledger_copy: str, tmp_path: Path,
                                                                     where: str) -> None:
    """Found by break-it runs: entries naming a journal id where no journal was ever committed
    (``gap``: a rolled-back transfer's; ``above``: beyond every journal's), proven, then more naming
    it: the journals pass's one row of that journal counted only the newer entries (the carried row
    of the older ones was taken for the same row found again); above, it counted all of them beside
    the carried row (6 against 4), on every audit after. Then the journal is committed: no orphan
    is left in either audit."""
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    auditor = Auditor(ledger_copy, tmp_path)
    with psycopg.connect(ledger_copy, autocommit=True) as conn:
        payer, payee = _payer_payee(conn)
        conn.execute("ALTER TABLE entries DROP CONSTRAINT entries_journal_id_fkey")
        conn.execute("ALTER TABLE financial_audit_log DROP CONSTRAINT financial_audit_log_journal_id_fkey")
        journal = _gap(conn, payer, payee)
        _transfer(conn, payer, payee)
        if where == "above":
            (journal,) = conn.execute("SELECT max(id) + 1000 FROM journals").fetchone() or (0,)
        for cents in (5, 3, None, "journal"):
            if cents == "journal":
                conn.execute("INSERT INTO journals (id, ref_type, ref_id) "
                             "VALUES (%s, 'tip', gen_random_uuid())", (journal,))
            elif cents is not None:
                with conn.transaction():
                    conn.execute("SELECT ledger_add_entry(%s, %s, %s)", (journal, payer, cents))
                    conn.execute("SELECT ledger_add_entry(%s, %s, %s)", (journal, payee, -cents))
            for _ in range(2):  # (the second proves them; None: audits after that)
                full = _counts(auditor("--config", str(config), state=False)[1])
                code, data, stderr, _ = auditor("--config", str(config))
                orphans = _counts(data).get(("orphan_entry", "public.entries"))
                assert orphans == full.get(("orphan_entry", "public.entries")), (stderr, data["findings"])
                assert orphans is not None or cents == "journal"


@pytest.mark.parametrize("full", ["state", "report"])
def test_an_audit_whose_state_or_report_cannot_be_written_still_lists_its_findings(
        ledger_copy: str, tmp_path: Path, full: str) -> None:
    """The disk of the state file, or of the report folder, fills up: exit 2, and the console still
    lists the findings the audit made (it listed none: the last note, and helper-47 for the report).
    A state file that could not be saved is left as it was."""
    planted = {p.rule for p in ledger.plant(ledger_copy)}
    with _small_disk(tmp_path / "disk", "16k") as disk:
        state = (disk if full == "state" else tmp_path) / "ledger.state"
        report = (disk if full == "report" else tmp_path) / "r"
        config = tmp_path / "demo.verifier.toml"
        config.write_text(DEMO_CONFIG)  # (the demo ledger's legacy wallets to reconcile: planted too)
        result = run_cli("verify-ledger", "--db", ledger_copy, "--report-dir", str(report),
                         "--state", str(state), "--config", str(config))
        if full == "state":
            data = run_summary(report)
    assert result.code == 2, result.stderr
    if full == "state":
        assert data["status"] == "error" and not state.exists(), result.stderr
        assert "Cannot write the state file" in result.stderr and "disk is full" in result.stderr
        rules = {f["rule"] for f in data["findings"]}
    else:
        assert "Could not write the report" in result.stderr and "No space left" in result.stderr
        rules = planted
    assert len(rules) > 5 and all(f"    {rule} " in result.stderr for rule in rules), result.stderr


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_once_the_state_is_saved_leaves_the_verdict_the_state_recorded(
        ledger_copy: str, tmp_path: Path, signame: str) -> None:
    """A signal as the "state saved" stage ends, before the run's outputs are written: the state
    file has recorded the audit (its runs: fail), so the run keeps that verdict, says it in full and
    exits 1; it was NOT VERIFIED, exit 2, beside a state that had moved on (helper-47)."""
    ledger.plant(ledger_copy)
    state, report = tmp_path / "ledger.state", tmp_path / "r"
    config = tmp_path / "demo.verifier.toml"
    config.write_text(DEMO_CONFIG)
    result = run_cli("verify-ledger", "--db", ledger_copy, "--report-dir", str(report), "--state", str(state),
                     "--config", str(config),
                     env={"PYTHONPATH": str(FAULTS), "VERIFIER_FAULT_STAGE": "state saved",
                          "VERIFIER_FAULT_WHEN": "ends", "VERIFIER_FAULT_SIGNAL": signame})
    data = run_summary(report)
    db = sqlite3.connect(state)
    recorded = [s for (s,) in db.execute("SELECT status FROM runs")]
    db.close()
    assert (result.code, data["status"], recorded) == (1, "fail", ["fail"]), result.stderr
    verdict = f"FAIL: report {only_run(report) / 'report.html'}"
    said = "Interrupted (Ctrl-C or SIGTERM) after the run's report was written; it stands: "
    assert result.stdout == verdict + "\n", result.stderr
    assert result.stderr.rstrip().endswith(f"{said}{verdict}."), result.stderr
