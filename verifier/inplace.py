"""Verification of a live database in place (read only).

``verify_cents`` opens one connection to the target, in a single
``REPEATABLE READ, READ ONLY`` transaction with statement and lock
timeouts, records which snapshot and WAL position it read, discovers the
(decimal, cents) pairs and verifies every row of every pair. It never
writes to the target: a read-only transaction cannot, and the role may be
one that can only SELECT. ``audit_ledger`` audits the double-entry
ledger's invariants the same way (``verifier.ledger.audit``); ``ledger_demo``
builds a demo ledger with planted defects on the embedded server and audits it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

from verifier import conninfo, judge
from verifier.checks import engine
from verifier.config import Config
from verifier.config import load as load_config
from verifier.ledger import audit
from verifier.run import Run, new_run, recorded
from verifier.scratch import provision
from verifier.source import generate, ledger
from verifier.target import open_snapshot, probe

LEDGER_PLANTED_NAME = "planted.json"
LEDGER_STATE_NAME = "ledger.state"


@contextlib.contextmanager
def _target(run: Run, url: str, config: Config) -> Iterator[psycopg.Connection]:
    """The "connect" stage: one read-only snapshot of ``url``, recorded in ``run``'s provenance."""
    with run.stage("connect") as detail:
        detail["target"] = conninfo.describe(url)
        conn = open_snapshot(url, config)
    with conn:
        probe(run, conn, url)
        yield conn


def verify_cents(url: str, *, report_dir: Path, config_path: Path | None = None,
                 strict: bool = False, gx: bool = False, expectations: Path | None = None) -> Run:
    """Verify every (decimal, cents) pair of the database at ``url``, in place.

    With ``gx`` (or a directory of the user's own ``expectations``), GX suites judge the
    results and the live tables, in the same snapshot.
    """
    run = new_run("verify-cents --db", report_dir)
    with recorded(run):
        config = load_config(config_path)
        run.provenance.update(rounding_mode=config.rounding, config=config.source)
        judging = judge.load(expectations) if gx or expectations else None
        with _target(run, url, config) as conn:
            engine.run_checks(run, conn, config, url=url)
            if judging is not None:
                judge.judge(run, judging, live=judge.Live(url, conn, config))
        run.end("fail" if run.failing(strict=strict) else "pass")
    return run


def audit_ledger(url: str, *, report_dir: Path, config_path: Path | None = None, strict: bool = False,
                 schedule: audit.Schedule | None = None) -> Run:
    """Audit the ledger of the database at ``url`` in one snapshot, read only (incremental with a state)."""
    run = new_run("verify-ledger --db", report_dir)
    with recorded(run):
        config = load_config(config_path)
        run.provenance.update(config=config.source)
        _audit(run, url, config, schedule)
        run.end("fail" if run.failing(strict=strict) else "pass")
    return run


def _audit(run: Run, url: str, config: Config, schedule: audit.Schedule | None = None) -> None:
    with _target(run, url, config) as conn:
        audit.audit(run, conn, url, config, schedule)


def ledger_demo(*, report_dir: Path, entries: int = ledger.DEFAULT_ENTRIES, seed: int = generate.DEFAULT_SEED,
                config_path: Path | None = None, strict: bool = False) -> Run:
    """Build the demo ledger with a defect of every rule planted (embedded server), then audit it."""
    ledger.sizes(entries, 0)  # validate the size before starting anything
    run = new_run("verify-ledger --demo", report_dir)
    with recorded(run):
        config = load_config(config_path)
        run.provenance.update(config=config.source)
        with provision("embedded") as server, server.database("ledger_demo") as db:
            with run.stage("generate") as detail:
                built = ledger.build(db.dsn, entries, seed)
                detail.update(seed=seed, entries=built.entries, journals=built.journals,
                              accounts=built.accounts, build_s=built.duration_s)
            # Two audits prove the clean ledger into a state file (the second settles
            # what the first saw); the audit after planting (one change to proven
            # history among the plants) reads it.
            schedule = audit.Schedule(run.run_dir / LEDGER_STATE_NAME)
            with run.stage("prove") as detail, tempfile.TemporaryDirectory() as scratch_reports:
                for _ in range(2):
                    proving = new_run("verify-ledger --db", Path(scratch_reports))
                    _audit(proving, db.dsn, config, schedule)
                    assert not proving.findings, proving.findings  # a freshly built ledger is clean
                detail.update(state=LEDGER_STATE_NAME)
            with run.stage("plant") as detail:
                planted = [*ledger.plant(db.dsn), ledger.tamper(db.dsn)]
                ledger.write_manifest(planted, run.run_dir / LEDGER_PLANTED_NAME)
                detail.update(planted=len(planted), manifest=LEDGER_PLANTED_NAME,
                              rules=sorted({p.rule for p in planted}))
            _audit(run, db.dsn, config, schedule)
        run.end("fail" if run.failing(strict=strict) else "pass")
    return run
