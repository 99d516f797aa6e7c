"""The rehearsal: a snapshot restored into scratch, migrated, verified.

Flow: source (dump file | generated demo) -> scratch server -> restore ->
inventory -> originals recorded -> migration runner (traced, rule checks)
-> cents checks on the state the migrations reached -> outputs.
Each public function creates a run folder, records every stage, writes the
outputs however the run ends, and returns the ended ``Run`` or raises a
``VerifierError`` (after writing the outputs). Writes only to scratch
databases it created and to the run folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from verifier import catalog, conninfo, judge, originals, plan, rules
from verifier.checks import engine
from verifier.config import Config
from verifier.config import load as load_config
from verifier.findings import Finding
from verifier.paths import project_expectations_dir, project_migrations_dir
from verifier.run import Run, new_run, recorded
from verifier.runner import Runner
from verifier.scratch import DEFAULT_SPEC, ScratchDatabase, ScratchServer, provision
from verifier.source import dump, generate, plant
from verifier.target import open_snapshot

DEMO_SNAPSHOT_NAME = "demo-snapshot.dump"
PLANTED_NAME = "planted.json"


@dataclass(frozen=True)
class Options:
    """How a rehearsal migrates (which files, how long each may run, rule checks on or off)
    and judges (configuration file, warnings fail under ``strict``)."""

    migrations_dir: Path | None = None  # None: the project's own migrations
    migration_timeout_s: float | None = None
    check_rules: bool = True
    config_path: Path | None = None  # None: verifier.toml or pyproject.toml here, if any
    strict: bool = False
    gx: bool = False  # judge the results with the Great Expectations suites too
    expectations: Path | None = None  # the user's own suites (implies gx)

    def __post_init__(self) -> None:
        assert self.migration_timeout_s is None or self.migration_timeout_s > 0

    @property
    def directory(self) -> Path:
        return self.migrations_dir or project_migrations_dir()


def suites(options: Options, *, demo: bool = False) -> list[judge.Suite] | None:
    """The suites a rehearsal judges by (``None``: no judgement); the demo adds its own table suites."""
    if not (options.gx or options.expectations):
        return None
    mine = options.expectations
    if mine is None and demo:
        mine = project_expectations_dir() / "demo"
    return judge.load(mine)


def rehearse_snapshot(
    path: Path, *, report_dir: Path, scratch: str = DEFAULT_SPEC, keep_scratch: bool = False,
    options: Options = Options(),
) -> Run:
    """Restore the dump at ``path`` into a scratch database and rehearse there."""
    run = new_run("verify-cents --snapshot", report_dir)
    with recorded(run):
        config = _config(run, options)
        judging = suites(options)
        info = _inspect(run, Path(path))
        discovery = _discover(run, options)
        with provision(scratch, keep=keep_scratch) as server:
            _record_server(run, server)
            _rehearse(run, info, server, discovery, options, config, judging)
    return run


def demo(*, report_dir: Path, rows: int = generate.DEFAULT_ROWS,
         seed: int = generate.DEFAULT_SEED, options: Options = Options()) -> Run:
    """Generate the demo platform with planted defects, dump it, rehearse the dump (embedded)."""
    generate.plan(rows, seed)  # validate the size before starting anything
    run = new_run("verify-cents --demo", report_dir)
    with recorded(run):
        config = _config(run, options)
        config = dataclasses.replace(  # the platform's identity, once even if configured too
            config, identities=tuple(dict.fromkeys(config.identities + plant.DEMO_IDENTITIES)))
        judging = suites(options, demo=True)
        discovery = _discover(run, options)
        with provision("embedded") as server:
            _record_server(run, server)
            snapshot = run.run_dir / DEMO_SNAPSHOT_NAME
            with server.database("demo") as source:
                with run.stage("generate") as detail:
                    made = generate.generate(source.dsn, rows, seed)
                    detail.update(seed=seed, money_rows=made.plan.money_rows,
                                  generate_s=round(made.duration_s, 3),
                                  rows_per_s=round(made.rows_per_s), tables=made.plan.counts)
                with run.stage("plant") as detail:
                    planted = plant.backfill_and_plant(source.dsn)
                    plant.write_manifest(planted, run.run_dir / PLANTED_NAME)
                    detail.update(planted=len(planted), manifest=PLANTED_NAME,
                                  rules=sorted({p.rule for p in planted}))
                with run.stage("dump") as detail:
                    generate.write_snapshot(source.dsn, snapshot)
                    detail.update(path=str(snapshot), size_bytes=snapshot.stat().st_size)
            info = _inspect(run, snapshot)
            _rehearse(run, info, server, discovery, options, config, judging)
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
        made = generate.generate(source.dsn, rows, seed)
        if planted:
            plant.write_manifest(plant.backfill_and_plant(source.dsn), manifest_path(Path(out)))
        generate.write_snapshot(source.dsn, Path(out))
    return made


def manifest_path(snapshot: Path) -> Path:
    """Where make-snapshot writes what it planted in ``snapshot``."""
    return snapshot.with_name(snapshot.name + ".planted.json")


def _config(run: Run, options: Options) -> Config:
    config = load_config(options.config_path)
    run.provenance.update(rounding_mode=config.rounding, config=config.source)
    return config


def _inspect(run: Run, path: Path) -> dump.DumpInfo:
    with run.stage("snapshot") as detail:
        detail["path"] = str(path)
        info = dump.inspect(path)
        detail.update(format=info.format, size_bytes=info.size_bytes)
    run.provenance.update(
        snapshot_path=str(info.path), snapshot_sha256=info.sha256, snapshot_format=info.format,
        snapshot_dumped_from=info.dumped_from, snapshot_dumped_by=info.dumped_by,
    )
    return info


def _record_server(run: Run, server: ScratchServer) -> None:
    run.provenance.update(scratch_kind=server.kind, scratch_server_version=server.version)


def _discover(run: Run, options: Options) -> plan.Discovery:
    with run.stage("plan") as detail:
        discovery = plan.discover(options.directory)
        detail.update(directory=str(options.directory), files=len(discovery.files),
                      duplicates=discovery.duplicates,
                      unnumbered=[p.name for p in discovery.unnumbered])
    run.provenance["migrations"] = [
        {"file": f.path.name, "version": f.version, "sha256": f.checksum} for f in discovery.files
    ]
    return discovery


def _rehearse(run: Run, info: dump.DumpInfo, server: ScratchServer, discovery: plan.Discovery,
              options: Options, config: Config, judging: list[judge.Suite] | None) -> None:
    with server.database("rehearsal") as db:
        with run.stage("restore") as detail:
            result = dump.restore(info, db, timeout_s=config.restore_timeout_s)
            detail.update(restore_s=round(result.duration_s, 3), jobs=result.jobs, tool=result.tool,
                          database=db.name)
        with conninfo.connect(db.dsn, what="scratch database") as conn:
            with run.stage("inventory") as detail:
                tables = catalog.money_tables(conn)
                detail.update(money_tables=len(tables), money_rows=sum(t.rows for t in tables),
                              tables={f"{t.schema}.{t.table}": t.rows for t in tables})
            with run.stage("originals") as detail:
                kept = originals.record(conn, config)
                detail.update(tables=len(kept.tables), rows=kept.rows, keyless=kept.keyless)
        migrate(run, db, discovery, options, lock_timeout_s=config.migration_lock_timeout_s)
        migration_failed = any(f["rule"] == "migration_failed" for f in run.findings)
        with open_snapshot(db.dsn, config) as conn:
            engine.run_checks(run, conn, config, url=db.dsn, originals=kept.tables,
                              required=not migration_failed)
            if judging is not None:  # table suites read the state verified, in the same snapshot
                judge.judge(run, judging, live=judge.Live(db.dsn, conn, config))
    failing = run.failing(strict=options.strict)
    run.end("fail" if failing else "pass",
            f"{len(failing)} finding(s) fail the run." if failing else None)


def migrate(run: Run, db: ScratchDatabase, discovery: plan.Discovery, options: Options, *,
            lock_timeout_s: float | None = None) -> None:
    """Apply the pending migrations to ``db`` in order, tracing them; check the team's rules.

    Adds ``migration_failed``, ``not_idempotent``, ``down_mismatch`` and
    ``down_missing`` findings to ``run``; stops at the first failure. A lost
    connection, or a lock wait beyond ``lock_timeout_s``, raises ``VerifierError``.
    """
    with run.stage("migrate") as detail:
        with Runner(db.dsn) as runner:
            applied = runner.applied()
        todo = plan.pending(discovery.files, applied)
        detail.update(already_applied=sorted(applied), pending=[f.path.name for f in todo],
                      rule_checks="checked" if options.check_rules else "skipped (--skip-rule-checks)")
        timeline = detail.setdefault("timeline", [])
        # The state after one migration is the state before the next: read once.
        before = rules.fingerprint(db.dsn, with_data=False) if options.check_rules and todo else None
        for f in todo:
            with Runner(db.dsn, timeout_s=options.migration_timeout_s,
                        lock_timeout_s=lock_timeout_s) as runner:
                result = runner.apply(f)
            timeline.append(result.as_json())
            if result.failure is not None:
                _add(run, Finding("migration_failed", "error", migration=f.path.name,
                                  message=f"Migration failed: {result.failure.describe()}",
                                  detail={"failure": result.failure.__dict__}))
                break
            if before is not None:
                after = rules.fingerprint(db.dsn)
                for finding in (rules.check_idempotent(db, f, after, options.migration_timeout_s),
                                rules.check_down(db, f, before, options.migration_timeout_s)):
                    if finding is not None:
                        _add(run, finding)
                before = after


def _add(run: Run, finding: Finding) -> None:
    run.findings.append(finding.as_json())
