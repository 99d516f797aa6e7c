"""The migration plan: which files exist, in which order, which are pending.

Pure logic over file names, file texts and a set of recorded values; the
runner reads the database, this module never does. By default files are
named ``NNN[suffix]_name.sql`` (``127a_add_missing_pricing_columns.sql``)
and ordered by number, then suffix, then name, so the order never depends
on the file system; ``order="name"`` takes every ``*.sql`` file in plain
file-name order instead. Duplicate numbers are allowed (the seed has
several) and reported; a file whose number is shared is recorded in a text
version column under its full stem, so that applying one does not mark its
twin as applied. What a tracker records is read as
``verifier.config.migrations.RECORDS`` says.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from verifier.config.migrations import ORDERS
from verifier.errors import UsageError
from verifier.files import check_regular
from verifier.migrate.sqltext import MigrationText, up_and_down

# ASCII digits only: "３０５_x.sql" (full-width) is no number 305. The extension in any case.
_NAME = re.compile(r"^(?P<number>[0-9]+)(?P<suffix>[a-z]?)_(?P<name>[^/]+)\.sql$", re.IGNORECASE)
# Down files are not up migrations: 004_x_DOWN.sql, 004_x.down.sql, 004_x-down.sql, 004_x.undo.sql,
# 004_x_rollback.sql (any case).
_DOWN = re.compile(r"[_.-](down|undo|rollback)\.sql$", re.IGNORECASE)
FILE_BYTES_MAX = 64 * 1024 * 1024  # a migration file larger than this is refused (64 MiB)


def parse_version(text: str) -> tuple[int, str] | None:
    """(number, suffix) of a version or file-name prefix (``300``, ``127a_x``), or None."""
    match = re.match(r"^([0-9]+)([a-z]?)", text.strip())
    return (int(match.group(1)), match.group(2)) if match else None


@dataclass(frozen=True)
class MigrationFile:
    path: Path
    number: int | None  # None: a file without a numeric prefix (only in plain file-name order)
    suffix: str
    name: str
    checksum: str  # SHA-256 of the file's bytes
    text: MigrationText = field(repr=False, compare=False)
    shared_number: bool = False  # another file has the same number and suffix

    @property
    def number_text(self) -> str | None:
        """``300``, ``127a``, ``004``: the number as versions are written; None without one."""
        return None if self.number is None else f"{self.number:03d}{self.suffix}"

    @property
    def version(self) -> str:
        """What a version tracker records: ``300`` or ``127a``; the stem for a shared number or
        a file without one."""
        if self.number_text is None or self.shared_number:
            return self.path.stem
        return self.number_text

    @property
    def sort_key(self) -> tuple[int, str, str]:
        return (-1 if self.number is None else self.number, self.suffix, self.name)

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

    def recorded_numbers(self, applied: set[str]) -> set[str]:
        """The ways of writing this file's number (``004``, ``4``) that ``applied`` holds."""
        if self.number is None:
            return set()
        return {f"{self.number:03d}{self.suffix}", f"{self.number}{self.suffix}"} & applied

    def applied_in(self, applied: set[str], records: str = "version") -> bool:
        """Is this file recorded in ``applied`` (values as the tracker's column holds them, as text)?

        ``records`` is what the column holds (``verifier.config.migrations.RECORDS``). A number
        recorded once counts for every file that shares it: the team's own convention (the seed's
        README: "These duplicates exist in the file system only and do not affect database state");
        ``ambiguous`` lists such numbers so that the run can say so.
        """
        if self.path.stem in applied or self.path.name in applied:
            return True
        return records == "version" and bool(self.recorded_numbers(applied))

    def record_value(self, records: str) -> str:
        """What the tracker's column gets when this file has run (``records`` as in ``applied_in``)."""
        return {"version": self.version, "file_name": self.path.name, "file_stem": self.path.stem}[records]


@dataclass(frozen=True)
class Discovery:
    files: tuple[MigrationFile, ...]
    unnumbered: tuple[Path, ...]  # number order: *.sql files that do not follow NNN_name.sql (not applied)
    duplicates: dict[str, tuple[str, ...]]  # number -> file names sharing it
    down_files: tuple[Path, ...] = ()  # *_DOWN.sql, *.down.sql: not applied as up migrations
    order: str = "number"  # verifier.config.migrations.ORDERS

    def __post_init__(self) -> None:
        assert self.order in ORDERS
        keys = [order_key(f, self.order) for f in self.files]
        assert keys == sorted(keys), "files must be in plan order"
        assert self.order == "name" or all(f.number is not None for f in self.files)


def order_key(f: MigrationFile, order: str) -> tuple[int, str, str] | str:
    """Where ``f`` comes in a plan of ``order``: its number, suffix and name, or its file name."""
    return f.sort_key if order == "number" else f.path.name


def discover(directory: Path, order: str = "number") -> Discovery:
    """Read every migration file of ``directory`` (not its subdirectories), in ``order``.

    Raises ``UsageError`` when the directory does not exist or a file is not
    UTF-8 text or holds a NUL character: PostgreSQL (and its parser) stop
    reading a statement there, so ``UPDATE t SET a = 0<NUL> WHERE id = 5``
    would run as an UPDATE of every row.
    """
    assert order in ORDERS
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"The migrations directory {directory} does not exist.")
    parsed: list[tuple[Path, re.Match[str] | None]] = []
    unnumbered: list[Path] = []
    down_files: list[Path] = []
    for path in sorted(p for p in directory.iterdir() if p.suffix.lower() == ".sql"):
        _check_kind(path, directory)
        if _DOWN.search(path.name):
            down_files.append(path)
            continue
        match = _NAME.match(path.name)
        if match or order == "name":
            parsed.append((path, match))
        else:
            unnumbered.append(path)
    counts: dict[str, list[str]] = {}
    for path, match in parsed:
        if match is not None:
            counts.setdefault(f"{int(match['number']):03d}{match['suffix'].lower()}", []).append(path.name)
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
        if match is None:  # plain file-name order: a file without a number is a migration too
            number, suffix, name, shared = None, "", path.stem, False
        else:
            number, suffix, name = int(match["number"]), match["suffix"].lower(), match["name"]
            shared = len(counts[f"{number:03d}{suffix}"]) > 1
        files.append(MigrationFile(
            path=path, number=number, suffix=suffix, name=name, checksum=hashlib.sha256(raw).hexdigest(),
            text=up_and_down(text), shared_number=shared,
        ))
    files.sort(key=lambda f: order_key(f, order))
    duplicates = {k: tuple(v) for k, v in counts.items() if len(v) > 1}
    return Discovery(tuple(files), tuple(unnumbered), duplicates, tuple(down_files), order)


def _check_kind(path: Path, directory: Path) -> None:
    """Raise ``UsageError`` unless ``path`` is a regular file of at most FILE_BYTES_MAX bytes inside
    ``directory`` (``verifier.files.check_regular``)."""
    check_regular(path, directory, what=f"The migration {path}", place="migrations directory",
                  limit=FILE_BYTES_MAX, fix="Keep only regular .sql files in the migrations directory; "
                                            "split a larger one, or load bulk data outside the migrations.")


def recorded(values: Iterable[str]) -> set[str]:
    """A tracker's values as text, read the ways teams write them: trimmed, and a version also
    without and with padding zeros (``' 4'``, ``'0004'`` -> ``4``, ``004``)."""
    found: set[str] = set()
    for value in values:
        text = value.strip()
        found.add(text)
        match = re.fullmatch(r"([0-9]+)([a-z]?)", text, re.IGNORECASE)
        if match:
            number, suffix = int(match.group(1)), match.group(2).lower()
            found |= {f"{number}{suffix}", f"{number:03d}{suffix}"}
    return found


def unmatched(files: Iterable[MigrationFile], applied: set[str]) -> list[str]:
    """Recorded values (``recorded``'s forms) that name no file of ``files``: a file deleted or
    renamed since it ran, or a tracker written by other rules."""
    names: set[str] = set()
    for f in files:
        names |= {f.path.stem, f.path.name, f.version}
        if f.number is not None:
            names |= {f"{f.number}{f.suffix}", f"{f.number:03d}{f.suffix}"}
    orphans = set()
    for value in applied:
        forms = recorded([value])
        if not forms & names:  # a version is named by any of its forms, each value once
            orphans.add(min(forms, key=len))
    return sorted(orphans)


def pending(files: Iterable[MigrationFile], applied: set[str], records: str = "version"
            ) -> list[MigrationFile]:
    """The files not recorded in ``applied``, in plan order (``records``: see ``applied_in``)."""
    return [f for f in files if not f.applied_in(applied, records)]


def ambiguous(files: Iterable[MigrationFile], applied: set[str], records: str = "version"
              ) -> dict[str, tuple[str, ...]]:
    """Numbers recorded once that several files share, none of which is recorded by its own name
    (``4`` or ``004`` for ``004_a.sql`` and ``004_b.sql``): recorded number -> the files' names.

    ``applied_in`` counts every such file as applied, as the team's tool does; which of them really
    ran cannot be told from the tracker, so the run says so.
    """
    if records != "version":
        return {}
    found: dict[str, list[str]] = {}
    for f in files:
        if f.shared_number and f.path.stem not in applied and f.path.name not in applied \
                and f.recorded_numbers(applied):
            found.setdefault(f"{f.number}{f.suffix}", []).append(f.path.name)
    return {version: tuple(names) for version, names in sorted(found.items())}


def missing_dependencies(files: Iterable[MigrationFile]) -> list[tuple[MigrationFile, str]]:
    """(file, dependency) pairs naming a version that no earlier file has."""
    seen: set[str] = set()
    problems = []
    for f in files:
        for dep in f.dependencies:
            if dep not in seen:
                problems.append((f, dep))
        if f.number_text is not None:
            seen.add(f.number_text)
    return problems
