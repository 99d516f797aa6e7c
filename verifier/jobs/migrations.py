"""``verifier migrations``: status, up, down, create and validate, on the runner.

For a migrations directory in the seed's conventions. ``status``, ``up``
and ``down`` read (and the last two write) the database they are given;
writing to a database that is not one of our scratch databases needs the
caller to confirm it by name. ``create`` writes one new file from the
template; ``validate`` reads files only (``verifier.migrate.lint``). The
configuration's ``migration_order`` and ``migration_tracker`` say in which
order the files run and which table records them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from verifier.config import Config
from verifier.errors import UsageError
from verifier.migrate import plan, series
from verifier.migrate.lint import TEMPLATE, Problem, lint
from verifier.migrate.runner import MigrationResult
from verifier.pg import conninfo
from verifier.scratch.server import SCRATCH_DB_PREFIX

# What a tracker records, read without creating anything.
APPLIED_SQL = "SELECT {column}::text FROM {schema}.{table} WHERE {column} IS NOT NULL"


@dataclass(frozen=True)
class Status:
    file: plan.MigrationFile
    applied: bool


def status(directory: Path, url: str, config: Config | None = None
           ) -> tuple[plan.Discovery, list[Status], dict[str, tuple[str, ...]]]:
    """Each file of ``directory`` and whether the database at ``url`` has it (read only), and the
    numbers its tracker records once for several files (``plan.ambiguous``).

    Raises ``UsageError`` when a configured tracker does not exist (the default one may be absent:
    nothing is applied then).
    """
    config = config or Config()
    discovery = plan.discover(directory, config.migration_order)
    tracker = config.migration_tracker
    with conninfo.connect(url, what="database") as conn:
        exists = conn.execute(
            "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
            (tracker.schema, tracker.table)).fetchone()
        if not (exists and exists[0]) and tracker.configured:
            raise UsageError(f"The migration tracker {tracker.schema}.{tracker.table} does not exist in "
                             f"{conninfo.describe(url)}.",
                             hint="Check [tool.verifier.migration_tracker] in your configuration.")
        rows = conn.execute(sql.SQL(APPLIED_SQL).format(
            column=sql.Identifier(tracker.column), schema=sql.Identifier(tracker.schema),
            table=sql.Identifier(tracker.table))).fetchall() if exists and exists[0] else []
    applied = plan.recorded(str(r[0]) for r in rows)
    return (discovery, [Status(f, f.applied_in(applied, tracker.records)) for f in discovery.files],
            plan.ambiguous(discovery.files, applied, tracker.records))


def _check_write_allowed(url: str, confirm: str | None) -> None:
    dbname = conninfo.parse(url).get("dbname", "")
    if dbname.startswith(SCRATCH_DB_PREFIX) or (confirm is not None and confirm == dbname):
        return
    raise UsageError(
        f"Refusing to change {conninfo.describe(url)}: it is not a verifier scratch database.",
        hint=f"To change it anyway, repeat its name: --confirm-write {dbname or 'DBNAME'}",
    )


def up(directory: Path, url: str, *, to: str | None = None, timeout_s: float | None = None,
       confirm: str | None = None, config: Config | None = None) -> list[MigrationResult]:
    """Apply the pending files, in plan order, up to and including ``to`` (a version such as
    ``301``, or a file's stem in plain file-name order); stop at a failure."""
    _check_write_allowed(url, confirm)
    config = config or Config()
    tracker = config.migration_tracker
    discovery = plan.discover(directory, config.migration_order)
    todo = plan.pending(discovery.files, series.applied(url, tracker), tracker.records)
    if to is not None:
        todo = _up_to(discovery, todo, to)
    series.check_recordable(url, todo, tracker)
    return list(series.apply_files(url, todo, timeout_s=timeout_s, tracker=tracker))


def down(directory: Path, url: str, *, steps: int = 1, timeout_s: float | None = None,
         confirm: str | None = None, config: Config | None = None) -> list[MigrationResult]:
    """Run the down blocks of the last ``steps`` applied files, newest first."""
    assert steps >= 1
    _check_write_allowed(url, confirm)
    config = config or Config()
    tracker = config.migration_tracker
    discovery = plan.discover(directory, config.migration_order)
    applied = series.applied(url, tracker)
    done = [f for f in discovery.files if f.applied_in(applied, tracker.records)]
    return list(series.apply_files(url, reversed(done[-steps:]), direction="down", timeout_s=timeout_s,
                                   tracker=tracker))


def _up_to(discovery: plan.Discovery, todo: list[plan.MigrationFile], to: str) -> list[plan.MigrationFile]:
    """The files of ``todo`` up to and including ``--to``: a file's stem or name, or a version
    (``301``, ``127a``: in number order every file numbered up to it). Raises ``UsageError`` when it
    names no file."""
    position = {f.path: i for i, f in enumerate(discovery.files)}
    named = [f for f in discovery.files if to in (f.path.stem, f.path.name)]
    key = plan.parse_version(to)
    if not named and key is not None:
        if discovery.order == "number":
            return [f for f in todo if f.number is not None and (f.number, f.suffix) <= key]
        named = [f for f in discovery.files if (f.number, f.suffix) == key]
    if not named:
        raise UsageError(f"--to {to!r} names no migration file (give a version such as 300 or 127a, or a "
                         "file name).")
    last = max(position[f.path] for f in named)
    return [f for f in todo if position[f.path] <= last]


def create(directory: Path, name: str) -> Path:
    """Write ``NNN_name.sql`` from the seed's template (NNN: the highest number + 1)."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise UsageError(f"{name!r} does not make a file name.")
    directory.mkdir(parents=True, exist_ok=True)
    files = plan.discover(directory).files
    number = max((f.number for f in files if f.number is not None), default=0) + 1
    previous = files[-1].number_text if files else "none"
    path = directory / f"{number:03d}_{slug}.sql"
    assert not path.exists()
    path.write_text(TEMPLATE.format(stem=path.stem, dependencies=previous))
    return path


def validate(directory: Path, config: Config | None = None) -> list[Problem]:
    """Check a migrations directory without running anything (reads files only): ``lint``."""
    return lint(plan.discover(directory, (config or Config()).migration_order))
