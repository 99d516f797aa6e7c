"""The command line: a thin shell over the library (with main.py, the only modules importing click).

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
# --migration-timeout's largest value: a week, as migration_timeout_s in the configuration (NaN and
# infinity fall outside the range and are refused).
MIGRATION_TIMEOUT_MAX_S = 7 * 86400.0


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Refuse NaN, which a FloatRange lets through (no comparison with NaN is false)."""
    if value is not None and value != value:
        raise click.BadParameter("nan is not a number.", ctx=ctx, param=param)
    return value

report_dir_option = click.option(
    "--report-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_REPORT_DIR,
    show_default=True, help="Each run writes DIR/<run-id>/ (summary.json, report.html).",
)
traceback_option = click.option(
    "--traceback", is_flag=True, help="On an error, show the Python stack as well."
)
version_option = click.version_option(package_name="financial-migration-verifier",
                                      message="%(prog)s %(version)s")
# How much a run shows on stderr while it works: --quiet (the verdict line only), the default (each
# stage, live on a terminal), --verbose (also each migration statement as its file ends).
quiet_option = click.option("--quiet", "-q", "quiet", is_flag=True,
                            help="Show only the verdict line (no progress, no summary).")
verbose_option = click.option("--verbose", "-v", "verbose", is_flag=True,
                              help="Also show each migration statement, with its duration.")
baseline_option = click.option(
    "--baseline", "baseline", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
    help="Accepted findings (verifier accept): shown apart, never failing the run; new or grown ones fail "
         "(default: the configuration's baseline).")
format_option = click.option("--format", "output_format", type=click.Choice(["text", "json"]),
                             default="text", show_default=True,
                             help="json: write summary.json to stdout as well (the verdict line goes "
                                  "to stderr).")


def _mode(quiet: bool, verbose: bool) -> str:
    if quiet and verbose:
        raise click.UsageError("Give --quiet or --verbose, not both.")
    return "quiet" if quiet else "verbose" if verbose else "normal"


# libpq's environment variables that name a database to connect to (PostgreSQL 15, "Environment
# Variables"): with none of --db, --snapshot, --demo and no DATABASE_URL, any of them set means the
# database they name (an empty conninfo: libpq fills in the rest).
PG_TARGET_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")


def _target(ctx: click.Context, db_url: str | None, *, others: bool) -> str | None:
    """The target's URL: --db, else $DATABASE_URL (unless --snapshot or --demo was given), else ""
    (libpq's defaults) when a PG* variable names one, else None."""
    import os

    from_env = ctx.get_parameter_source("db_url") == click.core.ParameterSource.ENVIRONMENT
    if from_env and others:
        return None
    if db_url is not None and not db_url.strip():
        raise click.UsageError(("DATABASE_URL is set but" if from_env else "--db was given but")
                               + " empty: give a URL or conninfo string.")
    if db_url:
        return db_url
    if not others and any(os.environ.get(v) for v in PG_TARGET_VARIABLES):
        return ""
    return None


def _invoke(name: str, show_traceback: bool, action: Callable[[], Any], *, mode: str = "normal",
            output_format: str = "text") -> None:
    """Run ``action``; render its Run (or error) and exit with the right code."""
    from verifier import terminal
    from verifier.errors import VerifierError, printable
    from verifier.run import verdict_line
    from verifier.signals import handle_termination, release, within

    handle_termination()
    term = terminal.Terminal(mode)
    try:
        with terminal.use(term):
            result = action()
    except VerifierError as exc:
        if show_traceback:
            tb.print_exc()
        if mode != "quiet":
            for line in exc.summary:
                click.echo(printable(line), err=True)
        click.echo(f"{name}: {printable(str(exc))}", err=True)
        if exc.run_dir is not None:
            click.echo(f"{name}: incomplete report: {exc.run_dir / 'report.html'}", err=True)
            _stdout(name, exc.run_dir, verdict_line("error", exc.run_dir), output_format)
        release()  # (a signal held back since the outcome was decided ends the process here)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug in the verifier: say so, never a bare traceback
        if within(exc):  # a signal, wrapped by the code it landed in (verifier.main says so)
            raise KeyboardInterrupt from None
        if show_traceback:
            tb.print_exc()
        click.echo(
            f"{name}: internal error: {type(exc).__name__}: {printable(str(exc))}. This is a bug in the "
            "verifier; run again with --traceback and report it.",
            err=True,
        )
        sys.exit(2)
    if result is None:
        release()
        return
    term.summary(result)
    _stdout(name, result.run_dir, verdict_line(result.status, result.run_dir), output_format)
    release()
    sys.exit(result.exit_code)


def _stdout(name: str, run_dir: Path, verdict: str, output_format: str) -> None:
    """The verdict line on stdout; with json, the run's summary.json there instead (the line on
    stderr), for a run that ended in error too."""
    if output_format != "json":
        click.echo(verdict)
        return
    summary = run_dir / "summary.json"
    try:
        text = summary.read_text(encoding="utf-8")
    except OSError as exc:
        click.echo(f"{name}: cannot read {summary}: {exc.strerror}.", err=True)
    else:
        try:
            click.echo(text, nl=False)
        except OSError as exc:
            click.echo(f"{name}: cannot write summary.json to stdout: {exc.strerror}.", err=True)
    click.echo(verdict, err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_url", metavar="URL", envvar="DATABASE_URL", show_envvar=True,
              help="Verify this live database in place (read only).")
@click.option("--snapshot", type=click.Path(path_type=Path), metavar="FILE",
              help="Rehearse: restore this pg_dump file (custom, directory, tar or plain) in scratch.")
@click.option("--demo", is_flag=True, help="Generate a demo platform and rehearse it on the embedded server.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="verifier.toml or pyproject.toml ([tool.verifier]); default: "
                                   "verifier.toml, else pyproject.toml, in . or its nearest parent.")
@click.option("--strict", is_flag=True, help="Warnings fail the run too (exit 1).")
@click.option("--gx", is_flag=True,
              help="Also judge the results with the Great Expectations suites in expectations/.")
@click.option("--expectations", "expectations_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="DIR",
              help="Your own GX suites (*.json) to run as well, on the live tables (implies --gx).")
@click.option("--scratch", default="embedded", show_default=True, metavar="SPEC",
              help="Where a rehearsal runs: embedded, a postgresql:// URL, docker or docker:IMAGE.")
@click.option("--keep-scratch", is_flag=True,
              help="With a URL scratch: keep the scratch database and print how to connect.")
@click.option("--migrations", "migrations_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="DIR",
              help="Rehearsal: the directory of your migrations (default: the configuration's "
                   "migrations, else ./migrations; --demo uses this project's own).")
@click.option("--migration-timeout", "migration_timeout_s", callback=_finite,
              type=click.FloatRange(min=0, max=MIGRATION_TIMEOUT_MAX_S),
              default=None, metavar="S",
              help="Rehearsal: cancel a migration file still running after S seconds, with a stall report "
                   "(default: migration_timeout_s, 3600; 0: no limit).")
@click.option("--skip-rule-checks", is_flag=True,
              help="Rehearsal: do not check each migration for idempotency and its down block.")
@click.option("--rows", type=int, default=None, metavar="N",
              help="With --demo: about this many money rows (1,000 to 10,000,000).")
@click.option("--seed", type=int, default=None, help="With --demo: the generator's seed.")
@report_dir_option
@baseline_option
@quiet_option
@verbose_option
@format_option
@traceback_option
@version_option
@click.pass_context
def verify_cents(ctx: click.Context, db_url: str | None, snapshot: Path | None, demo: bool,
                 config_path: Path | None, strict: bool, gx: bool, expectations_dir: Path | None,
                 scratch: str, keep_scratch: bool, migrations_dir: Path | None,
                 migration_timeout_s: float | None, skip_rule_checks: bool, rows: int | None,
                 seed: int | None, report_dir: Path, baseline: Path | None, quiet: bool, verbose: bool,
                 output_format: str, traceback: bool) -> None:
    """Verify that every DECIMAL money value survived its conversion to BIGINT cents.

    The database to verify in place is --db URL, else $DATABASE_URL, else libpq's own PG*
    variables (PGHOST, PGDATABASE, PGSERVICE...) when any is set. Exit codes: 0 verified,
    1 findings, 2 could not verify.
    """
    db_url = _target(ctx, db_url, others=bool(snapshot or demo))
    chosen = [flag for flag, on in (("--db", db_url is not None), ("--snapshot", snapshot), ("--demo", demo))
              if on]
    if len(chosen) != 1:
        raise click.UsageError("Give exactly one of --db URL, --snapshot FILE or --demo.")
    if (rows is not None or seed is not None) and not demo:
        raise click.UsageError("--rows and --seed go with --demo.")

    def action() -> Any:
        from verifier.demo import generate
        from verifier.jobs import demo as demos
        from verifier.jobs import in_place, rehearsal

        options = rehearsal.Options(migrations_dir, migration_timeout_s, not skip_rule_checks,
                                    config_path=config_path, strict=strict, gx=gx,
                                    expectations=expectations_dir, baseline=baseline)
        if demo:
            return demos.demo(report_dir=report_dir, rows=rows or generate.DEFAULT_ROWS,
                              seed=generate.DEFAULT_SEED if seed is None else seed, options=options)
        if snapshot is not None:
            return rehearsal.rehearse_snapshot(snapshot, report_dir=report_dir, scratch=scratch,
                                               keep_scratch=keep_scratch, options=options)
        assert db_url is not None
        return in_place.verify_cents(db_url, report_dir=report_dir, config_path=config_path,
                                     strict=strict, gx=gx, expectations=expectations_dir, baseline=baseline)

    _invoke("verify-cents", traceback, action, mode=_mode(quiet, verbose), output_format=output_format)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_url", metavar="URL", envvar="DATABASE_URL", show_envvar=True,
              help="Audit the ledger of this live database (read only).")
@click.option("--demo", is_flag=True,
              help="Build a demo ledger with a defect of every rule planted, on the embedded server, "
                   "and audit it.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="verifier.toml or pyproject.toml ([tool.verifier.ledger]); default: "
                                   "verifier.toml, else pyproject.toml, in . or its nearest parent.")
@click.option("--strict", is_flag=True, help="Warnings fail the run too (exit 1).")
@click.option("--entries", type=int, default=None, metavar="N",
              help="With --demo: about this many ledger entries (1,000 to 100,000,000).")
@click.option("--seed", type=int, default=None, help="With --demo: the generator's seed.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="With --db: remember what this audit proved (SQLite, created if missing); "
                                   "the next audit checks only what is new and re-hashes proven history.")
@click.option("--full", is_flag=True, help="With --state: check every entry again and start a new proven "
                                           "history (the state's audit history is kept).")
@click.option("--verify-history-share", "history_share", default=1.0, metavar="SHARE",
              type=click.FloatRange(0, 1, min_open=True), callback=_finite,
              help="With --state: re-hash this share of the proven history per audit, rotating (default 1: "
                   "all of it).")
@report_dir_option
@baseline_option
@quiet_option
@verbose_option
@format_option
@traceback_option
@version_option
@click.pass_context
def verify_ledger(ctx: click.Context, db_url: str | None, demo: bool, config_path: Path | None,
                  strict: bool, entries: int | None, seed: int | None, state_path: Path | None,
                  full: bool, history_share: float, report_dir: Path, baseline: Path | None, quiet: bool,
                  verbose: bool, output_format: str, traceback: bool) -> None:
    """Audit the double-entry ledger's invariants in one consistent snapshot.

    The database is --db URL, else $DATABASE_URL, else libpq's own PG* variables (PGHOST,
    PGDATABASE, PGSERVICE...) when any is set. Exit codes: 0 verified, 1 findings, 2 could not
    verify.
    """
    db_url = _target(ctx, db_url, others=demo)
    if (db_url is not None) == demo:
        raise click.UsageError("Give exactly one of --db URL or --demo.")
    if (entries is not None or seed is not None) and not demo:
        raise click.UsageError("--entries and --seed go with --demo.")
    if state_path is None and (full or history_share != 1.0):
        raise click.UsageError("--full and --verify-history-share go with --state.")
    if state_path is not None and demo:
        raise click.UsageError("--state goes with --db (the demo builds a new ledger every time).")
    if state_path is not None and not state_path.name:
        raise click.UsageError("--state needs a file name (it was empty, or names a directory).")
    # A link is followed: its target is the state (written, and locked, there). Written at the
    # link's own path, the link became a file of its own, and two audits through the link and its
    # target held two locks (found by a break-it run).
    try:
        state = state_path.resolve() if state_path is not None else None
    except (RuntimeError, OSError) as exc:  # a loop of links (RuntimeError before Python 3.13)
        raise click.UsageError(f"--state {state_path} cannot be followed to a file ({exc}); name the "
                               "state file itself.") from None

    def action() -> Any:
        from verifier.demo import generate, ledger
        from verifier.jobs import demo as demos
        from verifier.jobs.ledger_audit import audit_ledger
        from verifier.ledger.audit import Schedule

        if demo:
            return demos.ledger_demo(report_dir=report_dir, entries=entries or ledger.DEFAULT_ENTRIES,
                                     seed=generate.DEFAULT_SEED if seed is None else seed,
                                     config_path=config_path, strict=strict)
        assert db_url is not None
        return audit_ledger(db_url, report_dir=report_dir, config_path=config_path, strict=strict,
                            schedule=Schedule(state, full, history_share), baseline=baseline)

    _invoke("verify-ledger", traceback, action, mode=_mode(quiet, verbose), output_format=output_format)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@version_option
def verifier() -> None:
    """Housekeeping for the financial migration verifier."""


@verifier.command("make-snapshot")
@version_option
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--rows", type=int, default=None, metavar="N", help="About this many money rows.")
@click.option("--seed", type=int, default=None, help="The generator's seed (same seed, same data).")
@click.option("--scratch", default="embedded", show_default=True, metavar="SPEC",
              help="Where to generate: embedded, a postgresql:// URL, docker or docker:IMAGE.")
@click.option("--clean", is_flag=True,
              help="No planted defects: the platform just before 300 (default: after 300/301, "
                   "with defects listed in OUT.planted.json).")
@traceback_option
def make_snapshot(out: Path, rows: int | None, seed: int | None, scratch: str, clean: bool,
                  traceback: bool) -> None:
    """Write a demo platform snapshot (pg_dump custom format) to OUT, for --snapshot."""

    def action() -> None:
        from verifier.demo import generate
        from verifier.jobs import demo as demos

        made = demos.make_snapshot(
            out, rows=rows or generate.DEFAULT_ROWS,
            seed=generate.DEFAULT_SEED if seed is None else seed, scratch=scratch, planted=not clean,
        )
        click.echo(f"Wrote {out}: {made.plan.money_rows:,} money rows in {len(made.plan.counts)} "
                   f"tables (seed {made.plan.seed}, {made.rows_per_s:,.0f} rows/s)"
                   + ("." if clean else f"; planted defects listed in {demos.manifest_path(out)}."))

    _invoke("verifier make-snapshot", traceback, action)


@verifier.command("accept")
@version_option
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--reason", required=True, metavar="TEXT", help="Why the findings may stay (kept with them).")
@click.option("--baseline", "baseline", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="The baseline file to add them to (default: the configuration's "
                                   "baseline, else ./verifier-baseline.json; created if missing).")
@click.option("--rule", "rules", multiple=True, metavar="RULE", help="Accept only findings of this rule "
                                                                     "(repeatable).")
@click.option("--table", "tables", multiple=True, metavar="SCHEMA.TABLE",
              help="Accept only findings on this table (repeatable).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="verifier.toml or pyproject.toml ([tool.verifier]), for its baseline.")
@traceback_option
def accept(run_dir: Path, reason: str, baseline: Path | None, rules: tuple[str, ...], tables: tuple[str, ...],
           config_path: Path | None, traceback: bool) -> None:
    """Accept the findings of the run in RUN_DIR (reports/<run-id>): write them to the baseline."""

    def action() -> None:
        from verifier.config import load
        from verifier.jobs import baseline as baseline_

        target = baseline_.chosen(baseline, load(config_path)) or Path(baseline_.DEFAULT_NAME)
        added, total = baseline_.accept(run_dir, target, reason, rules=rules, tables=tables)
        click.echo(f"Accepted {added} finding(s) of {run_dir.name} in {target} ({total} in all). Runs with "
                   f"--baseline {target} (or baseline = \"{target}\" in the configuration) no longer fail on "
                   "them, and fail on anything new or grown.")

    _invoke("verifier accept", traceback, action)


@verifier.group("migrations")
@version_option
def migrations() -> None:
    """Status, up, down, create and validate for a migrations directory."""


dir_option = click.option(
    "--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
    default=Path("migrations"), show_default=True, help="The migrations directory.",
)
db_option = click.option("--db", "db_url", required=True, metavar="URL", help="The database.")
migrations_config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
    help="verifier.toml or pyproject.toml: migration_order and migration_tracker; default: "
         "verifier.toml, else pyproject.toml, in . or its nearest parent.")


def _config(path: Path | None) -> Any:
    from verifier import config

    return config.load(path)
confirm_option = click.option(
    "--confirm-write", metavar="DBNAME", default=None,
    help="Needed to change a database that is not a verifier scratch database: its name.",
)
timeout_option = click.option(
    "--migration-timeout", "migration_timeout_s",
    type=click.FloatRange(min=0, max=MIGRATION_TIMEOUT_MAX_S, min_open=True), default=None,
    callback=_finite,
    metavar="S", help="Cancel a migration still running after S seconds.",
)


def _migrate(name: str, traceback: bool, apply: Callable[[], list[Any]]) -> None:
    """Run ``apply`` (migrations up or down) and print each file's result; exit 1 if one failed."""

    def action() -> None:
        sys.exit(_render_results(apply()))

    _invoke(name, traceback, action)


def _render_results(results: list[Any]) -> int:
    from verifier.errors import printable

    for r in results:
        mark = "ok" if r.ok else "FAILED"
        click.echo(printable(f"{r.direction:4s} {r.file.path.name}: {mark} in {r.duration_s:.3f} s"))
        for lock in sorted(r.locks, key=lambda lk: -lk.held_s)[:3]:
            click.echo(printable(f"       {lock.describe()}"))
        if r.failure is not None:
            click.echo(printable(f"       {r.failure.describe()}"), err=True)
    if not results:
        click.echo("nothing to do")
    return 1 if any(not r.ok for r in results) else 0


@migrations.command("status")
@version_option
@dir_option
@db_option
@migrations_config_option
@traceback_option
def migrations_status(directory: Path, db_url: str, config_path: Path | None, traceback: bool) -> None:
    """List each migration file and whether the database has it (read only)."""

    def action() -> None:
        from verifier.errors import printable
        from verifier.jobs.migrations import status

        def say(text: str) -> None:
            click.echo(printable(text))

        discovery, rows, ambiguous = status(directory, db_url, _config(config_path))
        for row in rows:
            say(f"{'applied' if row.applied else 'pending':8s} {row.file.path.name}")
        for number, names in discovery.duplicates.items():
            say(f"note: number {number} is shared by {', '.join(names)}")
        for version, names in ambiguous.items():
            say(f"note: the tracker records {version} once for {', '.join(names)}: all are taken as "
                       "applied; which of them really ran cannot be told")
        for path in discovery.unnumbered:
            say(f"note: {path.name} is not numbered and is skipped")
        for path in discovery.down_files:
            say(f"note: {path.name} is a down file, not an up migration, and is skipped")

    _invoke("verifier migrations status", traceback, action)


@migrations.command("up")
@version_option
@dir_option
@db_option
@click.option("--to", "to_version", default=None, metavar="VERSION",
              help="Stop after this version (e.g. 301).")
@timeout_option
@confirm_option
@migrations_config_option
@traceback_option
def migrations_up(directory: Path, db_url: str, to_version: str | None, migration_timeout_s: float | None,
                  confirm_write: str | None, config_path: Path | None, traceback: bool) -> None:
    """Apply the pending migrations, traced; stop at the first failure (exit 1)."""

    def apply() -> list[Any]:
        from verifier.jobs.migrations import up

        return up(directory, db_url, to=to_version, timeout_s=migration_timeout_s, confirm=confirm_write,
                  config=_config(config_path))

    _migrate("verifier migrations up", traceback, apply)


@migrations.command("down")
@version_option
@dir_option
@db_option
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many applied migrations to undo, newest first.")
@timeout_option
@confirm_option
@migrations_config_option
@traceback_option
def migrations_down(directory: Path, db_url: str, steps: int, migration_timeout_s: float | None,
                    confirm_write: str | None, config_path: Path | None, traceback: bool) -> None:
    """Run the -- Down Migration blocks of the newest applied migrations."""

    def apply() -> list[Any]:
        from verifier.jobs.migrations import down

        return down(directory, db_url, steps=steps, timeout_s=migration_timeout_s, confirm=confirm_write,
                    config=_config(config_path))

    _migrate("verifier migrations down", traceback, apply)


@migrations.command("create")
@version_option
@dir_option
@click.argument("name")
@traceback_option
def migrations_create(directory: Path, name: str, traceback: bool) -> None:
    """Write the next numbered migration file from the template."""

    def action() -> None:
        from verifier.jobs.migrations import create

        click.echo(str(create(directory, name)))

    _invoke("verifier migrations create", traceback, action)


@migrations.command("validate")
@version_option
@dir_option
@migrations_config_option
@traceback_option
def migrations_validate(directory: Path, config_path: Path | None, traceback: bool) -> None:
    """Check numbering, dependencies, SQL and idempotency without running anything.

    Exit 1 when an error is found (warnings alone exit 0).
    """

    def action() -> None:
        from verifier.jobs.migrations import validate

        problems = validate(directory, _config(config_path))
        for problem in problems:
            click.echo(str(problem))
        errors = sum(p.severity == "error" for p in problems)
        click.echo(f"{errors} error(s), {len(problems) - errors} warning(s)")
        sys.exit(1 if errors else 0)

    _invoke("verifier migrations validate", traceback, action)
