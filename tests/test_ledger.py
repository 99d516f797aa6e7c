"""The ledger audit (verify-ledger) finds what is wrong, by id, and nothing else.

Against a real server: the demo finds exactly the planted defect ids of
every rule; a clean generated ledger (also of 10^6 entries) passes with no
finding; a SELECT-only, read-only role audits and writes nothing; the
opposite sign convention is detected; renamed tables work through the
configuration; missing tables, missing privileges and timeouts are a clear
exit 2; postings that run during the audit cause no false finding and are
not blocked by it.
"""

from __future__ import annotations

import csv
import stat
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from verifier.config.ledger import ROLES, Layout
from verifier.demo import ledger, load
from verifier.demo.manifest import read_manifest
from verifier.errors import UsageError

from .conftest import copy_db, only_run, reader_role, run_cli, run_summary, table_digests


@pytest.fixture(scope="module")
def clean_ledger(make_module_db) -> str:  # type: ignore[no-untyped-def]
    dsn = str(make_module_db())
    ledger.build(dsn, entries=20_000, seed=5)
    return dsn


def _offenders(run_dir: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    with (run_dir / "offenders.csv").open() as fh:
        for row in csv.DictReader(fh):
            found.setdefault(row["rule"], set()).add(row["id"])
    return found


def _planted(planted: list[ledger.LedgerPlanted]) -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = {}
    for p in planted:
        wanted.setdefault(p.rule, set()).add(p.id)
    return wanted


# The demo ledger's legacy wallets (its users' ids are bigints, the accounts' owners uuids, so
# the default reconciliation of users.balance_cents cannot run there, and says so).
DEMO_CONFIG = ('[[ledger.reconcile]]\ntable = "legacy_wallets"\nkey = "owner_id"\ncolumn = "balance_cents"\n'
               'account_type = "user"\n')


def _audit(dsn: str, report_dir: Path, *extra: str, config: str | None = DEMO_CONFIG
           ) -> tuple[int, dict[str, Any], str]:
    if config is not None and "--config" not in extra:
        report_dir.mkdir(parents=True, exist_ok=True)
        path = report_dir.parent / f"{report_dir.name}.verifier.toml"
        path.write_text(config)
        extra = (*extra, "--config", str(path))
    result = run_cli("verify-ledger", "--db", dsn, "--report-dir", str(report_dir), *extra)
    assert "Traceback" not in result.stderr
    return result.code, run_summary(report_dir), result.stderr


@pytest.mark.parametrize("entries", [None, ledger.ENTRIES_MIN])
def test_demo_finds_exactly_the_planted_ids(tmp_path: Path, leftovers: None, entries: int | None) -> None:
    """Also at the smallest size --entries allows (its backdated entry was a planted journal's, an
    internal error: found by a break-it run)."""
    size = ("--entries", str(entries)) if entries else ()
    result = run_cli("verify-ledger", "--demo", "--report-dir", str(tmp_path), *size)
    assert result.code == 1, result.stderr
    run = only_run(tmp_path)
    planted = read_manifest(run / "planted.json", ledger.LedgerPlanted)
    wanted = _planted(planted)
    # Every rule of the ledger vocabulary (history_tampered against the state of a first audit).
    assert set(wanted) == set(layout_rules())
    assert (run / "ledger.state").is_file()
    assert _offenders(run) == wanted
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.iterdir()}
    assert set(modes.values()) == {0o600}, modes  # every file of a run folder the owner's alone
    data = run_summary(tmp_path)
    for f in data["findings"]:
        assert f["severity"] == "error"
        assert {s["id"] for s in f["sample"]} <= wanted[f["rule"]]
    by_rule: dict[str, int] = {}
    for f in data["findings"]:
        by_rule[f["rule"]] = by_rule.get(f["rule"], 0) + f["count"]
    # Counts are rows of the table: the orphan journal's row stands for its two entries.
    assert by_rule == {rule: len(ids) + (rule == "orphan_entry") for rule, ids in wanted.items()}
    impacts = {f["rule"]: f["cents_impact"] for f in data["findings"] if f["rule"] != "orphan_entry"}
    assert impacts["account_balance_drift"] == 33 and impacts["reconciliation_mismatch"] == 13
    assert impacts["running_balance_break"] == 100  # +50 and -50: absolute values add up
    suite = ET.parse(run / "junit.xml").getroot()
    failed = {c.get("name", "").split(":")[0] for c in suite.iter("testcase")
              if c.find("failure") is not None}
    assert failed == {"journals", "trial", "chain", "reversed", "snapshots", "pending", "idempotency",
                      "reconcile public.legacy_wallets.balance_cents", "history digests"}
    layout = {s["name"]: s for s in data["stages"]}["layout"]
    assert layout["layout"] == "platform 400" and layout["roles"]["journals.reversed_by"] == "reversed_by"
    assert data["provenance"]["ledger_convention"] == (
        "balance_after = balance_before - amount; a positive amount is a debit")


def layout_rules() -> list[str]:
    """The ledger rules of DESIGN.md's vocabulary (and ours: pending_unlinked)."""
    return ["journal_unbalanced", "journal_too_few_entries", "journal_mixed_currency", "entry_sign_mismatch",
            "running_balance_break", "account_balance_drift", "negative_balance", "trial_balance_nonzero",
            "reversal_mismatch", "orphan_entry", "empty_journal", "snapshot_mismatch", "pending_stale",
            "pending_unlinked", "idempotency_conflict", "history_tampered", "reconciliation_mismatch"]


def test_clean_ledger_passes_with_no_configuration(clean_ledger: str, tmp_path: Path) -> None:
    code, data, stderr = _audit(clean_ledger, tmp_path / "plain", config=None)
    assert code == 0, stderr
    # Every rule checked but the default reconciliation, which cannot match a bigint to a uuid: said so.
    [unchecked] = data["findings"]
    assert unchecked["rule"] == "ledger_rule_not_checked" and unchecked["severity"] == "warning"
    assert "reconciliation_mismatch" in unchecked["message"] and "is uuid" in unchecked["message"]
    layout = {s["name"]: s for s in data["stages"]}["layout"]
    assert layout["layout"] == "platform 400"
    assert layout["roles"]["entries.currency"] is None and layout["roles"]["accounts.owner"] == "owner_id"
    opening = {s["name"]: s for s in data["stages"]}["opening balances"]
    assert opening["accounts_with_opening_balance"] > 0
    usd = opening["by_currency"]["USD"]
    assert int(usd["opening_cents"]) > 0 and usd["opening_cents"] == usd["balances_cents"]
    # No chart of zeros on a pass: the trial balance and the drift are drawn only when not zero.
    page = (only_run(tmp_path / "plain") / "report.html").read_text()
    assert "<svg" not in page and 'id="charts"' not in page


def test_clean_ledger_passes(clean_ledger: str, tmp_path: Path) -> None:
    code, data, stderr = _audit(clean_ledger, tmp_path)
    assert code == 0, stderr
    assert data["findings"] == []
    stages = {s["name"]: s for s in data["stages"]}
    passes = {p["pass"]: p for p in stages["audit"]["passes"]}
    with psycopg.connect(clean_ledger) as conn:
        entries, accounts = conn.execute("SELECT (SELECT count(*) FROM entries), "
                                         "(SELECT count(*) FROM accounts)").fetchone()  # type: ignore[misc]
    assert passes["journals"]["entries"] == entries and passes["accounts"]["accounts"] == accounts
    assert passes["reconcile public.legacy_wallets.balance_cents"]["reconciled"] > 0
    assert data["provenance"]["exported_snapshot"] and data["provenance"]["wal_lsn"]


def test_a_ledger_whose_journal_ids_pass_the_smallint_range_builds(fresh_db: str, tmp_path: Path) -> None:
    # 100,000 entries: ~32,300 tips after ~790 deposits, so journal ids cross 32,767.
    built = ledger.build(fresh_db, entries=100_000, seed=42)
    assert built.journals > 32_767
    code, data, stderr = _audit(fresh_db, tmp_path)
    assert code == 0, (stderr, data["findings"])


@pytest.mark.slow
def test_clean_ledger_of_a_million_entries_passes(fresh_db: str, tmp_path: Path) -> None:
    built = ledger.build(fresh_db, entries=1_000_000, seed=11)
    assert built.entries >= 990_000
    code, data, stderr = _audit(fresh_db, tmp_path)
    assert code == 0, stderr
    assert data["findings"] == []
    passes = {p["pass"]: p for p in {s["name"]: s for s in data["stages"]}["audit"]["passes"]}
    assert passes["journals"]["entries"] == built.entries


def test_select_only_read_only_role_finds_the_plants_and_writes_nothing(
        clean_ledger: str, make_db: Any, tmp_path: Path) -> None:
    copy = copy_db(make_db, clean_ledger)
    wanted = _planted(ledger.plant(copy))
    stats_sql = "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables"
    with psycopg.connect(copy, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        writes_before = conn.execute(stats_sql).fetchone()
    digests_before = table_digests(copy)
    with reader_role(copy, sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on"),
                     sql.SQL("ALTER ROLE {} BYPASSRLS")) as reader:
        code, data, stderr = _audit(reader, tmp_path)
    assert code == 1, stderr
    assert _offenders(only_run(tmp_path)) == wanted
    assert data["provenance"]["target_role"].startswith("test_reader_")
    with psycopg.connect(copy, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        assert conn.execute(stats_sql).fetchone() == writes_before
    assert table_digests(copy) == digests_before


def _sums(data: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Per rule: rows and cents impact, over the run's findings."""
    sums: dict[str, tuple[int, int]] = {}
    for f in data["findings"]:
        rows, cents = sums.get(f["rule"], (0, 0))
        sums[f["rule"]] = (rows + f["count"], cents + f["cents_impact"])
    return sums


def test_chain_split_into_account_ranges_finds_what_one_pass_finds(
        clean_ledger: str, make_db: Any, tmp_path: Path) -> None:
    """The full chain pass in account ranges (a sort per range, on the workers) proves what the one
    pass proves: every planted id, the same counts and impacts, and entries whose account lies
    outside every sampled value (below, above, NULL) in the open-ended first and last ranges."""
    copy = copy_db(make_db, clean_ledger)
    wanted = _planted(ledger.plant(copy))
    with psycopg.connect(copy, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no foreign key: orphans by design
        conn.execute("ALTER TABLE entries ALTER COLUMN account_id DROP NOT NULL")
        journal = conn.execute("SELECT max(id) + 1 FROM journals").fetchone()
        assert journal is not None
        conn.execute("INSERT INTO journals (id, ref_type, ref_id, description) SELECT %s, ref_type, "
                     "gen_random_uuid(), 'outside every range' FROM journals LIMIT 1", (journal[0],))
        ids = [r[0] for r in conn.execute(
            "INSERT INTO entries (journal_id, account_id, entry_type, amount_cents, balance_before_cents, "
            "balance_after_cents) SELECT %s, a, t, m, 0, -m FROM (VALUES (-987654321::bigint, 'debit', "
            "70::bigint), (987654321987, 'credit', -30), (NULL, 'credit', -40)) v(a, t, m) "
            "RETURNING id::text",
            (journal[0],)).fetchall()]
    wanted.setdefault("orphan_entry", set()).update(ids)
    runs = {}
    for ranges in (1, 5):
        config = DEMO_CONFIG + f"[ledger]\nchain_ranges = {ranges}\n"
        code, data, stderr = _audit(copy, tmp_path / str(ranges), config=config)
        assert code == 1, stderr
        chain = [p for p in {s["name"]: s for s in data["stages"]}["audit"]["passes"] if p["pass"] == "chain"]
        assert len(chain) == ranges, chain
        runs[ranges] = data
        assert _offenders(only_run(tmp_path / str(ranges))) == wanted
    assert _sums(runs[5]) == _sums(runs[1])
    chain = [p for p in {s["name"]: s for s in runs[5]["stages"]}["audit"]["passes"] if p["pass"] == "chain"]
    assert chain[0]["accounts"].startswith("account <") and chain[-1]["accounts"].startswith("account >=")
    assert "'" not in chain[0]["accounts"], chain[0]  # integer ids are shown as numbers


def test_opposite_sign_convention_is_detected(clean_ledger: str, make_db: Any, tmp_path: Path) -> None:
    copy = copy_db(make_db, clean_ledger)
    with psycopg.connect(copy, autocommit=True) as conn:
        conn.execute("ALTER TABLE entries DROP CONSTRAINT entries_sign_matches_type")
        # Same balances, amounts negated: after = before + amount, a negative amount is a debit.
        conn.execute("UPDATE entries SET amount_cents = -amount_cents")
    code, data, stderr = _audit(copy, tmp_path)
    assert code == 0, (stderr, data["findings"])
    assert data["provenance"]["ledger_convention"] == (
        "balance_after = balance_before + amount; a negative amount is a debit")
    # Told the platform's convention instead, every entry breaks it.
    config = tmp_path / "verifier.toml"
    config.write_text('[ledger]\nbalance_rule = "after_is_before_minus_amount"\npositive_is = "debit"\n'
                      + DEMO_CONFIG)
    code, data, _ = _audit(copy, tmp_path / "told", "--config", str(config))
    assert code == 1
    rules = {f["rule"] for f in data["findings"]}
    assert {"running_balance_break", "entry_sign_mismatch"} <= rules


def test_renamed_tables_and_columns_through_the_config(clean_ledger: str, make_db: Any,
                                                       tmp_path: Path) -> None:
    copy = copy_db(make_db, clean_ledger)
    with psycopg.connect(copy, autocommit=True) as conn:
        conn.execute("ALTER TABLE entries RENAME TO ledger_entries")
        conn.execute("ALTER TABLE ledger_entries RENAME COLUMN amount_cents TO amount")
    code, data, stderr = _audit(copy, tmp_path / "plain")
    assert code == 2 and data["status"] == "error"
    assert "public.entries (entries) does not exist" in stderr and "[tool.verifier.ledger.tables]" in stderr
    config = tmp_path / "verifier.toml"
    config.write_text('[ledger.tables]\nentries = "ledger_entries"\n')
    code, _, stderr = _audit(copy, tmp_path / "table", "--config", str(config))
    assert code == 2 and "has no column for entries.amount (looked for amount_cents)" in stderr
    assert '"entries.amount" = "<your column>"' in stderr
    config.write_text('[ledger.tables]\nentries = "ledger_entries"\n'
                      '[ledger.columns]\n"entries.amount" = "amount"\n' + DEMO_CONFIG)
    code, data, stderr = _audit(copy, tmp_path / "both", "--config", str(config))
    assert code == 0, stderr
    assert data["findings"] == []


def test_role_without_select_on_the_entries(clean_ledger: str, tmp_path: Path) -> None:
    with reader_role(clean_ledger, sql.SQL("REVOKE SELECT ON entries FROM {}"),
                     sql.SQL("ALTER ROLE {} BYPASSRLS")) as reader:
        code, data, stderr = _audit(reader, tmp_path)
    assert code == 2 and data["status"] == "error"
    assert "No permission to read the ledger" in stderr and "GRANT SELECT" in stderr
    assert not (only_run(tmp_path) / "offenders.csv").exists()


def test_statement_timeout_is_a_clear_error(clean_ledger: str, tmp_path: Path) -> None:
    config = tmp_path / "verifier.toml"
    config.write_text("statement_timeout_s = 0.001\n")
    code, data, stderr = _audit(clean_ledger, tmp_path / "run", "--config", str(config))
    assert code == 2 and data["status"] == "error"
    assert "statement_timeout of 0.001 s was reached" in stderr
    assert "statement_timeout_s in verifier.toml" in stderr


def test_database_without_a_ledger(fresh_db: str, tmp_path: Path) -> None:
    code, data, stderr = _audit(fresh_db, tmp_path)
    assert code == 2 and data["status"] == "error"
    # Every missing table in one message.
    assert "cannot be audited: the table public.accounts (accounts) does not exist" in stderr
    assert "public.journals (journals)" in stderr and "public.entries (entries)" in stderr


@pytest.mark.parametrize("toml, words", [
    ('[ledger]\nnope = 1\n', "unknown key(s) in [tool.verifier.ledger]: nope"),
    ('[ledger.columns]\n"entries.amt" = "x"\n', "ledger.columns.'entries.amt'"),
    ('[ledger.tables]\nbooks = "x"\n', "ledger.tables.books is not one of"),
    ('[ledger]\nbalance_rule = "sideways"\n', "ledger.balance_rule 'sideways'"),
    ('[ledger]\nworkers = 0\n', "ledger.workers must be"),
    ('[ledger]\nchain_ranges = 65\n', "ledger.chain_ranges must be an integer from 1 to 64"),
    ('[ledger]\naudit_in_rehearsal = "no"\n', "ledger.audit_in_rehearsal must be true or false"),
    ('[[ledger.reconcile]]\ntable = "users"\n', "ledger.reconcile[0] needs exactly"),
])
def test_bad_ledger_config_is_a_clear_error(tmp_path: Path, toml: str, words: str) -> None:
    from verifier.config import load

    path = tmp_path / "verifier.toml"
    path.write_text(toml)
    with pytest.raises(UsageError) as caught:
        load(path)
    assert words in str(caught.value)


def test_layout_defaults_are_the_platform_400() -> None:
    assert Layout().table("snapshots") == "public.ledger_snapshots"
    # Detected, the platform's names first.
    assert ROLES["entries"]["amount"][1][0] == "amount_cents" and ROLES["accounts"]["type"][1][0] == "type"
    assert ROLES["journals"]["reversed_by"] == (False, ("reversed_by",))


def test_row_level_security_that_hides_rows_is_exit_2(clean_ledger: str, tmp_path: Path) -> None:
    # 400 enables row level security with no policy: a role without BYPASSRLS would see no rows at all.
    with reader_role(clean_ledger) as reader:
        code, data, stderr = _audit(reader, tmp_path)
    assert code == 2 and data["status"] == "error"
    assert "Row level security is on for public.accounts" in stderr and "BYPASSRLS" in stderr


@pytest.fixture
def posting_ledger(clean_ledger: str, make_db: Any) -> Iterator[str]:
    yield copy_db(make_db, clean_ledger)


def test_audit_under_concurrent_postings_finds_nothing_and_blocks_no_one(
        posting_ledger: str, tmp_path: Path) -> None:
    # Legacy balances are not updated by transfer_tokens: reconcile nothing here.
    config = tmp_path / "verifier.toml"
    config.write_text("[ledger]\nreconcile = []\n")
    with load.posting(posting_ledger) as posted:
        time.sleep(0.5)
        for round_ in range(3):
            before = sum(posted)
            code, data, stderr = _audit(posting_ledger, tmp_path / str(round_), "--config", str(config))
            during = sum(posted) - before
            assert code == 0, (stderr, data["findings"])
            assert during > 0, "no posting went through while the audit ran"
    # And the ledger the writers left is still whole.
    code, data, stderr = _audit(posting_ledger, tmp_path / "after", "--config", str(config))
    assert code == 0, (stderr, data["findings"])


def test_the_journals_pass_joins_the_accounts_only_where_a_journal_could_mix_currencies(
        clean_ledger: str) -> None:
    """One currency among the accounts, none on entries or journals (the platform's): no journal can
    mix currencies, and the journals pass reads the entries alone; with two, each entry's account's."""
    from verifier.ledger import invariants as inv
    from verifier.ledger.layout import detect

    with psycopg.connect(clean_ledger) as conn:
        layout, _ = detect(conn, Layout())
        convention = inv.Convention(-1, 1)
        one = inv.compose(inv.JOURNALS.source, inv.names(layout, convention, ("USD",))).as_string(conn)
        two = inv.compose(inv.JOURNALS.source, inv.names(layout, convention, ("EUR", "USD"))).as_string(conn)
    assert "LEFT JOIN" not in one.split(") g")[0] and "'USD'::text" in one
    assert "LEFT JOIN" in two.split(") g")[0]


def test_an_account_without_a_currency_is_a_finding_in_full_and_incremental_audits(
        clean_ledger: str, make_db: Any, tmp_path: Path) -> None:
    """Found by a break-it run: a journal between a USD account and one whose currency is NULL passed
    (min and max pass over NULL, and the one-currency journals pass assumes every account has it)."""
    dsn = copy_db(make_db, clean_ledger)
    state = tmp_path / "ledger.state"
    for n in range(2):  # the second audit proves what the first saw
        code, data, stderr = _audit(dsn, tmp_path / f"prove{n}", "--state", str(state))
        assert code == 0, (stderr, data["findings"])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE accounts ALTER COLUMN currency DROP NOT NULL")
        row = conn.execute("SELECT a.id, a.balance_cents FROM accounts a "
                           "JOIN entries e ON e.account_id = a.id "
                           "WHERE a.type = 'user' ORDER BY a.id LIMIT 1").fetchone()
        assert row
        conn.execute("UPDATE accounts SET currency = NULL WHERE id = %s", (row[0],))
    for name, extra in (("full", ()), ("incremental", ("--state", str(state)))):
        code, data, stderr = _audit(dsn, tmp_path / name, *extra)
        assert code == 1, (name, stderr)
        found = [f for f in data["findings"] if f["rule"] == "account_currency_missing"]
        assert len(found) == 1 and found[0]["table"] == "public.accounts", (name, data["findings"])
        assert [s["id"] for s in found[0]["sample"]] == [str(row[0])], name
        assert found[0]["cents_impact"] == abs(row[1]), name
        if extra:
            assert next(s for s in data["stages"] if s["name"] == "state")["mode"] == "incremental"


def _trial_alone_and_folded(dsn: str, ranges: int) -> tuple[Any, Any]:
    """The trial pass's summary and offenders run alone, and folded into the full chain pass (its
    figures summed by the chain in ``ranges`` account ranges, then ``TRIAL_FOLDED``), in one snapshot."""
    from verifier.config import Config
    from verifier.ledger import audit
    from verifier.ledger import invariants as inv
    from verifier.ledger.convention import detect_convention
    from verifier.ledger.layout import detect
    from verifier.pg.snapshot import open_snapshot
    with psycopg.connect(dsn, autocommit=True) as conn:
        layout, _ = detect(conn, Layout(reconcile=(), chain_ranges=ranges))
        convention, _ = detect_convention(conn, layout)
        currencies = audit._currencies(conn, layout)
    filled = inv.names(layout, convention, currencies)
    with open_snapshot(dsn, Config()) as conn:
        def read(p: inv.Pass, f: dict[str, Any]) -> tuple[Any, list[Any]]:
            return (conn.execute(inv.summary_query(p, f)).fetchone(),
                    sorted(conn.execute(inv.offenders_query(p, f)).fetchall(), key=repr))

        alone = read(inv.TRIAL, filled)
        chain = audit.split_chain(conn, [audit.Planned(inv.CHAIN, inv.fold_trial(filled, currencies))],
                                  layout)
        assert len(chain) == ranges
        passes = [*chain, audit.Planned(inv.TRIAL_FOLDED, filled, after_chain=True)]
        results = audit._after_chain(conn, passes, [audit._summary(conn, p=x.p, filled=x.filled,
                                                                   settings=x.settings) for x in chain])
        assert all(name not in r.totals for r in results[:-1] for name in inv.TRIAL_FIGURES)
        folded = read(inv.TRIAL_FOLDED, passes[-1].filled)
        assert results[-1].counts == [len(folded[1])]
    return alone, folded


def test_the_chain_read_per_currency_sums_to_the_chain_read_in_one_row(clean_ledger: str,
                                                                         make_db: Any) -> None:
    """Where the accounts hold several currencies, the chain's summary is read per currency
    (``CHAIN.group_by``: its per-currency figures cost one aggregate each, not one per currency and
    entry). Its rows add up to the one-row summary: every count, impact and total, with offenders,
    accounts in three currencies and none, a currency with no entries, and entries of a missing
    account; and with no entry at all."""
    from verifier.config import Config
    from verifier.ledger import audit
    from verifier.ledger import invariants as inv
    from verifier.ledger.convention import detect_convention
    from verifier.ledger.layout import detect
    from verifier.pg.snapshot import open_snapshot
    copy = copy_db(make_db, clean_ledger)
    ledger.plant(copy)
    with psycopg.connect(copy, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # past the foreign keys
        conn.execute("ALTER TABLE accounts ALTER COLUMN currency DROP NOT NULL")
        conn.execute("UPDATE accounts SET currency = CASE id % 4 WHEN 1 THEN 'EUR' WHEN 2 THEN 'GBP' "
                     "WHEN 3 THEN NULL ELSE currency END WHERE id % 5 = 0")
        conn.execute("INSERT INTO accounts (owner_id, type, currency) "
                     "VALUES (gen_random_uuid(), 'user', 'XTS')")
        conn.execute("INSERT INTO entries (journal_id, account_id, entry_type, amount_cents, "
                     "balance_before_cents, balance_after_cents) "
                     "SELECT min(id), 987654321, 'debit', 70, 0, -70 FROM journals")
        layout, _ = detect(conn, Layout(reconcile=()))
        convention, _ = detect_convention(conn, layout)
        currencies = audit._currencies(conn, layout)
    assert len(currencies) == 4, currencies
    for where in ("true", "false"):
        read = {}
        with open_snapshot(copy, Config()) as conn:
            for grouped in (True, False):
                filled = inv.fold_trial(inv.names(layout, convention, currencies, grouped=grouped),
                                        currencies)
                filled["chain_range"] = psycopg.sql.SQL(where)
                result = audit._summary(conn, p=inv.CHAIN, filled=filled, settings={})
                # Read per currency, a currency without entries has no figures rather than zeros.
                read[grouped] = (result.counts, result.impacts, {
                    k: {c: v for c, v in t.items() if Decimal(v)} if isinstance(t, dict) else t
                    for k, t in result.totals.items()})
        assert read[True] == read[False], where
        if where == "true":
            counts, _, totals = read[True]
            assert sum(counts) > 0 and set(totals["trial_sums"]) == {"USD", "EUR", "GBP"}, read[True]
            assert int(totals["trial_null"]["rows"]) > 1, totals


@pytest.mark.parametrize("ranges", [1, 3])
def test_the_trial_balance_summed_by_the_chain_pass_is_the_trial_pass(
        clean_ledger: str, make_db: Any, ranges: int) -> None:
    """Where entries take their account's currency, a full audit sums the trial balance in the chain
    pass (one scan fewer): per currency the same rows, totals and offenders as the trial pass alone,
    with accounts in another currency, one without a currency, one in a currency with no entries,
    entries of a missing account (the NULL bucket), and the chain split into account ranges."""
    copy = copy_db(make_db, clean_ledger)
    ledger.plant(copy)
    with psycopg.connect(copy, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # past the foreign keys
        conn.execute("ALTER TABLE accounts ALTER COLUMN currency DROP NOT NULL")
        eur, none = [r[0] for r in conn.execute(
            "SELECT a.id FROM accounts a WHERE EXISTS (SELECT 1 FROM entries e WHERE e.account_id = a.id) "
            "ORDER BY a.id LIMIT 2 OFFSET 3")]
        conn.execute("UPDATE accounts SET currency = 'EUR' WHERE id = %s", (eur,))
        conn.execute("UPDATE accounts SET currency = NULL WHERE id = %s", (none,))
        conn.execute("INSERT INTO accounts (owner_id, type, currency) "
                     "VALUES (gen_random_uuid(), 'user', 'XTS')")
        conn.execute("INSERT INTO entries (journal_id, account_id, entry_type, amount_cents, "
                     "balance_before_cents, balance_after_cents) "
                     "SELECT min(id), 987654321, 'debit', 70, 0, -70 FROM journals")
    alone, folded = _trial_alone_and_folded(copy, ranges)
    assert folded == alone
    currencies = {r[1] for r in alone[1]}
    assert {"EUR", "NULL"} <= currencies, alone  # trial_balance_nonzero in EUR and the NULL bucket
