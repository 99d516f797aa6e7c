"""junit.xml: the run's verdict in the format CI systems read.

One test suite per run. Test cases, each named after what it proves:

- one per migration the rehearsal applied (``migrations`` class), failed by
  the migration findings (``migration_failed``, ``not_idempotent``,
  ``down_mismatch``) of that file;
- one per check of a verified table (a pair, an identity, a pending
  constraint, rows kept), classed by the table, failed by the error
  findings of that table and column; warnings go to the case's output;
- one per pass of a ledger audit (``ledger`` class), named with the rules
  it proves, failed by that pass's findings, and with a state file one for
  the re-hash of proven history, failed by ``history_tampered``;
- findings that belong to none of these (``unpaired_column`` and the float
  source warning) go to the suite's output;
- a run that ended in error (could not verify) is one case with an
  ``<error>``, so a CI system never reads it as a pass.

Built with ElementTree, which escapes every value.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from verifier.findings import rules_of
from verifier.ledger.history import HISTORY_CHECK
from verifier.report.summary import stage

MIGRATION_RULES = rules_of("migration")  # the findings of a migration's test case


def _case(suite: ET.Element, classname: str, name: str, seconds: float = 0.0) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{seconds:.3f}")


def _judge(case: ET.Element, findings: list[dict[str, Any]]) -> None:
    errors = [f for f in findings if f["severity"] == "error"]
    if errors:
        failure = ET.SubElement(case, "failure", type=",".join(sorted({f["rule"] for f in errors})),
                                message="; ".join(f["message"] for f in errors)[:2000])
        failure.text = "\n".join(f"{f['rule']}: {f['count']} row(s), {f['cents_impact']} cents: "
                                 f"{f['message']}" for f in errors)
    warnings = [f for f in findings if f["severity"] == "warning"]
    if warnings:
        ET.SubElement(case, "system-out").text = "\n".join(
            f"warning {f['rule']}: {f['message']}" for f in warnings)


def _of_check(f: dict[str, Any], table: str, label: str, column: str | None) -> bool:
    """Whether finding ``f`` judges the check ``label`` of ``table`` (a pair's sum too)."""
    if f["table"] != table:
        return False
    if f.get("detail", {}).get("check") == label:
        return True
    return column is not None and f["rule"] == "sum_mismatch" and f["column"] == column


def render_junit(data: dict[str, Any]) -> str:
    """junit.xml for the summary ``data`` (as ``report.summary`` builds it)."""
    suite = ET.Element("testsuite", name=data["command"], timestamp=data["started_at"],
                       time=f"{data['duration_s']:.3f}")
    findings: list[dict[str, Any]] = list(data["findings"])
    placed: set[int] = set()
    for step in (stage(data, "migrate") or {}).get("timeline", []):
        mine = [f for f in findings if f["rule"] in MIGRATION_RULES and f.get("migration") == step["file"]]
        placed |= {id(f) for f in mine}
        _judge(_case(suite, "migrations", step["file"], step.get("duration_s", 0.0)), mine)
    for table in (stage(data, "verify") or {}).get("tables", []):
        for check in table["checks"]:
            column = check["check"].split(" -> ")[-1] if check["kind"] == "pair" else None
            mine = [f for f in findings
                    if id(f) not in placed and _of_check(f, table["table"], check["check"], column)]
            placed |= {id(f) for f in mine}
            _judge(_case(suite, table["table"], check["check"]), mine)
    for step in (stage(data, "audit") or {}).get("passes", []):
        mine = [f for f in findings
                if id(f) not in placed and f.get("detail", {}).get("check") == step["pass"]]
        placed |= {id(f) for f in mine}
        name = f"{step['pass']}: {', '.join(step['rules'])}"
        _judge(_case(suite, "ledger", name, step["duration_s"]), mine)
    if stage(data, "state saved") is not None:  # a scheduled audit re-hashed its proven history
        mine = [f for f in findings if id(f) not in placed
                and f.get("detail", {}).get("check") == HISTORY_CHECK]
        placed |= {id(f) for f in mine}
        _judge(_case(suite, "ledger", f"{HISTORY_CHECK}: history_tampered"), mine)
    for outcome in (stage(data, "judge") or {}).get("expectations", []):  # one case per GX expectation
        mine = [f for f in findings if id(f) not in placed and f["rule"] == "expectation_failed"
                and f.get("detail") == outcome]
        placed |= {id(f) for f in mine}
        kwargs = ", ".join(f"{k}={v}" for k, v in outcome["kwargs"].items())
        _judge(_case(suite, f"gx.{outcome['suite']}", f"{outcome['type']} ({kwargs})"), mine)
    rest = [f for f in findings if id(f) not in placed]
    if rest:
        case = _case(suite, "run", "other findings")
        _judge(case, rest)
    if data["status"] == "error":
        case = _case(suite, "run", "verification completed")
        ET.SubElement(case, "error", message=str(data["error"])[:2000]).text = str(data["error"])
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("skipped", "0")
    ET.indent(suite)
    _xml_chars_only(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


# Characters XML 1.0 does not allow anywhere in a document, escaped or not (W3C XML 1.0, fifth
# edition, section 2.2, production [2] Char): the C0 controls but tab, newline and carriage return,
# the surrogates, U+FFFE and U+FFFF. ElementTree writes them as they are, which makes the file
# ill-formed; a table name may hold one (PostgreSQL allows any character but NUL).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _visible(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _xml_chars_only(root: ET.Element) -> None:
    """Replace, in every text, tail and attribute under ``root``, each character XML 1.0 forbids by
    its escape as written in Python and JSON (``\\u0001``), so that the file stays well-formed and
    the name stays recognisable."""
    for element in root.iter():
        if element.text:
            element.text = _NOT_XML.sub(_visible, element.text)
        if element.tail:
            element.tail = _NOT_XML.sub(_visible, element.tail)
        for key, value in element.attrib.items():
            element.attrib[key] = _NOT_XML.sub(_visible, value)
