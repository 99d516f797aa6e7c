"""``verify-ledger --db URL``: the ledger's invariants audited in one snapshot, read only.

``audit_ledger`` reads the ledger of a live database the way
``verify-cents --db`` reads cents (one ``REPEATABLE READ, READ ONLY``
snapshot, ``verifier.source.live``) and audits it (``verifier.ledger.audit``),
incrementally with a state file. It never writes to the database; with a
state file it writes that file, whole, when the audit has finished.
"""

from __future__ import annotations

from pathlib import Path

from verifier.config import Config
from verifier.jobs.lifecycle import finish, load_config, new_run, preflight, recorded
from verifier.ledger.audit import Schedule
from verifier.ledger.audit import audit as audit_stages
from verifier.run import Run
from verifier.source.live import connected


def audit_ledger(url: str, *, report_dir: Path, config_path: Path | None = None, strict: bool = False,
                 schedule: Schedule | None = None, baseline: Path | None = None) -> Run:
    """Audit the ledger of the database at ``url`` in one snapshot, read only (incremental with a state)."""
    config, baseline = preflight(config_path, url, baseline=baseline)
    run = new_run("verify-ledger --db", report_dir)
    with recorded(run):
        config = load_config(run, config, rounding=False)
        audit(run, url, config, schedule)
        finish(run, strict=strict, baseline=baseline)
    return run


def audit(run: Run, url: str, config: Config, schedule: Schedule | None = None) -> None:
    """The "connect" stage and the audit's own stages of ``run``, on the database at ``url``."""
    with connected(run, url, config) as conn:
        audit_stages(run, conn, url, config, schedule)
