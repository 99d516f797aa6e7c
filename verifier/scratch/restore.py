r"""A snapshot restored into a scratch database: the rehearsal's first write.

``restore(info, db)`` restores a dump that ``verifier.source.dump.inspect``
recognised into the scratch database ``db`` (which must be empty), with the
client tools of the scratch server's own major version where they are
installed, in parallel for custom and directory dumps. It writes only to
``db``. Ownership and privileges are not restored: the roles of production
do not exist in a scratch server, and creating roles would write outside
our own database.

It runs as the database's sandbox role where the server made one
(``ScratchDatabase.untrusted_dsn``): whatever the dump holds runs with the
rights of a role that owns this database and nothing else. The extensions
it creates that PostgreSQL lets only a superuser create (not marked
``trusted``) are created first, from the server's own scripts, by the
scratch server's role (``precreate_untrusted``); the dump's CREATE
EXTENSION IF NOT EXISTS then passes over them, and its COMMENT ON EXTENSION
for them (which only their owner may run) is left out.

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
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

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
    precreated: tuple[str, ...] = ()  # untrusted extensions the scratch server's role created first
    sandbox_role: str | None = None  # the role the dump's SQL ran as (None: the scratch server's own)


# The dump's extensions that need a superuser and are not yet in the database.
UNTRUSTED_SQL = """
SELECT v.name FROM pg_catalog.pg_available_extension_versions v
JOIN pg_catalog.pg_available_extensions a ON a.name = v.name AND a.default_version = v.version
WHERE v.name = ANY(%s) AND v.superuser AND NOT v.trusted
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = v.name)"""


def precreate_untrusted(info: DumpInfo, db: ScratchDatabase) -> tuple[str, ...]:
    """Create, as the scratch server's role, the extensions of ``info`` that only a superuser may
    create, in schema public (the dump's own CREATE EXTENSION IF NOT EXISTS, run by the sandbox
    role, then passes over them: PostgreSQL 15, CREATE EXTENSION, "trusted"). Only the server's
    own extension scripts run so; nothing of the dump. Returns their names; none without a
    sandbox. Raises ``SnapshotError`` naming the extension when the server refuses it."""
    if db.sandbox_role is None or not info.extensions:
        return ()
    with connect(db.admin_dsn, autocommit=True, what="scratch database") as conn:
        names = [str(r[0]) for r in conn.execute(UNTRUSTED_SQL, (list(info.extensions),)).fetchall()]
        for name in names:
            try:
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA public CASCADE").format(
                    sql.Identifier(name)))
            except psycopg.Error as exc:  # the extension's own script failed
                raise SnapshotError(
                    f"The snapshot {info.path} creates the extension {name}, which only a superuser may "
                    f"create; creating it for the rehearsal failed: {scrub(str(exc).strip(), db.admin_dsn)}",
                    path=info.path) from None
    return tuple(names)


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
    precreated = precreate_untrusted(info, db)
    started = time.monotonic()
    if info.format == "plain":
        try:
            psql = _restore_plain(info, db, server_major, precreated)
        except SnapshotError as exc:
            raise _with_standin_hint(exc, standins) from None
        return RestoreResult(time.monotonic() - started, 1, f"psql {psql.version}", standins, precreated,
                             db.sandbox_role)
    tool = tools.find("pg_restore", server_major)
    # Tar archives cannot be restored in parallel (pg_restore needs seeks).
    jobs = 1 if info.format == "tar" else (jobs or min(RESTORE_JOBS_MAX, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="verifier-restore-") as scratch_dir:
        args = ["--no-owner", "--no-privileges", "--exit-on-error", f"--jobs={jobs}"]
        if precreated:
            args.append(f"--use-list={_list_without_comments(tool, info, precreated, Path(scratch_dir))}")
        try:
            done = tools.run(tool, [*args, str(info.path)], dsn=db.untrusted_dsn, timeout_s=timeout_s)
        except ToolError as exc:
            raise SnapshotError(f"Restoring the snapshot {info.path} stopped: {exc.message}", path=info.path,
                                hint="Raise restore_timeout_s in [tool.verifier] for a larger snapshot; a "
                                     "damaged archive can also make pg_restore loop.") from None
    if done.returncode != 0:
        error = snapshot_error(info.path, scrub(done.stderr, db.untrusted_dsn), reading=False)
        raise _with_standin_hint(error, standins)
    return RestoreResult(time.monotonic() - started, jobs, f"pg_restore {tool.version}", standins, precreated,
                         db.sandbox_role)


def _list_without_comments(tool: tools.Tool, info: DumpInfo, extensions: tuple[str, ...],
                           directory: Path) -> Path:
    """pg_restore's table of contents for ``info`` with the COMMENT ON EXTENSION entries of
    ``extensions`` turned off (a leading ';'), written to ``directory``; for --use-list."""
    listing = tools.run(tool, ["--list", str(info.path)])
    if listing.returncode != 0:
        raise snapshot_error(info.path, listing.stderr, reading=True)
    off = {f"COMMENT - EXTENSION {e}" for e in extensions}
    lines = [(";" + line) if any(line.rstrip().endswith(o) for o in off) else line
             for line in listing.stdout.splitlines()]
    path = directory / "toc.list"
    path.write_text("\n".join(lines) + "\n")
    return path


def _with_standin_hint(error: SnapshotError, standins: tuple[str, ...]) -> SnapshotError:
    """``error``, with what to do when the restore stopped at a function our stand-ins lack."""
    if standins and "does not exist" in str(error) and "function" in str(error):
        error.hint = (f"The scratch server has only the verifier's stand-in of {', '.join(standins)}, "
                      "which lacks this function (no crypt, gen_salt or pgp_*): rehearse with --scratch "
                      "docker, or --scratch URL of a server that has the real extension.")
    return error


def _filtered_lines(fh: IO[bytes], path: Path, precreated: tuple[str, ...] = ()) -> Iterator[bytes]:
    """The lines of a plain dump, without role statements nor the COMMENT ON EXTENSION of the
    extensions we created (``precreated``); refuses to leave the database.

    COPY data blocks pass through untouched (their rows are data, not SQL).
    """
    comments = tuple(f"COMMENT ON EXTENSION {e} IS ".encode() for e in precreated) + tuple(
        f'COMMENT ON EXTENSION "{e}" IS '.encode() for e in precreated)
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
        elif _ROLE_STATEMENT.match(line) or _RESTRICT.match(line) or (comments and line.startswith(comments)):
            continue
        yield line


def _restore_plain(info: DumpInfo, db: ScratchDatabase, server_major: int,
                   precreated: tuple[str, ...] = ()) -> tools.Tool:
    psql = tools.find("psql", server_major)
    conninfo, env = tools.connection_env(db.untrusted_dsn)
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
            for line in _filtered_lines(fh, info.path, precreated):
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
                f"{tools.stderr_tail(scrub(stderr, db.untrusted_dsn))}", path=info.path,
                hint="A pg_dump plain dump holds none (but \\restrict); dump with --format=custom.")
        raise snapshot_error(info.path, scrub(stderr, db.untrusted_dsn), reading=False)
    return psql
