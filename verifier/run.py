"""One run of the verifier: its identity, what it did, and how it ended.

A ``Run`` is filled in as the stages go (provenance, stage timings,
findings) and written out by ``verifier.report`` when it ends, whether it
ended well, with findings, or with an error: a run that failed early still
leaves a report saying what happened. Status is never ``pass`` unless every
stage that verifies actually ran.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from verifier import __version__
from verifier.errors import Interrupted, VerifierError

STATUSES = ("pass", "fail", "error")
EXIT_CODES = {"pass": 0, "fail": 1, "error": 2}


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
    status: str | None = None
    error: str | None = None
    duration_s: float = 0.0
    _t0: float = field(default_factory=time.monotonic, repr=False)

    @property
    def exit_code(self) -> int:
        assert self.status in STATUSES
        return EXIT_CODES[self.status]

    def failing(self, *, strict: bool = False) -> list[dict[str, Any]]:
        """The findings that fail the run: errors, and warnings too under ``strict``."""
        severities = ("error", "warning") if strict else ("error",)
        return [f for f in self.findings if f["severity"] in severities]

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a stage; the yielded dict collects its details."""
        detail: dict[str, Any] = {}
        started = time.monotonic()
        try:
            yield detail
        finally:
            self.stages.append(Stage(name, round(time.monotonic() - started, 3), detail))

    def end(self, status: str, error: str | None = None) -> None:
        assert status in STATUSES
        assert status != "pass" or error is None
        self.status, self.error = status, error
        self.duration_s = round(time.monotonic() - self._t0, 3)


def new_run(command: str, report_dir: Path) -> Run:
    """Create ``report_dir/<run-id>/`` for a new run and return its record."""
    now = datetime.now(UTC)
    run_id = now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    run_dir = Path(report_dir) / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise VerifierError(f"Cannot create the report folder {run_dir}: {exc.strerror}.") from None
    run = Run(command=command, run_dir=run_dir, run_id=run_id, started_at=now)
    run.provenance["tool_version"] = __version__
    return run


@contextlib.contextmanager
def recorded(run: Run) -> Iterator[Run]:
    """End ``run`` as ``error`` if the block raises, and write its outputs either way.

    The block's own exception propagates (Ctrl-C and SIGTERM as
    ``Interrupted``, a failed file operation as ``VerifierError``) after the
    outputs are written; when they cannot be written, ``ReportNotWritten``
    (which names the run's own error) propagates instead.
    """
    from verifier.report import write_outputs

    def ended(error: VerifierError) -> VerifierError:
        """``run`` ended by ``error``, its outputs written; ``error``, pointing at them."""
        run.end("error", str(error))
        write_outputs(run)
        error.run_dir = run.run_dir
        return error

    try:
        yield run
    except VerifierError as exc:
        ended(exc)
        raise
    except KeyboardInterrupt:
        raise ended(Interrupted("Interrupted (Ctrl-C or SIGTERM) before the run finished.")) from None
    except OSError as exc:  # a file the run writes (offenders.csv) or reads: the disk, not a bug
        where = f": {exc.filename}" if exc.filename else f" (the run writes to {run.run_dir})"
        raise ended(VerifierError(f"A file operation failed: {exc.strerror or exc}{where}.")) from None
    except BaseException as exc:
        run.end("error", f"Internal error: {type(exc).__name__}: {exc}")
        write_outputs(run)
        raise
    assert run.status is not None, "a run must be ended before it is recorded"
    write_outputs(run)
