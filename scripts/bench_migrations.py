"""Benchmark: migrations 300 and 301 on a generated platform, and the runner's overhead.

Not a test (timings on a shared machine are noisy): run it and read the
figures. Usage: python scripts/bench_migrations.py [--rows 1000000] [--statements 2000]

1. Generates ROWS money rows on an embedded server, applies 001..301 with
   the traced runner, and prints each migration's duration and its locks
   (the longest held per mode and table).
2. Runner overhead per statement: the same N trivial statements run by the
   runner and by a bare psycopg loop on one connection, interleaved three
   times; overhead = (runner - bare) / N, inside a BEGIN block and standalone.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from verifier.demo import generate
from verifier.migrate.plan import discover
from verifier.migrate.runner import Runner
from verifier.scratch import provision


def migrations_profile(dsn: str, rows: int) -> None:
    made = generate.generate(dsn, rows=rows, seed=42)
    print(f"generated {made.plan.money_rows:,} money rows in {made.duration_s:.1f} s")
    files = {f.version: f for f in discover(Path(__file__).parent.parent / "migrations").files}
    with Runner(dsn) as runner:
        runner.applied()
        for version in ("300", "301"):
            result = runner.apply(files[version])
            assert result.failure is None, result.failure
            print(f"\n{files[version].path.name}: {result.duration_s:.2f} s, "
                  f"{len(result.statements)} statements")
            longest: dict[tuple[str, str], float] = {}
            for lock in result.locks:
                key = (lock.mode, lock.relation)
                longest[key] = max(longest.get(key, 0.0), lock.held_s)
            by_mode: dict[str, list[float]] = {}
            for (mode, _), held in longest.items():
                by_mode.setdefault(mode, []).append(held)
            for mode, helds in sorted(by_mode.items()):
                print(f"  {mode:26s} on {len(helds):2d} tables, longest {max(helds) * 1000:8.1f} ms, "
                      f"median {statistics.median(helds) * 1000:7.1f} ms")
            slow = sorted(result.statements, key=lambda s: -s.duration_s)[:3]
            for s in slow:
                print(f"  slowest: line {s.line:3d} {s.duration_s:6.2f} s  {s.excerpt[:70]}")


def runner_overhead(dsn: str, n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        block = Path(tmp) / "900_block.sql"
        block.write_text("BEGIN;\n" + "SELECT 1;\n" * n + "COMMIT;\n")
        alone = Path(tmp) / "901_alone.sql"
        alone.write_text("SELECT 1;\n" * n)
        found = {f.path.name: f for f in discover(Path(tmp)).files}
        runs: dict[str, list[float]] = {"runner, in BEGIN block": [], "runner, standalone": [],
                                        "bare psycopg loop": []}
        with Runner(dsn) as runner, psycopg.connect(dsn, autocommit=True) as bare:
            for _ in range(3):
                t0 = time.perf_counter()
                runner.apply(found["900_block.sql"], record=False)
                runs["runner, in BEGIN block"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                runner.apply(found["901_alone.sql"], record=False)
                runs["runner, standalone"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for _ in range(n):
                    bare.execute("SELECT 1", prepare=False)
                runs["bare psycopg loop"].append(time.perf_counter() - t0)
    floor = min(runs["bare psycopg loop"])
    print(f"\nrunner overhead, {n} trivial statements, best of 3 interleaved runs:")
    for name, times in runs.items():
        best = min(times)
        print(f"  {name:24s} {best * 1e3:8.1f} ms  {best / n * 1e6:7.1f} us/statement  "
              f"overhead {(best - floor) / n * 1e6:7.1f} us/statement")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--statements", type=int, default=2_000)
    args = parser.parse_args()
    with provision("embedded") as server, server.database("bench") as db:
        print(f"embedded PostgreSQL {server.version}")
        migrations_profile(db.dsn, args.rows)
        runner_overhead(db.dsn, args.statements)


if __name__ == "__main__":
    main()
