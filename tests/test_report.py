"""report.html and the reports index, opened in a real browser (headless Chromium).

The demo's reports (cents and ledger) are opened from files with every
network request refused: they must render without a console error, show
the verdict and every planted rule, and work without JavaScript. Data
values carrying HTML or script, from a real database, must render as text
and run nothing. A run that could not even connect still leaves a report
that says so. A screenshot of each report's first screen is written to
test-artifacts/, and of the whole page at 1280 and 800 pixels wide for the
demos, a pass and the runs index: the findings table fits its column (long
identifiers break after their dots and underscores), no page scrolls
sideways, and every chart label is whole and inside its chart.

Chromium is Debian's (``chromium``), driven by Playwright through its
``executable_path``; CI installs it (.ci/run). Elsewhere, without it, the
browser tests are skipped with that reason; under CI=true they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from verifier.files import write_atomic
from verifier.report import html as report_html
from verifier.report.charts import Bar, bars
from verifier.report.index import render_index

from .conftest import only_run, run_cli, run_summary

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = os.environ.get("VERIFIER_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which(
    "chromium-browser")
HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>\"'&amp;"
NAME = "<img src=x onerror=alert(2)>"  # identifiers hold 63 bytes


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must test the report in Chromium: apt-get install chromium (see .ci/run)")
        pytest.skip("no Chromium here (apt-get install chromium, or set VERIFIER_TEST_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            yield chromium
        finally:
            chromium.close()


class Opened:
    """A page opened from a file with the network refused, and everything it tried or said."""

    def __init__(self, browser: Any, path: Path, *, javascript: bool = True, width: int = 1280) -> None:
        self.requests: list[str] = []  # anything but the file itself
        self.console: list[str] = []
        self.dialogs: list[str] = []
        self.context = browser.new_context(java_script_enabled=javascript, offline=True,
                                           viewport={"width": width, "height": 900})
        self.context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                           else route.abort())
        self.page = self.context.new_page()
        self.page.on("request", lambda r: None if r.url.startswith("file:") else self.requests.append(r.url))
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(path.as_uri())
        self.page.wait_for_load_state("load")

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        target = ARTIFACTS / name
        self.page.screenshot(path=str(target))  # the first screen, what a reviewer sees first
        return target

    def screenshot_page(self, name: str) -> Path:
        """The whole page, to look at every section at this width."""
        ARTIFACTS.mkdir(exist_ok=True)
        target = ARTIFACTS / name
        self.page.screenshot(path=str(target), full_page=True)
        return target

    def clean(self) -> None:
        """Nothing fetched, nothing logged, no script of anyone else ran."""
        assert self.requests == []
        assert self.console == []
        assert self.dialogs == []

    def close(self) -> None:
        self.context.close()


def _planted_rules(run_dir: Path) -> set[str]:
    planted = json.loads((run_dir / "planted.json").read_text())
    rules = {p["rule"] for p in planted["planted"]}
    assert rules
    return rules


@pytest.mark.parametrize("command", ["verify-cents", "verify-ledger"])
def test_demo_report_in_a_browser_offline(browser: Any, tmp_path: Path, command: str) -> None:
    result = run_cli(command, "--demo", "--report-dir", str(tmp_path))
    assert result.code == 1, result.stderr
    run_dir = only_run(tmp_path)
    opened = Opened(browser, run_dir / "report.html")
    try:
        shot = opened.screenshot(f"{command}-demo-first-screen.png")
        assert shot.stat().st_size > 10_000
        assert opened.page.inner_text("#verdict").startswith("FAIL")
        findings = opened.page.inner_text("#findings-table")
        missing = {rule for rule in _planted_rules(run_dir) if rule not in findings}
        assert missing == set(), f"planted rules the report does not show: {missing}"
        # The only script is ours; the filter it adds narrows the findings to one rule.
        assert opened.page.locator("script").count() == 1
        rule = sorted(_planted_rules(run_dir))[0]
        opened.page.fill("#filter", rule)
        visible = opened.page.locator("#findings-table tbody tr:visible")
        assert visible.count() >= 1
        assert all(rule in text for text in visible.all_inner_texts())
        assert opened.page.locator("svg.chart").count() >= 2
        opened.clean()
    finally:
        opened.close()
    # Without JavaScript the page says the same.
    bare = Opened(browser, run_dir / "report.html", javascript=False)
    try:
        assert bare.page.inner_text("#verdict").startswith("FAIL")
        assert all(rule in bare.page.inner_text("#findings-table") for rule in _planted_rules(run_dir))
        bare.clean()
    finally:
        bare.close()
    index = Opened(browser, tmp_path / "index.html")
    try:
        assert run_dir.name in index.page.inner_text("body")
        index.page.click(f"text={run_dir.name}")
        assert index.page.inner_text("#verdict").startswith("FAIL")
        index.clean()
    finally:
        index.close()


def test_ledger_demo_report_charts_the_trial_balance_drift_and_trend(tmp_path: Path) -> None:
    assert run_cli("verify-ledger", "--demo", "--report-dir", str(tmp_path)).code == 1
    page = (only_run(tmp_path) / "report.html").read_text()
    for title in ("Trial balance per currency", "Balance drift per account type",
                  "Scheduled audits: findings across runs",
                  "Scheduled audits: entries proven and entries checked"):
        assert f"<h3>{title}</h3>" in page
    data = run_summary(tmp_path)
    [audit] = [s for s in data["stages"] if s["name"] == "audit"]
    [trial] = [p for p in audit["passes"] if p["pass"] == "trial"]
    # The demo plants a one-sided EUR entry: its trial balance is what the chart shows, exactly.
    assert any(Decimal(v) != 0 for v in trial["by_currency"].values())
    for currency, total in trial["by_currency"].items():
        assert f"{report_html.format_cents(total)} cents" in page, currency
    # The platform layout's non-negative types are "*", every type: that is no bar of its own.
    assert ">*</text>" not in page


@pytest.fixture
def hostile_db(fresh_db: str) -> str:
    """A table, column and key whose names and values are HTML and script, with wrong cents."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        table, column = sql.Identifier(f"tips {NAME}"), sql.Identifier(f"a{NAME}")
        cents = sql.Identifier(f"a{NAME}_cents")
        conn.execute(sql.SQL("CREATE TABLE {} (k text PRIMARY KEY, {} numeric(12,2), {} bigint)").format(
            table, column, cents))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, 1.23, 124), (%s, 2.00, 200)").format(table),
                     (HOSTILE + "x" * 5000, "fine"))
    return fresh_db


def test_html_and_script_in_names_and_values_render_as_text(browser: Any, hostile_db: str,
                                                            tmp_path: Path) -> None:
    result = run_cli("verify-cents", "--db", hostile_db, "--report-dir", str(tmp_path))
    assert result.code == 1, result.stderr
    run_dir = only_run(tmp_path)
    opened = Opened(browser, run_dir / "report.html")
    try:
        text = opened.page.text_content("body")  # samples sit in closed <details>: not in inner_text
        assert f"public.tips {NAME}" in text and f"a{NAME}_cents" in text  # the names, as text
        # The row's key, as text (in the sample's JSON), long as it is.
        assert json.dumps(HOSTILE)[1:-1] + "x" * 100 in text
        assert opened.page.locator("script").count() == 1
        assert opened.page.locator("img").count() == 0
        opened.clean()
    finally:
        opened.close()


def test_html_in_migration_file_names_and_errors_renders_as_text(browser: Any, tmp_path: Path,
                                                                  small_dump: Path, server_dsn: str) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    name = f"300_{NAME}.sql"
    # The server's error message quotes the value: HTML and script in the finding and the timeline.
    (migrations / name).write_text(f"SELECT $h${HOSTILE}$h$::int;\n")
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--migrations", str(migrations), "--report-dir", str(tmp_path / "r"))
    assert result.code == 1, result.stderr
    run_dir = only_run(tmp_path / "r")
    [failed] = [f for f in run_summary(tmp_path / "r")["findings"] if f["rule"] == "migration_failed"]
    assert failed["migration"] == name and "<script>" in failed["message"]
    opened = Opened(browser, run_dir / "report.html")
    try:
        text = opened.page.text_content("body")
        assert name in text and "<script>alert('x')</script>" in text
        assert opened.page.locator("script").count() == 1
        assert opened.page.locator("img").count() == 0
        opened.clean()
    finally:
        opened.close()


def test_a_run_that_could_not_connect_still_has_a_report(browser: Any, tmp_path: Path) -> None:
    url = "postgresql://verifier:s3cret-pw@127.0.0.1:1/nowhere"
    result = run_cli("verify-cents", "--db", url, "--report-dir", str(tmp_path))
    assert result.code == 2
    run_dir = only_run(tmp_path)
    opened = Opened(browser, run_dir / "report.html")
    try:
        verdict = opened.page.inner_text("#verdict")
        assert verdict.startswith("NOT VERIFIED")
        body = opened.page.inner_text("body")
        assert "127.0.0.1:1" in body and "stopped during the connect stage" in body and "incomplete" in body
        opened.screenshot("verify-cents-unreachable-first-screen.png")
        opened.clean()
    finally:
        opened.close()
    for name in ("report.html", "summary.json", "junit.xml"):
        assert "s3cret-pw" not in (run_dir / name).read_text()
    assert "s3cret-pw" not in (tmp_path / "index.html").read_text()
    assert "NOT VERIFIED" in (tmp_path / "index.html").read_text()


def _summary(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": "fail", "exit_code": 1, "command": "verify-cents --db x",
        "run_id": "20261124T000000Z-abcdef",
        "started_at": "2026-11-24T00:00:00+00:00", "duration_s": 1.0, "error": None, "findings": [],
        "stages": [], "provenance": {"tool_version": "0"}}
    data.update(changes)
    return data


def test_bytes_that_are_not_utf8_are_written_not_fatal(tmp_path: Path) -> None:
    # A snapshot path from the command line may hold bytes that are not UTF-8 (surrogate escapes).
    odd = os.fsdecode(b"/tmp/snap-\xff\xfe.dump")
    page = report_html.render_html(_summary(error=f"Cannot read {odd}", status="error", exit_code=2))
    write_atomic(tmp_path / "report.html", page)
    assert "snap-" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_index_lists_runs_newest_first_and_says_which_it_cannot_read(tmp_path: Path) -> None:
    for run_id, status in (("20261101T000000Z-aaaaaa", "pass"), ("20261102T000000Z-bbbbbb", "fail")):
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "summary.json").write_text(json.dumps(_summary(run_id=run_id, status=status)))
    (tmp_path / "20261103T000000Z-cccccc").mkdir()
    (tmp_path / "20261103T000000Z-cccccc" / "summary.json").write_text("{not json")
    (tmp_path / "20261104T000000Z-dddddd").mkdir()  # killed before it wrote anything
    page = render_index(tmp_path)
    order = [page.index(r) for r in ("dddddd", "cccccc", "bbbbbb", "aaaaaa")]
    assert order == sorted(order)
    assert "UNREADABLE" in page and "UNFINISHED" in page and "PASS" in page and "FAIL" in page


def test_identifiers_break_after_their_words_never_inside() -> None:
    """<wbr> after underscores, dots (not decimal points), a folder's slash and, in identifiers, before a
    CamelCase word's capital; the text stays escaped."""
    breakable = report_html.breakable
    assert str(breakable("public.creator_payouts.amount_cents")) == (
        "public.<wbr>creator_<wbr>payouts.<wbr>amount_<wbr>cents")
    assert str(breakable("public.CreatorPayouts")) == "public.<wbr>Creator<wbr>Payouts"
    assert str(breakable("PostgreSQL sums 1.25 of 1/2 in /tmp/run", camel=False)) == (
        "PostgreSQL sums 1.25 of 1/2 in /tmp/<wbr>run")
    assert str(breakable("<b>a_b</b>")) == "&lt;b&gt;a_<wbr>b&lt;/b&gt;" and str(breakable(None)) == ""
    # A word too long for any column (PostgreSQL's 63 characters, no underscore) breaks every 20.
    assert str(breakable("public." + "x" * 63)) == "public.<wbr>" + "<wbr>".join(["x" * 20] * 3 + ["xxx"])
    assert str(breakable("a" * 23)) == "a" * 23


def test_chart_labels_that_differ_only_in_their_middle_stay_apart() -> None:
    """25 long names alike but for a number in their middle: abbreviated, each still tells its table
    (before, all 25 showed the same text: found by a break-it run)."""
    names = [f"a_very_long_schema_name_for_the_shop.t{i:02d}_creator_payouts_extraordinary_amount_cents"
             for i in range(25)]
    svg = str(bars("rows", [Bar(n, i + 1, str(i + 1)) for i, n in enumerate(names)]))
    shown = re.findall(r"</title>([^<]*)</text>", svg)
    assert len(shown) == 25 and len(set(shown)) == 25, shown


def test_chart_labels_are_escaped_and_values_exact() -> None:
    huge = "-12,345,678,901,234,567,890"
    svg = str(bars("t<script>", [Bar("<b>USD</b>", Decimal(huge.replace(",", "")), huge)]))
    assert "<b>" not in svg and "&lt;b&gt;USD&lt;/b&gt;" in svg and "t&lt;script&gt;" in svg
    assert "-12,345,678,901,234,567,890" in svg
    assert report_html.format_cents("-12345678901234567890") == "-12,345,678,901,234,567,890"
    assert report_html.format_cents(Decimal("0.5")) == "0.5"


def test_an_index_that_cannot_be_written_does_not_change_the_run(tmp_path: Path) -> None:
    (tmp_path / "index.html").mkdir()  # in the way of the index
    url = "postgresql://127.0.0.1:1/nowhere"
    result = run_cli("verify-cents", "--db", url, "--report-dir", str(tmp_path))
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "could not update" in result.stderr and "index.html" in result.stderr
    [run_dir] = [p for p in tmp_path.iterdir() if p.name != "index.html"]
    assert (run_dir / "report.html").exists() and (tmp_path / "index.html").is_dir()


def test_bars_spanning_orders_of_magnitude_are_drawn_on_a_log_scale_that_says_so() -> None:
    """One wrong row beside five thousand warnings: on a linear scale the one is 2 px of 330; on the
    log scale it is visible, the title says "log scale", and the printed figures stay exact."""
    import re

    from verifier.report.charts import Bar, bars

    svg = str(bars("Rows per rule", [Bar("sub_cent_loss", 5000, "5,000"), Bar("sign_flip", 9, "9")]))
    assert "Rows per rule (log scale)" in svg and ">5,000<" in svg and ">9<" in svg
    widths = [int(w) for w in re.findall(r'<rect [^>]*width="(\d+)"', svg)]
    assert widths[0] == 330 and widths[1] > 60
    linear = str(bars("Rows", [Bar("a", 50, "50"), Bar("b", 9, "9")]))
    assert "log scale" not in linear


# Where each chart's text lies, in the page: the chart's box, every text's box, each label's shown text
# and its own tooltip (a <title> inside the <text>, for a name shown abbreviated), and where the bars start.
CHART_GEOMETRY = """() => [...document.querySelectorAll("svg.chart")].map(svg => {
  const box = svg.getBoundingClientRect();
  const shown = t => [...t.childNodes].filter(n => n.nodeType === Node.TEXT_NODE).map(n => n.data).join("");
  const own = t => {
    const title = t.querySelector(":scope > title");
    return title ? title.textContent : null;
  };
  const labels = [...svg.querySelectorAll("text[text-anchor=end], text.tick")]
    .filter(t => t.closest("g"))  // category labels (a bar's, a column's), not the legend
    .map(t => ({shown: shown(t), title: own(t), right: t.getBoundingClientRect().right}));
  return {title: svg.getAttribute("aria-label"), box: [box.left, box.top, box.right, box.bottom],
          texts: [...svg.querySelectorAll("text")].map(t => {
            const r = t.getBoundingClientRect();
            return {text: shown(t), box: [r.left, r.top, r.right, r.bottom]}; }),
          bars_left: Math.min(...[...svg.querySelectorAll("rect")].map(r => r.getBoundingClientRect().left)),
          kind: svg.querySelector("text.tick") ? "columns" : "bars", labels};
})"""


def _charts_are_whole_and_inside(charts: list[dict[str, Any]], names: set[str] | None = None) -> None:
    """Every text inside its chart; every bar label left of the bars; every label shown whole or, when
    abbreviated (with "…"), whole in its own tooltip: never cut silently."""
    for chart in charts:
        left, top, right, bottom = chart["box"]
        for t in chart["texts"]:
            tl, tt, tr, tb = t["box"]
            assert tl >= left - 0.5 and tr <= right + 0.5 and tt >= top - 0.5 and tb <= bottom + 0.5, (
                chart["title"], t["text"], t["box"], chart["box"])
        for label in chart["labels"]:
            if chart["kind"] == "bars":
                assert label["right"] <= chart["bars_left"], (chart["title"], label)
            # An ellipsis if and only if the name is whole in the label's own tooltip.
            assert ("\u2026" in label["shown"]) == (label["title"] is not None), (chart["title"], label)
            whole = label["title"] if label["title"] is not None else label["shown"]
            assert names is None or whole in names, (chart["title"], label)


def test_chart_labels_are_whole_and_inside_the_chart(browser: Any, tmp_path: Path) -> None:
    """Long schema.table.column names, a negative bar, a name too long for any chart, 60 dated columns:
    in Chromium, each label is inside its chart and shows its whole name, or an abbreviation with
    the whole name in its tooltip."""
    from verifier.report.charts import columns

    long_names = ["public.creator_subscription_payments.amount_cents",
                  "billing.creator_payout_adjustments.net_amount_cents", "public.tips.amount_cents"]
    absurd = "audit_" * 30 + "amount_cents"  # no chart could print this: abbreviated, whole in its tooltip
    dates = [f"2026-12-{d:02d} 21:{m:02d}" for d in range(1, 31) for m in (15, 45)]
    buckets = ["public.creator_subscription_payments", "<= -100,000", "-1,000 to -99,999"]
    charts = [bars("Offending rows per column", [Bar(n, 10 ** i, f"{10 ** i:,}", "bad")
                                                 for i, n in enumerate(long_names)]),
              bars("Trial balance", [Bar(long_names[0], -250, "-250 cents", "bad"),
                                     Bar("USD", 90, "90 cents")]),
              bars("Too long", [Bar(absurd, 3, "3")]),
              columns("Findings across runs", [Bar(d, i % 7, str(i % 7)) for i, d in enumerate(dates)]),
              columns("Buckets", [Bar(b, i, str(i)) for i, b in enumerate(buckets)])]
    page = tmp_path / "charts.html"
    page.write_text(f"<!doctype html><meta charset=utf-8><style>{report_html.page_assets()['style']}</style>"
                    + "".join(str(c) for c in charts))
    opened = Opened(browser, page)
    try:
        found = opened.page.evaluate(CHART_GEOMETRY)
        _charts_are_whole_and_inside(found, {*long_names, absurd, "USD", *dates, *buckets})
        # Names a chart can hold (schema.table.column, some 50 characters) are printed whole.
        [by_column, trial, too_long, *_] = found
        assert [label["shown"] for label in by_column["labels"]] == long_names
        assert [label["shown"] for label in trial["labels"]] == [long_names[0], "USD"]
        assert too_long["labels"][0]["title"] == absurd
        opened.screenshot_page("charts-long-labels-1280.png")
        opened.clean()
    finally:
        opened.close()


def _findings_table_fits(browser: Any, report: Path, name: str) -> None:
    """At 1280 and at 800 pixels wide: the findings table is no wider than its container's content
    box (nor than its clientWidth, padding included), and nothing makes the page scroll sideways."""
    for width in (1280, 800):
        opened = Opened(browser, report, width=width)
        try:
            fit = opened.page.evaluate("""() => {
              const table = document.getElementById("findings-table"), box = table.parentElement;
              const style = getComputedStyle(box), page = document.documentElement;
              const padding = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
              return {scroll: table.scrollWidth, width: table.getBoundingClientRect().width,
                      client: box.clientWidth, content: box.clientWidth - padding,
                      page: page.scrollWidth, viewport: page.clientWidth};
            }""")
            opened.page.locator("#findings-table").screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"))
            assert fit["scroll"] <= fit["client"], (width, fit)
            assert fit["width"] <= fit["content"] + 0.5, (width, fit)
            assert fit["page"] <= fit["viewport"], (width, fit)
            opened.clean()
        finally:
            opened.close()


@pytest.fixture(scope="module")
def cents_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of one ``verify-cents --demo`` (its report has every planted finding)."""
    out = tmp_path_factory.mktemp("cents-demo")
    result = run_cli("verify-cents", "--demo", "--report-dir", str(out))
    assert result.code == 1, result.stderr
    return only_run(out)


def test_the_demo_findings_table_fits_at_1280_and_800_pixels(browser: Any, cents_demo: Path) -> None:
    _findings_table_fits(browser, cents_demo / "report.html", "verify-cents-demo-findings")


@pytest.fixture
def long_names_db(fresh_db: str) -> str:
    """Wrong cents in tables and columns whose names are long (up to PostgreSQL's 63 bytes): a schema,
    snake_case names with underscores, and a quoted CamelCase table."""
    long_table = "creator_subscription_payments_adjustments_2026_q4"
    source, target = "subscription_gross_amount_before_platform_fees_usd", (
        "subscription_gross_amount_before_platform_fees_cents")
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA creator_billing_archive_2026")
        for table in (sql.Identifier("creator_billing_archive_2026", long_table),
                      sql.Identifier("CreatorSubscriptionPaymentAdjustmentsArchive")):
            conn.execute(sql.SQL("CREATE TABLE {} (k text PRIMARY KEY, {} numeric(12,2), {} bigint)").format(
                table, sql.Identifier(source), sql.Identifier(target)))
            conn.execute(sql.SQL("INSERT INTO {} VALUES ('mismatch', 1.23, 124), ('sign', 2.00, -200), "
                                 "('null', 3.00, NULL), ('fine', 4.00, 400)").format(table))
    return fresh_db


def test_long_identifiers_fit_the_findings_table_at_1280_and_800_pixels(browser: Any, long_names_db: str,
                                                                         tmp_path: Path) -> None:
    result = run_cli("verify-cents", "--db", long_names_db, "--report-dir", str(tmp_path))
    assert result.code == 1, result.stderr
    report = only_run(tmp_path) / "report.html"
    tables = {f["table"] for f in run_summary(tmp_path)["findings"]}
    assert "creator_billing_archive_2026.creator_subscription_payments_adjustments_2026_q4" in tables
    _findings_table_fits(browser, report, "verify-cents-long-names-findings")
    opened = Opened(browser, report)
    try:  # the chart of offending rows per table names both tables whole
        _charts_are_whole_and_inside(opened.page.evaluate(CHART_GEOMETRY))
        opened.clean()
    finally:
        opened.close()


def test_demo_and_pass_reports_at_1280_and_800_pixels(browser: Any, cents_demo: Path, tmp_path: Path,
                                                      small_dump: Path, server_dsn: str) -> None:
    """The cents demo, the ledger demo and a passing rehearsal (its migration timeline names long
    files), and the runs index (the ledger demo's target is a long path), whole pages at both widths
    (test-artifacts/*-full-*.png): no page scrolls sideways and every chart's labels are whole and
    inside it."""
    from verifier.paths import project_migrations_dir

    assert run_cli("verify-ledger", "--demo", "--report-dir", str(tmp_path / "ledger")).code == 1
    passed = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--migrations", str(project_migrations_dir()), "--skip-rule-checks",
                     "--report-dir", str(tmp_path / "pass"))
    assert passed.code == 0, passed.stderr
    pages = {"verify-cents-demo": cents_demo / "report.html",
             "verify-ledger-demo": only_run(tmp_path / "ledger") / "report.html",
             "verify-cents-pass": only_run(tmp_path / "pass") / "report.html",
             "runs-index": tmp_path / "ledger" / "index.html"}
    for name, path in pages.items():
        for width in (1280, 800):
            opened = Opened(browser, path, width=width)
            try:
                opened.screenshot_page(f"{name}-full-{width}.png")
                page = opened.page.evaluate("[document.documentElement.scrollWidth, "
                                            "document.documentElement.clientWidth]")
                assert page[0] <= page[1], (name, width, page)
                _charts_are_whole_and_inside(opened.page.evaluate(CHART_GEOMETRY))
                opened.clean()
            finally:
                opened.close()
