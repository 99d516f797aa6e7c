"""``verify-cents --snapshot FILE``: a snapshot restored into scratch, migrated, verified.

Flow: source (the dump, inspected) -> migration plan -> scratch server ->
restore -> inventory -> originals recorded -> migrations (traced, rule
checks) -> cents checks on the state the migrations reached -> judgement
-> the ledger, if the migrations created one (audited, then probed) ->
outputs. ``rehearse_snapshot`` creates a run folder, records every
stage, writes the outputs however the run ends, and returns the ended
``Run`` or raises a ``VerifierError`` (after writing the outputs). It
writes only to scratch databases it created and to the run folder.
``verify-cents --demo`` rehearses a generated snapshot the same way
(``verifier.jobs.demo``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from verifier import judge
from verifier.cents import catalog, engine, originals
from verifier.config import Config
from verifier.errors import UsageError
from verifier.files import LEDGER_OFFENDERS_NAME
from verifier.findings import Finding, rule
from verifier.jobs.lifecycle import finish, ledger_verdicts, load_config, new_run, preflight, recorded
from verifier.ledger import layout, probe
from verifier.ledger.audit import audit as ledger_audit
from verifier.migrate import plan, sqltext
from verifier.migrate.series import migrate_stage
from verifier.paths import project_expectations_dir, project_migrations_dir
from verifier.pg import conninfo
from verifier.pg.snapshot import configure, open_pinned, open_snapshot
from verifier.run import Run
from verifier.scratch import DEFAULT_SPEC, ScratchDatabase, ScratchServer, provision
from verifier.scratch.restore import restore
from verifier.source import dump


@dataclass(frozen=True)
class Options:
    """How a rehearsal migrates (which files, how long each may run, rule checks on or off)
    and judges (configuration file, warnings fail under ``strict``)."""

    migrations_dir: Path | None = None  # None: see migrations_directory
    migration_timeout_s: float | None = None  # None: the configuration's; 0: no limit
    check_rules: bool = True
    config_path: Path | None = None  # None: verifier.toml or pyproject.toml here, if any
    strict: bool = False
    gx: bool = False  # judge the results with the Great Expectations suites too
    expectations: Path | None = None  # the user's own suites (implies gx)
    baseline: Path | None = None  # accepted findings (rehearse_snapshot: --baseline, else the config's)

    def __post_init__(self) -> None:
        assert self.migration_timeout_s is None or self.migration_timeout_s >= 0


def migrations_directory(options: Options, config: Config, *, demo: bool = False) -> tuple[Path, str]:
    """The directory of the migrations to rehearse, and where that choice came from.

    ``--migrations DIR``; else, for the demo, the project's own migrations;
    else the configuration's ``migrations``; else ``./migrations`` when it
    exists. Raises ``UsageError`` otherwise: a rehearsal never applies
    migrations the user did not choose.
    """
    if options.migrations_dir is not None:
        return Path(options.migrations_dir), "--migrations"
    if demo:
        return project_migrations_dir(), "the demo's: the project's own migrations"
    if config.migrations is not None:
        return Path(config.migrations), f"migrations in {config.source}"
    here = Path("migrations")
    if here.is_dir():
        return here.resolve(), "./migrations"
    raise UsageError(
        f"No migrations to rehearse: there is no ./migrations in {Path.cwd()}, no --migrations DIR and "
        "no migrations key in the configuration.",
        hint="Give --migrations DIR (the directory of your migration files), or set migrations = \"DIR\" "
             "in verifier.toml ([tool.verifier] in pyproject.toml).")


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
    config, baseline = preflight(options.config_path, *([] if scratch in ("embedded", "docker")
                                                        or scratch.startswith("docker:") else [scratch]),
                                 baseline=options.baseline)
    options = dataclasses.replace(options, baseline=baseline)
    if not Path(path).exists():
        raise UsageError(f"The snapshot {path} does not exist.", hint="Give the path of a pg_dump file.")
    run = new_run("verify-cents --snapshot", report_dir)
    with recorded(run):
        config = load_config(run, config, rounding=True)
        judging = suites(options)
        info = inspect(run, Path(path))
        discovery = discover(run, options, config)
        with provision(scratch, keep=keep_scratch) as server:
            record_server(run, server)
            rehearse(run, info, server, discovery, options, config, judging)
    return run


def inspect(run: Run, path: Path) -> dump.DumpInfo:
    """The "snapshot" stage: the dump at ``path`` recognised and fingerprinted, on the record."""
    with run.stage("snapshot") as detail:
        detail["path"] = str(path)
        info = dump.inspect(path)
        detail.update(format=info.format, size_bytes=info.size_bytes)
    run.provenance.update(
        snapshot_path=str(info.path), snapshot_sha256=info.sha256, snapshot_format=info.format,
        snapshot_dumped_from=info.dumped_from, snapshot_dumped_by=info.dumped_by,
    )
    return info


def record_server(run: Run, server: ScratchServer) -> None:
    run.provenance.update(scratch_kind=server.kind, scratch_server_version=server.version)
    if server.reaped:
        run.provenance["scratch_reaped"] = list(server.reaped)


def discover(run: Run, options: Options, config: Config, *, demo: bool = False) -> plan.Discovery:
    """The "plan" stage: the migration files in order, each file's checksum on the record.

    Raises ``UsageError`` when no directory was chosen (``migrations_directory``) or it cannot be read.
    """
    with run.stage("plan") as detail:
        directory, chosen_by = migrations_directory(options, config, demo=demo)
        detail.update(directory=str(directory), chosen_by=chosen_by)
        discovery = plan.discover(directory, config.migration_order)
        detail.update(files=len(discovery.files), order=config.migration_order,
                      duplicates=discovery.duplicates,
                      unnumbered=[p.name for p in discovery.unnumbered],
                      down_files=[p.name for p in discovery.down_files])
    if discovery.unnumbered:
        run.tell(f"Not migrations (no number; migration_order = \"name\" takes them): "
                 f"{', '.join(p.name for p in discovery.unnumbered)}.")
    if discovery.down_files:
        run.tell(f"Down files, skipped: {', '.join(p.name for p in discovery.down_files)}.")
    run.provenance["migrations"] = [
        {"file": f.path.name, "version": f.version, "sha256": f.checksum} for f in discovery.files
    ]
    return discovery


def rehearse(run: Run, info: dump.DumpInfo, server: ScratchServer, discovery: plan.Discovery,
             options: Options, config: Config, judging: list[judge.Suite] | None) -> None:
    """Restore, record the originals, migrate, verify and judge in a new scratch database; end ``run``."""
    with server.database("rehearsal", sandbox=True) as db:
        with run.stage("restore") as detail, copying(run, db):
            result = restore(info, db, timeout_s=config.restore_timeout_s)
            detail.update(restore_s=round(result.duration_s, 3), jobs=result.jobs, tool=result.tool,
                          database=db.name, extensions=list(info.extensions),
                          extensions_standin=list(result.standins),
                          extensions_precreated=list(result.precreated),
                          sandbox_role=result.sandbox_role)
        record_sandbox(run, db, result.precreated)
        if result.standins:
            run.provenance["extensions_standin"] = list(result.standins)
            run.tell(f"The scratch server has no {', '.join(result.standins)}: the verifier's SQL "
                     "stand-in(s) were installed instead (see the README, Scratch servers).")
        with open_pinned(db.dsn, config, what="scratch database") as conn, \
                conninfo.reading(db.dsn, config.statement_timeout_s):
            with run.stage("inventory") as detail:
                before = catalog.table_names(conn)  # before the record: its schema does not exist yet
                tables = catalog.money_tables(conn)
                detail.update(money_tables=len(tables), money_rows=sum(t.rows for t in tables),
                              tables={f"{t.schema}.{t.table}": t.rows for t in tables})
            with run.stage("originals") as detail:
                kept = originals.record(conn, config, lambda done, total, now: run.advanced(
                    "originals", done, total, "tables", now))
                detail.update(tables=len(kept.tables), rows=kept.rows, keyless=kept.keyless)
            for table in kept.keyless:
                run.add(Finding("originals_not_recorded", "warning", table=table,
                                message=f"{table} has amounts but neither a primary key nor a unique "
                                        "NOT NULL key: its rows cannot be matched with their originals "
                                        "after the migrations, and its cents are verified against the "
                                        "decimals the migrations left."))
        given = options.migration_timeout_s
        limit = config.migration_timeout_s if given is None else given
        migrate_stage(run, db, discovery.files, timeout_s=limit or None,
                      lock_timeout_s=config.migration_lock_timeout_s, check_rules=options.check_rules,
                      limit_source="migration_timeout_s" if given is None else "--migration-timeout",
                      tracker=config.migration_tracker)
        migration_failed = any(f["rule"] == "migration_failed" for f in run.findings)
        not_null = announced_not_null(run, discovery)
        with open_snapshot(db.dsn, config) as conn:
            originals.check_unchanged(conn, kept)  # exit 2 if a migration reached our record
            followed, unmatched = originals.relocate(conn, kept)
            for lost in unmatched:
                run.add(Finding("originals_unmatched", "error", table=lost.table, count=lost.rows,
                                message=f"{lost.table}: {lost.why} ({lost.rows:,} recorded row(s) whose "
                                        "cents cannot be verified).",
                                detail={"why": lost.why, "rows_recorded": lost.rows}))
            # Renamed or moved tables are not born: their originals followed them.
            born = frozenset(catalog.table_names(conn, ours=kept.schema) - before - set(followed))
            # Without the ledger's audit (audit_in_rehearsal = false), its columns are the cents checks'.
            ledger = (ledger_verdicts(conn, db.dsn, config, "audited by this rehearsal (its ledger stages)")
                      if config.ledger.audit_in_rehearsal else {})
            engine.run_checks(run, conn, config, url=db.dsn, originals=followed,
                              required=not migration_failed, ledger=ledger, born=born, not_null=not_null)
            if judging is not None:  # table suites read the state verified, in the same snapshot,
                # as the sandbox role: GX's SQL resolves names on the table's schema, where the
                # snapshot's own functions and operators may stand in for pg_catalog's.
                judge.judge(run, judging, live=judge.Live(db.untrusted_dsn, conn, config))
        ledger_stages(run, db, config, ours=kept.schema)
    finish(run, strict=options.strict, count_in_error=True, baseline=options.baseline)


# Rows and bytes the server has copied into the database so far (PostgreSQL 15, "Progress
# Reporting", pg_stat_progress_copy): COPY statements running now, on any of the restore's jobs.
COPY_PROGRESS_SQL = """
SELECT coalesce(sum(tuples_processed), 0), coalesce(sum(bytes_processed), 0), count(*)
FROM pg_catalog.pg_stat_progress_copy WHERE datname = %s
"""


@contextlib.contextmanager
def copying(run: Run, db: ScratchDatabase, every_s: float = 0.25) -> Iterator[None]:
    """While the block runs (the restore), show the rows the COPY statements running on ``db`` have
    copied, read every ``every_s`` seconds by the scratch server's role from another session. Only
    shown; never part of the record (a reading that fails ends the showing, not the run)."""
    done = threading.Event()

    def watch() -> None:
        try:
            with conninfo.connect(db.admin_dsn, autocommit=True, what="scratch server") as conn:
                configure(conn, {"search_path": "pg_catalog, pg_temp"})
                while not done.wait(every_s):
                    rows, size, running = conn.execute(COPY_PROGRESS_SQL, (db.name,)).fetchone() or (0, 0, 0)
                    if running:
                        run.advanced("restore", 0, None, "",
                                     f"{int(rows):,} rows ({int(size) // 1024:,} KiB) in {running} COPY now")
        except Exception:  # noqa: BLE001 (progress is a courtesy: a failed reading shows nothing more)
            return

    thread = threading.Thread(target=watch, name="restore-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=2)


def announced_not_null(run: Run, discovery: plan.Discovery) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """The columns that the migrations not applied (after a failure, or the failed one) set NOT NULL
    with ALTER TABLE, per table (an unqualified table is public's): their NULL rows are what that
    migration will reject. A file that does not parse announces nothing (it failed as such)."""
    migrate = run.detail("migrate") or {}
    applied = {t["file"] for t in migrate.get("timeline", []) if t["ok"]}
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for f in discovery.files:
        if f.path.name not in migrate.get("pending", []) or f.path.name in applied:
            continue
        try:
            statements = sqltext.set_not_null(f.text.up)
        except sqltext.SqlSyntaxError:
            continue
        for s in statements:
            found.setdefault((s.schema or "public", s.table), []).append(
                (s.column, f"{f.path.name} line {s.line}, not applied"))
    return found


def record_sandbox(run: Run, db: ScratchDatabase, precreated: tuple[str, ...]) -> None:
    """On the record: which role the snapshot's and the migrations' SQL ran as, and what ran as the
    scratch server's own role instead (said on the terminal when there is no sandbox)."""
    if db.sandbox_role is not None:
        reads = ("the reader role" if db.reader_role else
                 "the scratch server's role (PostgreSQL 13 or older has no pg_read_all_data)")
        run.provenance["sandbox"] = {
            "role": db.sandbox_role,
            "runs_as_it": "the restore, the migrations, the rule checks' copies, the ledger probe, GX",
            "reader_role": db.reader_role,
            "runs_as_the_reader": f"as {reads}: the catalog, the record of the originals, the checks and "
                                  "the ledger audit (pinned sessions)",
            "runs_as_the_scratch_server_role": "creating and dropping the roles and the databases"
                                               + (f"; CREATE EXTENSION {', '.join(precreated)}" if precreated
                                                  else ""),
        }
        return
    run.provenance["sandbox"] = {"role": None, "reason": "the scratch server's role is not a superuser: it "
                                 "cannot create a role that owns only the scratch database"}
    run.tell("No sandbox: the scratch server's role is not a superuser, so the snapshot and the "
             "migrations run as that role itself, with whatever else it may do on that server "
             "(see the README, Sandbox).")


# Schemas (but the configured one, the system's and our record's) that hold every table the ledger's
# layout requires, by name: a ledger the migrations put where the configuration does not look.
ELSEWHERE_SQL = """
SELECT n.nspname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = ANY(%(tables)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname <> ALL(%(skip)s) AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
GROUP BY n.nspname HAVING count(DISTINCT c.relname) = %(count)s ORDER BY 1
"""


def _not_audited(entries: str, what: str, **detail: str) -> Finding:
    """The ``ledger_not_audited`` error of the tables whose entries table is ``entries``
    (``schema.table``): ``what`` happened and how to audit them, then how to say they are no ledger."""
    return Finding("ledger_not_audited", "error", table=entries, count=1,
                   message=f"{what}; if they are not a ledger, add \"{entries}\" to exclude "
                           f"({rule('ledger_not_audited').meaning})",
                   detail={"check": "layout", **detail, "exclude": entries})


def ledger_stages(run: Run, db: ScratchDatabase, config: Config, *, ours: str) -> None:
    """The ledger the migrations created (if they created one), audited as ``verify-ledger`` audits
    it, in the state they reached, then probed (``verifier.ledger.probe``).

    Tables named as the ledger's that are not a ledger it can read (a layout ``verify-ledger``
    would refuse with exit 2), or that are in another schema than the configured one (``ours``:
    the record of the originals, never looked at), are a ``ledger_not_audited`` error finding,
    beside the cents verdicts this rehearsal reached, unless their entries table is excluded by name.
    """
    dsn = db.dsn
    entries = config.ledger.tables["entries"]
    if not config.ledger.audit_in_rehearsal:
        run.provenance["ledger"] = "not audited: [tool.verifier.ledger] audit_in_rehearsal = false"
        return
    with open_snapshot(dsn, config) as conn:
        if not layout.present(conn, config.ledger):
            required = layout.required(config.ledger)
            tables = ", ".join(required)
            elsewhere = [str(r[0]) for r in conn.execute(ELSEWHERE_SQL, {
                "tables": required, "skip": [config.ledger.schema, ours], "count": len(required)})]
            run.provenance["ledger"] = (f"none: no ledger tables ({tables}) in schema "
                                        f"{config.ledger.schema} after the migrations")
            for schema in elsewhere:
                if config.exclusion(schema, entries) is not None:
                    continue
                run.add(_not_audited(
                    f"{schema}.{entries}", f"Tables named as the ledger's ({tables}) are in schema {schema} "
                    f"after the migrations, but the ledger is looked for in schema {config.ledger.schema}: "
                    f"set schema = \"{schema}\" in [tool.verifier.ledger] to audit them", schema=schema))
                run.provenance["ledger"] = f"not audited: the ledger's tables are in schema {schema}"
            return
        excluded = config.exclusion(config.ledger.schema, entries)
        if excluded is not None:
            run.provenance["ledger"] = f"not audited: excluded by name ({excluded!r})"
            return
        try:
            detected, convention = ledger_audit(run, conn, dsn, config, offenders=LEDGER_OFFENDERS_NAME)
        except UsageError as exc:
            run.add(_not_audited(
                f"{config.ledger.schema}.{entries}",
                f"The ledger's tables ({', '.join(layout.required(config.ledger))}) are there after the "
                f"migrations, but the audit cannot read them: {exc.message} If they are your ledger, name "
                "its tables and columns in [tool.verifier.ledger]", why=exc.message, hint=exc.hint or ""))
            run.provenance["ledger"] = f"not audited: {exc.message}"
            return
    run.provenance["ledger"] = "audited and probed after the migrations"
    probe.probe(run, db.untrusted_dsn, detected, convention)  # posts journals: the user's SQL runs
