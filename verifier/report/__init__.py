"""What a run writes: summary.json, report.html and junit.xml in its folder, and the index.

``write_outputs(run)`` writes every file to a temporary name first and
renames them only when all of them are written, summary.json last: a run
folder holds a whole report or none (a folder without summary.json is
listed as unfinished), also when the disk fills up. It then rewrites
index.html in the reports folder (the run folder's parent). offenders.csv
is streamed by the checks themselves (``verifier.files.offenders_csv``).

- ``summary``: summary.json, the record others script against, from which
  every other file is rendered;
- ``html`` (with ``charts`` and ``templates/``): report.html;
- ``junit``: junit.xml;
- ``index``: the reports folder's index.html.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from verifier.errors import ReportNotWritten
from verifier.files import LEDGER_OFFENDERS_NAME, OFFENDERS_NAME, write_atomic, written_aside
from verifier.report.html import render_html
from verifier.report.index import render_index
from verifier.report.junit import render_junit
from verifier.report.summary import summary
from verifier.run import Run

# Linked from report.html.
LINKED_FILES = (OFFENDERS_NAME, LEDGER_OFFENDERS_NAME, "summary.json", "junit.xml", "planted.json")


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
            aside.append((written_aside(run.run_dir / name, text), run.run_dir / name))
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
