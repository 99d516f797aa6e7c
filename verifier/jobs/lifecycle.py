"""How every job begins and ends: a run folder, the configuration, the verdict, the outputs.

A job does::

    run = new_run(command, report_dir)
    with recorded(run):
        config = load_config(run, path, rounding=...)
        ...stages...
        finish(run, strict=strict)
    return run

``recorded`` writes the outputs however the block ends (``verifier.report``):
a run that failed early still leaves a report saying what happened.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from verifier import __version__, signals, terminal
from verifier import config as config_
from verifier.config import Config
from verifier.errors import Interrupted, ReportNotWritten, UsageError, VerifierError
from verifier.jobs import baseline as baseline_
from verifier.ledger import layout
from verifier.pg import conninfo
from verifier.report import write_outputs
from verifier.run import Run, verdict_line
from verifier.signals import shielded


def new_run(command: str, report_dir: Path) -> Run:
    """Create ``report_dir/<run-id>/`` for a new run and return its record.

    Raises ``VerifierError`` when the folder cannot be created.
    """
    now = datetime.now(UTC)
    run_id = now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    run_dir = Path(report_dir) / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise VerifierError(f"Cannot create the report folder {run_dir}: {exc.strerror}.") from None
    run = Run(command=command, run_dir=run_dir, run_id=run_id, started_at=now,
              watch=terminal.current() or terminal.Terminal())
    run.provenance["tool_version"] = __version__
    # The command line as typed (passwords masked), for the run index: the flags and the target.
    run.provenance["invocation"] = " ".join(
        [Path(sys.argv[0]).name, *(shlex.quote(conninfo.redact(a)) for a in sys.argv[1:])])
    return run


# SQLSTATEs of a session that the server ended or lost: connection exceptions (class 08), an
# administrator's or the server's shutdown (57P01, 57P02), and a server not yet accepting (57P03)
# (PostgreSQL 15, Appendix A, "PostgreSQL Error Codes").
LOST_STATES = ("57P01", "57P02", "57P03")


def lost_connection(exc: psycopg.OperationalError) -> VerifierError:
    """An operating error (exit 2) for a psycopg error that no stage turned into one: a connection
    the server ended or lost (``LOST_STATES``, class 08, or no SQLSTATE: the socket closed), or
    another operational failure of the server, said as such, never as a bug of the verifier."""
    state = exc.sqlstate or ""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if not state or state.startswith("08") or state in LOST_STATES:
        return VerifierError(
            f"A database connection was lost mid-run ({type(exc).__name__}{', ' + state if state else ''}: "
            f"{text}). Nothing was verified.",
            hint="The server restarted or an administrator ended the session; run again when the "
                 "server is up.")
    return VerifierError(f"The database server refused an operation ({state}: {text}). Nothing was verified.")


def load_config(run: Run, path: Path | Config | None, *, rounding: bool) -> Config:
    """The configuration (``verifier.config.load``; one already loaded, with ``preflight``),
    recorded in ``run``'s provenance.

    The provenance names the file; with ``rounding`` (the cents jobs), the
    rounding mode too. Raises ``UsageError`` for a malformed file.
    """
    config = path if isinstance(path, Config) else config_.load(path)
    if rounding:
        run.provenance["rounding_mode"] = config.rounding
    run.provenance["config"] = config.source
    return config


def preflight(config_path: Path | None, *urls: str, baseline: Path | None = None
              ) -> tuple[Config, Path | None]:
    """What can be told wrong before a run begins: the configuration (read and checked), the
    syntax of each connection string and the baseline file (``baseline``, else the configuration's;
    read and checked). Returns the configuration and the baseline the run uses. Raises
    ``UsageError``, and then no run folder is written: a usage error leaves no NOT VERIFIED run in
    the index, while a target that cannot be reached (a cron audit that could not connect) still
    does."""
    config = config_.load(config_path)
    for url in urls:
        conninfo.parse(url)
    path = baseline_.chosen(baseline, config)
    if path is not None:
        baseline_.load(path)
    return config, path


def ledger_verdicts(conn: psycopg.Connection, url: str, config: Config, audited: str
                    ) -> dict[tuple[str, str, str], str]:
    """The money inventory's verdict text (``audited``: who audits it) for each column that fills a
    role of a ledger the audit can read (its tables real tables, its layout detected): (schema,
    table, column) -> text. Other columns of those tables are not the audit's. Read on ``conn`` (the
    database at ``url``); raises ``VerifierError`` for a timed-out statement or a lost connection."""
    with conninfo.reading(url, config.statement_timeout_s):
        tables = layout.tables_of(conn, config.ledger)
        if not {(config.ledger.schema, t) for t in layout.required(config.ledger)} <= tables:
            return {}
        try:
            detected, detection = layout.detect(conn, config.ledger)
        except UsageError:  # a layout the audit cannot read audits nothing
            return {}
    verdicts = {}
    for role, column in detection.roles.items():
        logical = role.split(".", 1)[0]
        if column and detected.tables.get(logical):
            key = (detected.schema, detected.tables[logical], column)
            verdicts[key] = f"a ledger role ({role}): {audited}"
    return verdicts


def finish(run: Run, *, strict: bool, count_in_error: bool = False, baseline: Path | None = None) -> None:
    """End ``run``: ``fail`` when a finding fails it (errors; warnings too under ``strict``), else ``pass``.

    With ``baseline`` (a file of accepted findings, ``verifier.jobs.baseline``) the findings it
    accepts are set apart and fail nothing. The run is compared with the previous run on the same
    target either way. With ``count_in_error`` (a rehearsal) a failed run's error text says how many
    findings fail it. Raises ``UsageError`` for a baseline file that is not one.
    """
    if baseline is not None:
        baseline_.apply(run, baseline)
    baseline_.previous(run)
    failing = run.failing(strict=strict)
    run.end("fail" if failing else "pass",
            f"{len(failing)} finding(s) fail the run." if failing and count_in_error else None)


@contextlib.contextmanager
def recorded(run: Run) -> Iterator[Run]:
    """End ``run`` as ``error`` if the block raises, and write its outputs either way.

    The block's own exception propagates (Ctrl-C and SIGTERM as
    ``Interrupted``, a failed file operation as ``VerifierError``) after the
    outputs are written; when they cannot be written, ``ReportNotWritten``
    (which names the run's own error) propagates instead.
    """

    def listing(error: VerifierError) -> VerifierError:
        """``error``, with the findings ``run`` made before it for the console (``summary``): a
        save or a report that failed after the checks lists them, as a report keeps them."""
        if run.findings:
            error.summary = terminal.summary_lines(run, told_after=True)
        return error

    def written() -> None:
        """``run``'s outputs written (``ReportNotWritten``, listing its findings, where not)."""
        try:
            write_outputs(run)
        except ReportNotWritten as exc:
            raise listing(exc) from None

    def ended(error: VerifierError) -> VerifierError:
        """``run`` ended by ``error``, its outputs written; ``error``, pointing at them."""
        with shielded():
            run.end("error", str(error))
            written()
            signals.ended(error.exit_code, verdict_line(run.status, run.run_dir))
        error.run_dir = run.run_dir
        return listing(error)

    try:
        yield run
    except VerifierError as exc:
        ended(exc)
        raise
    except psycopg.OperationalError as exc:  # a backend lost mid-run, wherever no stage caught it
        raise ended(lost_connection(exc)) from None
    except OSError as exc:  # a file the run writes (offenders.csv) or reads: the disk, not a bug
        where = f": {exc.filename}" if exc.filename else f" (the run writes to {run.run_dir})"
        raise ended(VerifierError(f"A file operation failed: {exc.strerror or exc}{where}.")) from None
    except BaseException as exc:
        if signals.within(exc):  # KeyboardInterrupt, or one wrapped by the code it landed in
            raise ended(Interrupted("Interrupted (Ctrl-C or SIGTERM) before the run finished.")) from None
        run.end("error", f"Internal error: {type(exc).__name__}: {exc}")
        written()
        raise
    assert run.status is not None, "a run must be ended before it is recorded"
    with shielded():  # a signal now is delivered after the verdict is said (verifier.main)
        written()
        signals.ended(run.exit_code, verdict_line(run.status, run.run_dir))
