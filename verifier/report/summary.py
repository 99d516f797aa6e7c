"""summary.json: a run's record as others script against it; every other output is rendered from it.

``summary(run)`` is the dictionary (status, exit code, findings, stages
with their details, provenance); ``stage(data, name)`` finds one stage of
it by name.
"""

from __future__ import annotations

from typing import Any

from verifier.findings import rule
from verifier.run import Run


def totals(findings: list[dict[str, Any]], stages: list[dict[str, Any]]) -> dict[str, int]:
    """The run's headline figures, each offending row and each cent counted once.

    ``offending_rows``: the cents tables' rows that break at least one check
    (the "verify" stage counts each row once, however many of its columns are
    wrong) plus the ledger rows the audit's passes found; ``cents_impact``:
    the sum of the findings' absolute impacts (sum of |difference|, in minor
    units) and ``cents_impact_net`` of their signed impacts, leaving out
    findings that restate others (a column's ``sum_mismatch``).
    """
    verify = next((s for s in stages if s["name"] == "verify"), None)
    cents_rows = sum(int(t.get("offending_rows") or 0) for t in (verify or {}).get("tables", []))
    ledger_rows = sum(int(f["count"]) for f in findings
                      if rule(f["rule"]).kind == "ledger" and (f.get("detail") or {}).get("offenders"))
    counted = [f for f in findings if not f.get("restates")]
    return {"offending_rows": cents_rows + ledger_rows,
            "cents_impact": sum(int(f.get("cents_impact") or 0) for f in counted),
            "cents_impact_net": sum(int(f.get("cents_impact_net") or 0) for f in counted)}


def summary(run: Run) -> dict[str, Any]:
    """The machine-readable summary of ``run`` (the schema others script against)."""
    assert run.status is not None
    stages = [{"name": s.name, "duration_s": s.duration_s, **s.detail} for s in run.stages]
    return {
        "status": run.status,
        "exit_code": run.exit_code,
        "command": run.command,
        "run_id": run.run_id,
        "started_at": run.started_at.isoformat(),
        "duration_s": run.duration_s,
        "error": run.error,
        "totals": totals(run.findings, stages),
        "findings": run.findings,
        "accepted": run.accepted,
        "stages": stages,
        "provenance": run.provenance,
    }


def stage(data: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The stage called ``name`` of the summary ``data`` (its first, if a run had two), or None."""
    return next((s for s in data["stages"] if s["name"] == name), None)
