"""Benchmark: what Great Expectations costs on a live table, beside the cents engine.

Not a test (timings on a shared machine are noisy): run it and read the
figures, which come from runs interleaved on one server in one go.
Usage: python scripts/bench_gx.py [--rows 2000000] [--rounds 3] [--server URL]
(without --server: an embedded server in a temporary directory).

One table of ROWS rows with one (decimal, cents) pair, a few negative
cents planted; each round runs, interleaved, ``verify-cents --db``:

- without GX (the engine alone: its verify stage);
- with ``--gx`` (GX's fixed cost: import, context, the built-in suite);
- with ``--expectations DIR``, a suite of three expectations (not null,
  between, unique) on the live table: what the judge stage adds, and how
  many statements and rows GX's SQL pushdown used.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from benchlib import arguments, run_measured  # scripts/, beside this file

from verifier.scratch import provision

VERIFY_CENTS = str(Path(sys.executable).with_name("verify-cents"))
FILL_SQL = """
CREATE TABLE payments (id bigint PRIMARY KEY, amount numeric(12,2), amount_cents bigint);
INSERT INTO payments SELECT g, (g % 100000) / 100.0, g % 100000 FROM generate_series(1, %(rows)s) g;
UPDATE payments SET amount = -1.00, amount_cents = -100 WHERE id % 100000 = 7;
"""
SUITE = {"name": "payments_live", "meta": {"target": "table", "table": "payments"}, "expectations": [
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "amount_cents"}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "amount_cents", "min_value": 0}},
    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}},
]}


def stages(url: str, report_dir: Path, *extra: str) -> dict[str, dict[str, Any]]:
    """The stages of one ``verify-cents --db`` run (exit 0, or 1 when the suite finds the negatives)."""
    run_measured([VERIFY_CENTS, "--db", url, "--report-dir", str(report_dir), *extra], ok=(0, 1))
    [summary] = report_dir.glob("*/summary.json")
    return {s["name"]: s for s in json.loads(summary.read_text())["stages"]}


def main() -> None:
    args = arguments(__doc__.splitlines()[0], "--rows", 2_000_000)
    with provision(args.server or "embedded") as server, tempfile.TemporaryDirectory() as tmp:
        suites = Path(tmp) / "suites"
        suites.mkdir()
        (suites / "payments_live.json").write_text(json.dumps(SUITE))
        with server.database("bench_gx") as db:
            with psycopg.connect(db.dsn, autocommit=True) as conn:
                conn.execute(FILL_SQL.replace("%(rows)s", str(int(args.rows))))
                conn.execute("VACUUM ANALYZE payments")
                version = conn.execute("SHOW server_version").fetchone()
            print(f"server {version[0] if version else '?'} ({server.kind}); {args.rows:,} rows")
            figures: dict[str, list[float]] = {"engine": [], "gx_fixed": [], "gx_suite": []}
            live: dict[str, int] = {}
            for i in range(args.rounds):
                plain = stages(db.dsn, Path(tmp) / f"plain{i}")
                builtin = stages(db.dsn, Path(tmp) / f"builtin{i}", "--gx")
                mine = stages(db.dsn, Path(tmp) / f"mine{i}", "--expectations", str(suites))
                figures["engine"].append(plain["verify"]["duration_s"])
                figures["gx_fixed"].append(builtin["judge"]["duration_s"])
                figures["gx_suite"].append(mine["judge"]["duration_s"])
                live = mine["judge"]["live"]
                failed = [e for e in mine["judge"]["expectations"] if not e["success"]]
                print(f"round {i + 1}: engine verify {figures['engine'][-1]:.3f} s, judge with built-ins "
                      f"{figures['gx_fixed'][-1]:.3f} s, judge with the table suite "
                      f"{figures['gx_suite'][-1]:.3f} s ({len(failed)} expectation(s) failed)")
    med = {k: statistics.median(v) for k, v in figures.items()}
    print("\nmedians over rounds:")
    print(f"  engine verify stage             {med['engine']:.3f} s")
    print(f"  GX fixed cost (built-in suite)  {med['gx_fixed']:.3f} s")
    print(f"  table suite adds                {med['gx_suite'] - med['gx_fixed']:.3f} s "
          f"({len(SUITE['expectations'])} expectations)")
    print(f"  GX read: {live.get('statements')} statements, {live.get('transactions')} transactions, "
          f"{live.get('rows_fetched')} rows fetched for {args.rows:,} rows judged")


if __name__ == "__main__":
    main()
