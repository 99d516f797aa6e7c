"""Benchmark: the ledger audit against the floor, and the writers' throughput under it.

Not a test (timings on a shared machine are noisy): run it and read the
ratios, which compare runs interleaved on one server in one go.
Usage: python scripts/bench_ledger.py [--entries 10000000] [--rounds 3] [--server URL]
(without --server: an embedded server in a temporary directory).

A generated clean ledger of ENTRIES entries (``verifier.demo.ledger``) in
a database of its own, and the smallest generated ledger (1,000 entries) in
another. Each round runs, interleaved:

- floor: one SELECT reading every entry once (count and sums of its columns);
- audit: ``verify-ledger --db`` as a subprocess, whole command, minus the
  same command on the small ledger (its fixed cost: start-up, catalog, report).

Then the scheduled audit: ``--state --full`` (the full audit plus the
digests of all history), 1% more entries posted through ``transfer_tokens``,
and per round, from a copy of that state, the incremental audit re-hashing
all proven history, and one re-hashing a tenth of it
(``--verify-history-share 0.1``).

Also: peak resident memory of verify-ledger on both, and how many postings
four writers (``transfer_tokens``) complete per second alone and while audits run
back to back, on a copy of the small ledger's accounts in the big one.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from benchlib import arguments, run_measured, timed  # scripts/, beside this file

from verifier.demo import ledger, load
from verifier.scratch import provision, unique_name

VERIFY_LEDGER = str(Path(sys.executable).with_name("verify-ledger"))
FLOOR_SQL = ("SELECT count(*), sum(amount_cents), sum(balance_before_cents), sum(balance_after_cents), "
             "max(journal_id), max(account_id), max(id) FROM entries")
WRITERS = 4
WINDOW_S = 5.0


def run_audit(url: str, report_dir: Path, config: Path, *extra: str) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one ``verify-ledger --db`` subprocess (which must pass)."""
    wall, peak, _ = run_measured([VERIFY_LEDGER, "--db", url, "--report-dir", str(report_dir),
                                  "--config", str(config), *extra])
    return wall, peak


def scheduled(dsn: str, tmp: Path, config: Path, rounds: int) -> dict[str, list[float]]:
    """Full audit with a state, then incremental audits after 1% new entries (see the module docstring)."""
    state = tmp / "ledger.state"
    times: dict[str, list[float]] = {"full+state": [], "incremental": [], "incremental 0.1": []}
    times["full+state"].append(run_audit(dsn, tmp, config, "--state", str(state), "--full")[0])
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM entries").fetchone()
        target = int(row[0]) // 100 if row else 0
        start = row[0] if row else 0

        def enough() -> bool:
            now = conn.execute("SELECT count(*) FROM entries").fetchone()
            return bool(now) and int(now[0]) - int(start) >= target

        with load.posting(dsn, WRITERS):
            while not enough():
                time.sleep(0.5)
        conn.execute("VACUUM ANALYZE entries")
        added = conn.execute("SELECT count(*) FROM entries").fetchone()
    print(f"scheduled: {int(added[0]) - int(start) if added else '?':,} entries added after the full audit")
    for rnd in range(rounds):
        for name, extra in (("incremental", ()), ("incremental 0.1", ("--verify-history-share", "0.1"))):
            copy = tmp / f"state-{rnd}-{len(extra)}"
            shutil.copyfile(state, copy)
            times[name].append(run_audit(dsn, tmp, config, "--state", str(copy), *extra)[0])
        print(f"scheduled round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items() if v))
    return times


def throughput(dsn: str, seconds: float) -> float:
    with load.posting(dsn, WRITERS) as counts:
        time.sleep(seconds)
    return sum(counts) / seconds


def main() -> None:
    args = arguments(__doc__.splitlines()[0], "--entries", 10_000_000)
    with provision(args.server or "embedded") as server, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "verifier.toml"
        config.write_text("statement_timeout_s = 3600\n[ledger]\nreconcile = []\n")  # writers move money
        with server.database(unique_name("bench_ledger")) as big, \
                server.database(unique_name("bench_small")) as small:
            built = ledger.build(big.dsn, args.entries)
            ledger.build(small.dsn, ledger.ENTRIES_MIN)
            with psycopg.connect(big.dsn, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
                version = conn.execute("SHOW server_version").fetchone()
                size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('entries'))").fetchone()
            print(f"server {version[0] if version else '?'} ({server.kind}); {built.entries:,} entries, "
                  f"{built.journals:,} journals, {built.accounts:,} accounts; entries with indexes "
                  f"{size[0] if size else '?'}; built in {built.duration_s:.1f} s")
            figures: dict[str, list[float]] = {"floor": [], "audit": [], "small": []}
            rss: dict[str, list[int]] = {"audit": [], "small": []}
            with psycopg.connect(big.dsn, autocommit=True) as conn:
                conn.execute(FLOOR_SQL).fetchall()  # warm the cache once before measuring
                for rnd in range(args.rounds):
                    figures["floor"].append(timed(lambda: conn.execute(FLOOR_SQL).fetchall()))
                    for name, dsn in (("audit", big.dsn), ("small", small.dsn)):
                        wall, peak = run_audit(dsn, Path(tmp), config)
                        figures[name].append(wall)
                        rss[name].append(peak)
                    print(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in figures.items()))
            incremental = scheduled(big.dsn, Path(tmp), config, args.rounds)
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
    print("\nmedians over rounds:")
    for k, v in med.items():
        print(f"  {k:6s} {v:8.3f} s")
    print(f"  audit work (audit - small) {work:.3f} s")
    print(f"audit work / floor           {work / med['floor']:.2f}  (goal <= 3)")
    for name, values in incremental.items():
        inc_work = statistics.median(values) - med["small"]
        goal = "  (goal <= 0.10)" if name.startswith("incremental") else ""
        print(f"{name:16s} {statistics.median(values):8.3f} s, work {inc_work:.3f} s = "
              f"{inc_work / work:.3f} of the full audit's work{goal}")
    print(f"peak RSS: full {max(rss['audit']) / 1024:.1f} MiB, small {max(rss['small']) / 1024:.1f} MiB, "
          f"growth {(max(rss['audit']) - max(rss['small'])) / 1024:.1f} MiB")
    print(f"writers ({WRITERS}, transfer_tokens): {alone:.0f} postings/s alone, {under:.0f}/s while "
          f"{len(audits)} audit(s) ran ({under / alone:.2f} of alone)")
    print("audits under load: " + ("every one passed" if not failed else f"FAILED: {failed[0]}"))


if __name__ == "__main__":
    main()
