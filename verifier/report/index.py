"""The reports folder's index.html: every run in it, newest first, with its verdict.

Rewritten (atomically) at the end of every run from the run folders'
summary.json files, so it is never out of date with what the folder holds
and two runs ending together each leave a complete page. A folder whose
summary cannot be read is listed as such, not skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from verifier import __version__
from verifier.report.html import environment, page_assets, severity_counts
from verifier.run import VERDICTS

INDEX_RUNS_MAX = 500  # the newest runs listed; older folders are counted


def _entry(run_dir: Path) -> dict[str, Any]:
    base = {"run_id": run_dir.name, "report": f"{run_dir.name}/report.html"
            if (run_dir / "report.html").exists() else None,
            "started_at": "", "command": "", "target": "", "errors": "", "warnings": "", "duration_s": ""}
    try:
        data = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        status = data["status"]
        findings = data["findings"]
        return {**base, "status": status, "verdict": VERDICTS[status],
                "started_at": str(data["started_at"])[:19].replace("T", " ") + " UTC",
                "command": (data.get("provenance") or {}).get("invocation") or data["command"],
                "target": _target(data.get("provenance") or {}), "duration_s": data["duration_s"],
                **severity_counts(findings),
                "what": (data.get("error") if status == "error"
                         else ", ".join(sorted({f["rule"] for f in findings})) or "no findings")}
    except FileNotFoundError:
        return {**base, "status": "error", "verdict": "UNFINISHED",
                "what": "no summary.json: the run is still going, or was killed before it could write one"}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {**base, "status": "error", "verdict": "UNREADABLE", "what": f"summary.json: {exc}"}


def _target(provenance: dict[str, Any]) -> str:
    """What a run verified, and the baseline it used: the --db target, else the snapshot."""
    what = str(provenance.get("target") or provenance.get("snapshot_path") or "")
    baseline = (provenance.get("baseline") or {}).get("path")
    return what + (f" (baseline {baseline})" if baseline else "")


def render_index(report_dir: Path) -> str:
    folders = sorted((p for p in report_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.name, reverse=True)  # run ids start with their UTC start time
    return environment().get_template("index.html.j2").render(
        folder=str(report_dir), total=len(folders), runs=[_entry(p) for p in folders[:INDEX_RUNS_MAX]],
        tool_version=__version__, **page_assets())
