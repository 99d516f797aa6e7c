"""Migration housekeeping on the runner: status, up, down, create, validate.

For a migrations directory in the seed's conventions. ``status``, ``up``
and ``down`` read (and the last two write) the database they are given;
writing to a database that is not one of our scratch databases needs the
caller to confirm it by name. ``create`` writes one new file; ``validate``
reads files only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pglast import enums

from verifier import conninfo, plan
from verifier.errors import UsageError
from verifier.runner import MigrationResult, Runner
from verifier.scratch import SCRATCH_DB_PREFIX
from verifier.sqltext import SqlSyntaxError, parse_statements

TEMPLATE = """-- Migration: {stem}
-- Description: What this migration does and why
-- Dependencies: {dependencies}

BEGIN;

-- Up Migration
CREATE TABLE IF NOT EXISTS example_table (
  id BIGSERIAL PRIMARY KEY,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

COMMIT;

-- Down Migration (for reference)
-- BEGIN;
-- DROP TABLE IF EXISTS example_table;
-- COMMIT;
"""


@dataclass(frozen=True)
class Status:
    file: plan.MigrationFile
    applied: bool


def status(directory: Path, url: str) -> tuple[plan.Discovery, list[Status]]:
    """Each file of ``directory`` and whether the database at ``url`` has it (read only)."""
    discovery = plan.discover(directory)
    with conninfo.connect(url, what="database") as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        rows = conn.execute("SELECT version::text FROM schema_migrations").fetchall() if (
            exists and exists[0]) else []
    applied = {str(r[0]) for r in rows}
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
    results = []
    with Runner(url, timeout_s=timeout_s) as runner:
        for f in plan.pending(discovery.files, runner.applied()):
            if to is not None and (f.number, f.suffix) > _version_key(to):
                break
            results.append(runner.apply(f))
            if results[-1].failure is not None:
                break
    return results


def down(directory: Path, url: str, *, steps: int = 1, timeout_s: float | None = None,
         confirm: str | None = None) -> list[MigrationResult]:
    """Run the down blocks of the last ``steps`` applied files, newest first."""
    assert steps >= 1
    _check_write_allowed(url, confirm)
    discovery = plan.discover(directory)
    results = []
    with Runner(url, timeout_s=timeout_s) as runner:
        applied = runner.applied()
        done = [f for f in discovery.files if f.applied_in(applied)]
        for f in reversed(done[-steps:]):
            if f.text.down is None:
                raise UsageError(f"{f.path.name} has no -- Down Migration block to run.")
            results.append(runner.apply(f, direction="down"))
            if results[-1].failure is not None:
                break
    return results


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


@dataclass(frozen=True)
class Problem:
    severity: str  # error | warning
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{self.severity}: {where}: {self.message}"


def validate(directory: Path) -> list[Problem]:
    """Check a migrations directory without running anything (reads files only)."""
    discovery = plan.discover(directory)
    problems: list[Problem] = []
    for number, names in discovery.duplicates.items():
        problems.append(Problem("warning", names[0], 0,
                                f"number {number} is shared by {', '.join(names)}"))
    for path in discovery.unnumbered:
        problems.append(Problem("warning", path.name, 0, "not named NNN_name.sql: the runner skips it"))
    for f, dep in plan.missing_dependencies(discovery.files):
        problems.append(Problem("error", f.path.name, 0,
                                f"depends on {dep}, which no earlier migration provides"))
    for f in discovery.files:
        for field in ("migration", "description", "dependencies"):
            if field not in f.text.header:
                problems.append(Problem("warning", f.path.name, 1, f"header has no '-- {field.title()}:'"))
        problems += _check_sql(f.path.name, f.text.up, 1)
        if f.text.down is None:
            problems.append(Problem("warning", f.path.name, 0, "no -- Down Migration block"))
        else:
            problems += _check_sql(f.path.name, f.text.down, f.text.down_first_line, down=True)
    return problems


def _check_sql(name: str, text: str, first_line: int, *, down: bool = False) -> list[Problem]:
    part = "down block" if down else "SQL"
    try:
        parsed = parse_statements(text, first_line=first_line)
    except SqlSyntaxError as exc:
        return [Problem("error", name, exc.line, f"invalid {part}: {exc}")]
    problems = []
    in_block = False
    for stmt, node in parsed:
        if stmt.no_transaction and in_block:
            problems.append(Problem("error", name, stmt.line,
                                    f"{stmt.node} cannot run inside a transaction block"))
        in_block = (in_block or stmt.opens_transaction) and not stmt.closes_transaction
        if not down:
            reason = _not_idempotent(node)
            if reason:
                problems.append(Problem("warning", name, stmt.line, f"not idempotent: {reason}"))
    if in_block:
        problems.append(Problem("error", name, parsed[-1][0].line,
                                f"the {part} ends inside a transaction block (BEGIN without COMMIT)"))
    return problems


def _not_idempotent(node: object) -> str | None:
    """Why running ``node`` twice would fail or change something, or None.

    DO blocks are taken as guarded (they are how ADD CONSTRAINT is guarded).
    """
    kind = type(node).__name__
    flag = {"CreateStmt": ("if_not_exists", "CREATE TABLE without IF NOT EXISTS"),
            "IndexStmt": ("if_not_exists", "CREATE INDEX without IF NOT EXISTS"),
            "CreateSeqStmt": ("if_not_exists", "CREATE SEQUENCE without IF NOT EXISTS"),
            "CreateSchemaStmt": ("if_not_exists", "CREATE SCHEMA without IF NOT EXISTS"),
            "DropStmt": ("missing_ok", "DROP without IF EXISTS"),
            "CreateFunctionStmt": ("replace", "CREATE FUNCTION without OR REPLACE"),
            "ViewStmt": ("replace", "CREATE VIEW without OR REPLACE"),
            "CreateTrigStmt": ("replace", "CREATE TRIGGER without OR REPLACE")}
    if kind in flag:
        attr, reason = flag[kind]
        return None if getattr(node, attr, False) else reason
    if kind in ("CreateEnumStmt", "CompositeTypeStmt", "CreateDomainStmt"):
        return "CREATE TYPE/DOMAIN has no IF NOT EXISTS (guard it in a DO block)"
    if kind == "RenameStmt":
        return "RENAME fails the second time"
    if kind == "InsertStmt" and getattr(node, "onConflictClause", None) is None:
        return "INSERT without ON CONFLICT adds rows again"
    if kind == "AlterTableStmt":
        for cmd in getattr(node, "cmds", None) or ():
            subtype = getattr(cmd, "subtype", None)
            if subtype == enums.AlterTableType.AT_AddConstraint:
                return "ADD CONSTRAINT is not guarded (no IF NOT EXISTS exists: use a DO block)"
            if subtype == enums.AlterTableType.AT_AddColumn and not cmd.missing_ok:
                return "ADD COLUMN without IF NOT EXISTS"
            if subtype in (enums.AlterTableType.AT_DropColumn,
                           enums.AlterTableType.AT_DropConstraint) and not cmd.missing_ok:
                return "DROP COLUMN/CONSTRAINT without IF EXISTS"
    return None

