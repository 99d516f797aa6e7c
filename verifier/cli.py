"""The command line: a thin shell over the library (the only module importing click).

Each command calls one library function and renders its result. Library
errors are turned into one clear paragraph on stderr and an exit code here,
in ``_invoke``: 0 verified, 1 findings, 2 could not verify. ``--traceback``
shows the stack instead.
"""

from __future__ import annotations

import sys
import traceback as tb
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DEFAULT_REPORT_DIR = Path("reports")
_VERDICT = {"pass": "PASS", "fail": "FAIL", "error": "NOT VERIFIED"}

report_dir_option = click.option(
    "--report-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_REPORT_DIR,
    show_default=True, help="Each run writes DIR/<run-id>/ (summary.json, report.html).",
)
traceback_option = click.option(
    "--traceback", is_flag=True, help="On an error, show the Python stack as well."
)


def _invoke(name: str, show_traceback: bool, action: Callable[[], Any]) -> None:
    """Run ``action``; render its Run (or error) and exit with the right code."""
    from verifier.errors import VerifierError
    from verifier.signals import handle_termination

    handle_termination()
    try:
        result = action()
    except VerifierError as exc:
        if show_traceback:
            tb.print_exc()
        click.echo(f"{name}: {exc}", err=True)
        if exc.run_dir is not None:
            click.echo(f"{name}: incomplete report: {exc.run_dir / 'report.html'}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug in the verifier: say so, never a bare traceback
        if show_traceback:
            tb.print_exc()
        click.echo(
            f"{name}: internal error: {type(exc).__name__}: {exc}. This is a bug in the verifier; "
            "run again with --traceback and report it.",
            err=True,
        )
        sys.exit(2)
    if result is None:
        return
    click.echo(f"{_VERDICT[result.status]}: report {result.run_dir / 'report.html'}")
    sys.exit(result.exit_code)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_url", metavar="URL", help="Verify this live database in place (read only).")
@click.option("--snapshot", type=click.Path(path_type=Path), metavar="FILE",
              help="Rehearse: restore this pg_dump file (custom, directory, tar or plain) in scratch.")
@click.option("--demo", is_flag=True, help="Generate a demo platform and rehearse it on the embedded server.")
@click.option("--scratch", default="embedded", show_default=True, metavar="SPEC",
              help="Where a rehearsal runs: embedded, a postgresql:// URL, docker or docker:IMAGE.")
@click.option("--keep-scratch", is_flag=True,
              help="With a URL scratch: keep the scratch database and print how to connect.")
@click.option("--rows", type=int, default=None, metavar="N",
              help="With --demo: about this many money rows (1,000 to 10,000,000).")
@click.option("--seed", type=int, default=None, help="With --demo: the generator's seed.")
@report_dir_option
@traceback_option
def verify_cents(db_url: str | None, snapshot: Path | None, demo: bool, scratch: str,
                 keep_scratch: bool, rows: int | None, seed: int | None, report_dir: Path,
                 traceback: bool) -> None:
    """Verify that every DECIMAL money value survived its conversion to BIGINT cents.

    Exit codes: 0 verified, 1 findings, 2 could not verify.
    """
    chosen = [flag for flag, on in (("--db", db_url), ("--snapshot", snapshot), ("--demo", demo)) if on]
    if len(chosen) != 1:
        raise click.UsageError("Give exactly one of --db URL, --snapshot FILE or --demo.")
    if (rows is not None or seed is not None) and not demo:
        raise click.UsageError("--rows and --seed go with --demo.")

    def action() -> Any:
        from verifier import inplace, rehearsal
        from verifier.source import generate

        if demo:
            return rehearsal.demo(report_dir=report_dir, rows=rows or generate.DEFAULT_ROWS,
                                  seed=generate.DEFAULT_SEED if seed is None else seed)
        if snapshot is not None:
            return rehearsal.rehearse_snapshot(snapshot, report_dir=report_dir, scratch=scratch,
                                               keep_scratch=keep_scratch)
        assert db_url is not None
        return inplace.verify_cents(db_url, report_dir=report_dir)

    _invoke("verify-cents", traceback, action)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_url", required=True, metavar="URL", help="The database whose ledger to audit.")
@report_dir_option
@traceback_option
def verify_ledger(db_url: str, report_dir: Path, traceback: bool) -> None:
    """Audit the double-entry ledger's invariants in one consistent snapshot.

    Exit codes: 0 verified, 1 findings, 2 could not verify.
    """

    def action() -> Any:
        from verifier import inplace

        return inplace.audit_ledger(db_url, report_dir=report_dir)

    _invoke("verify-ledger", traceback, action)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def verifier() -> None:
    """Housekeeping for the financial migration verifier."""


@verifier.command("make-snapshot")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--rows", type=int, default=None, metavar="N", help="About this many money rows.")
@click.option("--seed", type=int, default=None, help="The generator's seed (same seed, same data).")
@click.option("--scratch", default="embedded", show_default=True, metavar="SPEC",
              help="Where to generate: embedded, a postgresql:// URL, docker or docker:IMAGE.")
@traceback_option
def make_snapshot(out: Path, rows: int | None, seed: int | None, scratch: str, traceback: bool) -> None:
    """Write a demo platform snapshot (pg_dump custom format) to OUT, for --snapshot."""

    def action() -> None:
        from verifier import rehearsal
        from verifier.source import generate

        made = rehearsal.make_snapshot(
            out, rows=rows or generate.DEFAULT_ROWS,
            seed=generate.DEFAULT_SEED if seed is None else seed, scratch=scratch,
        )
        click.echo(f"Wrote {out}: {made.plan.money_rows:,} money rows in {len(made.plan.counts)} "
                   f"tables (seed {made.plan.seed}, {made.rows_per_s:,.0f} rows/s).")

    _invoke("verifier make-snapshot", traceback, action)
