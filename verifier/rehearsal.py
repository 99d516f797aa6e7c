"""The rehearsal: a snapshot restored into scratch, migrated, verified.

Flow: source (dump file | generated demo) -> scratch server -> restore ->
inventory -> (migration runner and checks: later issues) -> outputs.
Each public function creates a run folder, records every stage, writes the
outputs however the run ends, and returns the ended ``Run`` or raises a
``VerifierError`` (after writing the outputs). Writes only to scratch
databases it created and to the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from verifier import catalog, conninfo, plan, rules
from verifier.errors import NotBuiltYet
from verifier.findings import Finding
from verifier.paths import project_migrations_dir
from verifier.run import Run, new_run, recorded
from verifier.runner import Runner
from verifier.scratch import DEFAULT_SPEC, ScratchDatabase, ScratchServer, provision
from verifier.source import dump, generate

DEMO_SNAPSHOT_NAME = "demo-snapshot.dump"
NOT_BUILT = (
    "The cents checks are not built yet, so the money itself was not verified; "
    "the run exits 2 (could not verify) rather than claim a pass."
)


@dataclass(frozen=True)
class Options:
    """How a rehearsal migrates: which files, how long each may run, rule checks on or off."""

    migrations_dir: Path | None = None  # None: the project's own migrations
    migration_timeout_s: float | None = None
    check_rules: bool = True

    def __post_init__(self) -> None:
        assert self.migration_timeout_s is None or self.migration_timeout_s > 0

    @property
    def directory(self) -> Path:
        return self.migrations_dir or project_migrations_dir()


def rehearse_snapshot(
    path: Path, *, report_dir: Path, scratch: str = DEFAULT_SPEC, keep_scratch: bool = False,
    options: Options = Options(),
) -> Run:
    """Restore the dump at ``path`` into a scratch database and rehearse there."""
    run = new_run("verify-cents --snapshot", report_dir)
    with recorded(run):
        info = _inspect(run, Path(path))
        discovery = _discover(run, options)
        with provision(scratch, keep=keep_scratch) as server:
            _record_server(run, server)
            _rehearse(run, info, server, discovery, options)
    return run


def demo(*, report_dir: Path, rows: int = generate.DEFAULT_ROWS,
         seed: int = generate.DEFAULT_SEED, options: Options = Options()) -> Run:
    """Generate the demo platform, dump it, and rehearse the dump on the embedded server."""
    generate.plan(rows, seed)  # validate the size before starting anything
    run = new_run("verify-cents --demo", report_dir)
    with recorded(run):
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
                with run.stage("dump") as detail:
                    generate.write_snapshot(source.dsn, snapshot)
                    detail.update(path=str(snapshot), size_bytes=snapshot.stat().st_size)
            info = _inspect(run, snapshot)
            _rehearse(run, info, server, discovery, options)
    return run


def make_snapshot(out: Path, *, rows: int = generate.DEFAULT_ROWS,
                  seed: int = generate.DEFAULT_SEED, scratch: str = DEFAULT_SPEC) -> generate.Generated:
    """Write a demo snapshot (pg_dump custom format) to ``out`` for ``--snapshot``."""
    generate.plan(rows, seed)
    with provision(scratch) as server, server.database("demo") as source:
        made = generate.generate(source.dsn, rows, seed)
        generate.write_snapshot(source.dsn, Path(out))
    return made


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
              options: Options) -> None:
    with server.database("rehearsal") as db:
        with run.stage("restore") as detail:
            result = dump.restore(info, db)
            detail.update(restore_s=round(result.duration_s, 3), jobs=result.jobs, tool=result.tool,
                          database=db.name)
        with run.stage("inventory") as detail, conninfo.connect(db.dsn, what="scratch database") as conn:
            tables = catalog.money_tables(conn)
            detail.update(
                money_tables=len(tables),
                money_rows=sum(t.rows for t in tables),
                tables={f"{t.schema}.{t.table}": t.rows for t in tables},
            )
        migrate(run, db, discovery, options)
    errors = run.failing()
    if errors:
        run.end("fail", f"{len(errors)} error finding(s); the cents checks are not built yet.")
        return
    rules_said = ("obeyed the team's rules" if options.check_rules
                  else "were not checked against the team's rules (--skip-rule-checks)")
    raise NotBuiltYet(
        f"The snapshot was restored ({len(tables)} money tables, "
        f"{sum(t.rows for t in tables):,} rows) and its pending migrations applied and "
        f"{rules_said}. {NOT_BUILT}"
    )


def migrate(run: Run, db: ScratchDatabase, discovery: plan.Discovery, options: Options) -> None:
    """Apply the pending migrations to ``db`` in order, tracing them; check the team's rules.

    Adds ``migration_failed``, ``not_idempotent``, ``down_mismatch`` and
    ``down_missing`` findings to ``run``; stops at the first failure.
    """
    with run.stage("migrate") as detail:
        with Runner(db.dsn) as runner:
            applied = runner.applied()
        todo = plan.pending(discovery.files, applied)
        detail.update(already_applied=sorted(applied), pending=[f.path.name for f in todo])
        timeline = detail.setdefault("timeline", [])
        # The state after one migration is the state before the next: read once.
        before = rules.fingerprint(db.dsn, with_data=False) if options.check_rules and todo else None
        for f in todo:
            with Runner(db.dsn, timeout_s=options.migration_timeout_s) as runner:
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
