"""Static checks of a migrations directory (``verifier migrations validate``), and the template.

``lint(discovery)`` runs nothing: it finds shared numbers, unnumbered
files, missing dependencies (the ``-- Dependencies:`` header), missing
header fields and down blocks, SQL that does not parse (with its line), a
statement that cannot run in a transaction block inside ``BEGIN ... COMMIT``,
a file that never commits, and statements that are not idempotent. Pure
logic over the parsed files. ``TEMPLATE`` is the seed's new-file template,
which passes every check.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import enums

from verifier.migrate import plan
from verifier.migrate.sqltext import SqlSyntaxError, parse_statements

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
class Problem:
    severity: str  # error | warning
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{self.severity}: {where}: {self.message}"


def lint(discovery: plan.Discovery) -> list[Problem]:
    """Every problem of a migrations directory, found without running anything (pure)."""
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

