"""The ledger enforcement probe, in a rehearsal whose migrations create the ledger.

The project's own series creates our 400 (the probe passes: tests/test_rehearsal.py).
Here a 401 after it changes how the database enforces the balance rule, the
ways real ledgers get it wrong: the platform's own row trigger (a running sum
checked after each leg, so the first leg of any balanced journal fails), no
rule at all, and an accounts table the probe cannot write a test account to.
Each rehearsal reports what the database accepted and rejected, and the run
fails accordingly; nothing the probe posted is left in the scratch database
(it is rolled back: the audit of the state reached runs before the probe, and
the probe's own journals would show in a second audit).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg

from verifier.config.ledger import Layout
from verifier.jobs.lifecycle import new_run
from verifier.ledger import probe
from verifier.ledger.invariants import Convention
from verifier.ledger.layout import detect
from verifier.paths import project_migrations_dir

from .conftest import run_cli, run_summary

# The platform's balance rule, described in ../shared/platform-400.md ("Behaviour"), written here:
# after each inserted entry, its journal's entries so far must sum to 0 or to minus the new amount.
PLATFORM_ROW_TRIGGER = """
DROP TRIGGER IF EXISTS entries_journal_balanced ON entries;
CREATE OR REPLACE FUNCTION platform_check_journal_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE total BIGINT;
BEGIN
  SELECT COALESCE(sum(amount_cents), 0) INTO total FROM entries WHERE journal_id = NEW.journal_id;
  IF total <> 0 AND total <> -NEW.amount_cents THEN
    RAISE EXCEPTION 'Journal % is not balanced. Sum: %', NEW.journal_id, total;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER check_journal_balance AFTER INSERT ON entries
  FOR EACH ROW EXECUTE FUNCTION platform_check_journal_balance();
"""
NO_RULE = "DROP TRIGGER IF EXISTS entries_journal_balanced ON entries;\n"
UNWRITABLE_ACCOUNTS = (
    "ALTER TABLE accounts ADD COLUMN IF NOT EXISTS region point NOT NULL DEFAULT '(0,0)';\n"
    "ALTER TABLE accounts ALTER COLUMN region DROP DEFAULT;\n")


def _rehearse(tmp_path: Path, dump: Path, scratch: str, extra: str) -> tuple[int, dict[str, Any]]:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for f in sorted(project_migrations_dir().glob("[34]*.sql")):
        shutil.copy(f, migrations / f.name)
    (migrations / "401_change_the_balance_rule.sql").write_text(extra)
    result = run_cli("verify-cents", "--snapshot", str(dump), "--scratch", scratch, "--migrations",
                     str(migrations), "--skip-rule-checks", "--report-dir", str(tmp_path / "r"))
    assert "Traceback" not in result.stderr, result.stderr
    return result.code, run_summary(tmp_path / "r")


def _probe(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    stage = next(s for s in data["stages"] if s["name"] == "ledger probe")
    return {c["case"]: c for c in stage["cases"]}


def _ledger_findings(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["rule"]: f for f in data["findings"] if f["rule"].startswith("ledger_")}


def test_the_platforms_row_trigger_rejects_every_balanced_journal(
        tmp_path: Path, small_dump: Path, server_dsn: str, leftovers: None) -> None:
    code, data = _rehearse(tmp_path, small_dump, server_dsn, PLATFORM_ROW_TRIGGER)
    assert code == 1 and data["status"] == "fail"
    cases = _probe(data)
    for name in ("balanced_two_legs", "balanced_three_legs", "posting_function"):
        assert cases[name]["outcome"] == "rejected", cases[name]
        assert cases[name]["sqlstate"] == "P0001"
        assert cases[name]["message"].startswith("Journal ") and "is not balanced" in cases[name]["message"]
    assert cases["balanced_two_legs"]["statement"].startswith("INSERT INTO public.entries (leg 1 of 2")
    assert cases["posting_function"]["statement"].startswith("SELECT transfer_tokens(")
    assert cases["unbalanced"]["outcome"] == cases["one_leg"]["outcome"] == "rejected"
    found = _ledger_findings(data)
    rejects = found["ledger_rejects_balanced"]
    assert rejects["severity"] == "error" and rejects["count"] == 3
    assert {s["id"] for s in rejects["sample"]} == {
        "balanced_two_legs", "balanced_three_legs", "posting_function"}
    assert "ledger_accepts_unbalanced" not in found
    junit = next((tmp_path / "r").glob("*/junit.xml")).read_text()
    assert "ledger_rejects_balanced" in junit


def test_a_ledger_without_a_balance_rule_accepts_unbalanced_journals(
        tmp_path: Path, small_dump: Path, server_dsn: str, leftovers: None) -> None:
    code, data = _rehearse(tmp_path, small_dump, server_dsn, NO_RULE)
    assert code == 1
    cases = _probe(data)
    assert {n: c["outcome"] for n, c in cases.items()} == {
        "balanced_two_legs": "accepted", "balanced_three_legs": "accepted", "posting_function": "accepted",
        "unbalanced": "accepted", "one_leg": "accepted"}
    found = _ledger_findings(data)
    assert found["ledger_accepts_unbalanced"]["count"] == 2
    assert {s["id"] for s in found["ledger_accepts_unbalanced"]["sample"]} == {"unbalanced", "one_leg"}
    assert "ledger_rejects_balanced" not in found


def test_a_probe_that_cannot_set_up_says_so(tmp_path: Path, small_dump: Path, server_dsn: str,
                                            leftovers: None) -> None:
    code, data = _rehearse(tmp_path, small_dump, server_dsn, UNWRITABLE_ACCOUNTS)
    cases = _probe(data)
    assert {c["outcome"] for c in cases.values()} == {"not run"}
    assert all("public.accounts.region (type point)" in c["message"] for c in cases.values())
    not_checked = [f for f in data["findings"] if f["rule"] == "ledger_rule_not_checked"
                   and f["detail"]["check"] == "ledger probe"]
    assert len(not_checked) == 1 and not_checked[0]["count"] == 5
    assert code == 0, not_checked  # a warning: it fails the run only under --strict
    strict = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn, "--migrations",
                     str(tmp_path / "migrations"), "--skip-rule-checks", "--strict",
                     "--report-dir", str(tmp_path / "strict"))
    assert strict.code == 1


def test_the_probe_leaves_nothing_behind(fresh_db: str, tmp_path: Path) -> None:
    ledger_sql = (project_migrations_dir() / "400_create_double_entry_ledger.sql").read_text()
    counts = "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM journals), " \
             "(SELECT count(*) FROM entries), (SELECT sum(balance_cents) FROM accounts)"
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(ledger_sql)
        before = conn.execute(counts).fetchone()
        layout, _ = detect(conn, Layout())
    run = new_run("probe", tmp_path)
    done = probe.probe(run, fresh_db, layout, Convention(direction=-1, debit_sign=1))
    assert [c.outcome for c in done] == ["accepted", "accepted", "accepted", "rejected", "rejected"]
    assert run.findings == []
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute(counts).fetchone() == before == (5, 0, 0, 0)


# Posting functions that accept a transfer and do the wrong thing, beside our correct transfer_tokens.
WRONG_POSTERS = """
CREATE OR REPLACE FUNCTION transfer_nothing(p_from_account BIGINT, p_to_account BIGINT, p_amount_cents BIGINT)
RETURNS BIGINT LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE OR REPLACE FUNCTION transfer_backwards(p_from_account BIGINT, p_to_account BIGINT,
                                              p_amount_cents BIGINT)
RETURNS BIGINT LANGUAGE sql AS $$
  SELECT transfer_tokens(p_to_account, p_from_account, p_amount_cents * 100, 'token_transfer',
                         gen_random_uuid(), 'backwards', NULL) $$;
"""
# A journals column the probe must fill, whose foreign key no plain value meets; and a posting
# function that takes owners (uuid), not account ids.
UNFILLABLE_JOURNALS = """
CREATE TABLE IF NOT EXISTS approvers (id uuid PRIMARY KEY);
ALTER TABLE journals ADD COLUMN IF NOT EXISTS approved_by uuid NOT NULL REFERENCES approvers (id);
CREATE OR REPLACE FUNCTION transfer_between_owners(p_from_owner uuid, p_to_owner uuid, p_amount_cents BIGINT)
RETURNS BIGINT LANGUAGE sql AS $$ SELECT 1::bigint $$;
"""


def test_an_accepted_transfer_is_checked_for_what_it_posted(
        tmp_path: Path, small_dump: Path, server_dsn: str, leftovers: None) -> None:
    code, data = _rehearse(tmp_path, small_dump, server_dsn, WRONG_POSTERS)
    assert code == 1
    cases = {c["how"]: c for c in next(s for s in data["stages"] if s["name"] == "ledger probe")["cases"]}
    nothing = cases["the posting function transfer_nothing(from, to, amount, ...)"]
    backwards = cases["the posting function transfer_backwards(from, to, amount, ...)"]
    right = cases["the posting function transfer_tokens(from, to, amount, ...)"]
    assert nothing["outcome"] == backwards["outcome"] == right["outcome"] == "accepted"
    assert right["wrong"] is None
    assert "entries moved +0 on test account" in nothing["wrong"]
    assert "-10000 on test account" in backwards["wrong"] and "(expected +100)" in backwards["wrong"]
    found = _ledger_findings(data)
    assert found["ledger_transfer_wrong"]["count"] == 2 and "ledger_rejects_balanced" not in found


def test_a_refusal_of_the_probes_own_values_is_not_a_verdict(
        tmp_path: Path, small_dump: Path, server_dsn: str, leftovers: None) -> None:
    code, data = _rehearse(tmp_path, small_dump, server_dsn, UNFILLABLE_JOURNALS)
    cases = {c["case"] if c["case"] != "posting_function" else c["how"]: c
             for c in next(s for s in data["stages"] if s["name"] == "ledger probe")["cases"]}
    for name in ("balanced_two_legs", "balanced_three_legs", "unbalanced", "one_leg"):
        assert cases[name]["outcome"] == "not run", cases[name]
        assert "journals.approved_by, which the probe filled with a plain value" in cases[name]["message"]
    owners = cases["the posting function transfer_between_owners(from, to, amount, ...)"]
    assert owners["outcome"] == "not run" and "takes its from account as uuid" in owners["message"]
    # The platform's own posting function is broken by the new column (its INSERT leaves it NULL): that
    # refusal comes from inside the function, the ledger's own, and is a verdict.
    posting = cases["the posting function transfer_tokens(from, to, amount, ...)"]
    assert (posting["outcome"], posting["sqlstate"]) == ("rejected", "23502")
    found = _ledger_findings(data)
    assert [s["id"] for s in found["ledger_rejects_balanced"]["sample"]] == ["posting_function"]
    assert "ledger_accepts_unbalanced" not in found
    assert found["ledger_rule_not_checked"]["count"] == 5
    assert code == 1


def test_a_posting_function_that_never_ends_or_kills_the_session_is_a_rejection(
        fresh_db: str, tmp_path: Path, monkeypatch: Any) -> None:
    ledger_sql = (project_migrations_dir() / "400_create_double_entry_ledger.sql").read_text()
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(ledger_sql)
        conn.execute("DROP FUNCTION transfer_tokens, reverse_journal")
        # It catches the statement timeout's cancel and goes on.
        conn.execute("""CREATE FUNCTION transfer_forever(p_from_account BIGINT, p_to_account BIGINT,
                                                         p_amount_cents BIGINT) RETURNS BIGINT
                        LANGUAGE plpgsql AS $$ BEGIN LOOP BEGIN PERFORM pg_sleep(0.2);
                        EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$""")
        conn.execute("""CREATE FUNCTION transfer_killing(p_from_account BIGINT, p_to_account BIGINT,
                                                         p_amount_cents BIGINT) RETURNS BIGINT
                        LANGUAGE sql AS $$ SELECT pg_terminate_backend(pg_backend_pid())::int::bigint $$""")
        layout, _ = detect(conn, Layout())
    monkeypatch.setattr(probe, "STATEMENT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(probe, "CASE_LIMIT_S", 3.0)
    done = {c.how: c for c in probe.probe(new_run("probe", tmp_path), fresh_db, layout,
                                           Convention(direction=-1, debit_sign=1))}
    forever = done["the posting function transfer_forever(from, to, amount, ...)"]
    killing = done["the posting function transfer_killing(from, to, amount, ...)"]
    assert (forever.outcome, forever.message) == ("rejected", "did not finish in 3 s and was terminated")
    assert killing.outcome == "rejected" and killing.message.startswith("the session was lost")
    # The cases after them ran on a new session.
    assert done["a journal of a single leg"].outcome == "rejected"


def test_keys_without_a_default_get_values_above_every_row(fresh_db: str, tmp_path: Path) -> None:
    """Found by a break-it run: with accounts.id a bigint key without a default, the probe gave both
    of its test accounts the id 0 (the second was a duplicate key) and ran none of its cases."""
    ledger_sql = (project_migrations_dir() / "400_create_double_entry_ledger.sql").read_text()
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(ledger_sql)
        for table in ("accounts", "journals", "entries"):
            conn.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT")  # noqa: S608
        layout, _ = detect(conn, Layout())
    run = new_run("probe", tmp_path)
    done = probe.probe(run, fresh_db, layout, Convention(direction=-1, debit_sign=1))
    # The platform's transfer_tokens inserts without ids: the ledger's own refusal, a verdict.
    assert [(c.name, c.outcome) for c in done] == [
        ("balanced_two_legs", "accepted"), ("balanced_three_legs", "accepted"),
        ("posting_function", "rejected"), ("unbalanced", "rejected"), ("one_leg", "rejected")], \
        [(c.name, c.outcome, c.message) for c in done]
