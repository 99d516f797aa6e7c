"""report.html: one self-contained page per run, rendered from the run's summary.

The page is built from the same dictionary as summary.json (``report.summary``)
by Jinja2 templates shipped in the package (``templates/``), with
autoescaping on: every data value (descriptions, column and file names,
error messages) is untrusted text. Nothing is loaded from anywhere: the
style and the one small script are inline, the charts are inline SVG, and a
Content-Security-Policy forbids any other resource, and any script but ours
(by its hash), should something slip through. The page reads the same
without scripts; the script only adds sorting and a findings filter.

A run that failed early renders too: the verdict says it could not verify,
which stage it stopped in, and what it had done until then.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import jinja2
from markupsafe import Markup, escape

from verifier.cents.sql import DIFF_BUCKETS
from verifier.config.ledger import ALL_TYPES
from verifier.files import OFFENDERS_NAME
from verifier.findings import money, rule
from verifier.report import charts
from verifier.report.summary import stage, totals
from verifier.run import VERDICTS

HEADLINES = {  # status -> (headline after the verdict word, what it means)
    "pass": ("verified, no findings", "Every check ran to the end and found nothing that fails the run."),
    "fail": ("findings",
             "The run completed and found what is listed below. Do not release until each is explained."),
    "error": ("the run could not finish",
              "The run stopped before it could verify everything. Nothing here is a pass."),
}
# shown in their own sections
STAGE_DETAIL_ELSEWHERE = ("tables", "timeline", "passes", "expectations", "live", "inventory", "pairing")
PROVENANCE_ELSEWHERE = ("migrations", "ledger_history")
PROVEN, CHECKED = "#2f855a", "#4a6fa5"  # the trend chart's two series
# Where an identifier's word ends: after "_", after a "/" that follows a letter (a path's folder, not
# the root nor 1/2), after a "." not before a digit (not a decimal point).
WORD_END = re.compile(r"(?<=_)|(?<=[A-Za-z]/)|(?<=\.)(?=\D)")
CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")  # where a CamelCase name's next word starts
STAGE_DETAIL_CHARS_MAX = 600  # characters of a stage's remaining detail shown in the stages table
DIFF_CHART_NOTE = ("Offending rows of decimal/cents pairs by their difference, cents minus the expected "
                   "cents, bucketed by sign and order of magnitude. Rows that are right are not drawn; "
                   "0 holds rows whose cents are the expected cents but lost a fraction of a cent "
                   "(sub_cent_loss); \"not a number\" rows without expected cents (overflow, "
                   "non_finite_original).")


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("verifier.report", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.globals["cents"] = format_cents
    env.globals["money"] = money
    env.filters["breakable"] = breakable
    return env


def _asset(name: str) -> str:
    """A file of ``templates/`` as it is (the style and the script are not templates)."""
    env = environment()
    assert env.loader is not None
    return env.loader.get_source(env, name)[0]


@functools.cache
def page_assets() -> dict[str, Markup | str]:
    """The page's inline style and script, and the script's CSP hash (only this exact script may run)."""
    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    # Our own files, not data: safe to place as they are.
    return {"style": Markup(_asset("report.css")), "script": Markup(script),
            "script_hash": f"sha256-{digest}"}


LONG_WORD_BREAK = 20
LONG_WORD = re.compile(rf"[A-Za-z0-9]{{{LONG_WORD_BREAK + 4},}}")


def breakable(name: Any, camel: bool = True) -> Markup:
    """An identifier (schema.table, a column, a rule, a path) that may break after its underscores, slashes
    and dots (not a decimal point) and, with ``camel``, before the capital of a CamelCase word; inside a
    word only when it is longer than any column (every ``LONG_WORD_BREAK`` characters of a run of more
    than ``LONG_WORD_BREAK + 3`` letters and digits): escaped text with <wbr> there. Text that names
    identifiers (a message, a command line) takes ``camel=False``, so that its words (PostgreSQL) stay
    whole. (Escaped text's entities hold no "_", "/", "." or capital.)"""
    text = WORD_END.sub("<wbr>", str(escape("" if name is None else name)))
    text = CAMEL_HUMP.sub("<wbr>", text) if camel else text
    # A word too long for any column (a 63-character name without an underscore) may break
    # every LONG_WORD_BREAK characters rather than widen the page.
    return Markup(LONG_WORD.sub(lambda m: "<wbr>".join(
        m.group()[i:i + LONG_WORD_BREAK] for i in range(0, len(m.group()), LONG_WORD_BREAK)), text))


def format_cents(value: Any) -> str:
    """An exact cents figure with thousands separators (``"1,234"``); text that is not a number as is."""
    if value is None or value == "":
        return ""
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    return f"{d:,}" if d == d.to_integral_value() else str(d)


def _text(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False) if isinstance(value, dict | list) else (
        "" if value is None else str(value))


def severity_counts(findings: list[dict[str, Any]]) -> dict[str, int]:
    """``errors`` and ``warnings``: how many findings of each severity (the report's and the index's)."""
    return {"errors": sum(1 for f in findings if f["severity"] == "error"),
            "warnings": sum(1 for f in findings if f["severity"] == "warning")}


def _pairs(mapping: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, _text(v)) for k, v in mapping.items() if v is not None]


def _findings(data: dict[str, Any]) -> list[dict[str, Any]]:
    order = {"error": 0, "warning": 1}
    rows = []
    # What matters first: errors, then the largest money impact, then the most rows (a finding that
    # restates others, a column's sum_mismatch, after those it restates).
    def weight(f: dict[str, Any]) -> tuple[Any, ...]:
        return (order.get(f["severity"], 2), bool(f.get("restates")), -abs(int(f.get("cents_impact") or 0)),
                -int(f.get("count") or 0), f["rule"], f["table"] or "", f["column"] or "")

    for f in sorted(data["findings"], key=weight):
        sample = list(f.get("sample") or [])
        columns = list(dict.fromkeys(k for row in sample for k in row))
        failure = (f.get("detail") or {}).get("failure") if f["rule"] == "migration_failed" else None
        rows.append({**f, "count": f.get("count") or 0, "meaning": rule(f["rule"]).meaning,
                     "sample": sample, "sample_columns": columns,
                     "sample_rows": [[_text(row.get(c)) for c in columns] for row in sample],
                     "failure": _pairs(failure) if failure else None,
                     "offenders": (f.get("detail") or {}).get("offenders") or OFFENDERS_NAME,
                     "baseline": f.get("baseline"), "since_previous": f.get("since_previous")})
    return rows


def _cents_charts(data: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    per_table: dict[str, int] = {}
    for f in data["findings"]:
        if f["table"] and f["severity"] == "error" and not f.get("restates"):
            per_table[f["table"]] = per_table.get(f["table"], 0) + (f.get("count") or 0)
    if per_table:
        found.append({"title": "Offending rows per table (error findings)", "note": "",
                      "svg": charts.bars("Offending rows per table", [
                          charts.Bar(t, n, f"{n:,}", "bad")
                          for t, n in sorted(per_table.items(), key=lambda kv: (-kv[1], kv[0]))])})
    verify = stage(data, "verify")
    if verify and verify.get("tables"):
        buckets = dict.fromkeys(DIFF_BUCKETS, 0)
        for t in verify["tables"]:
            for c in t["checks"]:
                for b, n in (c.get("differences") or {}).items():
                    buckets[b] = buckets.get(b, 0) + n
        if any(buckets.values()):
            found.append({"title": "Distribution of differences in cents", "note": DIFF_CHART_NOTE,
                          "svg": charts.columns("Differences in cents", [
                              charts.Bar(b, n, f"{n:,}", "neutral" if b == "0" else "bad",
                                         f"{n:,} row(s) off by {b} cents")
                              for b, n in buckets.items()])})
    return found


def _ledger(data: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    audit = stage(data, "audit")
    if audit is None:
        return None, []
    layout = stage(data, "layout") or {}
    state = stage(data, "state")
    history = list(data["provenance"].get("ledger_history") or [])
    passes = [{"name": p["pass"], "rules": p["rules"], "offending": p["offending"],
               "duration_s": p["duration_s"],
               "read": [(k, f"{v:,}" if isinstance(v, int) else _text(v)) for k, v in p.items()
                        if k not in ("pass", "rules", "offending", "duration_s")]}
              for p in audit.get("passes", [])]
    if state is not None:  # its watermarks ({table: id}) as "entries 19,997; journals 6,979"
        state = {**state, **{k: "; ".join(f"{t} {n:,}" for t, n in state[k].items())
                             for k in ("proven_before", "seen", "settled") if isinstance(state.get(k), dict)}}
    opening = stage(data, "opening balances") or {}
    ledger = {"mode": audit.get("mode"), "workers": audit.get("workers"),
              "convention": layout.get("convention"), "state": state, "passes": passes,
              "history": list(reversed(history)), "layout": layout.get("layout"),
              "roles": [(role, column) for role, column in (layout.get("roles") or {}).items()],
              "opening": [(c, v.get("opening_cents", "0"), v.get("balances_cents", "0"))
                          for c, v in (opening.get("by_currency") or {}).items()],
              "opening_scope": opening.get("scope")}
    found = []
    trial = next((p for p in audit.get("passes", []) if p["pass"] == "trial"), None)
    # A chart only where a bar is not zero: a pass says it in a sentence (ledger["balanced"]), not
    # with empty axes.
    if trial and trial.get("by_currency") and any(Decimal(v) for v in trial["by_currency"].values()):
        sums = sorted((c, Decimal(v)) for c, v in trial["by_currency"].items())
        found.append({"title": "Trial balance per currency",
                      "note": "Per currency, what its entries sum to in cents (0 when double entry holds).",
                      "svg": charts.bars("Trial balance per currency", [
                          charts.Bar(c, v, f"{format_cents(v)} cents", "ok" if v == 0 else "bad")
                          for c, v in sums])})
    offenders = stage(data, "offenders") or {}
    drift = offenders.get("drift_by_account_type")
    if drift:
        # "*" (every type, the platform layout's default) is no account type: not a bar of its own.
        types = sorted(set(drift) | set(layout.get("non_negative_account_types") or []) - {ALL_TYPES})
        found.append({"title": "Balance drift per account type",
                      "note": "Per account type, the sum of |stored balance - what its entries say| "
                              "(account_balance_drift). Types without drift are drawn at 0.",
                      "svg": charts.bars("Balance drift per account type", [
                          charts.Bar(t, Decimal(drift.get(t, {}).get("drift_cents", 0)),
                                     f"{format_cents(drift.get(t, {}).get('drift_cents', 0))} cents in "
                                     f"{drift.get(t, {}).get('accounts', 0):,} account(s)",
                                     "bad" if t in drift else "ok")
                          for t in types]) if types else Markup("<p>No account drifts.</p>")})
    if len(history) >= 2:
        found += _trend(history)
    return ledger, found


def _trend(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The charts of a state file's audits (``provenance.ledger_history``), oldest first."""
    def n(h: dict[str, Any], key: str) -> int:
        return int(h.get(key) or 0)

    by_run = [f"{h['run_id']} ({h['mode']})" for h in history]
    return [{"title": "Scheduled audits: findings across runs",
                  "note": f"The last {len(history)} audits recorded in the state file, oldest left.",
                  "svg": charts.columns("Findings across runs", [
                      charts.Bar(h["started_at"][:16].replace("T", " "), n(h, "findings"),
                                 f"{n(h, 'findings'):,}", "ok" if h["status"] == "pass" else "bad",
                                 f"{h['run_id']} ({h['mode']}): {h['status']}, {n(h, 'findings')} "
                                 f"finding(s), {n(h, 'offending_rows'):,} offending row(s), "
                                 f"{format_cents(h.get('cents_impact'))} cents")
                      for h in history])},
            {"title": "Scheduled audits: entries proven and entries checked",
                  "note": "An incremental audit checks only the entries beyond what earlier audits proved.",
                  "svg": charts.lines("Entries across runs", by_run, [
                      charts.Series("entries proven", [n(h, "proven_entries") for h in history], PROVEN),
                      charts.Series("entries checked", [n(h, "checked_entries") for h in history], CHECKED),
                  ])}]


def _timeline(data: dict[str, Any]) -> tuple[list[dict[str, Any]], Markup]:
    migrate = stage(data, "migrate")
    timeline = list((migrate or {}).get("timeline") or [])
    if not timeline:
        return [], Markup("")
    chart = charts.bars("Migration durations", [
        charts.Bar(m["file"], Decimal(str(m["duration_s"])), f"{m['duration_s']} s ({m['direction']})",
                   "ok" if m["ok"] else "bad") for m in timeline])
    return timeline, chart


def _expectations(data: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, str, dict[str, Any] | None]:
    judge = stage(data, "judge")
    if judge is None:
        return None, "", None
    rows = [{**e, "kwargs_text": _text(e.get("kwargs")),
             "seen_text": ", ".join(e.get("unexpected") or []) or (e.get("observed_value") or "")}
            for e in judge.get("expectations", [])]
    return rows, judge.get("skipped") or "No expectations ran.", judge.get("live")


def view(data: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """Everything the template shows, from a run's summary (``report.summary``)."""
    status = data["status"]
    word, (headline, explain) = VERDICTS[status], HEADLINES[status]
    findings = _findings(data)
    ledger, ledger_charts = _ledger(data)
    timeline, timeline_chart = _timeline(data)
    expectations, expectations_note, expectations_live = _expectations(data)
    verify = stage(data, "verify")
    provenance = data["provenance"]
    return {
        "command": data["command"], "run_id": data["run_id"], "status": status,
        "exit_code": data["exit_code"], "started_at": data["started_at"], "duration_s": data["duration_s"],
        "error": data.get("error"),
        "verdict": {"word": word, "headline": f"{word}: {headline}", "explain": explain},
        "failed_stage": data["stages"][-1]["name"] if status == "error" and data["stages"] else None,
        **severity_counts(data["findings"]),
        **totals(data["findings"], data["stages"]),
        "rows_checked": verify.get("rows_checked") if verify else None,
        "findings": findings, "rules_found": sorted({f["rule"] for f in data["findings"]}),
        "accepted": [{**f, "meaning": rule(f["rule"]).meaning} for f in data.get("accepted") or []],
        "baseline": provenance.get("baseline"), "previous_run": provenance.get("previous_run"),
        "target": provenance.get("target") or provenance.get("snapshot_path") or "",
        "charts": _cents_charts(data) + ledger_charts,
        "cents_tables": verify.get("tables", []) if verify else [],
        "inventory": _inventory(data),
        "rounding_mode": provenance.get("rounding_mode", ""),
        "ledger": ledger, "timeline": timeline, "timeline_chart": timeline_chart,
        "expectations": expectations, "expectations_note": expectations_note,
        "expectations_live": expectations_live,
        "stages": [{"name": s["name"], "duration_s": s["duration_s"], "detail": _stage_detail(s)}
                   for s in data["stages"]],
        "provenance": [(k, _text(v)) for k, v in provenance.items() if k not in PROVENANCE_ELSEWHERE],
        "migrations": provenance.get("migrations") or [],
        "files": files, "tool_version": provenance.get("tool_version", ""),
        **page_assets(),
    }


def _inventory(data: dict[str, Any]) -> dict[str, Any] | None:
    """The money inventory of the "pairs" stage: counts per verdict, what was not verified, and the
    rule that found each pair."""
    pairs = stage(data, "pairs")
    if pairs is None or "inventory" not in pairs:
        return None
    return {"counts": pairs["inventory"]["counts"], "not_verified": pairs["inventory"]["not_verified"],
            "pairing": pairs.get("pairing") or [], "iso4217": pairs.get("iso4217_published")}


def _stage_detail(stage: dict[str, Any]) -> str:
    """What the stages table shows of a stage: its detail but what has its own section, clipped."""
    text = _text({k: v for k, v in stage.items() if k not in ("name", "duration_s", *STAGE_DETAIL_ELSEWHERE)})
    if len(text) <= STAGE_DETAIL_CHARS_MAX:
        return text
    return f"{text[:STAGE_DETAIL_CHARS_MAX]} \u2026 (all in summary.json)"


def render_html(data: dict[str, Any], files: list[str] | None = None) -> str:
    """The report page of a run; ``files`` are the run folder's other outputs, linked from the page."""
    return environment().get_template("report.html.j2").render(view(data, files or []))
