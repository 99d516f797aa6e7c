"""The rehearsal: a snapshot restored into scratch, migrated, verified.

Flow: source (dump file | generated demo) -> scratch server -> restore ->
inventory -> (migration runner and checks: later issues) -> outputs.
Each public function creates a run folder, records every stage, writes the
outputs however the run ends, and returns the ended ``Run`` or raises a
``VerifierError`` (after writing the outputs). Writes only to scratch
databases it created and to the run folder.
"""

from __future__ import annotations

from pathlib import Path

from verifier import catalog, conninfo
from verifier.errors import NotBuiltYet
from verifier.run import Run, new_run, recorded
from verifier.scratch import DEFAULT_SPEC, ScratchServer, provision
from verifier.source import dump, generate

DEMO_SNAPSHOT_NAME = "demo-snapshot.dump"
NOT_BUILT = (
    "The migration runner and the cents checks are not built yet, so this run "
    "verified nothing; it exits 2 (could not verify) rather than claim a pass."
)


def rehearse_snapshot(
    path: Path, *, report_dir: Path, scratch: str = DEFAULT_SPEC, keep_scratch: bool = False
) -> Run:
    """Restore the dump at ``path`` into a scratch database and rehearse there."""
    run = new_run("verify-cents --snapshot", report_dir)
    with recorded(run):
        info = _inspect(run, Path(path))
        with provision(scratch, keep=keep_scratch) as server:
            _record_server(run, server)
            _rehearse(run, info, server)
    return run


def demo(*, report_dir: Path, rows: int = generate.DEFAULT_ROWS,
         seed: int = generate.DEFAULT_SEED) -> Run:
    """Generate the demo platform, dump it, and rehearse the dump on the embedded server."""
    generate.plan(rows, seed)  # validate the size before starting anything
    run = new_run("verify-cents --demo", report_dir)
    with recorded(run):
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
            _rehearse(run, info, server)
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


def _rehearse(run: Run, info: dump.DumpInfo, server: ScratchServer) -> None:
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
        raise NotBuiltYet(
            f"The snapshot was restored ({len(tables)} money tables, "
            f"{sum(t.rows for t in tables):,} rows). {NOT_BUILT}"
        )
