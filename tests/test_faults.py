"""Faults during a run, and runs at once: each fault ends with exit 2, one clear message, a report
that says it is incomplete.

Connections killed while the verifier reads or a migration runs, a server
restarted mid-run, lock waits beyond the configured timeouts, a report
folder on a full disk, and Ctrl-C or SIGTERM as each stage of a rehearsal
begins. Every case runs the installed command in a subprocess against a
real server, and checks that no scratch database, embedded server or
temporary file is left behind. (Statement timeouts: test_cents.py,
test_ledger.py and test_ledger_state.py.) Two rehearsals at once on one
scratch server, and on two embedded ones, do not collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from verifier.config import Config
from verifier.demo import generate
from verifier.errors import VerifierError
from verifier.jobs.migrations import up
from verifier.paths import project_migrations_dir
from verifier.pg import conninfo
from verifier.pg.conninfo import APPLICATION_NAME
from verifier.pg.snapshot import export_snapshot, in_parallel, open_snapshot
from verifier.pg.tools import embedded_bin_dir
from verifier.scratch import provision
from verifier.scratch.embedded import SYSTEM_USER

from .conftest import BIN_DIR, embedded_processes, made_by, only_run, run_cli, run_summary, scratch_databases

T = TypeVar("T")
FAULTS = Path(__file__).resolve().parent / "faults"  # the sitecustomize that sends the signals
SLEEP = "starts_with(query, 'SELECT pg_sleep(600)')"  # the slow migration's backend
REHEARSAL_STAGES = ("snapshot", "plan", "restore", "inventory", "originals", "migrate", "pairs", "verify",
                    "judge")


@contextlib.contextmanager
def _started(*args: str) -> Iterator[subprocess.Popen[str]]:
    """One of the commands, running; killed if the test fails before it ends."""
    proc = subprocess.Popen([str(BIN_DIR / args[0]), *args[1:]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _wait_for(what: str, probe: Callable[[], T | None], proc: subprocess.Popen[str] | None = None,
              timeout: float = 90) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the command ended before {what}: {proc.communicate()}")
        time.sleep(0.05)
    if proc is not None:
        proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _our_backend(admin_dsn: str, condition: str) -> int | None:
    """The pid of one of the verifier's backends (on any database) matching ``condition``."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        # The condition is constant text of these tests.
        query = f"SELECT pid FROM pg_stat_activity WHERE application_name = %s AND ({condition}) LIMIT 1"  # noqa: S608
        row = conn.execute(query, (APPLICATION_NAME,)).fetchone()
    return int(row[0]) if row else None


def _not_verified(proc: subprocess.Popen[str] | Any, out: str, err: str, report_dir: Path,
                  stage: str | None, *words: str) -> dict[str, Any]:
    """Exit 2, the words in one message without a traceback, a report that says it is incomplete."""
    code = proc.returncode if isinstance(proc, subprocess.Popen) else proc
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err and "internal error" not in err, err
    for word in words:
        assert word in err, (word, err)
    data = run_summary(report_dir)
    assert data["status"] == "error" and data["exit_code"] == 2
    if stage is not None:
        assert data["stages"][-1]["name"] == stage, [s["name"] for s in data["stages"]]
    html = (only_run(report_dir) / "report.html").read_text()
    assert "NOT VERIFIED" in html and "incomplete" in html and ">PASS<" not in html
    assert not [p.name for p in only_run(report_dir).iterdir() if p.name.startswith(".")], "temp file left"
    return data


# -- connections killed, servers restarted -------------------------------------------------------------

@pytest.mark.parametrize("command, table", [("verify-cents", "tips"), ("verify-ledger", "entries")])
def test_connection_killed_while_reading(targets: dict[str, str], server_dsn: str, tmp_path: Path,
                                         command: str, table: str) -> None:
    target = targets[command]
    config = tmp_path / "verifier.toml"
    config.write_text("lock_timeout_s = 600\n")
    with psycopg.connect(target) as blocker:  # holds the lock until the block ends
        blocker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # constant text
        with _started(command, "--db", target, "--config", str(config),
                      "--report-dir", str(tmp_path / "r")) as proc:
            pid = _wait_for("the verifier to wait on the lock",
                            lambda: _our_backend(server_dsn, "wait_event_type = 'Lock'"), proc)
            with psycopg.connect(server_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            out, err = proc.communicate(timeout=120)
    _not_verified(proc, out, err, tmp_path / "r", None, "failed during the run", "terminat")


@pytest.mark.parametrize("command, table", [("verify-cents", "tips"), ("verify-ledger", "entries")])
def test_lock_timeout_while_reading(targets: dict[str, str], tmp_path: Path, command: str,
                                    table: str) -> None:
    target = targets[command]
    config = tmp_path / "verifier.toml"
    config.write_text("lock_timeout_s = 0.3\n")
    with psycopg.connect(target) as blocker:
        blocker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # constant text
        result = run_cli(command, "--db", target, "--config", str(config),
                         "--report-dir", str(tmp_path / "r"))
    _not_verified(result.code, result.stdout, result.stderr, tmp_path / "r", None,
                  "waited longer than lock_timeout_s", "lock_timeout_s in verifier.toml")


def test_a_statement_beyond_a_limit_of_postgresql_is_not_called_a_lost_connection(fresh_db: str) -> None:
    """An OperationalError the server raises on a live connection (here SQLSTATE 54023, too many
    arguments) names the statement's error and its SQLSTATE, not "the connection failed" (as it did,
    for a ledger of more than 50 currencies); the connection is still usable afterwards."""
    arguments = ", ".join(f"'k{i}', {i}" for i in range(60))  # 120 > 100, FUNC_MAX_ARGS
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        with pytest.raises(VerifierError) as caught, conninfo.reading(fresh_db, 30):
            conn.execute(f"SELECT jsonb_build_object({arguments})")  # constant text
        assert conn.execute("SELECT 1").fetchone() == (1,)
    message = str(caught.value)
    assert "SQLSTATE 54023" in message and "cannot pass more than 100 arguments" in message, message
    assert "connection" not in message, message
    assert "limit of PostgreSQL" in (caught.value.hint or ""), caught.value.hint


def test_a_session_the_server_ends_or_another_cancels_is_said_so(fresh_db: str) -> None:
    """Found by a break-it run. A session the server ends with FATAL outside the connection classes
    (here idle_in_transaction_session_timeout, FATAL 25P03; a hot standby's recovery conflict is
    FATAL 40001) is a lost connection, not an internal error or a statement that failed; a statement
    another session cancels (pg_cancel_backend) is not a statement_timeout; a snapshot whose
    exporting session ended is a lost connection (it was an internal error: "invalid snapshot
    identifier")."""
    with psycopg.connect(fresh_db) as conn:
        conn.execute("SET idle_in_transaction_session_timeout = '100ms'")
        conn.execute("SELECT 1")
        time.sleep(0.5)
        lost = "The connection to .* failed during the run: terminating connection due to idle-in-transaction"
        with pytest.raises(VerifierError, match=lost), conninfo.reading(fresh_db, 30):
            conn.execute("SELECT 2")
    with psycopg.connect(fresh_db, autocommit=True) as conn, \
            psycopg.connect(fresh_db, autocommit=True) as admin:
        pid = conn.info.backend_pid
        timer = threading.Timer(0.5, lambda: admin.execute("SELECT pg_cancel_backend(%s)", (pid,)))
        timer.start()
        try:
            with pytest.raises(VerifierError) as caught, conninfo.reading(fresh_db, 30):
                conn.execute("SELECT pg_sleep(30)")
        finally:
            timer.cancel()
    message = str(caught.value)
    assert "cancelled by another session" in message and "statement_timeout" not in message, message
    exporter = psycopg.connect(fresh_db)
    exporter.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    row = exporter.execute("SELECT pg_export_snapshot()").fetchone()
    assert row
    exporter.close()
    with pytest.raises(VerifierError, match="The connection to .* failed during the run: the session that "
                                            "exported the audit's snapshot ended"), \
            conninfo.reading(fresh_db, 30):
        open_snapshot(fresh_db, Config(), snapshot_id=str(row[0])).close()


def test_a_role_that_may_open_one_connection_is_told_about_the_workers(
        targets: dict[str, str], server_dsn: str, tmp_path: Path) -> None:
    """Found by a break-it run: a reader role with CONNECTION LIMIT 1 stopped the audit when its
    workers connected, with "check the host, port, user, password and database name"."""
    role = f"test_faults_one_connection_{os.getpid()}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN BYPASSRLS CONNECTION LIMIT 1 IN ROLE pg_read_all_data')
    try:
        target = psycopg.conninfo.make_conninfo(targets["verify-ledger"], user=role)
        result = run_cli("verify-ledger", "--db", target, "--report-dir", str(tmp_path / "r"))
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{role}"')
    _not_verified(result.code, result.stdout, result.stderr, tmp_path / "r", None,
                  "too many connections", "CONNECTION LIMIT", "workers")


def _sleeping_migrations(directory: Path, seconds: int = 600) -> Path:
    directory.mkdir()
    (directory / "300_slow.sql").write_text(f"SELECT pg_sleep({seconds});\n")
    (directory / "301_after.sql").write_text("ALTER TABLE tips ADD COLUMN IF NOT EXISTS after_slow int;\n")
    return directory


def test_connection_killed_while_a_migration_runs(small_dump: Path, server_dsn: str, tmp_path: Path,
                                                  leftovers: None) -> None:
    migrations = _sleeping_migrations(tmp_path / "migrations")
    with _started("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                  "--migrations", str(migrations), "--report-dir", str(tmp_path / "r")) as proc:
        pid = _wait_for("the migration to run", lambda: _our_backend(server_dsn, SLEEP), proc)
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        out, err = proc.communicate(timeout=120)
    _not_verified(proc, out, err, tmp_path / "r", "migrate",
                  "connection to the migration database", "was lost while 300_slow.sql")


@pytest.mark.parametrize("rule_checks, words", [
    ([], ("Could not copy the scratch database", "to check idempotency: another session is connected")),
    (["--skip-rule-checks"], ("301_after.sql (statement at line 1) waited more than 0.5 s for a lock",
                              "application someone-else")),
])
def test_another_session_on_the_scratch_database(small_dump: Path, server_dsn: str, tmp_path: Path,
                                                 leftovers: None, rule_checks: list[str],
                                                 words: tuple[str, ...]) -> None:
    """Someone else connects to the scratch database mid-rehearsal and locks a table.

    With rule checks, copying the database to re-apply 300 fails first; without,
    301 waits for the lock and migration_lock_timeout_s ends the run.
    """
    migrations = _sleeping_migrations(tmp_path / "migrations", seconds=3)
    config = tmp_path / "verifier.toml"
    config.write_text("migration_lock_timeout_s = 0.5\n")
    before = scratch_databases(server_dsn)
    with _started("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn, "--config",
                  str(config), "--migrations", str(migrations), "--report-dir", str(tmp_path / "r"),
                  *rule_checks) as proc:
        _wait_for("the first migration",
                  lambda: _our_backend(server_dsn, "starts_with(query, 'SELECT pg_sleep(3)')"), proc)
        [scratch] = made_by(scratch_databases(server_dsn) - before, proc.pid)
        other = psycopg.connect(conninfo.with_dbname(server_dsn, scratch), application_name="someone-else")
        try:  # the rehearsal drops its database WITH (FORCE): this session ends with it
            other.execute("LOCK TABLE tips IN ACCESS SHARE MODE")
            out, err = proc.communicate(timeout=120)
        finally:
            other.close()
    _not_verified(proc, out, err, tmp_path / "r", "migrate", *words)


@contextlib.contextmanager
def _private_server() -> Iterator[tuple[str, Callable[[], None]]]:
    """An embedded server of our own (its admin conninfo), and a function that restarts it."""
    with provision("embedded") as server:
        base = Path(psycopg.conninfo.conninfo_to_dict(server.admin_dsn)["host"])  # type: ignore[arg-type]
        bin_dir = embedded_bin_dir()
        assert bin_dir is not None

        def restart() -> None:
            done = subprocess.run(
                [str(bin_dir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "server.log"),
                 "-m", "fast", "-w", "restart"],
                capture_output=True, text=True, cwd=base, timeout=120,
                user=SYSTEM_USER if os.geteuid() == 0 else None)
            assert done.returncode == 0, done.stderr

        yield server.admin_dsn, restart


def test_server_restarted_while_reading(tmp_path: Path) -> None:
    with _private_server() as (admin, restart):
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE platform")
        dsn = conninfo.with_dbname(admin, "platform")
        generate.generate(dsn, rows=1_000, seed=4)
        up(project_migrations_dir(), dsn, to="301", confirm="platform")
        config = tmp_path / "verifier.toml"
        config.write_text("lock_timeout_s = 600\n")
        with psycopg.connect(dsn) as blocker:
            blocker.execute("LOCK TABLE tips IN ACCESS EXCLUSIVE MODE")
            with _started("verify-cents", "--db", dsn, "--config", str(config),
                          "--report-dir", str(tmp_path / "r")) as proc:
                _wait_for("the verifier to wait on the lock",
                          lambda: _our_backend(admin, "wait_event_type = 'Lock'"), proc)
                restart()  # ends the blocker's session too
                out, err = proc.communicate(timeout=120)
            with contextlib.suppress(psycopg.Error):
                blocker.rollback()
    _not_verified(proc, out, err, tmp_path / "r", None, "failed during the run")


def test_server_restarted_while_a_migration_runs(small_dump: Path, tmp_path: Path) -> None:
    migrations = _sleeping_migrations(tmp_path / "migrations")
    with _private_server() as (admin, restart):
        with _started("verify-cents", "--snapshot", str(small_dump), "--scratch", admin,
                      "--migrations", str(migrations), "--report-dir", str(tmp_path / "r")) as proc:
            _wait_for("the migration to run", lambda: _our_backend(admin, SLEEP), proc)
            restart()
            out, err = proc.communicate(timeout=120)
        # The server is back: the rehearsal dropped its scratch database on the way out.
        assert scratch_databases(admin) == set()
    _not_verified(proc, out, err, tmp_path / "r", "migrate", "was lost while 300_slow.sql")


# -- a full disk in the report folder ----------------------------------------------------------------

@contextlib.contextmanager
def _small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs as root and must test a full disk on tmpfs: {done.stderr}")
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("size", ["4k", "16k", "48k"])
def test_full_disk_in_the_report_folder(targets: dict[str, str], tmp_path: Path, size: str) -> None:
    """Whatever fits: a whole report that says NOT VERIFIED, or none and a message that says so.

    The run's own outcome (here, a pass with warnings) is never what a
    folder claims when the disk filled up while it was written.
    """
    with _small_disk(tmp_path / "disk", size) as disk:
        result = run_cli("verify-cents", "--db", targets["verify-cents"], "--report-dir", str(disk / "r"))
        written = sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.is_file())
        runs = [p for p in (disk / "r").iterdir() if p.is_dir()] if (disk / "r").is_dir() else []
        summaries = [json.loads((r / "summary.json").read_text())
                     for r in runs if (r / "summary.json").exists()]
        html = [(r / "report.html").read_text() for r in runs if (r / "report.html").exists()]
    assert result.code == 2, (result.stdout, result.stderr)
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert not [w for w in written if Path(w).name.startswith(".")], written  # no temp file left
    if summaries:  # the error report fitted: it is whole and says the run could not verify
        assert [s["status"] for s in summaries] == ["error"] and "No space left" in summaries[0]["error"]
        assert len(html) == 1 and "NOT VERIFIED" in html[0]
        assert "incomplete report:" in result.stderr
    else:  # nothing fitted: no part of a report, and the message says so
        assert ("holds no complete report" in result.stderr
                or "Cannot create the report folder" in result.stderr), result.stderr
        assert not [w for w in written if w.endswith(("report.html", "junit.xml"))], written


# -- Ctrl-C and SIGTERM at each stage of a rehearsal ---------------------------------------------------

@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stage", REHEARSAL_STAGES)
def test_signal_at_each_stage_of_a_rehearsal(small_dump: Path, server_dsn: str, tmp_path: Path,
                                             leftovers: None, stage: str, signame: str) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn, "--gx",
                     "--report-dir", str(tmp_path / "r"),
                     env={"PYTHONPATH": str(FAULTS), "VERIFIER_FAULT_STAGE": stage,
                          "VERIFIER_FAULT_SIGNAL": signame, "TMPDIR": str(temp)})
    data = _not_verified(result.code, result.stdout, result.stderr, tmp_path / "r", stage, "Interrupted")
    assert "Interrupted" in data["error"]
    assert list(temp.iterdir()) == []  # no temporary file or directory of ours left


@pytest.mark.parametrize("signame, stage", [("SIGTERM", "restore"), ("SIGINT", "migrate")])
def test_signal_on_the_embedded_server(small_dump: Path, tmp_path: Path, leftovers: None, signame: str,
                                       stage: str) -> None:
    """The default scratch server: stopped and its directory gone (``leftovers``), no process left."""
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--report-dir", str(tmp_path / "r"),
                     env={"PYTHONPATH": str(FAULTS), "VERIFIER_FAULT_STAGE": stage,
                          "VERIFIER_FAULT_SIGNAL": signame})
    _not_verified(result.code, result.stdout, result.stderr, tmp_path / "r", stage, "Interrupted")
    assert embedded_processes() == []


def test_sigterm_while_a_migration_statement_runs(small_dump: Path, server_dsn: str, tmp_path: Path,
                                                  leftovers: None) -> None:
    """Mid-statement, not at a stage's start: the statement is cancelled, the scratch database dropped."""
    migrations = _sleeping_migrations(tmp_path / "migrations")
    with _started("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                  "--migrations", str(migrations), "--report-dir", str(tmp_path / "r")) as proc:
        _wait_for("the migration to run", lambda: _our_backend(server_dsn, SLEEP), proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    _not_verified(proc, out, err, tmp_path / "r", "migrate", "Interrupted")
    assert _our_backend(server_dsn, SLEEP) is None


# -- two rehearsals at once ------------------------------------------------------------------------------

@pytest.mark.parametrize("scratch", ["url", "embedded"])
def test_two_rehearsals_at_once_do_not_collide(small_dump: Path, server_dsn: str, tmp_path: Path,
                                               leftovers: None, scratch: str) -> None:
    args = ["verify-cents", "--snapshot", str(small_dump), "--report-dir", str(tmp_path)]
    args += ["--scratch", server_dsn] if scratch == "url" else []
    with _started(*args) as one, _started(*args) as two:
        results = [p.communicate(timeout=600) + (p.returncode,) for p in (one, two)]
    assert [code for *_, code in results] == [0, 0], results
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 2 and all((r / "report.html").is_file() for r in runs)
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    found = [sorted((f["rule"], f["table"], f["column"], f["count"], f["cents_impact"])
                    for f in s["findings"]) for s in summaries]
    assert found[0] == found[1] and all(s["status"] == "pass" for s in summaries)
    databases = [next(st for st in s["stages"] if st["name"] == "restore")["database"] for s in summaries]
    assert databases[0] != databases[1]
    assert (tmp_path / "index.html").is_file()


# -- A signal at any moment, from the first millisecond ---------------------------------------------------

def _handles_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has installed a SIGTERM handler (Linux: /proc/PID/status, SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay_s", [None, 0.08, 0.15, 0.2, 0.25, 0.3, 0.35])
def test_a_signal_at_any_moment_is_exit_2_or_the_recorded_verdict(
        targets: dict[str, str], tmp_path: Path, signame: str, delay_s: float | None) -> None:
    """From the console script's first statement on (``verifier.main``, before click and the library
    are imported: ``None`` sends the signal the moment its SIGTERM handler exists), Ctrl-C or
    SIGTERM ends in exit 2 without a traceback or click's "Aborted!" (exit 1): nothing verified, or
    a run folder that says NOT VERIFIED. Only a run that had already written its outputs keeps its
    verdict, and then the exit code is that verdict's. (Before that first statement the interpreter
    is starting, and a signal ends it as the signal's default does: no run folder exists yet.)"""
    report = tmp_path / "r"
    proc = subprocess.Popen([str(BIN_DIR / "verify-cents"), "--db", targets["verify-cents"],
                             "--report-dir", str(report)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if delay_s is None:
        deadline = time.monotonic() + 30
        while not _handles_sigterm(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
    else:
        time.sleep(delay_s)
    assert proc.poll() is None, "the run ended before the signal: this test needs shorter delays"
    proc.send_signal(getattr(signal, signame))
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in out + err and "Aborted" not in err, err
    runs = sorted(p for p in report.iterdir() if p.is_dir()) if report.exists() else []
    summary = runs[0] / "summary.json" if runs else None
    if summary is None or not summary.exists():
        assert proc.returncode == 2 and "Interrupted" in err, (proc.returncode, err)
        return
    data = json.loads(summary.read_text())
    if data["status"] == "error":
        assert proc.returncode == 2 and "Interrupted" in str(data["error"]), (proc.returncode, data["error"])
    else:  # the verdict was on record before the signal: it stands, with its own code
        assert proc.returncode == data["exit_code"], (proc.returncode, data["status"])


# A command run by the console scripts' ``verifier.main._main`` whose work (``{work}``) sends the
# process ``SIG{signame}``: while it defines a class (Python wraps what the handler raises there in
# RuntimeError("Error calling __set_name__ ...") (CPython 3.11), in ``cli._invoke`` (``invoked``), in
# a run (``in a run``), or outside ``cli._invoke`` (``bare``, as in an import of click), or once its
# run is recorded (``recorded``: held back until the console has said the verdict).
_SIGNALLED_COMMAND = """
import os, signal, sys, time
from pathlib import Path
import click
from verifier import cli, main
from verifier.jobs.lifecycle import new_run, recorded

class Sends:
    def __set_name__(self, owner, name):
        os.kill(os.getpid(), signal.SIG{signame})
        time.sleep(30)

def define():
    type("Owner", (), {{"field": Sends()}})

def work():
    if "{work}" == "invoked":
        return define()
    with recorded(new_run("define", Path({report_dir!r}))) as run:
        if "{work}" == "in a run":
            define()
        run.end("pass")
    os.kill(os.getpid(), signal.SIG{signame})  # (held back until the verdict is said)
    return run

cli.define = click.command()(define if "{work}" == "bare" else lambda: cli._invoke("define", False, work))
main._main("define", "define")
"""


@pytest.mark.parametrize("work", ["invoked", "bare", "in a run", "recorded"])
@pytest.mark.parametrize("signame", ["INT", "TERM"])
def test_a_signal_wrapped_by_the_code_it_lands_in_is_still_an_interrupt(
        tmp_path: Path, signame: str, work: str) -> None:
    """A signal that lands while a class is being defined (as a module of the verifier defines its
    dataclasses when first imported, or click's imports do) reaches the command as RuntimeError:
    exit 2 and "Interrupted", before a run (inside the command's handling of errors or outside it)
    and inside one (NOT VERIFIED, on record), never "internal error ... a bug in the verifier" (seen
    once in CI, in the test above) or a traceback with exit 1 (helper-46). Once the run is
    recorded, the verdict stands, with its exit code, and the line says which."""
    report = tmp_path / "r"
    script = _SIGNALLED_COMMAND.format(signame=signame, report_dir=str(report), work=work)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    if work in ("invoked", "bare"):
        assert (proc.returncode, proc.stdout) == (2, ""), (proc.stdout, proc.stderr)
        assert proc.stderr.strip() == "define: Interrupted (Ctrl-C or SIGTERM): nothing was verified.", \
            proc.stderr
        return
    (run_dir,) = (p for p in report.iterdir() if p.is_dir())
    data = json.loads((run_dir / "summary.json").read_text())
    if work == "recorded":  # (the verdict said in full, then the interrupt)
        verdict = f"PASS: report {run_dir / 'report.html'}"
        assert (proc.returncode, data["status"], proc.stdout) == (0, "pass", verdict + "\n"), proc.stderr
        said = proc.stderr.strip().splitlines()
        assert said[0].startswith("PASS in ") and said[-1] == (
            "define: Interrupted (Ctrl-C or SIGTERM) after the run's report was written; it stands: "
            f"{verdict}."), said
        return
    assert proc.returncode == 2 and proc.stdout.startswith("NOT VERIFIED: report "), proc.stderr
    assert (data["status"], data["error"]) == (
        "error", "Interrupted (Ctrl-C or SIGTERM) before the run finished."), data


def test_a_signal_while_the_console_script_imports_is_held_until_it_can_be_taken(tmp_path: Path) -> None:
    """Ctrl-C from the first statement of ``verifier.main`` on, before its handler exists, is held
    back, then taken as an interrupt (exit 2, "Interrupted"), not a traceback (helper-46: exit 130,
    or 1, with a KeyboardInterrupt traceback, while the console script imported it)."""
    script = ("import os, signal, sys, time\n"
              "import verifier.main\n"
              "os.kill(os.getpid(), signal.SIGINT)\n"
              "time.sleep(0.2)\n"
              "print('held', flush=True)\n"
              f"sys.argv = ['verify-cents', '--db', 'host=/nonexistent', '--report-dir', {str(tmp_path)!r}]\n"
              "verifier.main.verify_cents()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "held\n"), (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.strip() == "verify-cents: Interrupted (Ctrl-C or SIGTERM): nothing was verified.", \
        proc.stderr


@pytest.mark.parametrize("stage", ["originals", "pairs", "verify"])
def test_a_backend_ended_by_an_administrator_is_an_operating_error(
        small_dump: Path, server_dsn: str, tmp_path: Path, leftovers: None, stage: str) -> None:
    """Every session of the rehearsal is terminated (pg_terminate_backend) as the stage begins: exit
    2, a message about the connection, NOT VERIFIED; never "internal error ... a bug in the
    verifier" (as at "originals" before)."""
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--skip-rule-checks", "--report-dir", str(tmp_path / "r"),
                     env={"PYTHONPATH": str(FAULTS), "VERIFIER_FAULT_STAGE": stage,
                          "VERIFIER_FAULT_SIGNAL": "TERMINATE", "VERIFIER_FAULT_ADMIN_DSN": server_dsn})
    _not_verified(result.code, result.stdout, result.stderr, tmp_path / "r", stage, "connection",
                  "administrator command")


def test_jobs_handed_out_first_start_first_and_results_keep_the_jobs_order(fresh_db: str) -> None:
    """``in_parallel(first=...)``: on one worker the jobs run one after the other, so the order they
    ran in is the order they were handed out: ``first``'s, then the rest in job order; the results
    come back in job order whatever the order they ran in."""
    ran: list[int] = []

    def job(i: int) -> Callable[[psycopg.Connection], int]:
        def run(conn: psycopg.Connection) -> int:
            ran.append(i)
            row = conn.execute("SELECT %s::int * 10", (i,)).fetchone()
            assert row is not None
            return int(row[0])
        return run

    with open_snapshot(fresh_db, Config()) as conn:
        snapshot = export_snapshot(conn)
        results = in_parallel([job(i) for i in range(5)], fresh_db, Config(), snapshot, 1, first=[3, 1, 3])
    assert ran == [3, 1, 0, 2, 4]
    assert results == [0, 10, 20, 30, 40]
