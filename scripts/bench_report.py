"""Report size and render time: the demo's reports, and a run with many offending rows.

Usage: python scripts/bench_report.py [--offenders 100000] [--rounds 3] [--server URL]
(without --server: an embedded server in a temporary directory).

For each case it prints the size of report.html, summary.json and
offenders.csv, the time to render report.html from the run's summary in
this process (the template and charts only; median of --rounds), and,
where Chromium is installed, the time headless Chromium takes to open the
page from its file and finish loading it (median of --rounds). The
many-offenders case is one table whose every row has its cents one off:
the report's samples stay bounded while offenders.csv holds every row.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from benchlib import arguments, run_measured, timed  # scripts/, beside this file

from verifier.report.html import render_html
from verifier.scratch import provision

BIN = Path(sys.executable).parent


def browser_load_s(page: Path, rounds: int) -> float | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        times = []
        for _ in range(rounds):
            context = browser.new_context(offline=True)
            tab = context.new_page()
            start = time.perf_counter()
            tab.goto(page.as_uri(), wait_until="load")
            times.append(time.perf_counter() - start)
            context.close()
        browser.close()
    return statistics.median(times)


def measure(name: str, run_dir: Path, rounds: int) -> None:
    data = json.loads((run_dir / "summary.json").read_text())
    render = statistics.median(timed(lambda: render_html(data, ["offenders.csv"])) for _ in range(rounds))
    load = browser_load_s(run_dir / "report.html", rounds)
    sizes = {f: (run_dir / f).stat().st_size for f in ("report.html", "summary.json", "offenders.csv")}
    with (run_dir / "offenders.csv").open() as fh:
        csv_rows = sum(1 for _ in fh) - 1
    shown = sum(len(f.get("sample") or []) for f in data["findings"])
    print(f"{name}: report.html {sizes['report.html']:,} bytes, "
          f"summary.json {sizes['summary.json']:,} bytes, "
          f"offenders.csv {sizes['offenders.csv']:,} bytes ({csv_rows:,} rows; {shown:,} sample rows in the "
          f"report); render {render * 1000:.1f} ms; Chromium load "
          + (f"{load * 1000:.0f} ms" if load is not None else "not measured (no chromium)"))


def only_run(report_dir: Path) -> Path:
    [run_dir] = [p for p in report_dir.iterdir() if p.is_dir()]
    return run_dir


def main() -> None:
    args = arguments(__doc__.splitlines()[0], "--offenders", 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo"
        for command in ("verify-cents", "verify-ledger"):
            reports = demo / command
            wall, _, _ = run_measured([str(BIN / command), "--demo", "--report-dir", str(reports)], ok=(1,))
            measure(f"{command} --demo (run {wall:.1f} s)", only_run(reports), args.rounds)
        with provision(args.server or "embedded") as server, \
                server.database("bench_report") as db:
            with psycopg.connect(db.dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE tips (id bigint PRIMARY KEY, amount numeric(12,2), "
                             "amount_cents bigint)")
                # Every row one cent over: amount (i mod 10^5) / 100 + 1 dollars, cents one more.
                conn.execute("INSERT INTO tips SELECT i, (i %% 100000) / 100.0 + 1, (i %% 100000) + 101 "
                             "FROM generate_series(1, %s) i", (args.offenders,))
            reports = Path(tmp) / "many"
            argv = [str(BIN / "verify-cents"), "--db", db.dsn, "--report-dir", str(reports)]
            wall, _, _ = run_measured(argv, ok=(1,))
            measure(f"verify-cents --db, {args.offenders:,} offending rows (run {wall:.1f} s)",
                    only_run(reports), args.rounds)


if __name__ == "__main__":
    main()
