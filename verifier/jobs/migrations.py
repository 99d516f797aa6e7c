"""``verifier migrations``: status, up, down, create and validate, on the runner.

For a migrations directory in the seed's conventions. ``status``, ``up``
and ``down`` read (and the last two write) the database they are given;
writing to a database that is not one of our scratch databases needs the
caller to confirm it by name. ``create`` writes one new file from the
template; ``validate`` reads files only (``verifier.migrate.lint``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from verifier.errors import UsageError
from verifier.migrate import plan, series
from verifier.migrate.lint import TEMPLATE, Problem, lint
from verifier.migrate.runner import MIGRATIONS_TABLE, MigrationResult
from verifier.pg import conninfo
from verifier.scratch.server import SCRATCH_DB_PREFIX

# The versions a database records, read without creating anything.
APPLIED_SQL = "SELECT version::text FROM {}"


@dataclass(frozen=True)
class Status:
    file: plan.MigrationFile
    applied: bool


def status(directory: Path, url: str) -> tuple[plan.Discovery, list[Status]]:
    """Each file of ``directory`` and whether the database at ``url`` has it (read only)."""
    discovery = plan.discover(directory)
    with conninfo.connect(url, what="database") as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (MIGRATIONS_TABLE,)).fetchone()
        rows = conn.execute(sql.SQL(APPLIED_SQL).format(sql.Identifier(MIGRATIONS_TABLE))).fetchall() if (
            exists and exists[0]) else []
    applied = {str(r[0]) for r in rows}
    plan.pending(discovery.files, applied)  # a shared number recorded once is ambiguous: UsageError
    return discovery, [Status(f, f.applied_in(applied)) for f in discovery.files]


def _check_write_allowed(url: str, confirm: str | None) -> None:
    dbname = conninfo.parse(url).get("dbname", "")
    if dbname.startswith(SCRATCH_DB_PREFIX) or (confirm is not None and confirm == dbname):
        return
    raise UsageError(
        f"Refusing to change {conninfo.describe(url)}: it is not a verifier scratch database.",
        hint=f"To change it anyway, repeat its name: --confirm-write {dbname or 'DBNAME'}",
    )


def up(directory: Path, url: str, *, to: str | None = None, timeout_s: float | None = None,
       confirm: str | None = None) -> list[MigrationResult]:
    """Apply the pending files (up to and including version ``to``); stop at a failure."""
    _check_write_allowed(url, confirm)
    discovery = plan.discover(directory)
    todo = [f for f in plan.pending(discovery.files, series.applied(url))  # in plan order
            if to is None or (f.number, f.suffix) <= _version_key(to)]
    return list(series.apply_files(url, todo, timeout_s=timeout_s))


def down(directory: Path, url: str, *, steps: int = 1, timeout_s: float | None = None,
         confirm: str | None = None) -> list[MigrationResult]:
    """Run the down blocks of the last ``steps`` applied files, newest first."""
    assert steps >= 1
    _check_write_allowed(url, confirm)
    discovery = plan.discover(directory)
    applied = series.applied(url)
    done = [f for f in discovery.files if f.applied_in(applied)]
    return list(series.apply_files(url, reversed(done[-steps:]), direction="down", timeout_s=timeout_s))


def _version_key(version: str) -> tuple[int, str]:
    key = plan.parse_version(version)
    if key is None:
        raise UsageError(f"--to {version!r} is not a migration version such as 300 or 127a.")
    return key


def create(directory: Path, name: str) -> Path:
    """Write ``NNN_name.sql`` from the seed's template (NNN: the highest number + 1)."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not slug:
        raise UsageError(f"{name!r} does not make a file name.")
    directory.mkdir(parents=True, exist_ok=True)
    files = plan.discover(directory).files
    number = max((f.number for f in files), default=0) + 1
    previous = f"{files[-1].number:03d}{files[-1].suffix}" if files else "none"
    path = directory / f"{number:03d}_{slug}.sql"
    assert not path.exists()
    path.write_text(TEMPLATE.format(stem=path.stem, dependencies=previous))
    return path


def validate(directory: Path) -> list[Problem]:
    """Check a migrations directory without running anything (reads files only): ``lint``."""
    return lint(plan.discover(directory))
