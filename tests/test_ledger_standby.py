"""verify-ledger on a hot standby: the same results as on the primary, writers or not.

A primary and a streaming replica of its own (``pg_basebackup -R``, the
server's own binaries, in a temporary directory, Unix sockets only): the
demo ledger built on the primary, with its plants; the audit of the replica
finds exactly what the audit of the primary finds. With ``--state`` on the
replica, while writers post through transfer_tokens on the primary, no
audit reports anything, and nothing new is proven there (a standby cannot
see the primary's running transactions, so nothing bounds what may still
commit below what it saw); the state proven on the primary still finds a
rewrite of a proven entry when read on the replica.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from verifier.demo import ledger, load

from .conftest import run_cli, run_summary
from .test_ledger import DEMO_CONFIG


def _bindir() -> Path | None:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "pg_basebackup").exists():
            return Path(out)
    return None


BIN = _bindir()
pytestmark = pytest.mark.skipif(BIN is None and os.environ.get("CI") != "true",
                                reason="no PostgreSQL server binaries (pg_config --bindir) on this machine")


def _run(user: str | None, *args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, user=user, check=False)
    assert done.returncode == 0, (args, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[str, str]]:
    """(primary, standby) conninfos of a fresh primary and its streaming replica."""
    assert BIN is not None, "CI needs the PostgreSQL server binaries (pg_config --bindir)"
    user = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="verifier-test-standby-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    primary, standby = base / "primary", base / "standby"
    opts = f"-c listen_addresses='' -k {base} -c fsync=off"
    started = []
    try:
        _run(user, str(BIN / "initdb"), "-D", str(primary), "-U", "postgres", "--auth=trust")
        _run(user, str(BIN / "pg_ctl"), "-D", str(primary), "-l", str(base / "primary.log"),
             "-o", f"-p 55432 {opts}", "-w", "start")
        started.append(primary)
        _run(user, str(BIN / "pg_basebackup"), "-h", str(base), "-p", "55432", "-U", "postgres",
             "-D", str(standby), "-R", "-X", "stream")
        _run(user, str(BIN / "pg_ctl"), "-D", str(standby), "-l", str(base / "standby.log"),
             "-o", f"-p 55433 {opts}", "-w", "start")
        started.append(standby)
        yield (f"host={base} port=55432 user=postgres dbname=postgres",
               f"host={base} port=55433 user=postgres dbname=postgres")
    finally:
        for d in reversed(started):
            subprocess.run([str(BIN / "pg_ctl"), "-D", str(d), "-m", "immediate", "stop"],
                           capture_output=True, user=user, check=False)
        shutil.rmtree(base, ignore_errors=True)


def _caught_up(primary: str, standby: str) -> None:
    with psycopg.connect(primary) as p:
        lsn = p.execute("SELECT pg_current_wal_lsn()").fetchone()
    assert lsn is not None
    deadline = time.monotonic() + 60
    with psycopg.connect(standby, autocommit=True) as s:
        while s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn[0],)).fetchone() != (True,):
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.1)


# transfer_tokens leaves the demo's legacy balances alone: under writers, reconcile nothing.
NO_RECONCILE = "[ledger]\nreconcile = []\n"


def _audit(dsn: str, report_dir: Path, *extra: str, config_text: str = DEMO_CONFIG
           ) -> tuple[int, dict[str, Any], dict[str, set[str]]]:
    report_dir.mkdir(parents=True, exist_ok=True)
    config = report_dir / "verifier.toml"
    config.write_text(config_text)
    result = run_cli("verify-ledger", "--db", dsn, "--report-dir", str(report_dir / "runs"),
                     "--config", str(config), *extra)
    assert "Traceback" not in result.stderr, result.stderr
    data = run_summary(report_dir / "runs")
    found: dict[str, set[str]] = {}
    for f in data["findings"]:
        found.setdefault(f["rule"], set()).update(str(s["id"]) for s in f["sample"])
    return result.code, data, found


def _database(pair: tuple[str, str], name: str) -> tuple[str, str]:
    """A new database of ``name`` on the primary: its (primary, standby) conninfos."""
    with psycopg.connect(pair[0], autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    primary_db, standby_db = (f"{d} dbname={name}" for d in pair)
    return primary_db, standby_db


def test_the_standby_finds_what_the_primary_finds(pair: tuple[str, str], tmp_path: Path) -> None:
    primary, standby = pair
    primary_db, standby_db = _database(pair, "ledger_plants")
    ledger.build(primary_db, entries=5_000, seed=7)
    planted = {p.id for p in ledger.plant(primary_db)}
    _caught_up(primary, standby)
    code_p, data_p, found_p = _audit(primary_db, tmp_path / "primary")
    code_s, data_s, found_s = _audit(standby_db, tmp_path / "standby")
    assert code_p == code_s == 1
    assert found_s == found_p and set().union(*found_s.values()) == planted
    assert [f["count"] for f in data_s["findings"]] == [f["count"] for f in data_p["findings"]]


def test_state_audits_on_the_standby_under_writers_raise_no_false_alarm(
        pair: tuple[str, str], tmp_path: Path) -> None:
    primary, standby = pair
    primary_db, standby_db = _database(pair, "ledger_busy")
    ledger.build(primary_db, entries=5_000, seed=9)
    state = tmp_path / "ledger.state"
    for i in range(2):  # proven on the primary
        code, data, found = _audit(primary_db, tmp_path / f"prove{i}", "--state", str(state),
                                  config_text=NO_RECONCILE)
        assert code == 0, found
    proven = {s["name"]: s for s in data["stages"]}["state saved"]["proven"]
    with load.posting(primary_db) as posted:
        for i in range(3):
            before = sum(posted)
            code, data, found = _audit(standby_db, tmp_path / f"standby{i}", "--state", str(state),
                                      config_text=NO_RECONCILE)
            assert code == 0, (found, data["findings"])
            stages = {s["name"]: s for s in data["stages"]}
            assert stages["state saved"]["proven"] == proven  # nothing new proven on a standby
            assert "hot standby" in stages["state"]["standby"]
        assert sum(posted) > before, "no posting went through while the standby audits ran"
    with psycopg.connect(primary_db, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE entries SET description = 'edited' WHERE id = 50")
    _caught_up(primary, standby)
    code, data, found = _audit(standby_db, tmp_path / "tampered", "--state", str(state),
                               config_text=NO_RECONCILE)
    assert code == 1 and found == {"history_tampered": {"50"}}, data["findings"]
    # And the primary, after the standby's audits, still proves as before.
    code, _, found = _audit(primary_db, tmp_path / "primary-after", "--state", str(state),
                          config_text=NO_RECONCILE)
    assert code == 1 and found == {"history_tampered": {"50"}}
