"""What a run shows on the terminal while it works, and the summary at its end (stderr).

On a terminal (stderr is a TTY), each stage is a live line drawn by rich
(a well-kept library for it): the stage's name, its progress where it is
known (tables checked, migration files applied) with rate and time left,
and the time so far; when the stage ends its line stays, with its duration.
Elsewhere (cron, CI, a pipe) each stage prints one line when it ends, with
its duration, and nothing is redrawn. ``quiet`` shows no stages and no
summary (the verdict line only, which the CLI prints on stdout);
``verbose`` adds, under its stage, each migration statement as it ends.

The library reaches this through ``Run.watch`` (``verifier.run.Watch``),
which ``verifier.jobs.lifecycle.new_run`` takes from ``current()``; the
CLI installs a ``Terminal`` with ``use`` around each command.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from verifier.errors import printable
from verifier.findings import money
from verifier.run import Run, Watch

MODES = ("quiet", "normal", "verbose")
_current: Watch | None = None


def current() -> Watch | None:
    """The terminal the CLI installed for this command, if any."""
    return _current


@contextlib.contextmanager
def use(watch: Watch) -> Iterator[Watch]:
    """Install ``watch`` as the terminal of the runs started inside the block, and close it after."""
    global _current
    _current = watch
    try:
        yield watch
    finally:
        _current = None
        close = getattr(watch, "close", None)
        if close is not None:
            close()


class Terminal:
    """A ``Watch`` that draws on ``stream`` (stderr): live lines on a TTY, one line per stage elsewhere."""

    def __init__(self, mode: str = "normal", stream: TextIO | None = None) -> None:
        assert mode in MODES
        self.mode = mode
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() and mode != "quiet"
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._started: dict[str, float] = {}

    # -- the Watch protocol ------------------------------------------------

    def tell(self, text: str) -> None:
        if self.mode == "quiet":
            return
        self._print(printable(text))

    def started(self, stage: str) -> None:
        self._started[stage] = time.monotonic()
        if self.live:
            progress = self._live()
            self._tasks[stage] = progress.add_task(stage, total=None, unit="")

    def advanced(self, stage: str, done: int, total: int | None, unit: str, now: str = "") -> None:
        if self.live and stage in self._tasks:
            from rich.markup import escape  # a name such as "pay[/]ments" is text, not markup

            what = escape(f"{stage}: {printable(now)}" if now else stage)
            self._progress.update(self._tasks[stage], completed=done, total=total, description=what,
                                  unit=unit)

    def ended(self, stage: str, duration_s: float, ok: bool) -> None:
        mark = "done" if ok else "stopped"
        if self.live and stage in self._tasks:
            task = self._tasks.pop(stage)
            self._progress.remove_task(task)
            self._progress.console.print(f"[green]✓[/green] {stage}  {duration_s:.1f} s" if ok
                                         else f"[red]✗[/red] {stage}  {duration_s:.1f} s ({mark})",
                                         highlight=False)
        elif self.mode != "quiet":
            self._print(f"{stage}: {mark} in {duration_s:.1f} s")

    def statement(self, text: str) -> None:
        if self.mode == "verbose":
            self._print(f"    {printable(text)}")

    # -- drawing -------------------------------------------------------------

    def _live(self) -> Any:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
            from rich.table import Column

            # One line whatever the terminal's width: the description gives way (an ellipsis) before
            # the line would wrap, which a live display cannot redraw cleanly.
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}", table_column=Column(
                    no_wrap=True, overflow="ellipsis", ratio=1)),
                BarColumn(bar_width=16), _Counted(), TimeElapsedColumn(), expand=True,
                # transient: the live lines go when the display stops; each stage's line printed
                # when it ended stays above them.
                console=Console(file=self.stream, highlight=False), transient=True)
            self._progress.start()
        return self._progress

    def _print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the live display (restores the cursor), whatever state the run ended in."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- the summary -----------------------------------------------------------

    def summary(self, run: Run) -> None:
        """The end of a run, for a person: see ``summary_lines``."""
        self.close()
        if self.mode == "quiet":
            return
        for line in summary_lines(run):
            print(printable(line), file=self.stream, flush=True)


def _Counted() -> Any:  # noqa: N802 (a rich column, built when rich is imported)
    """A rich column: "3/12 tables, 41.2/s, 0:00:02 left" where the stage's total is known, else
    nothing (the bar pulses and the elapsed time runs)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Counted(ProgressColumn):
        def __init__(self) -> None:
            from rich.table import Column

            super().__init__(table_column=Column(no_wrap=True))

        def render(self, task: Any) -> Text:
            if task.total is None:
                return Text("")
            rate = f", {task.speed:,.1f}/s" if task.speed else ""
            left = (f", {int(task.time_remaining) // 60}:{int(task.time_remaining) % 60:02d} left"
                    if task.time_remaining is not None and task.completed < task.total else "")
            return Text(f"{int(task.completed):,}/{int(task.total):,} {task.fields.get('unit', '')}"
                        f"{rate}{left}")

    return Counted()


def summary_lines(run: Run, *, told_after: bool = False) -> list[str]:
    """The verdict, the findings counted per rule (errors, then warnings), the rows checked, the
    cents impact (absolute and net, in cents and as money), what was not verified, and where the
    report is (with ``told_after``, not the run's error and the report: the lines that follow say
    them, as for every error)."""
    from verifier.run import VERDICTS

    lines = [f"{VERDICTS[run.status or 'error']} in {run.duration_s:.1f} s"]
    if run.error and run.status == "error" and not told_after:
        lines.append(f"  not verified: {run.error}")
    for severity in ("error", "warning"):
        rules: dict[str, tuple[int, int]] = {}
        for f in run.findings:
            if f["severity"] == severity:
                n, rows = rules.get(f["rule"], (0, 0))
                # A finding that restates others (a column's sum_mismatch) counts no rows again.
                rules[f["rule"]] = (n + 1, rows + (0 if f.get("restates") else int(f.get("count") or 0)))
        if rules:
            lines.append(f"  {severity}s:")
            width = max(len(r) for r in rules)
            for rule, (n, rows) in sorted(rules.items(), key=lambda kv: (-kv[1][1], kv[0])):
                rows_text = f", {rows:,} row(s)" if rows else ""
                lines.append(f"    {rule:<{width}}  {n:,} finding(s){rows_text}")
    checked = (run.detail("verify") or {}).get("rows_checked")
    if checked is not None:
        lines.append(f"  rows checked: {int(checked):,}")
    impact = sum(int(f.get("cents_impact") or 0) for f in run.findings
                 if f["severity"] == "error" and not f.get("restates"))
    net = sum(int(f.get("cents_impact_net") or 0) for f in run.findings
              if f["severity"] == "error" and not f.get("restates"))
    if impact:
        lines.append(f"  cents impact: {impact:,} cent(s) ({money(impact)}) absolute, "
                     f"{net:+,} cent(s) ({money(net)}) net")
    if run.accepted:
        lines.append(f"  accepted (baseline): {len(run.accepted):,} finding(s), not failing the run")
    base = run.provenance.get("baseline")
    if base:
        lines.append(f"  baseline {base['path']}: {base['accepted']} accepted, {base['changed']} changed, "
                     f"{base['new']} new, {base['stale']} stale")
    before = run.provenance.get("previous_run")
    if before:
        lines.append(f"  since run {before['run_id']} ({before['status']}): {len(before['new'])} new, "
                     f"{len(before['fixed'])} fixed, {len(before['changed'])} changed, "
                     f"{before['unchanged']} unchanged")
        for label in ("new", "changed", "fixed"):
            for item in before[label][:5]:
                lines.append(f"    {label}: {item}")
    inventory = (run.detail("pairs") or {}).get("inventory", {}).get("counts")
    if inventory:
        unverified = inventory.get("unverified", 0)
        if unverified:
            lines.append(f"  money columns not verified: {unverified:,} (see the report's inventory)")
    reaped = run.provenance.get("scratch_reaped")
    if reaped:
        lines.append(f"  removed {len(reaped)} embedded server(s) that runs killed earlier had left: "
                     + ", ".join(reaped))
    if not told_after:
        lines.append(f"  report: {run.run_dir / 'report.html'}")
    return lines
