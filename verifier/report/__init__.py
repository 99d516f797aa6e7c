"""What a run writes: summary.json, report.html and junit.xml in its folder, and the index.

``write_outputs(run)`` writes every file to a temporary name first and
renames them only when all of them are written, summary.json last: a run
folder holds a whole report or none (a folder without summary.json is
listed as unfinished), also when the disk fills up. It then rewrites
index.html in the reports folder (the run folder's parent). offenders.csv
is streamed by the checks themselves (``checks.engine.run_checks``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from verifier.errors import ReportNotWritten
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


def _written_aside(path: Path, text: str) -> Path:
    """``text`` in a new hidden file next to ``path``, synced to disk; removed again if that fails."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # Text that is not UTF-8 (a path's stray bytes, as surrogate escapes) is written escaped, not fatal.
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that it is either all there or not at all."""
    tmp = _written_aside(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


LINKED_FILES = ("offenders.csv", "summary.json", "junit.xml", "planted.json")  # linked from report.html


def write_outputs(run: Run) -> None:
    """Write the run's report files (all or none, see above), then the index (best effort).

    Raises ``ReportNotWritten`` when a file cannot be written; none of them is then left.
    """
    data = summary(run)
    outputs = {"junit.xml": render_junit(data)}
    linked = [name for name in LINKED_FILES if name in ("summary.json", "junit.xml")
              or (run.run_dir / name).exists()]
    outputs["report.html"] = render_html(data, linked)
    outputs["summary.json"] = json.dumps(data, indent=2, default=str) + "\n"  # last: it marks the run done
    aside: list[tuple[Path, Path]] = []
    try:
        for name, text in outputs.items():
            aside.append((_written_aside(run.run_dir / name, text), run.run_dir / name))
        for tmp, path in aside:
            os.replace(tmp, path)
    except OSError as exc:
        for tmp, _ in aside:
            tmp.unlink(missing_ok=True)
        raise ReportNotWritten(
            f"Could not write the report in {run.run_dir}: {exc.strerror or exc}. The run ended as "
            f"{run.status!r}{' (' + run.error.rstrip('.') + ')' if run.error else ''}, and the folder "
            "holds no complete report.",
            path=run.run_dir, hint="Free space in the report folder, or pass --report-dir.") from None
    try:
        write_atomic(run.run_dir.parent / "index.html", render_index(run.run_dir.parent))
    except OSError as exc:  # the run's own outputs are written; a stale index must not fail the run
        print(f"verifier: could not update {run.run_dir.parent / 'index.html'}: {exc}", file=sys.stderr)
