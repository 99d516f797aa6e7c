"""A plain, self-contained HTML page for a run.

Placeholder until the report issue's Jinja2 templates land: it shows the
verdict, the error, the stages and the provenance, with every value escaped
(data values are untrusted) and no external resource of any kind.
"""

from __future__ import annotations

import html
import json
from typing import Any

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
.verdict{font-size:1.6rem;font-weight:700;padding:.6rem 1rem;border-radius:6px}
.pass{background:#e3f6e8;color:#11622c}.fail{background:#fde8e8;color:#8a1c1c}
.error{background:#fff4d6;color:#7a5300}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .6rem;
text-align:left;vertical-align:top}th{background:#f4f4f4}code{font-size:.9em}
"""

_VERDICT_TEXT = {
    "pass": "PASS: verified, no findings",
    "fail": "FAIL: findings",
    "error": "NOT VERIFIED: the run could not verify",
}


def _e(value: Any) -> str:
    if isinstance(value, dict | list):
        value = json.dumps(value, default=str)
    return html.escape("" if value is None else str(value), quote=True)


def _table(rows: list[tuple[Any, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def render_html(data: dict[str, Any]) -> str:
    status = data["status"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_e(data['command'])} {_e(data['run_id'])}: {_e(status)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<div class='verdict {_e(status)}'>{_e(_VERDICT_TEXT[status])}</div>",
        f"<p>Run <code>{_e(data['run_id'])}</code> of <code>{_e(data['command'])}</code>, "
        f"started {_e(data['started_at'])}, took {_e(data['duration_s'])} s.</p>",
    ]
    if data.get("error"):
        parts.append(f"<h2>What happened</h2><p>{_e(data['error'])}</p>")
    parts.append(f"<h2>Findings</h2><p>{len(data['findings'])} finding(s).</p>")
    if data["findings"]:
        keys = sorted({k for f in data["findings"] for k in f})
        head = "".join(f"<th>{_e(k)}</th>" for k in keys)
        rows = "".join(
            "<tr>" + "".join(f"<td>{_e(f.get(k))}</td>" for k in keys) + "</tr>"
            for f in data["findings"]
        )
        parts.append(f"<table><tr>{head}</tr>{rows}</table>")
    parts.append("<h2>Stages</h2>")
    for stage in data["stages"]:
        parts.append(f"<h3>{_e(stage['name'])}</h3>")
        parts.append(_table(list(stage.items())))
    parts.append("<h2>Provenance</h2>")
    parts.append(_table(list(data["provenance"].items())))
    parts.append("</body></html>\n")
    return "".join(parts)
