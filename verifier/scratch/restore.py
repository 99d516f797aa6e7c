r"""A snapshot restored into a scratch database: the rehearsal's first write.

``restore(info, db)`` restores a dump that ``verifier.source.dump.inspect``
recognised into the scratch database ``db`` (which must be empty), with the
client tools of the scratch server's own major version where they are
installed, in parallel for custom and directory dumps. It writes only to
``db``. Ownership and privileges are not restored: the roles of production
do not exist in a scratch server, and creating roles would write outside
our own database.

A plain dump is a psql script, and psql's backslash commands run programs
(``\!``), write files (``\o``, ``\copy ... TO``) and read others (``\i``),
anywhere on a line. psql replays it in restricted mode (``\restrict`` with
a key of ours, first): every backslash command in the file fails, so a
snapshot can only ever run SQL in the scratch database.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from verifier.config import RESTORE_TIMEOUT_S
from verifier.errors import SnapshotError, ToolError
from verifier.pg import tools
from verifier.pg.conninfo import connect, scrub
from verifier.scratch.server import ScratchDatabase
from verifier.scratch.standin import STANDIN_COMMENT
from verifier.source.dump import DumpInfo, major_version, snapshot_error

# Parallel restore jobs, bounded: more than the cores only adds contention.
RESTORE_JOBS_MAX = 4

# A plain dump's statements that would name roles of the source cluster.
_ROLE_STATEMENT = re.compile(rb"^(ALTER .+ OWNER TO |GRANT |REVOKE |ALTER DEFAULT PRIVILEGES )")
# pg_dump's own restricted-mode lines (17.6, 16.10, 15.14 and later); ours replaces them.
_RESTRICT = re.compile(rb"^\\(un)?restrict ")
# Statements that would leave our scratch database (pg_dump --create, pg_dumpall).
_LEAVES_DATABASE = re.compile(rb"^(\\connect |\\c |CREATE DATABASE |DROP DATABASE |CREATE ROLE |ALTER ROLE )")
_COPY_START = re.compile(rb"^COPY .* FROM stdin;\s*$")


@dataclass(frozen=True)
class RestoreResult:
    duration_s: float
    jobs: int
    tool: str
    standins: tuple[str, ...] = ()  # extensions the dump creates that the server has only as our stand-in


# The server's extensions: (name, whether only the verifier's stand-in provides it).
AVAILABLE_SQL = ("SELECT name, bool_and(coalesce(comment, '') LIKE %s || '%%') FROM pg_available_extensions "
                 "GROUP BY name")


def check_extensions(info: DumpInfo, db: ScratchDatabase) -> tuple[str, ...]:
    """The extensions of the dump that only a stand-in of ours provides on ``db``'s server
    (``verifier.scratch.standin``). Raises ``SnapshotError`` naming, in one message, every
    extension the dump creates that the server cannot provide, before anything is restored."""
    if not info.extensions:
        return ()
    with connect(db.dsn, what="scratch database") as conn:
        available = {str(n): bool(s) for n, s in conn.execute(AVAILABLE_SQL, (STANDIN_COMMENT,)).fetchall()}
    missing = [e for e in info.extensions if e not in available]
    if missing:
        raise SnapshotError(
            f"The snapshot {info.path} creates the extension(s) {', '.join(missing)}, which the scratch "
            f"server ({db.server.kind}, PostgreSQL {db.server.version}) does not have: the restore would "
            "stop at the first of them.",
            path=info.path,
            hint="Rehearse on a server that has them: --scratch postgresql://USER@HOST/DB (a server where "
                 f"CREATE EXTENSION {missing[0]} works; the rehearsal creates its own scratch database "
                 "there), or --scratch docker for PostgreSQL from Debian with its contrib modules.")
    return tuple(e for e in info.extensions if available[e])


def check_restorable(info: DumpInfo, server_major: int) -> None:
    """Refuse a dump that was written by a pg_dump newer than the scratch server."""
    dumped_by = major_version(info.dumped_by)
    if dumped_by is not None and dumped_by > server_major:
        raise SnapshotError(
            f"The snapshot {info.path} was written by pg_dump {info.dumped_by}, but the scratch "
            f"server is PostgreSQL {server_major}: a dump does not restore reliably into an older server.",
            path=info.path,
            hint=f"Use a scratch server of version {dumped_by} or newer "
                 "(--scratch embedded runs PostgreSQL 18), or dump with an older pg_dump.",
        )


def restore(info: DumpInfo, db: ScratchDatabase, *, jobs: int | None = None,
            timeout_s: float = RESTORE_TIMEOUT_S) -> RestoreResult:
    """Restore ``info`` into scratch database ``db`` (which must be empty).

    Writes only to ``db``. Raises ``SnapshotError`` naming the file and the
    tool's reason when the restore fails (or, before it starts, every
    extension the dump creates that the server lacks: ``check_extensions``),
    ``ToolError`` when pg_restore runs longer than ``timeout_s`` (some damaged tar archives make it loop).
    """
    server_major = db.server.version_num // 10000
    check_restorable(info, server_major)
    standins = check_extensions(info, db)
    started = time.monotonic()
    if info.format == "plain":
        try:
            psql = _restore_plain(info, db, server_major)
        except SnapshotError as exc:
            raise _with_standin_hint(exc, standins) from None
        return RestoreResult(time.monotonic() - started, 1, f"psql {psql.version}", standins)
    tool = tools.find("pg_restore", server_major)
    # Tar archives cannot be restored in parallel (pg_restore needs seeks).
    jobs = 1 if info.format == "tar" else (jobs or min(RESTORE_JOBS_MAX, os.cpu_count() or 1))
    args = ["--no-owner", "--no-privileges", "--exit-on-error", f"--jobs={jobs}", str(info.path)]
    try:
        done = tools.run(tool, args, dsn=db.dsn, timeout_s=timeout_s)
    except ToolError as exc:
        raise SnapshotError(f"Restoring the snapshot {info.path} stopped: {exc.message}", path=info.path,
                            hint="Raise restore_timeout_s in [tool.verifier] for a larger snapshot; a "
                                 "damaged archive can also make pg_restore loop.") from None
    if done.returncode != 0:
        raise _with_standin_hint(snapshot_error(info.path, done.stderr, reading=False), standins)
    return RestoreResult(time.monotonic() - started, jobs, f"pg_restore {tool.version}", standins)


def _with_standin_hint(error: SnapshotError, standins: tuple[str, ...]) -> SnapshotError:
    """``error``, with what to do when the restore stopped at a function our stand-ins lack."""
    if standins and "does not exist" in str(error) and "function" in str(error):
        error.hint = (f"The scratch server has only the verifier's stand-in of {', '.join(standins)}, "
                      "which lacks this function (no crypt, gen_salt or pgp_*): rehearse with --scratch "
                      "docker, or --scratch URL of a server that has the real extension.")
    return error


def _filtered_lines(fh: IO[bytes], path: Path) -> Iterator[bytes]:
    """The lines of a plain dump, without role statements; refuses to leave the database.

    COPY data blocks pass through untouched (their rows are data, not SQL).
    """
    in_copy = False
    for number, line in enumerate(fh, start=1):
        if in_copy:
            if line.rstrip(b"\r\n") == b"\\.":
                in_copy = False
            yield line
            continue
        if _COPY_START.match(line):
            in_copy = True
        elif _LEAVES_DATABASE.match(line):
            raise SnapshotError(
                f"The snapshot {path} line {number} would leave the scratch database "
                f"({line[:40].decode('utf-8', 'replace').strip()}...).",
                path=path,
                hint="Dump a single database without --create (pg_dump, not pg_dumpall).",
            )
        elif _ROLE_STATEMENT.match(line) or _RESTRICT.match(line):
            continue
        yield line


def _restore_plain(info: DumpInfo, db: ScratchDatabase, server_major: int) -> tools.Tool:
    psql = tools.find("psql", server_major)
    conninfo, env = tools.connection_env(db.dsn)
    # Restricted mode first (-c runs before -f): from then on psql runs SQL only; see above.
    argv = [str(psql.path), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"\\restrict {secrets.token_hex(16)}",
            "-f", "-", f"--dbname={conninfo}"]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        preexec_fn=tools.die_with_parent,
    )
    assert proc.stdin is not None and proc.stderr is not None
    refused: SnapshotError | None = None
    try:
        with info.path.open("rb") as fh:
            for line in _filtered_lines(fh, info.path):
                proc.stdin.write(line)
    except SnapshotError as exc:
        refused = exc
    except BrokenPipeError:
        pass  # psql stopped on an error; its stderr says which.
    except BaseException:
        proc.kill()  # Ctrl-C, SIGTERM: psql must not go on writing.
        raise
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        if refused is not None:
            proc.kill()
        stderr = proc.stderr.read().decode("utf-8", "replace")
        proc.wait()
    if refused is not None:
        raise refused
    if proc.returncode != 0:
        if "invalid command \\restrict" in stderr:
            raise SnapshotError(
                f"Cannot replay the plain snapshot {info.path} safely: {psql.path} has no restricted mode.",
                path=info.path, hint="Plain dumps need psql 13.22, 14.19, 15.14, 16.10, 17.6 or newer "
                                     "(or use pg_dump --format=custom).")
        if "backslash commands are restricted" in stderr:
            raise SnapshotError(
                f"The plain snapshot {info.path} contains a psql backslash command, which could run "
                f"programs or write files on this machine; psql refused it, and the run stopped there: "
                f"{tools.stderr_tail(scrub(stderr, db.dsn))}", path=info.path,
                hint="A pg_dump plain dump holds none (but \\restrict); dump with --format=custom.")
        raise snapshot_error(info.path, scrub(stderr, db.dsn), reading=False)
    return psql
