"""The commands as a user runs them: exit codes, one clear message, no leftovers.

Every case runs the installed console script in a subprocess. Bad input and
unreachable servers give exit 2 and a message naming the thing, never a
traceback, never a password; Ctrl-C and SIGTERM mid-run end with exit 2,
an incomplete report, and no embedded server or directory left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from xml.etree import ElementTree

import psycopg
import pytest

from verifier.pg import conninfo
from verifier.scratch.embedded import temp_root

from .conftest import (
    BIN_DIR,
    embedded_dirs,
    embedded_processes,
    made_by,
    new_of_ours,
    only_run,
    run_cli,
    run_summary,
    scratch_databases,
)

SECRET = "S3cr3t-Pw-4711"


def _summary(report_dir: Path) -> dict[str, object]:
    assert (only_run(report_dir) / "report.html").is_file()
    return run_summary(report_dir)


def _assert_clear_error(result: object, *needles: str) -> None:
    assert result.code == 2, (result.code, result.stdout, result.stderr)  # type: ignore[attr-defined]
    text = result.stdout + result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in text
    for needle in needles:
        assert needle in text, (needle, text)


def test_help_is_instant_and_complete() -> None:
    started = time.monotonic()
    result = run_cli("verify-cents", "--help")
    assert result.code == 0
    for option in ("--db", "--snapshot", "--demo", "--scratch", "--keep-scratch", "--rows",
                   "--report-dir", "--traceback"):
        assert option in result.stdout
    # Not a timing assertion on a shared machine: a generous bound that only
    # catches a heavy import (pandas, GX) sneaking into the CLI's start-up.
    assert time.monotonic() - started < 5
    assert run_cli("verify-ledger", "--help").code == 0
    assert run_cli("verifier", "make-snapshot", "--help").code == 0


@pytest.mark.parametrize(
    "args", [[], ["--demo", "--db", "postgresql://x/y"], ["--snapshot", "f", "--rows", "5"]]
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run_cli("verify-cents", *args)
    assert result.code == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize("share", ["nan", "0", "1.5", "inf"])
def test_a_history_share_that_is_no_share_is_a_usage_error(share: str, tmp_path: Path) -> None:
    """nan slipped past the range check into an internal error (found by a break-it run)."""
    result = run_cli("verify-ledger", "--db", "postgresql://postgres@127.0.0.1/postgres", "--state",
                     str(tmp_path / "s.state"), "--verify-history-share", share)
    assert result.code == 2 and "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "Invalid value for '--verify-history-share'" in result.stderr, result.stderr


def test_keep_scratch_keeps_the_database_and_prints_how_to_connect(
    tmp_path: Path, small_dump: Path, server_dsn: str
) -> None:
    before = scratch_databases(server_dsn)
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--keep-scratch", "--report-dir", str(tmp_path))
    kept = new_of_ours(scratch_databases(server_dsn), before)
    try:
        assert len(kept) == 1
        assert f"Kept scratch database {next(iter(kept))}" in result.stderr
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            for name in kept:
                conn.execute(f'DROP DATABASE "{name}"')
                for prefix in ("verifier_sandbox", "verifier_reader"):  # kept with it, as the message says
                    role = name.replace("verifier_scratch", prefix, 1)
                    assert f'DROP ROLE "{role}"' in result.stderr
                    conn.execute(f'DROP ROLE "{role}"')


@pytest.mark.parametrize("content, words", [
    (b"", "is empty"),
    (b"just some notes\x00\x01", "is not a pg_dump snapshot"),
    (None, "does not exist"),
])
def test_bad_snapshot_files(tmp_path: Path, content: bytes | None, words: str, server_dsn: str,
                            leftovers: None) -> None:
    path = tmp_path / "snap.dump"
    if content is not None:
        path.write_bytes(content)
    result = run_cli("verify-cents", "--snapshot", str(path), "--scratch", server_dsn,
                     "--report-dir", str(tmp_path / "r"))
    _assert_clear_error(result, words, str(path))
    if content is None:  # a usage error found before the run begins: no run folder
        assert not (tmp_path / "r").exists()
    else:
        assert _summary(tmp_path / "r")["status"] == "error"


def test_truncated_snapshot_via_cli(tmp_path: Path, small_dump: Path, server_dsn: str,
                                    leftovers: None) -> None:
    cut = tmp_path / "cut.dump"
    cut.write_bytes(small_dump.read_bytes()[: small_dump.stat().st_size // 2])
    result = run_cli("verify-cents", "--snapshot", str(cut), "--scratch", server_dsn,
                     "--report-dir", str(tmp_path / "r"))
    _assert_clear_error(result, "truncated or corrupt", str(cut))


@pytest.mark.parametrize("command", [
    ["verify-cents", "--db"], ["verify-ledger", "--db"],
    ["verify-cents", "--snapshot", "x.dump", "--scratch"],
])
def test_unreachable_server_and_password_never_shown(tmp_path: Path, command: list[str],
                                                     small_dump: Path) -> None:
    url = f"postgresql://alice:{SECRET}@127.0.0.1:1/payments"
    args = [*command, url, "--report-dir", str(tmp_path)]
    args = [str(small_dump) if a == "x.dump" else a for a in args]
    result = run_cli(*args)
    _assert_clear_error(result, "Could not connect", "127.0.0.1:1")
    outputs = result.stdout + result.stderr + "".join(
        p.read_text() for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".html", ".xml"))
    assert SECRET not in outputs
    # CI systems read junit.xml: a run that could not verify is an error there, never a pass.
    [junit] = list(tmp_path.rglob("junit.xml"))
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("errors") == "1" and suite.find("testcase/error") is not None


def test_malformed_url_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("verify-cents", "--db", f"postgresql://bob:{SECRET}@host:notaport/db",
                     "--report-dir", str(tmp_path))
    _assert_clear_error(result)
    assert SECRET not in result.stdout + result.stderr


def test_scratch_server_refusing_create_database(
    tmp_path: Path, small_dump: Path, server_dsn: str
) -> None:
    role = f"test_cli_nocreatedb_{os.getpid()}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    try:
        limited = psycopg.conninfo.make_conninfo(conninfo.with_dbname(server_dsn, "postgres"), user=role)
        result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", limited,
                         "--report-dir", str(tmp_path))
        _assert_clear_error(result, "refused CREATE DATABASE", role)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{role}"')


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_demo_cleans_up(tmp_path: Path, signum: int) -> None:
    """Stop a demo while it generates: exit 2, incomplete report, no server left."""
    before = embedded_dirs()
    proc = subprocess.Popen(
        [str(BIN_DIR / "verify-cents"), "--demo", "--rows", "3000000", "--report-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    # Wait until the embedded server exists and has started generating.
    while time.monotonic() < deadline:
        new = made_by(embedded_dirs() - before, proc.pid)
        if any((temp_root() / d / "data" / "postmaster.pid").exists() for d in new):
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the embedded server did not start within 60 s")
    time.sleep(1.0)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, (stdout, stderr)
    assert "Interrupted" in stderr and "Traceback" not in stderr
    # Of the directories made since it started: the process id in a name is reused (pid_max is
    # 32768 here), and a directory a killed run left earlier may bear this run's.
    assert made_by(embedded_dirs() - before, proc.pid) == set()
    data = _summary(tmp_path)
    assert data["status"] == "error" and "Interrupted" in str(data["error"])
    assert embedded_processes(new) == []
