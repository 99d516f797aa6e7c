"""``verify-cents --db URL``: every cent of a live database verified in place, read only.

``verify_cents`` opens one connection to the target, in a single
``REPEATABLE READ, READ ONLY`` transaction with statement and lock
timeouts, records which snapshot and WAL position it read
(``verifier.source.live``), discovers the (decimal, cents) pairs and
verifies every row of every pair (``verifier.cents.engine``). It never
writes to the target: a read-only transaction cannot, and the role may be
one that can only SELECT.
"""

from __future__ import annotations

from pathlib import Path

from verifier import judge
from verifier.cents import engine
from verifier.jobs.lifecycle import finish, ledger_verdicts, load_config, new_run, preflight, recorded
from verifier.run import Run
from verifier.source.live import connected


def verify_cents(url: str, *, report_dir: Path, config_path: Path | None = None,
                 strict: bool = False, gx: bool = False, expectations: Path | None = None,
                 baseline: Path | None = None) -> Run:
    """Verify every (decimal, cents) pair of the database at ``url``, in place.

    With ``gx`` (or a directory of the user's own ``expectations``), GX suites judge the
    results and the live tables, in the same snapshot.
    """
    config, baseline = preflight(config_path, url, baseline=baseline)
    run = new_run("verify-cents --db", report_dir)
    with recorded(run):
        config = load_config(run, config, rounding=True)
        judging = judge.load(expectations) if gx or expectations else None
        with connected(run, url, config) as conn:
            ledger = ledger_verdicts(conn, url, config, "verify-ledger audits it, not verify-cents")
            engine.run_checks(run, conn, config, url=url, ledger=ledger)
            if judging is not None:
                judge.judge(run, judging, live=judge.Live(url, conn, config))
        finish(run, strict=strict, baseline=baseline)
    return run
