"""A series of migrations applied in order: the one apply loop, and the rehearsal's "migrate" stage.

``apply_files(dsn, files)`` applies migration files one after another, each
on a ``Runner`` of its own that is closed before its result is handed back
(so the caller may copy the database between two files), and stops after
the first that fails. ``verifier migrations up`` and ``down``, the demo
generators and the rehearsal all apply migrations through it.

``migrate_stage`` is the rehearsal's "migrate" stage: the pending files,
traced, and after each one the team's rules checked on copies of the
scratch database (``rule_checks``). Writes only to the database it is given
(and, for the rule checks, to copies of it that it drops).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from verifier.config.migrations import DEFAULT_TRACKER, Tracker
from verifier.errors import UsageError
from verifier.findings import Finding
from verifier.migrate import plan, rule_checks
from verifier.migrate.runner import MigrationResult, Runner, StatementTrace
from verifier.run import Run
from verifier.scratch.server import ScratchDatabase


def check_recordable(dsn: str, files: Sequence[plan.MigrationFile], tracker: Tracker = DEFAULT_TRACKER
                     ) -> None:
    """Raise ``UsageError`` when ``tracker`` cannot record one of ``files`` (``Runner.check_recordable``)."""
    if files:
        with Runner(dsn, tracker=tracker) as runner:
            runner.check_recordable(files)


def applied(dsn: str, tracker: Tracker = DEFAULT_TRACKER) -> set[str]:
    """What ``tracker`` records in the database at ``dsn``, as text (the default tracker,
    schema_migrations, is created when absent). Raises ``UsageError`` for a configured tracker
    that is missing or cannot be written (``Runner.ensure_table``)."""
    with Runner(dsn, tracker=tracker) as runner:
        return runner.applied()


def apply_files(dsn: str, files: Iterable[plan.MigrationFile], *, direction: str = "up",
                timeout_s: float | None = None, lock_timeout_s: float | None = None,
                tracker: Tracker = DEFAULT_TRACKER, observer_dsn: str | None = None,
                on_statement: Callable[[plan.MigrationFile, StatementTrace], None] | None = None,
                ) -> Iterator[MigrationResult]:
    """Apply ``files`` in order (their up SQL, or their down blocks); yield each result
    (``observer_dsn``, ``on_statement``, called as each statement ends: see ``Runner``).

    Stops after the first result that failed. Raises ``UsageError`` for a
    file without a down block when ``direction`` is ``down`` (the files
    before it have run), ``DatabaseUnreachable`` or ``VerifierError`` when
    the connection is lost or a lock wait exceeds ``lock_timeout_s``.
    """
    assert direction in ("up", "down")
    for f in files:
        if direction == "down" and f.text.down is None:
            raise UsageError(f"{f.path.name} has no -- Down Migration block to run.")
        with Runner(dsn, timeout_s=timeout_s, lock_timeout_s=lock_timeout_s, tracker=tracker,
                    observer_dsn=observer_dsn, on_statement=on_statement) as runner:
            result = runner.apply(f, direction=direction)
        yield result
        if result.failure is not None:
            return


def migrate_stage(run: Run, db: ScratchDatabase, files: tuple[plan.MigrationFile, ...], *,
                  timeout_s: float | None, lock_timeout_s: float | None, check_rules: bool,
                  limit_source: str = "--migration-timeout", tracker: Tracker = DEFAULT_TRACKER) -> None:
    """Apply the pending ``files`` to ``db`` in order, tracing them; check the team's rules.

    ``files`` are in plan order; ``tracker`` says which of them the database
    already has. ``timeout_s``: each file's time limit (None: none), set by
    ``limit_source`` (stated in the stage). Adds ``migration_failed``,
    ``not_idempotent``, ``down_mismatch``, ``down_missing`` and
    ``migration_version_ambiguous`` findings to ``run``; stops at the first
    failure. Raises ``UsageError`` for a configured tracker that is missing,
    ``VerifierError`` for a lost connection or a lock wait beyond
    ``lock_timeout_s``.
    """
    with run.stage("migrate") as detail:
        # The tracker and every migration are the snapshot's and the user's SQL: run as the
        # sandbox role (ScratchDatabase.untrusted_dsn), never as the scratch server's own.
        done = applied(db.untrusted_dsn, tracker)
        todo = plan.pending(files, done, tracker.records)
        check_recordable(db.untrusted_dsn, todo, tracker)
        detail["tracker"] = f"{tracker.describe()}, records {tracker.records}"
        orphans = plan.unmatched(files, done) if tracker.records == "version" else [
            v for v in done if not any(v in (f.path.stem, f.path.name) for f in files)]
        if orphans:
            detail["recorded_without_file"] = orphans
            run.tell(f"{tracker.describe()} records {len(orphans)} value(s) that name no file here, e.g. "
                     f"{', '.join(orphans[:5])}: files deleted or renamed since they ran, or another "
                     "tracker's rules (see [migration_tracker]).")
        for version, names in plan.ambiguous(files, done, tracker.records).items():
            run.add(Finding(
                "migration_version_ambiguous", "warning", migration=names[0], count=len(names),
                message=f"{tracker.describe()} records {version} once for {', '.join(names)}: all of them "
                        "are taken as applied, as a tracker that records numbers takes them, and none is "
                        "rehearsed. If one of them never ran, record each file by its own name (its file "
                        "name without .sql) or give the files distinct numbers.",
                detail={"version": version, "files": list(names)}))
        where = f" from {files[0].path.parent}" if files else ""
        run.tell(f"Migrating{where}: {len(todo)} pending file(s), in this order: "
                 + (", ".join(f.path.name for f in todo) or "none")
                 + (f" ({len(files) - len(todo)} file(s) already applied)" if len(todo) < len(files) else "")
                 + ".")
        detail.update(already_applied=sorted(done), pending=[f.path.name for f in todo],
                      rule_checks="checked" if check_rules else "skipped (--skip-rule-checks)",
                      time_limit=(f"{timeout_s:g} s per file ({limit_source})" if timeout_s is not None
                                  else f"none ({limit_source} 0)"))
        timeline = detail.setdefault("timeline", [])
        # The state after one migration is the state before the next: read once.
        before = (rule_checks.fingerprint(db.untrusted_dsn, with_data=False, tracker=tracker)
                  if check_rules and todo else None)
        if todo:
            run.advanced("migrate", 0, len(todo), "files", now=todo[0].path.name)

        def said(f: plan.MigrationFile, trace: StatementTrace) -> None:  # --verbose: as each one ends
            run.watch.statement(f"{f.path.name}:{trace.line} {trace.duration_s:.3f} s  {trace.excerpt}")

        for count, result in enumerate(apply_files(db.untrusted_dsn, todo, timeout_s=timeout_s,
                                                  lock_timeout_s=lock_timeout_s, tracker=tracker,
                                                  observer_dsn=db.admin_dsn, on_statement=said), start=1):
            f = result.file
            timeline.append(result.as_json())
            run.advanced("migrate", count, len(todo), "files",
                         now=todo[count].path.name if count < len(todo) else "")
            if result.failure is not None:
                run.watch.statement(f"{f.path.name}:{result.failure.line} failed  {result.failure.excerpt}  "
                                    f"[{result.failure.sqlstate or '-'}] {result.failure.message}")
                run.add(Finding("migration_failed", "error", migration=f.path.name,
                                message=f"Migration failed: {result.failure.describe()}",
                                detail={"failure": result.failure.__dict__}))
                break
            if before is not None:
                after = rule_checks.fingerprint(db.untrusted_dsn, tracker=tracker)
                for finding in (rule_checks.check_idempotent(db, f, after, timeout_s, tracker),
                                rule_checks.check_down(db, f, before, timeout_s, tracker)):
                    if finding is not None:
                        run.add(finding)
                before = after
