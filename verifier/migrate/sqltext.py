"""Migration SQL text: split with PostgreSQL's own parser, classify, locate.

Pure functions over strings (no database). ``split_statements`` returns
each statement with its 1-based line in the file and what the runner must
know about it: does it open or close a transaction, and can it run inside a
transaction block at all. ``up_and_down`` separates a file in the seed's
conventions into its up SQL and its (commented) ``-- Down Migration`` block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pglast import enums, parse_sql
from pglast.parser import ParseError

DOWN_MARKER = re.compile(r"^--\s*Down Migration\b.*$", re.MULTILINE | re.IGNORECASE)
_HEADER = re.compile(r"^--\s*(Migration|Description|Dependencies):\s*(.*)$", re.IGNORECASE)

# What a statement does to the transaction state (TransactionStmt kinds).
_OPENS = {enums.TransactionStmtKind.TRANS_STMT_BEGIN, enums.TransactionStmtKind.TRANS_STMT_START}
_CLOSES = {
    enums.TransactionStmtKind.TRANS_STMT_COMMIT,
    enums.TransactionStmtKind.TRANS_STMT_ROLLBACK,
    enums.TransactionStmtKind.TRANS_STMT_PREPARE,
}


class SqlSyntaxError(Exception):
    """The text does not parse. ``line`` and ``column`` are 1-based, in the whole file."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"{message} (line {line}, column {column})")
        self.message, self.line, self.column = message, line, column


@dataclass(frozen=True)
class Statement:
    number: int  # 1-based, within the text it was split from
    line: int  # 1-based line of its first character, in the file
    sql: str
    node: str  # the parser's node name: CreateStmt, IndexStmt, TransactionStmt...
    opens_transaction: bool = False
    closes_transaction: bool = False
    # Must run outside a transaction block (CREATE INDEX CONCURRENTLY, VACUUM,
    # a CALL that commits...): the runner never wraps it in one.
    no_transaction: bool = False

    def excerpt(self, chars_max: int = 200) -> str:
        flat = " ".join(self.sql.split())
        return flat if len(flat) <= chars_max else flat[: chars_max - 3] + "..."


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def _no_transaction(stmt: object) -> bool:
    name = type(stmt).__name__
    if name in ("VacuumStmt", "CreatedbStmt", "DropdbStmt", "AlterSystemStmt",
                "CreateTableSpaceStmt", "DropTableSpaceStmt", "CallStmt"):
        return True
    if name == "IndexStmt" and getattr(stmt, "concurrent", False):
        return True
    if name in ("ReindexStmt", "DropStmt"):
        params = getattr(stmt, "params", None) or ()
        if any(getattr(p, "defname", "") == "concurrently" for p in params):
            return True
        return bool(getattr(stmt, "concurrent", False))
    return False


def split_statements(text: str, *, first_line: int = 1) -> list[Statement]:
    """Split ``text`` into statements. Raises ``SqlSyntaxError`` with the line.

    ``first_line`` is the file line on which ``text`` starts (for a down
    block cut out of a file).
    """
    return [stmt for stmt, _ in parse_statements(text, first_line=first_line)]


def parse_statements(text: str, *, first_line: int = 1) -> list[tuple[Statement, Any]]:
    """Like ``split_statements``, each statement with its pglast parse node (for linting)."""
    try:
        parsed = parse_sql(text)
    except ParseError as exc:
        # The error's offset in the text; none for an error at the end of the input ("TABLE").
        where = exc.args[1] if len(exc.args) > 1 else None
        message, index = str(exc.args[0]), len(text) if where is None else int(where)
        line, column = _line_col(text, max(index, 0))
        raise SqlSyntaxError(message, line + first_line - 1, column) from None
    result = []
    for number, raw in enumerate(parsed, start=1):
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(text)
        chunk = text[start:end]
        # stmt_location points after the previous semicolon: skip the blank
        # lines and comments before the statement itself.
        stripped = _strip_leading_comments(chunk)
        offset = start + (len(chunk) - len(stripped))
        node = raw.stmt
        kind = getattr(node, "kind", None)
        is_tx = type(node).__name__ == "TransactionStmt"
        result.append((Statement(
            number=number,
            line=_line_col(text, offset)[0] + first_line - 1,
            sql=stripped.strip(),
            node=type(node).__name__,
            opens_transaction=is_tx and kind in _OPENS,
            closes_transaction=is_tx and kind in _CLOSES,
            no_transaction=_no_transaction(node),
        ), node))
    return result


@dataclass(frozen=True)
class SetNotNull:
    """``ALTER TABLE [schema.]table ALTER COLUMN column SET NOT NULL`` at ``line``."""

    schema: str | None  # None: unqualified (the search path's, public in practice)
    table: str
    column: str
    line: int


def set_not_null(text: str, *, first_line: int = 1) -> list[SetNotNull]:
    """Every column that ``text`` sets NOT NULL with ALTER TABLE (not inside DO blocks or functions,
    which the parser sees as strings). Raises ``SqlSyntaxError`` when the text does not parse."""
    found = []
    for stmt, node in parse_statements(text, first_line=first_line):
        if type(node).__name__ != "AlterTableStmt" or node.relation is None:
            continue
        for cmd in node.cmds or ():
            if getattr(cmd, "subtype", None) == enums.AlterTableType.AT_SetNotNull and cmd.name:
                found.append(SetNotNull(node.relation.schemaname, node.relation.relname, cmd.name, stmt.line))
    return found


def _strip_leading_comments(chunk: str) -> str:
    text = chunk
    while True:
        before = text
        text = text.lstrip()
        if text.startswith("--"):
            newline = text.find("\n")
            text = "" if newline < 0 else text[newline + 1:]
        elif text.startswith("/*"):
            end = text.find("*/")
            text = "" if end < 0 else text[end + 2:]
        if text == before:
            return text


@dataclass(frozen=True)
class MigrationText:
    up: str
    down: str | None  # None when the file has no down block
    down_first_line: int  # file line where the down SQL starts
    header: dict[str, str]


def up_and_down(text: str) -> MigrationText:
    """Separate the up SQL, the down block (uncommented) and the header fields."""
    header: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.startswith("--"):
            if line.strip():
                break
            key = None
            continue
        match = _HEADER.match(line)
        if match:
            key = match.group(1).lower()
            header[key] = match.group(2).strip()
        elif key is not None and re.match(r"^--\s{2,}\S", line):
            # An indented comment line continues the field above it.
            header[key] = f"{header[key]} {line[2:].strip()}".strip()
        else:
            key = None
    marker = DOWN_MARKER.search(text)
    if marker is None:
        return MigrationText(text, None, 0, header)
    up = text[: marker.start()]
    down_lines = []
    for line in text[marker.end():].splitlines():
        # The block is commented out (it is "for reference" in the seed's
        # template): each line loses its leading "-- ". Plain SQL lines after
        # the marker count as down SQL too.
        down_lines.append(re.sub(r"^--\s?", "", line))
    # The down text starts with the rest of the marker line (empty): line 1 of
    # the down text is the marker line of the file.
    first_line = text.count("\n", 0, marker.end()) + 1
    return MigrationText(up, "\n".join(down_lines), first_line, header)
