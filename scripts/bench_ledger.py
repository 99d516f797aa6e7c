"""Benchmark: the ledger audit against the floor, and the writers' throughput under it.

Not a test (timings on a shared machine are noisy): run it and read the
ratios, which compare runs interleaved on one server in one go.
Usage: python scripts/bench_ledger.py [--entries 10000000] [--rounds 3] [--server URL] [--baseline PATH]
[--accounts N] (without --server: an embedded server in a temporary directory).

With ``--accounts N``, N more user wallets of one entry each are added to the
ledger (``verifier.demo.ledger.add_wallets``): a platform of many wallets,
where an incremental audit's cost follows the accounts, not the new entries.

A generated clean ledger of ENTRIES entries (``verifier.demo.ledger``) in
a database of its own, and the smallest generated ledger (1,000 entries) in
another. Each round runs, interleaved:

- floor: one SELECT reading every entry once (count and sums of its columns);
- audit: ``verify-ledger --db`` as a subprocess, whole command, minus the
  same command on the small ledger (its fixed cost: start-up, catalog, report);
- naive: one hand-written query per invariant (``NAIVE``), one after the
  other in one REPEATABLE READ transaction, as a team's own checks would run;
- chain, index order: the chain pass as one statement with the planner's
  own plan (an index scan on the account: how audits ran it before);
- chain, sorted ranges: the chain pass as the audit runs it now
  (``verifier.ledger.audit.split_chain``: a sort per account range, on the
  workers importing one exported snapshot);
- journals: the journals pass alone;
- baseline (``--baseline PATH``): another ``verify-ledger`` (an earlier
  version's, in its own environment), for a before/after of the audit work.

Then the scheduled audit: ``--state --full`` (a full audit that starts a
state; it proves nothing yet), a second audit (still full: it proves the
history the first saw, and writes its digests), 1% more entries posted
through ``transfer_tokens``, and per round, from a copy of that state, the
incremental audit re-hashing all proven history, and one re-hashing a tenth
of it (``--verify-history-share 0.1``). Each figure says the mode its
audit's state stage reported.

Also: peak resident memory of verify-ledger on both, and how many postings
four writers (``transfer_tokens``) complete per second alone and while audits run
back to back, on a copy of the small ledger's accounts in the big one.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
from benchlib import arguments, run_measured, timed  # scripts/, beside this file

from verifier.config import Config
from verifier.config.ledger import Layout
from verifier.demo import ledger, load
from verifier.ledger import audit
from verifier.ledger import invariants as inv
from verifier.ledger.convention import detect_convention
from verifier.ledger.layout import detect
from verifier.pg.snapshot import export_snapshot, in_parallel, open_snapshot, planned
from verifier.scratch import provision

VERIFY_LEDGER = str(Path(sys.executable).with_name("verify-ledger"))
FLOOR_SQL = ("SELECT count(*), sum(amount_cents), sum(balance_before_cents), sum(balance_after_cents), "
             "max(journal_id), max(account_id), max(id) FROM entries")
WRITERS = 4
WINDOW_S = 5.0
# One hand-written query per invariant, on the platform's layout: what a team writes without a tool.
NAIVE = {
    "journal_unbalanced": "SELECT journal_id FROM entries GROUP BY 1 HAVING sum(amount_cents) <> 0",
    "journal_too_few_entries": "SELECT journal_id FROM entries GROUP BY 1 HAVING count(*) < 2",
    "journal_mixed_currency": "SELECT e.journal_id FROM entries e JOIN accounts a ON a.id = e.account_id "
                              "GROUP BY 1 HAVING count(DISTINCT a.currency) > 1",
    "empty_journal": "SELECT j.id FROM journals j WHERE NOT EXISTS "
                     "(SELECT 1 FROM entries e WHERE e.journal_id = j.id)",
    "orphan_entry (journal)": "SELECT e.id FROM entries e LEFT JOIN journals j ON j.id = e.journal_id "
                              "WHERE j.id IS NULL",
    "orphan_entry (account)": "SELECT e.id FROM entries e LEFT JOIN accounts a ON a.id = e.account_id "
                              "WHERE a.id IS NULL",
    "entry_sign_mismatch": "SELECT id FROM entries WHERE NOT ((entry_type = 'debit' AND amount_cents > 0) "
                           "OR (entry_type = 'credit' AND amount_cents < 0))",
    "running_balance_break": "SELECT id FROM (SELECT id, balance_before_cents AS b, "
                             "balance_after_cents AS a, amount_cents AS m, lag(balance_after_cents) "
                             "OVER (PARTITION BY account_id ORDER BY id) AS p FROM entries) x "
                             "WHERE (p IS NOT NULL AND b <> p) OR a <> b - m",
    "negative_balance": "SELECT id FROM entries WHERE balance_after_cents < 0",
    "account_balance_drift": "SELECT a.id FROM accounts a JOIN (SELECT DISTINCT ON (account_id) account_id, "
                             "balance_after_cents FROM entries ORDER BY account_id, id DESC) l "
                             "ON l.account_id = a.id WHERE a.balance_cents <> l.balance_after_cents",
    "trial_balance_nonzero": "SELECT a.currency FROM entries e JOIN accounts a ON a.id = e.account_id "
                             "GROUP BY 1 HAVING sum(e.amount_cents) <> 0",
    "reversal_mismatch": "SELECT j.id FROM journals j LEFT JOIN journals r ON r.id = j.reversed_by "
                         "WHERE j.is_reversed AND r.id IS NULL",
    "snapshot_mismatch": "SELECT s.id FROM ledger_snapshots s JOIN entries e ON e.id = s.last_entry_id "
                         "WHERE e.balance_after_cents <> s.balance_cents",
    "pending_stale": "SELECT id FROM pending_transactions WHERE status = 'pending' AND expires_at < now()",
    "idempotency_conflict": "SELECT idempotency_key FROM journals WHERE idempotency_key IS NOT NULL "
                            "GROUP BY 1 HAVING count(*) > 1",
}


def naive(dsn: str) -> None:
    """Every ``NAIVE`` query, one after the other, in one snapshot; on a clean ledger none finds a row."""
    with psycopg.connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        for name, query in NAIVE.items():
            found = conn.execute(query).fetchall()
            assert not found, f"naive {name} found {len(found)} row(s) on a clean ledger"


class Chain:
    """The chain pass of the ledger at ``dsn``, in index order (one statement, the planner's plan)
    or sorted in account ranges on ``workers`` connections (as the audit runs it)."""

    def __init__(self, dsn: str, workers: int) -> None:
        self.dsn, self.config = dsn, Config()
        with psycopg.connect(dsn, autocommit=True) as conn:
            layout, _ = detect(conn, Layout())
            convention, _ = detect_convention(conn, layout)
            currencies = audit._currencies(conn, layout)
        self.layout = replace(layout, workers=workers)
        self.filled = inv.names(self.layout, convention, currencies)

    def index_order(self) -> None:
        with open_snapshot(self.dsn, self.config) as conn:
            conn.execute(inv.summary_query(inv.CHAIN, self.filled)).fetchone()

    def sorted_ranges(self) -> int:
        with open_snapshot(self.dsn, self.config) as conn:
            parts = audit.split_chain(conn, [audit.Planned(inv.CHAIN, self.filled)], self.layout)
            jobs: list[Callable[[psycopg.Connection], None]] = [
                functools.partial(self._one, part=p) for p in parts]
            in_parallel(jobs, self.dsn, self.config, export_snapshot(conn), self.layout.workers)
        return len(parts)

    @staticmethod
    def _one(conn: psycopg.Connection, *, part: audit.Planned) -> None:
        with planned(conn, part.settings):
            conn.execute(inv.summary_query(part.p, part.filled)).fetchone()


def journals_pass(dsn: str) -> None:
    chain = Chain(dsn, 1)
    with open_snapshot(dsn, chain.config) as conn:
        conn.execute(inv.summary_query(inv.JOURNALS, chain.filled)).fetchone()


def run_audit(url: str, report_dir: Path, config: Path, *extra: str, command: str = VERIFY_LEDGER
              ) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one ``verify-ledger --db`` subprocess (which must pass)."""
    wall, peak, _ = run_measured([command, "--db", url, "--report-dir", str(report_dir),
                                  "--config", str(config), *extra])
    return wall, peak


def last_mode(report_dir: Path) -> str:
    """The mode (full, incremental) that the newest run in ``report_dir`` says its state stage had."""
    newest = max((p for p in report_dir.iterdir() if (p / "summary.json").is_file()),
                 key=lambda p: (p / "summary.json").stat().st_mtime)
    stages = json.loads((newest / "summary.json").read_text())["stages"]
    return str(next((s.get("mode") for s in stages if s.get("name") == "state"), "no state"))


def scheduled(dsn: str, tmp: Path, config: Path, rounds: int, peaks: dict[str, list[int]]
              ) -> dict[str, list[float]]:
    """A state started and proven, then incremental audits after 1% new entries (see the module
    docstring). Keys name each figure's mode as its audit reported it; ``peaks`` gets each incremental
    audit's peak RSS (KiB) under the same key."""
    state = tmp / "ledger.state"
    reports = tmp / "scheduled"
    reports.mkdir()
    times: dict[str, list[float]] = {}
    steps: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("--state --full", ("--full",)), ("--state, second", ()))
    for name, extra in steps:
        wall = run_audit(dsn, reports, config, "--state", str(state), *extra)[0]
        times[f"{name} ({last_mode(reports)})"] = [wall]
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM entries").fetchone()
        target = int(row[0]) // 100 if row else 0
        start = int(row[0]) if row else 0

        def enough() -> bool:
            now = conn.execute("SELECT count(*) FROM entries").fetchone()
            return now is not None and int(now[0]) - start >= target

        with load.posting(dsn, WRITERS):
            while not enough():
                time.sleep(0.5)
        conn.execute("VACUUM ANALYZE entries")
        added = conn.execute("SELECT count(*) FROM entries").fetchone()
    print(f"scheduled: {int(added[0]) - int(start) if added else '?':,} entries added after the state "
          "was proven")
    for rnd in range(rounds):
        shares: tuple[tuple[str, tuple[str, ...]], ...] = (
            ("share 1.0", ()), ("share 0.1", ("--verify-history-share", "0.1")))
        for name, extra in shares:
            copy = tmp / f"state-{rnd}-{len(extra)}"
            shutil.copyfile(state, copy)
            wall, peak = run_audit(dsn, reports, config, "--state", str(copy), *extra)
            key = f"{name} ({last_mode(reports)})"
            times.setdefault(key, []).append(wall)
            peaks.setdefault(key, []).append(peak)
        print(f"scheduled round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()))
    return times


def throughput(dsn: str, seconds: float) -> float:
    with load.posting(dsn, WRITERS) as counts:
        time.sleep(seconds)
    return sum(counts) / seconds


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.3f} s  ({min(values):.3f}..{max(values):.3f})"


def main() -> None:
    def baseline_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--baseline", metavar="PATH",
                            help="another verify-ledger, timed in the same rounds")
        parser.add_argument("--accounts", type=int, default=0, metavar="N",
                            help="add N user wallets of one entry each (many accounts, few entries)")

    args = arguments(__doc__.splitlines()[0], "--entries", 10_000_000, baseline_option)
    with provision(args.server or "embedded") as server, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "verifier.toml"
        config.write_text("statement_timeout_s = 3600\n[ledger]\nreconcile = []\n")  # writers move money
        with server.database("bench_ledger") as big, \
                server.database("bench_small") as small:
            built = ledger.build(big.dsn, args.entries)
            ledger.build(small.dsn, ledger.ENTRIES_MIN)
            if args.accounts:
                ledger.add_wallets(big.dsn, args.accounts)
            with psycopg.connect(big.dsn, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
                version = conn.execute("SHOW server_version").fetchone()
                size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('entries'))").fetchone()
                counts = conn.execute("SELECT (SELECT count(*) FROM entries), (SELECT count(*) FROM "
                                      "journals), (SELECT count(*) FROM accounts)").fetchone() or (0, 0, 0)
            print(f"server {version[0] if version else '?'} ({server.kind}); {counts[0]:,} entries, "
                  f"{counts[1]:,} journals, {counts[2]:,} accounts; entries with indexes "
                  f"{size[0] if size else '?'}; built in {built.duration_s:.1f} s")
            chain = Chain(big.dsn, Layout().workers)
            runs: dict[str, Any] = {
                "floor": None, "audit": lambda: run_audit(big.dsn, Path(tmp), config),
                "small": lambda: run_audit(small.dsn, Path(tmp), config),
                "naive": lambda: naive(big.dsn),
                "chain, index order": chain.index_order, "chain, sorted ranges": chain.sorted_ranges,
                "journals pass": lambda: journals_pass(big.dsn)}
            if args.baseline:
                runs["baseline"] = lambda: run_audit(big.dsn, Path(tmp), config, command=args.baseline)
                runs["baseline small"] = lambda: run_audit(small.dsn, Path(tmp), config,
                                                           command=args.baseline)
            figures: dict[str, list[float]] = {name: [] for name in runs}
            rss: dict[str, list[int]] = {"audit": [], "small": []}
            with psycopg.connect(big.dsn, autocommit=True) as conn:
                conn.execute(FLOOR_SQL).fetchall()  # warm the cache once before measuring
                runs["floor"] = lambda: conn.execute(FLOOR_SQL).fetchall()
                for rnd in range(args.rounds):
                    for name, fn in runs.items():
                        if name in rss:
                            wall, peak = fn()
                            figures[name].append(wall)
                            rss[name].append(peak)
                        else:
                            figures[name].append(timed(fn))
                    print(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in figures.items()),
                          flush=True)
            ranges = chain.sorted_ranges()
            incremental_rss: dict[str, list[int]] = {}
            incremental = scheduled(big.dsn, Path(tmp), config, args.rounds, incremental_rss)
            alone = throughput(big.dsn, WINDOW_S)
            stop = threading.Event()
            audits: list[float] = []
            failed: list[str] = []

            def audit_loop() -> None:
                while not stop.is_set():
                    try:
                        audits.append(run_audit(big.dsn, Path(tmp), config)[0])
                    except SystemExit as exc:  # a finding while writers post: a false alarm
                        failed.append(str(exc))
                        return

            auditor = threading.Thread(target=audit_loop)
            auditor.start()
            try:
                under = throughput(big.dsn, WINDOW_S)
            finally:
                stop.set()
                auditor.join()
    med = {k: statistics.median(v) for k, v in figures.items()}
    work = med["audit"] - med["small"]
    print(f"\nmedians over {args.rounds} interleaved rounds (min..max):")
    for k, v in figures.items():
        print(f"  {k:22s} {spread(v)}")
    print(f"  audit work (audit - small) {work:.3f} s; the chain pass in {ranges} account range(s)")
    print(f"audit work / floor           {work / med['floor']:.2f}  (goal <= 8, aim 5)")
    print(f"naive / audit work           {med['naive'] / work:.2f}  (goal >= 5)")
    print(f"chain: index order / sorted ranges {med['chain, index order'] / med['chain, sorted ranges']:.2f}")
    if args.baseline:
        before = med["baseline"] - med["baseline small"]
        print(f"baseline audit work {before:.3f} s; now {work:.3f} s ({before / work:.2f}x faster)")
    for name, values in incremental.items():
        inc_work = statistics.median(values) - med["small"]
        print(f"{name:28s} {spread(values)}, work {inc_work:.3f} s = {inc_work / work:.3f} of the full "
              "audit's" + ("  (goal <= 0.05 at share 0.1)" if "share 0.1" in name else ""))
    print(f"peak RSS: full {max(rss['audit']) / 1024:.1f} MiB, small {max(rss['small']) / 1024:.1f} MiB, "
          f"growth {(max(rss['audit']) - max(rss['small'])) / 1024:.1f} MiB; incremental "
          + ", ".join(f"{name} {max(peaks) / 1024:.1f} MiB" for name, peaks in incremental_rss.items()))
    print(f"writers ({WRITERS}, transfer_tokens): {alone:.0f} postings/s alone, {under:.0f}/s while "
          f"{len(audits)} audit(s) ran ({under / alone:.2f} of alone)")
    print("audits under load: " + ("every one passed" if not failed else f"FAILED: {failed[0]}"))


if __name__ == "__main__":
    main()
