"""What a run writes: summary.json, report.html and junit.xml in its folder, and the index.

``write_outputs(run)`` writes each file atomically (a temporary file, then
rename), so a reader never sees half a report, then rewrites index.html in
the reports folder (the run folder's parent). offenders.csv is streamed by
the checks themselves (``checks.engine.run_checks``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from verifier.report.html import render_html
from verifier.report.index import render_index
from verifier.report.junit import render_junit
from verifier.run import Run


def summary(run: Run) -> dict[str, Any]:
    """The machine-readable summary of ``run`` (the schema others script against)."""
    assert run.status is not None
    return {
        "status": run.status,
        "exit_code": run.exit_code,
        "command": run.command,
        "run_id": run.run_id,
        "started_at": run.started_at.isoformat(),
        "duration_s": run.duration_s,
        "error": run.error,
        "findings": run.findings,
        "stages": [{"name": s.name, "duration_s": s.duration_s, **s.detail} for s in run.stages],
        "provenance": run.provenance,
    }


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that it is either all there or not at all."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # Text that is not UTF-8 (a path's stray bytes, as surrogate escapes) is written escaped, not fatal.
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


LINKED_FILES = ("offenders.csv", "summary.json", "junit.xml", "planted.json")  # linked from report.html


def write_outputs(run: Run) -> None:
    data = summary(run)
    write_atomic(run.run_dir / "summary.json", json.dumps(data, indent=2, default=str) + "\n")
    write_atomic(run.run_dir / "junit.xml", render_junit(data))
    linked = [name for name in LINKED_FILES if (run.run_dir / name).exists()]
    write_atomic(run.run_dir / "report.html", render_html(data, linked))
    try:
        write_atomic(run.run_dir.parent / "index.html", render_index(run.run_dir.parent))
    except OSError as exc:  # the run's own outputs are written; a stale index must not fail the run
        print(f"verifier: could not update {run.run_dir.parent / 'index.html'}: {exc}", file=sys.stderr)
