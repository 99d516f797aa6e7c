"""summary.json: a run's record as others script against it; every other output is rendered from it.

``summary(run)`` is the dictionary (status, exit code, findings, stages
with their details, provenance); ``stage(data, name)`` finds one stage of
it by name.
"""

from __future__ import annotations

from typing import Any

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


def stage(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The stage called ``name`` of the summary ``data`` (its first, if a run had two), or None."""
    return next((s for s in data["stages"] if s["name"] == name), None)
