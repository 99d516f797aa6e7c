"""Benchmark: the cents engine against the floor, the naive alternative, reladiff and GX.

Not a test (timings on a shared machine are noisy): run it and read the
ratios, which compare runs interleaved on one server in one go.
Usage: python scripts/bench_cents.py [--rows 5000000] [--rounds 3] [--server URL] [--currency]
       [--baseline PATH] [--no-reladiff] [--no-gx]
(without --server: an embedded server in a temporary directory).

One clean table of ROWS rows with four (decimal, cents) pairs, in a
database of its own; an empty copy of its schema in another. Each round runs,
interleaved:

- floor: one SELECT reading every money column once (sums of all eight);
- minimal exact check: one SELECT comparing every cents value with its
  decimal times 100 (what any exact per-row check must at least compute);
- verify: ``verify-cents --db`` as a subprocess, whole command, minus the
  same command on the empty copy (its fixed cost: start-up, catalog, report);
- naive: one query per check per column, as the team's verification file
  and a one-expectation-per-check suite do;
- hashdiff, joindiff: reladiff (the maintained fork of datafold's data-diff),
  each of its two algorithms diffing, by ``id``, a view of every decimal times
  100 against a view of every ``*_cents`` column (both ``numeric(24,4)``) on
  the same table: the exact comparison verify makes, as that tool makes it;
  whole command (its start-up included; one thread, its default), minus the
  same command on the empty copy's views (``--allow-empty-tables``), as for
  verify. Each run must report every row and no difference, and before the
  rounds a probe on planted differences (a cent too many, a cent too few, a
  hundredth of a cent) must find all three, or the figures are skipped.
  reladiff is never installed into this environment: it is installed on first
  use into a venv of its own under ~/.cache/verifier-bench (see
  scripts/reladiff_peer.py), and run there; where that install fails (no
  network, an incompatible release), one line says so and its figures are
  skipped. ``--no-reladiff`` skips them too.
- gx, gx_empty ("GX column-pair"): Great Expectations Core 1.x validating,
  on the same table, that each cents column equals its decimal times 100:
  one suite of one ``UnexpectedRowsExpectation`` per pair, whose query
  selects ``{batch}``'s rows where the cents are distinct from the decimal
  times 100 (exact, in ``numeric``, no ``round()``), validated on a
  whole-table batch through GX's PostgreSQL data source (SQLAlchemy over
  psycopg). Not GX's column-pair expectation proper
  (``ExpectColumnPairValuesToBeEqual``): it compares two stored columns and
  takes no expression, so it would need a derived column (a view) first;
  GX's documentation sends a SQL condition to ``UnexpectedRowsExpectation``,
  which is what a team would write (see scripts/gx_peer.py). Timed in a
  worker process of GX's own (so that GX's memory does not count towards
  verify's peak), GX imported and its context and data sources made
  beforehand: one validation (getting the batch and validating the suite),
  minus the same on the empty copy, for its work. Each run must succeed with no
  unexpected row in any pair, in ``payments`` of that database, having run
  statements; before the rounds GX must count every row of both tables, and
  a probe on the planted differences above (on a copy of 100 rows) must be
  unsuccessful with exactly the planted rows, or the figures are skipped.
  Without GX installed one line says so; ``--no-gx`` skips them too.

Medians are printed with each figure's min..max over the rounds. Also:
peak resident memory of verify-cents on the full table and on the empty
copy, and the wall time of ``verify-cents --help``.

``--currency``: the table also has a ``currency`` column (USD, EUR, JPY, KWD;
its cents follow each row's minor unit), so verify joins every row to ISO
4217's table (and reladiff's expected view multiplies by each row's minor
unit instead of 100). ``--baseline PATH``: another ``verify-cents`` (an earlier
version's, in its own environment) run in the same rounds, interleaved,
for a before/after of the verify work.
"""

from __future__ import annotations

import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from benchlib import arguments, run_measured, timed  # scripts/, beside this file
from gx_peer import load as load_gx
from psycopg import sql
from reladiff_peer import ALGORITHMS, Reladiff, install, views_sql

from verifier.scratch import provision

# The console script of this environment, as a user runs it.
VERIFY_CENTS = str(Path(sys.executable).with_name("verify-cents"))
PAIRS = ("amount", "fee", "net", "tax")
SCHEMA_SQL = """
CREATE TABLE payments (id bigint PRIMARY KEY, amount numeric(12,2), fee numeric(12,2),
  net numeric(12,2), tax numeric(14,4), amount_cents bigint, fee_cents bigint, net_cents bigint,
  tax_cents bigint)
"""
# --currency: each row in a currency; its cents in that currency's minor units (whole yen, fils).
CURRENCY_SQL = """
ALTER TABLE payments ADD COLUMN currency char(3) NOT NULL DEFAULT 'USD';
UPDATE payments SET currency = (ARRAY['USD', 'USD', 'EUR', 'JPY', 'KWD'])[1 + id %% 5];
UPDATE payments SET amount = round(amount), fee = round(fee), net = round(amount) - round(fee),
  tax = round(tax), amount_cents = round(amount), fee_cents = round(fee),
  net_cents = round(amount) - round(fee), tax_cents = round(tax) WHERE currency = 'JPY';
UPDATE payments SET amount_cents = amount * 1000, fee_cents = fee * 1000, net_cents = net * 1000,
  tax_cents = tax * 1000 WHERE currency = 'KWD';
"""
# Clean data: every cents value is exactly its decimal times 100.
FILL_SQL = """
INSERT INTO payments
SELECT g, a, f, a - f, x, (a * 100)::bigint, (f * 100)::bigint, ((a - f) * 100)::bigint, (x * 100)::bigint
FROM (SELECT g, round((random() * 1000)::numeric, 2) AS a, round((random() * 10)::numeric, 2) AS f,
             round((random() * 50)::numeric, 2) AS x
      FROM generate_series(1, %s) AS g) AS s
"""
# (Built from the constant column names above, never from input.)
FLOOR_SQL = "SELECT count(*), " + ", ".join(  # noqa: S608
    f"sum({c}), sum({c}_cents)" for c in PAIRS) + " FROM payments"
MINIMAL_SQL = "SELECT count(*), " + ", ".join(  # noqa: S608
    f"count(*) FILTER (WHERE {c}_cents IS DISTINCT FROM {c} * 100)" for c in PAIRS) + " FROM payments"
# The naive alternative: each check its own query (its own full scan).
NAIVE_CHECKS = (
    "SELECT count(*) FROM payments WHERE {x} IS NOT NULL AND {x} <> 0 AND {c} = 0",  # missing backfill
    "SELECT count(*) FROM payments WHERE {x} IS NULL AND {c} = 0",  # null coerced to zero
    "SELECT count(*) FROM payments WHERE {x} IS NOT NULL AND {c} IS NULL",  # null introduced
    "SELECT count(*) FROM payments WHERE {c} <> round({x} * 100)",  # value mismatch
    "SELECT count(*) FROM payments WHERE {x} * 100 <> trunc({x} * 100)",  # sub-cent values
    "SELECT count(*) FROM payments WHERE {c} <> 0 AND {c} = -round({x} * 100)",  # sign flip
    "SELECT count(*) FROM payments WHERE abs({c}) > abs({x}) * 1000",  # scale error
    "SELECT sum({c}) = sum(round({x} * 100)) FROM payments",  # totals
)


def run_verify(url: str, report_dir: Path, command: str = VERIFY_CENTS) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one ``verify-cents --db`` subprocess (which must pass)."""
    wall, peak, _ = run_measured([command, "--db", url, "--report-dir", str(report_dir)])
    return wall, peak


def _options(parser: Any) -> None:
    parser.add_argument("--currency", action="store_true", help="a currency column, ISO 4217 per row")
    parser.add_argument("--baseline", metavar="PATH", help="another verify-cents, timed in the same rounds")
    parser.add_argument("--no-reladiff", action="store_true", help="skip reladiff's hashdiff and joindiff")
    parser.add_argument("--no-gx", action="store_true", help="skip Great Expectations' column-pair suite")


def main() -> None:
    args = arguments(__doc__.splitlines()[0], "--rows", 5_000_000, _options)
    command = None if args.no_reladiff else install()
    peer = Reladiff(command, PAIRS) if command else None
    gx = None if args.no_gx else load_gx(PAIRS, args.currency)
    with provision(args.server or "embedded") as server, tempfile.TemporaryDirectory() as tmp:
        with server.database("bench_full") as full_db, server.database("bench_empty") as empty_db:
            for db in (full_db, empty_db):
                with psycopg.connect(db.dsn, autocommit=True) as conn:
                    conn.execute(SCHEMA_SQL)
            with psycopg.connect(full_db.dsn, autocommit=True) as conn:
                fill = timed(lambda: conn.execute(FILL_SQL, (args.rows,)))
                if args.currency:
                    with psycopg.connect(empty_db.dsn, autocommit=True) as other:
                        other.execute(CURRENCY_SQL.replace("%%", "%"))
                    conn.execute(CURRENCY_SQL.replace("%%", "%"))
                    conn.execute("VACUUM FULL payments")
                conn.execute("VACUUM ANALYZE payments")
                version = conn.execute("SHOW server_version").fetchone()
                size = conn.execute("SELECT pg_size_pretty(pg_table_size('payments'))").fetchone()
            print(f"server {version[0] if version else '?'} ({server.kind}); {args.rows:,} rows, "
                  f"{len(PAIRS)} pairs, table {size[0] if size else '?'}; filled in {fill:.1f} s")
            if peer is not None:
                for db in (full_db, empty_db):
                    with psycopg.connect(db.dsn, autocommit=True) as conn:
                        conn.execute(views_sql(PAIRS, args.currency))
                failed = peer.probe(full_db.dsn)
                if failed:
                    print(f"reladiff {peer.version}: skipped, its probe on planted differences "
                          f"failed: {failed}")
                    peer = None
                else:
                    for algorithm in ALGORITHMS:
                        line = shlex.join(peer.argv("URL", algorithm))
                        print(f"reladiff {peer.version} {algorithm}: {line}")
            if gx is not None:
                gx.check_rows(full_db.dsn, args.rows)
                gx.check_rows(empty_db.dsn, 0)
                failed = gx.probe(full_db.dsn)
                if failed:
                    print(f"GX {gx.version}: skipped, its probe on planted differences failed: {failed}")
                    gx.close()
                    gx = None
                else:
                    print(f"GX {gx.version} UnexpectedRowsExpectation, one per pair: "
                          f"{gx.queries[PAIRS[0]]}")
            help_times = [timed(lambda: subprocess.run(
                [VERIFY_CENTS, "--help"],
                check=True, stdout=subprocess.DEVNULL)) for _ in range(5)]
            figures: dict[str, list[float]] = {k: [] for k in
                                               ("floor", "minimal", "verify", "empty", "naive")}
            if args.baseline:
                figures.update(baseline=[], baseline_empty=[])
            if peer is not None:
                for algorithm in ALGORITHMS:
                    figures.update({algorithm: [], f"{algorithm}_empty": []})
            if gx is not None:
                figures.update(gx=[], gx_empty=[])
            rss: dict[str, list[int]] = {"verify": [], "empty": []}
            with psycopg.connect(full_db.dsn, autocommit=True) as conn:
                conn.execute(FLOOR_SQL).fetchall()  # warm the cache once before measuring
                for rnd in range(args.rounds):
                    figures["floor"].append(timed(lambda: conn.execute(FLOOR_SQL).fetchall()))
                    figures["minimal"].append(timed(lambda: conn.execute(MINIMAL_SQL).fetchall()))
                    wall, peak = run_verify(full_db.dsn, Path(tmp))
                    figures["verify"].append(wall)
                    rss["verify"].append(peak)
                    wall, peak = run_verify(empty_db.dsn, Path(tmp))
                    figures["empty"].append(wall)
                    rss["empty"].append(peak)
                    if args.baseline:
                        for key, db in (("baseline", full_db), ("baseline_empty", empty_db)):
                            figures[key].append(run_verify(db.dsn, Path(tmp), args.baseline)[0])

                    def naive() -> None:
                        for c in PAIRS:
                            for check in NAIVE_CHECKS:
                                conn.execute(sql.SQL(check).format(
                                    x=sql.Identifier(c), c=sql.Identifier(f"{c}_cents"))).fetchall()
                    figures["naive"].append(timed(naive))
                    if peer is not None:
                        for algorithm in ALGORITHMS:
                            figures[algorithm].append(peer.timed(full_db.dsn, algorithm, args.rows))
                            figures[f"{algorithm}_empty"].append(peer.timed(empty_db.dsn, algorithm, 0))
                    if gx is not None:
                        figures["gx"].append(gx.timed(full_db.dsn))
                        figures["gx_empty"].append(gx.timed(empty_db.dsn))
                    print(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in figures.items()))
            if gx is not None:
                gx.close()  # its pooled connections, before the databases are dropped
    med = {k: statistics.median(v) for k, v in figures.items()}
    work = med["verify"] - med["empty"]
    print("\nmedians over rounds (min..max):")
    for k, v in med.items():
        print(f"  {k:16s} {v:7.3f} s  ({min(figures[k]):.3f}..{max(figures[k]):.3f})")
    print(f"  verify work (verify - empty) {work:.3f} s")
    print(f"verify work / floor            {work / med['floor']:.2f}  (goal <= 1.5)")
    print(f"verify work / minimal exact    {work / med['minimal']:.2f}")
    print(f"minimal exact / floor          {med['minimal'] / med['floor']:.2f}")
    print(f"naive / verify work            {med['naive'] / work:.1f}  (goal >= 5; "
          f"{len(PAIRS) * len(NAIVE_CHECKS)} queries)")
    print(f"peak RSS: full {max(rss['verify']) / 1024:.1f} MiB, empty {max(rss['empty']) / 1024:.1f} MiB, "
          f"growth {(max(rss['verify']) - max(rss['empty'])) / 1024:.1f} MiB (goal < 100)")
    if peer is not None:
        for algorithm in ALGORITHMS:
            theirs = med[algorithm] - med[f"{algorithm}_empty"]
            print(f"reladiff {algorithm} / verify work {theirs / work:6.1f}  (its work {theirs:.3f} s = "
                  f"{med[algorithm]:.3f} s whole - {med[f'{algorithm}_empty']:.3f} s on the empty copy; "
                  f"its work / minimal exact {theirs / med['minimal']:.1f}; "
                  f"whole / verify whole {med[algorithm] / med['verify']:.1f})")
    if gx is not None:
        theirs = med["gx"] - med["gx_empty"]
        print(f"GX column-pair / verify work   {theirs / work:6.1f}  (its work {theirs:.3f} s = "
              f"{med['gx']:.3f} s whole - {med['gx_empty']:.3f} s on the empty copy; "
              f"its work / minimal exact {theirs / med['minimal']:.1f}; "
              f"{len(PAIRS)} expectations)")
    print(f"verify-cents --help: median {statistics.median(help_times):.3f} s over 5 (goal < 0.5)")
    if args.baseline:
        before = med["baseline"] - med["baseline_empty"]
        print(f"baseline verify work {before:.3f} s; this one's / baseline's {work / before:.3f}; "
              f"spread of verify over rounds {min(figures['verify']):.3f}..{max(figures['verify']):.3f} s, "
              f"of baseline {min(figures['baseline']):.3f}..{max(figures['baseline']):.3f} s")


if __name__ == "__main__":
    main()
