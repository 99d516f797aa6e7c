"""The demos: ``verify-cents --demo``, ``verify-ledger --demo`` and ``verifier make-snapshot``.

``demo`` generates the demo platform with planted defects on the embedded
server, dumps it and rehearses the dump (``verifier.jobs.rehearsal``);
``ledger_demo`` builds the demo ledger with a defect of every ledger rule
planted and audits it (``verifier.jobs.ledger_audit``); ``make_snapshot``
writes a demo snapshot for ``--snapshot``. Each writes only to the scratch
databases it created and to its run folder (or ``OUT``).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from verifier.config.ledger import Layout
from verifier.demo import generate, plant
from verifier.demo import ledger as demo_ledger
from verifier.demo.manifest import write_manifest
from verifier.jobs import baseline as baseline_
from verifier.jobs.ledger_audit import audit
from verifier.jobs.lifecycle import finish, load_config, new_run, recorded
from verifier.jobs.rehearsal import Options, discover, inspect, record_server, rehearse, suites
from verifier.ledger.audit import Schedule
from verifier.run import Run
from verifier.scratch import DEFAULT_SPEC, provision

DEMO_SNAPSHOT_NAME = "demo-snapshot.dump"
PLANTED_NAME = "planted.json"
LEDGER_STATE_NAME = "ledger.state"


def demo(*, report_dir: Path, rows: int = generate.DEFAULT_ROWS,
         seed: int = generate.DEFAULT_SEED, options: Options | None = None) -> Run:
    """Generate the demo platform with planted defects, dump it, rehearse the dump (embedded)."""
    options = options or Options()
    generate.plan(rows, seed)  # validate the size before starting anything
    run = new_run("verify-cents --demo", report_dir)
    with recorded(run):
        config = load_config(run, options.config_path, rounding=True)
        config = dataclasses.replace(  # the platform's identity, once even if configured too
            config, identities=tuple(dict.fromkeys(config.identities + plant.DEMO_IDENTITIES)))
        options = dataclasses.replace(options, baseline=baseline_.chosen(options.baseline, config))
        judging = suites(options, demo=True)
        discovery = discover(run, options, config, demo=True)
        with provision("embedded") as server:
            record_server(run, server)
            snapshot = run.run_dir / DEMO_SNAPSHOT_NAME
            with server.database("demo") as source:
                with run.stage("generate") as detail:
                    made = generate.generate(source.dsn, rows, seed)
                    detail.update(seed=seed, money_rows=made.plan.money_rows,
                                  generate_s=round(made.duration_s, 3),
                                  rows_per_s=round(made.rows_per_s), tables=made.plan.counts)
                with run.stage("plant") as detail:
                    planted = plant.backfill_and_plant(source.dsn)
                    write_manifest(planted, run.run_dir / PLANTED_NAME)
                    detail.update(planted=len(planted), manifest=PLANTED_NAME,
                                  rules=sorted({p.rule for p in planted}))
                with run.stage("dump") as detail:
                    # The owner's alone, as every file of a run folder (pg_dump keeps the mode of a
                    # file it truncates).
                    snapshot.touch(mode=0o600)
                    generate.write_snapshot(source.dsn, snapshot)
                    snapshot.chmod(0o600)
                    detail.update(path=str(snapshot), size_bytes=snapshot.stat().st_size)
            info = inspect(run, snapshot)
            rehearse(run, info, server, discovery, options, config, judging)
    return run


def make_snapshot(out: Path, *, rows: int = generate.DEFAULT_ROWS,
                  seed: int = generate.DEFAULT_SEED, scratch: str = DEFAULT_SPEC,
                  planted: bool = True) -> generate.Generated:
    """Write a demo snapshot (pg_dump custom format) to ``out`` for ``--snapshot``.

    ``planted``: backfilled by 300/301 with defects planted in known rows,
    listed in ``<out>.planted.json``; otherwise clean, before 300.
    """
    generate.plan(rows, seed)
    with provision(scratch) as server, server.database("demo") as source:
        for reaped in server.reaped:
            print(f"Removed {reaped}: an embedded server that a run killed earlier left (stopped).",
                  file=sys.stderr)
        made = generate.generate(source.dsn, rows, seed)
        if planted:
            write_manifest(plant.backfill_and_plant(source.dsn), manifest_path(Path(out)))
        generate.write_snapshot(source.dsn, Path(out))
    return made


def manifest_path(snapshot: Path) -> Path:
    """Where make-snapshot writes what it planted in ``snapshot``."""
    return snapshot.with_name(snapshot.name + ".planted.json")


def ledger_demo(*, report_dir: Path, entries: int = demo_ledger.DEFAULT_ENTRIES,
                seed: int = generate.DEFAULT_SEED, config_path: Path | None = None,
                strict: bool = False) -> Run:
    """Build the demo ledger with a defect of every rule planted (embedded server), then audit it."""
    demo_ledger.sizes(entries, 0)  # validate the size before starting anything
    run = new_run("verify-ledger --demo", report_dir)
    with recorded(run):
        config = load_config(run, config_path, rounding=False)
        if config.ledger.reconcile == Layout().reconcile:  # not configured: the demo's legacy wallets
            config = dataclasses.replace(config, ledger=dataclasses.replace(
                config.ledger, reconcile=(demo_ledger.DEMO_RECONCILE,)))
        with provision("embedded") as server, server.database("ledger_demo") as db:
            record_server(run, server)
            with run.stage("generate") as detail:
                built = demo_ledger.build(db.dsn, entries, seed)
                detail.update(seed=seed, entries=built.entries, journals=built.journals,
                              accounts=built.accounts, build_s=built.duration_s)
            # Two audits prove the clean ledger into a state file (the second settles
            # what the first saw); the audit after planting (one change to proven
            # history among the plants) reads it.
            schedule = Schedule(run.run_dir / LEDGER_STATE_NAME)
            with run.stage("prove") as detail, tempfile.TemporaryDirectory() as scratch_reports:
                for _ in range(2):
                    proving = new_run("verify-ledger --db", Path(scratch_reports))
                    audit(proving, db.dsn, config, schedule)
                    assert not proving.findings, proving.findings  # a freshly built ledger is clean
                detail.update(state=LEDGER_STATE_NAME)
            with run.stage("plant") as detail:
                planted = [*demo_ledger.plant(db.dsn), demo_ledger.tamper(db.dsn)]
                write_manifest(planted, run.run_dir / PLANTED_NAME)
                detail.update(planted=len(planted), manifest=PLANTED_NAME,
                              rules=sorted({p.rule for p in planted}))
            audit(run, db.dsn, config, schedule)
        finish(run, strict=strict)
    return run
