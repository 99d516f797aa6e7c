"""The migration plan: which files exist, in which order, which are pending.

Pure logic over file names, file texts and a set of applied versions; the
runner reads the database, this module never does. Files are named
``NNN[suffix]_name.sql`` (``127a_add_missing_pricing_columns.sql``) and
ordered by number, then suffix, then name, so the order never depends on
the file system. Duplicate numbers are allowed (the seed has several) and
reported; a file whose number is shared is recorded under its full stem so
that applying one does not mark its twin as applied.
"""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from verifier.errors import UsageError
from verifier.migrate.sqltext import MigrationText, up_and_down

_NAME = re.compile(r"^(?P<number>\d+)(?P<suffix>[a-z]?)_(?P<name>[^/]+)\.sql$")
# Down files are not up migrations: 004_x_DOWN.sql, 004_x.down.sql (any case).
_DOWN = re.compile(r"[_.]down\.sql$", re.IGNORECASE)
FILE_BYTES_MAX = 64 * 1024 * 1024  # a migration file larger than this is refused (64 MiB)


def parse_version(text: str) -> tuple[int, str] | None:
    """(number, suffix) of a version or file-name prefix (``300``, ``127a_x``), or None."""
    match = re.match(r"^(\d+)([a-z]?)", text)
    return (int(match.group(1)), match.group(2)) if match else None


@dataclass(frozen=True)
class MigrationFile:
    path: Path
    number: int
    suffix: str
    name: str
    checksum: str  # SHA-256 of the file's bytes
    text: MigrationText = field(repr=False, compare=False)
    shared_number: bool = False  # another file has the same number and suffix

    @property
    def version(self) -> str:
        """What schema_migrations records: ``300`` or ``127a``; the stem for a shared number."""
        base = f"{self.number:03d}{self.suffix}"
        return self.path.stem if self.shared_number else base

    @property
    def sort_key(self) -> tuple[int, str, str]:
        return (self.number, self.suffix, self.name)

    @property
    def dependencies(self) -> list[str]:
        """The ``-- Dependencies:`` header as version strings (``none`` is empty)."""
        raw = self.text.header.get("dependencies", "")
        items = [d.strip() for d in re.split(r"[,\s]+", raw) if d.strip()]
        result = []
        for item in items:
            key = parse_version(item)
            if key is not None:
                result.append(f"{key[0]:03d}{key[1]}")
        return result

    def applied_in(self, applied: set[str]) -> bool:
        """Is this file recorded in ``applied`` (versions as the database stores them)?"""
        if self.path.stem in applied:
            return True
        if self.shared_number:
            return False
        candidates = {self.version, f"{self.number}{self.suffix}"}
        return bool(candidates & applied)


@dataclass(frozen=True)
class Discovery:
    files: tuple[MigrationFile, ...]
    unnumbered: tuple[Path, ...]  # *.sql files that do not follow NNN_name.sql
    duplicates: dict[str, tuple[str, ...]]  # number -> file names sharing it
    down_files: tuple[Path, ...] = ()  # *_DOWN.sql, *.down.sql: not applied as up migrations

    def __post_init__(self) -> None:
        keys = [f.sort_key for f in self.files]
        assert keys == sorted(keys), "files must be in plan order"


def discover(directory: Path) -> Discovery:
    """Read every migration file of ``directory`` (not its subdirectories).

    Raises ``UsageError`` when the directory does not exist or a file is not
    UTF-8 text or holds a NUL character: PostgreSQL (and its parser) stop
    reading a statement there, so ``UPDATE t SET a = 0<NUL> WHERE id = 5``
    would run as an UPDATE of every row.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"The migrations directory {directory} does not exist.")
    parsed: list[tuple[Path, re.Match[str]]] = []
    unnumbered: list[Path] = []
    down_files: list[Path] = []
    for path in sorted(directory.glob("*.sql")):
        _check_kind(path, directory)
        if _DOWN.search(path.name):
            down_files.append(path)
            continue
        match = _NAME.match(path.name)
        if match:
            parsed.append((path, match))
        else:
            unnumbered.append(path)
    counts: dict[str, list[str]] = {}
    for path, match in parsed:
        counts.setdefault(f"{int(match['number']):03d}{match['suffix']}", []).append(path.name)
    files = []
    for path, match in parsed:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"The migration {path} is not UTF-8 text (byte {exc.start}).") from None
        if "\x00" in text:
            line = text.count("\n", 0, text.index("\x00")) + 1
            raise UsageError(f"The migration {path} holds a NUL character (line {line}); PostgreSQL would "
                             "stop reading the statement there and run only its first part.")
        key = f"{int(match['number']):03d}{match['suffix']}"
        files.append(MigrationFile(
            path=path, number=int(match["number"]), suffix=match["suffix"], name=match["name"],
            checksum=hashlib.sha256(raw).hexdigest(), text=up_and_down(text),
            shared_number=len(counts[key]) > 1,
        ))
    files.sort(key=lambda f: f.sort_key)
    duplicates = {k: tuple(v) for k, v in counts.items() if len(v) > 1}
    return Discovery(tuple(files), tuple(unnumbered), duplicates, tuple(down_files))


def _check_kind(path: Path, directory: Path) -> None:
    """Raise ``UsageError`` unless ``path`` is a regular file of at most FILE_BYTES_MAX bytes inside
    ``directory`` (a symbolic link may point to one; not outside it, nor to a FIFO or device)."""
    what = f"The migration {path}"
    fix = "Keep only regular .sql files in the migrations directory."
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(directory.resolve()):
            raise UsageError(f"{what} is a symbolic link to {target}, outside the migrations directory.",
                             hint=fix)
    try:
        st = path.stat()
    except OSError as exc:
        raise UsageError(f"{what} cannot be read: {exc.strerror}.", hint=fix) from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise UsageError(f"{what} is {kind}, not a regular file.", hint=fix)
    if st.st_size > FILE_BYTES_MAX:
        raise UsageError(f"{what} is {st.st_size:,} bytes, more than the {FILE_BYTES_MAX:,} a migration "
                         "file may hold.", hint="Split it, or load bulk data outside the migrations.")


def pending(files: Iterable[MigrationFile], applied: set[str]) -> list[MigrationFile]:
    """The files not recorded in ``applied``, in plan order.

    Raises ``UsageError`` when ``applied`` records a number that several
    files share (``4`` or ``004`` for ``004_a.sql`` and ``004_b.sql``) and
    neither is recorded by its own name: which of them ran cannot be told,
    and re-applying both could apply one twice.
    """
    files = list(files)
    ambiguous: dict[str, list[str]] = {}
    for f in files:
        if f.shared_number and f.path.stem not in applied:
            recorded = {f"{f.number:03d}{f.suffix}", f"{f.number}{f.suffix}"} & applied
            for version in recorded:
                ambiguous.setdefault(version, []).append(f.path.name)
    if ambiguous:
        version, names = next(iter(sorted(ambiguous.items())))
        raise UsageError(
            f"schema_migrations records version {version}, which {', '.join(names)} share: it cannot be "
            "told which of them was applied, and applying them again could apply one twice.",
            hint="Record each applied file by its own name (its file name without .sql) in "
                 "schema_migrations, or give the files distinct numbers.")
    return [f for f in files if not f.applied_in(applied)]


def missing_dependencies(files: Iterable[MigrationFile]) -> list[tuple[MigrationFile, str]]:
    """(file, dependency) pairs naming a version that no earlier file has."""
    seen: set[str] = set()
    problems = []
    for f in files:
        for dep in f.dependencies:
            if dep not in seen:
                problems.append((f, dep))
        seen.add(f"{f.number:03d}{f.suffix}")
    return problems
