"""Scratch servers: each kind gives a writable database and leaves nothing behind.

Embedded: a real PostgreSQL 18 from the wheel, started and removed, also
when the block raises. URL: a uniquely named database, dropped (or kept on
request); a role without CREATEDB gets a clear refusal. Docker: a real
container from the locally built image (CI builds it; see .ci/run).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from verifier.errors import ScratchError, UsageError
from verifier.pg import conninfo
from verifier.scratch import SCRATCH_DB_PREFIX, provision
from verifier.scratch.embedded import TEMP_PREFIX

from .conftest import embedded_dirs, new_of_ours, scratch_databases


def _write_and_read(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (amount numeric(12,2))")
        conn.execute("INSERT INTO t VALUES (1.23), (4.56)")
        row = conn.execute("SELECT count(*) FROM t").fetchone()
        assert row is not None
        return int(row[0])


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (dead, not yet reaped by init) is not alive."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_embedded_server_runs_and_vanishes() -> None:
    before = embedded_dirs()
    with provision("embedded") as server:
        assert server.kind == "embedded"
        assert server.version_num >= 180000
        new_dirs = new_of_ours(embedded_dirs(), before)
        assert len(new_dirs) == 1
        with server.database() as db:
            assert db.name.startswith(SCRATCH_DB_PREFIX)
            assert _write_and_read(db.dsn) == 2
        host = conninfo.parse(server.admin_dsn)["host"]
    assert new_of_ours(embedded_dirs(), before) == set()
    assert not Path(host).exists()


def test_embedded_server_is_removed_when_the_block_raises() -> None:
    before = embedded_dirs()
    with pytest.raises(RuntimeError, match="boom"), provision("embedded") as server:
        pid_file = Path(conninfo.parse(server.admin_dsn)["host"]) / "data" / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0])
        raise RuntimeError("boom")
    assert new_of_ours(embedded_dirs(), before) == set()
    assert not _alive(pid)


def test_a_server_whose_directory_is_removed_under_it_is_stopped() -> None:
    """Found by a break-it run: with its directory removed while it ran (rm -rf, a tmp cleaner),
    pg_ctl could not stop the server (no postmaster.pid), and it ran on, for good."""
    with provision("embedded") as server:
        host = Path(conninfo.parse(server.admin_dsn)["host"])
        pid = int((host / "data" / "postmaster.pid").read_text().split()[0])
        shutil.rmtree(host)
    assert not _alive(pid)


# A run that starts an embedded server and waits, to be killed with SIGKILL.
_VICTIM = """
import time
from verifier.pg import conninfo
from verifier.scratch.embedded import embedded_server
with embedded_server() as server:
    print(conninfo.parse(server.admin_dsn)["host"], flush=True)
    time.sleep(600)
"""


def test_a_server_left_by_a_run_killed_with_sigkill_is_reaped_by_the_next_run() -> None:
    """SIGKILL leaves the server running and its directory in place; the next embedded server's
    start stops that server and removes the directory, and says so (``reaped``). Kept: a directory
    whose maker's process id has ended but whose lock is held (a run in another PID namespace
    sharing the folder), one whose maker runs, an empty one (being made), a link to a directory, a
    file, and a name whose process id no process can have (that raised OverflowError, an internal
    error on every run)."""
    root = Path(tempfile.mkdtemp(prefix="reap-"))  # short: the server's socket lives in it
    held_fd = postmaster = dead = -1
    try:
        env = {**os.environ, "VERIFIER_SCRATCH_DIR": str(root)}
        victim = subprocess.Popen([sys.executable, "-c", _VICTIM], env=env, stdout=subprocess.PIPE, text=True)
        assert victim.stdout is not None
        base = Path(victim.stdout.readline().strip())
        postmaster = int((base / "data" / "postmaster.pid").read_text().split()[0])
        victim.kill()
        victim.wait()
        assert base.is_dir() and _alive(postmaster)  # what SIGKILL leaves
        dead = victim.pid
        kept = {}
        for name in ("held", "live", "empty", "link", "file", "big"):
            path = root / f"{TEMP_PREFIX}{os.getpid() if name == 'live' else dead}-{name}"
            if name == "big":
                path = root / f"{TEMP_PREFIX}99999999999999999999-{name}"
            kept[name] = path
        precious = root / "precious"
        (precious / "data").mkdir(parents=True)
        kept["link"].symlink_to(precious)
        kept["file"].write_text("x")
        kept["empty"].mkdir()
        for name in ("held", "live", "big"):
            (kept[name] / "data").mkdir(parents=True)
        held_fd = os.open(kept["held"], os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(held_fd, fcntl.LOCK_EX)
        # A dead run's name over a mount point (rmtree would empty another file system), where we
        # may mount (root, as CI runs).
        mounted = root / f"{TEMP_PREFIX}{dead}-mnt"
        (mounted / "data").mkdir(parents=True)
        (precious / "data" / "keep").write_text("x")
        if subprocess.run(["mount", "--bind", str(precious / "data"), str(mounted / "data")],
                          capture_output=True).returncode == 0:
            kept["mnt"] = mounted
        else:
            shutil.rmtree(mounted)
        os.environ["VERIFIER_SCRATCH_DIR"] = str(root)
        try:
            with provision("embedded") as server:
                assert server.reaped == (str(base),)
                assert _write_and_read(server.admin_dsn) == 2
        finally:
            os.environ.pop("VERIFIER_SCRATCH_DIR", None)
        assert not base.exists() and not _alive(postmaster)
        left = sorted(p.name for p in root.iterdir())
        assert left == sorted([precious.name, *(k.name for k in kept.values())]), left
        assert (precious / "data" / "keep").is_file()
    finally:
        if held_fd >= 0:
            os.close(held_fd)
        subprocess.run(["umount", str(root / f"{TEMP_PREFIX}{dead}-mnt" / "data")], capture_output=True)
        if postmaster > 0 and _alive(postmaster):  # not reaped: stopped here (immediate shutdown)
            os.kill(postmaster, signal.SIGQUIT)
        shutil.rmtree(root, ignore_errors=True)


def test_embedded_refuses_without_disk_space(tmp_path: Path) -> None:
    """A scratch directory on a 16 MB tmpfs: a clear refusal, nothing left behind."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("needs root to mount a small tmpfs: " + mounted.stderr.decode().strip())
    try:
        os.environ["VERIFIER_SCRATCH_DIR"] = str(mount_point)
        with pytest.raises(ScratchError) as err, provision("embedded"):
            pass
        assert "Not enough disk space" in str(err.value) and str(mount_point) in str(err.value)
        assert list(mount_point.iterdir()) == []
    finally:
        os.environ.pop("VERIFIER_SCRATCH_DIR", None)
        subprocess.run(["umount", str(mount_point)], check=True)


def test_url_scratch_creates_and_drops_a_unique_database(server_dsn: str) -> None:
    before = scratch_databases(server_dsn)
    with provision(server_dsn) as server:
        assert server.kind == "url"
        with server.database() as one, server.database() as two:
            assert one.name != two.name
            assert {one.name, two.name} <= scratch_databases(server_dsn)
            assert _write_and_read(one.dsn) == 2
    assert new_of_ours(scratch_databases(server_dsn), before) == set()


def test_url_scratch_keep_leaves_the_database_and_says_how_to_connect(
    server_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with provision(server_dsn, keep=True) as server, server.database() as db:
        name = db.name
    try:
        assert name in scratch_databases(server_dsn)
        err = capsys.readouterr().err
        assert f"Kept scratch database {name}" in err and "psql" in err
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


def test_url_scratch_without_createdb_is_refused_clearly(server_dsn: str) -> None:
    role = f"test_nocreatedb_{secrets.token_hex(4)}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB").format(sql.Identifier(role)))
    try:
        before = scratch_databases(server_dsn)
        limited = conninfo.with_dbname(server_dsn, "postgres")
        limited = psycopg.conninfo.make_conninfo(limited, user=role)
        with pytest.raises(ScratchError) as err, provision(limited) as server, server.database():
            pass
        assert "refused CREATE DATABASE" in str(err.value) and role in str(err.value)
        assert "CREATEDB" in str(err.value)
        assert new_of_ours(scratch_databases(server_dsn), before) == set()
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_unknown_scratch_spec_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="Unknown --scratch"), provision("kubernetes"):
        pass


DOCKER_IMAGE = os.environ.get("VERIFIER_TEST_DOCKER_IMAGE")


@pytest.mark.docker
@pytest.mark.skipif(not DOCKER_IMAGE and os.environ.get("CI") != "true",
                    reason="set VERIFIER_TEST_DOCKER_IMAGE (CI builds one: ci/postgres-image/build.sh)")
def test_docker_scratch_runs_a_real_container() -> None:
    # In CI the image must be there: a missing image fails instead of skipping.
    assert DOCKER_IMAGE, "CI must set VERIFIER_TEST_DOCKER_IMAGE"
    import docker

    client = docker.from_env()
    before = {c.id for c in client.containers.list(all=True)}
    with provision(f"docker:{DOCKER_IMAGE}") as server:
        assert server.kind == "docker"
        assert server.version_num >= 150000
        with server.database() as db:
            assert _write_and_read(db.dsn) == 2
    assert {c.id for c in client.containers.list(all=True)} == before


def test_docker_scratch_with_a_missing_image_is_a_clear_error() -> None:
    with pytest.raises(ScratchError) as err, provision("docker:verifier-no-such-image:0"):
        pass
    assert "verifier-no-such-image:0" in str(err.value)
