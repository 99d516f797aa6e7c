"""Operating errors: the run could not verify (exit code 2).

Findings are data, not exceptions; bugs in the verifier are assertions.
Everything here is a ``VerifierError`` whose ``str()`` is one paragraph a
user can act on, carrying the thing it names as attributes.
"""

from __future__ import annotations

import re
from pathlib import Path

# Characters that a terminal would act on rather than show: C0 and C1 controls but newline and tab
# (an escape sequence in a file or table name could rewrite the screen), and the bidirectional
# overrides and isolates of Unicode (UAX #9) that reorder what follows them.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` for a terminal: each character of ``_UNPRINTABLE`` written as ``\\uXXXX``."""
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class VerifierError(Exception):
    """The verifier could not do what it was asked. Exit code 2."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Set by the run that raised it, once its (incomplete) report is written.
        self.run_dir: Path | None = None
        # Set by the run that raised it where it had findings: its summary for the console
        # (``verifier.terminal.summary_lines``), as its report keeps them.
        self.summary: list[str] = []

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"


class UsageError(VerifierError):
    """The command line or configuration asks for something impossible."""


class DatabaseUnreachable(VerifierError):
    """A connection to a database failed. ``target`` is the redacted address."""

    def __init__(self, message: str, *, target: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.target = target


class ScratchError(VerifierError):
    """A scratch server or database could not be provisioned or used."""

    def __init__(self, message: str, *, spec: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.spec = spec


class SnapshotError(VerifierError):
    """A dump file cannot be read or restored. ``path`` names the file."""

    def __init__(self, message: str, *, path: Path, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class ToolError(VerifierError):
    """A PostgreSQL client tool (pg_dump, pg_restore, psql) is missing or failed."""

    def __init__(self, message: str, *, tool: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.tool = tool


class Interrupted(VerifierError):
    """The run was stopped by Ctrl-C or SIGTERM before it finished."""


class ReportNotWritten(VerifierError):
    """The run's outputs could not be written to ``path`` (disk full, permissions)."""

    def __init__(self, message: str, *, path: Path, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path
