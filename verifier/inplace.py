"""Verification of a live database in place (read only).

``verify_cents`` and ``audit_ledger`` open one read-only connection to the
target, record its identity, and stop: the cents engine and the ledger
audit are later issues. They raise ``NotBuiltYet`` (exit 2) so that no run
reports a pass it has not earned. They never write to the target.
"""

from __future__ import annotations

from pathlib import Path

from verifier import conninfo
from verifier.errors import NotBuiltYet
from verifier.run import Run, new_run, recorded


def _probe(run: Run, url: str) -> None:
    with run.stage("connect") as detail:
        detail["target"] = conninfo.describe(url)
        with conninfo.connect(url, what="target database") as conn:
            conn.read_only = True
            row = conn.execute("SELECT current_setting('server_version')").fetchone()
            assert row is not None
            run.provenance.update(target=conninfo.describe(url), target_server_version=row[0])


def verify_cents(url: str, *, report_dir: Path) -> Run:
    run = new_run("verify-cents --db", report_dir)
    with recorded(run):
        _probe(run, url)
        raise NotBuiltYet("The target is reachable, but the cents engine is not built yet; "
                          "nothing was verified (exit 2).")
    return run


def audit_ledger(url: str, *, report_dir: Path) -> Run:
    run = new_run("verify-ledger --db", report_dir)
    with recorded(run):
        _probe(run, url)
        raise NotBuiltYet("The target is reachable, but the ledger audit is not built yet; "
                          "nothing was verified (exit 2).")
    return run
