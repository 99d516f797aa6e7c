"""One run of the verifier: its identity, what it did, and how it ended (the record; no I/O).

A ``Run`` is filled in as the stages go (provenance, stage timings,
findings) and written out by ``verifier.report`` when it ends
(``verifier.jobs.lifecycle.recorded``), whether it ended well, with
findings, or with an error: a run that failed early still leaves a report
saying what happened. Status is never ``pass`` unless every stage that
verifies actually ran. ``EXIT_CODES`` and ``VERDICTS`` are what a status
means to a shell and to a reader.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from verifier.findings import Finding

STATUSES = ("pass", "fail", "error")
EXIT_CODES = {"pass": 0, "fail": 1, "error": 2}
# The verdict word of each status, on the terminal, in the report and in the index.
VERDICTS = {"pass": "PASS", "fail": "FAIL", "error": "NOT VERIFIED"}


def verdict_line(status: str | None, run_dir: Path) -> str:
    """The verdict the console prints on stdout: "FAIL: report PATH" (None: a run not ended, an error)."""
    return f"{VERDICTS[status or 'error']}: report {run_dir / 'report.html'}"


class Watch(Protocol):
    """Who follows a run as it goes (the terminal: ``verifier.terminal.Terminal``): a stage starts,
    advances (``done`` of ``total`` ``unit``, ``now`` naming the current item) and ends; a line to
    tell the person watching; a statement run (shown only when asked for)."""

    def tell(self, text: str) -> None: ...
    def started(self, stage: str) -> None: ...
    def advanced(self, stage: str, done: int, total: int | None, unit: str, now: str = "") -> None: ...
    def ended(self, stage: str, duration_s: float, ok: bool) -> None: ...
    def statement(self, text: str) -> None: ...


class Silent:
    """A ``Watch`` that shows nothing (a run nobody watches: the library's default)."""

    def tell(self, text: str) -> None:
        pass

    def started(self, stage: str) -> None:
        pass

    def advanced(self, stage: str, done: int, total: int | None, unit: str, now: str = "") -> None:
        pass

    def ended(self, stage: str, duration_s: float, ok: bool) -> None:
        pass

    def statement(self, text: str) -> None:
        pass


@dataclass
class Stage:
    name: str
    duration_s: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """The record of one run. ``status`` stays None until the run ends."""

    command: str
    run_dir: Path
    run_id: str
    started_at: datetime
    provenance: dict[str, Any] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    # Findings a baseline accepts (verifier.jobs.baseline): shown, never failing the run.
    accepted: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None
    error: str | None = None
    duration_s: float = 0.0
    _t0: float = field(default_factory=time.monotonic, repr=False)
    # Who follows the run as it goes (new_run: the terminal the CLI installed, else stderr lines).
    watch: Watch = field(default_factory=Silent, repr=False, compare=False)

    @property
    def exit_code(self) -> int:
        assert self.status in STATUSES
        return EXIT_CODES[self.status]

    def failing(self, *, strict: bool = False) -> list[dict[str, Any]]:
        """The findings that fail the run: errors, and warnings too under ``strict``."""
        severities = ("error", "warning") if strict else ("error",)
        return [f for f in self.findings if f["severity"] in severities]

    def add(self, *findings: Finding) -> None:
        """Record ``findings`` (in summary.json's shape)."""
        self.findings += [f.as_json() for f in findings]

    def detail(self, name: str) -> dict[str, Any] | None:
        """The details of the stage called ``name``, once it has run (else None)."""
        return next((s.detail for s in self.stages if s.name == name), None)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a stage; the yielded dict collects its details."""
        detail: dict[str, Any] = {}
        started = time.monotonic()
        self.watch.started(name)
        ok = False
        try:
            yield detail
            ok = True
        finally:
            duration = round(time.monotonic() - started, 3)
            self.stages.append(Stage(name, duration, detail))
            self.watch.ended(name, duration, ok)

    def tell(self, text: str) -> None:
        """Tell the person watching what a stage is about to do or found (one paragraph)."""
        self.watch.tell(text)

    def advanced(self, stage: str, done: int, total: int | None, unit: str, now: str = "") -> None:
        """Stage ``stage`` has done ``done`` of ``total`` ``unit`` (None: unknown), now at ``now``."""
        self.watch.advanced(stage, done, total, unit, now)

    def end(self, status: str, error: str | None = None) -> None:
        assert status in STATUSES
        assert status != "pass" or error is None
        self.status, self.error = status, error
        self.duration_s = round(time.monotonic() - self._t0, 3)
