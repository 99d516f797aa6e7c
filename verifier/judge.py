"""Judgement by Great Expectations (GX Core 1.x) suites, on request (``--gx``).

Suites are JSON files: ``{"name", "meta": {"target": ...}, "expectations":
[{"type", "kwargs"}]}``, the shape of GX 1.x's own suite JSON. The built-in
suites live in the project's ``expectations/`` folder; ``meta.target``
says what a suite judges:

- ``"results"``: the cents engine's results, one row per check of a
  verified table (``results_rows``), as a pandas DataFrame. Counts are
  integers and sums exact decimal strings: no money becomes a float.

Every expectation's outcome is recorded in the run's ``judge`` stage; each
failed one is an ``expectation_failed`` finding (error). GX and pandas are
imported here only, when a run asks for a judgement, so ``--help`` and runs
without ``--gx`` never pay for them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from verifier.checks.cents import WARNING_CLASSES
from verifier.errors import UsageError, VerifierError
from verifier.findings import Finding
from verifier.paths import project_expectations_dir
from verifier.run import Run

TARGETS = ("results",)


def results_rows(verify_detail: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per check of each verified table, from the ``verify`` stage's detail."""
    rows = []
    for table in verify_detail.get("tables", []):
        for check in table["checks"]:
            pair = check["kind"] == "pair"
            rows.append({
                "table": table["table"], "check": check["check"], "kind": check["kind"],
                "rows": check["rows"], "offending_rows": check["offending_rows"],
                "error_rows": sum(n for k, n in check["classes"].items() if k not in WARNING_CLASSES),
                "cents_sum": check["cents_sum"] if pair else None,
                "expected_sum": check["expected_sum"] if pair else None,
            })
    return rows


def load_suite(path: Path) -> dict[str, Any]:
    """Read and check one suite file; raise ``UsageError`` naming the file and the problem."""
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"Cannot read the expectation suite {path}: {exc}.") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("expectations"), list):
        raise UsageError(f"The expectation suite {path} has no \"expectations\" list.")
    target = (spec.get("meta") or {}).get("target")
    if target not in TARGETS:
        raise UsageError(f"The expectation suite {path} has meta.target {target!r}; "
                         f"expected one of {', '.join(TARGETS)}.")
    for i, e in enumerate(spec["expectations"]):
        if not isinstance(e, dict) or not isinstance(e.get("type"), str) or not isinstance(
                e.get("kwargs", {}), dict):
            raise UsageError(f"The expectation suite {path}: expectation {i} needs a \"type\" and "
                             "\"kwargs\".")
    spec.setdefault("name", path.stem)
    return spec


def _kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "batch_id")


def suites(directory: Path | None = None) -> list[Path]:
    return sorted((directory or project_expectations_dir()).glob("*.json"))


def judge(run: Run, suite_files: list[Path] | None = None) -> None:
    """Validate the run's results with each suite; record outcomes, add findings to ``run``."""
    specs = [(p, load_suite(p)) for p in (suite_files if suite_files is not None else suites())]
    verify = next((s.detail for s in run.stages if s.name == "verify"), None)
    with run.stage("judge") as detail:
        detail["suites"] = [p.name for p, _ in specs]
        if verify is None:
            detail["skipped"] = "nothing was verified"
            return
        try:
            import great_expectations as gx
            import pandas as pd  # type: ignore[import-untyped]
            from great_expectations.data_context.types.base import ProgressBarsConfig
            from great_expectations.expectations.expectation_configuration import (
                ExpectationConfiguration,
            )
        except ImportError:
            raise VerifierError("--gx needs Great Expectations.",
                                hint="pip install 'financial-migration-verifier[gx]'") from None
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        batch_definition = (context.data_sources.add_pandas("verifier")
                            .add_dataframe_asset("results").add_batch_definition_whole_dataframe("all"))
        frame = pd.DataFrame(results_rows(verify), dtype=object)
        outcomes = detail.setdefault("expectations", [])
        for path, spec in specs:
            suite = gx.ExpectationSuite(name=spec["name"])
            for e in spec["expectations"]:
                try:
                    suite.add_expectation_configuration(
                        ExpectationConfiguration(type=e["type"], kwargs=e.get("kwargs", {})))
                except Exception as exc:  # GX raises its own kinds for unknown types and kwargs
                    raise UsageError(f"The expectation suite {path}: {e['type']}: {exc}") from None
            suite = context.suites.add(suite)
            result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
            for r in result.results:
                config = r.expectation_config
                assert config is not None
                got = r.result or {}
                outcome = {"suite": spec["name"], "type": config.type, "kwargs": dict(config.kwargs),
                           "success": bool(r.success),
                           "unexpected_count": got.get("unexpected_count"),
                           "unexpected": [str(v) for v in got.get("partial_unexpected_list", [])][:10]}
                outcomes.append(outcome)
                if not r.success:
                    run.findings.append(Finding(
                        rule="expectation_failed", severity="error",
                        count=int(got.get("unexpected_count") or 1),
                        message=f"GX suite {spec['name']}: {config.type} ({_kwargs(config.kwargs)}) "
                                f"failed for {got.get('unexpected_count', '?')} row(s)",
                        detail=outcome,
                    ).as_json())
        detail["failed"] = sum(1 for o in outcomes if not o["success"])
