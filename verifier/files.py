"""Files of a run folder, each written whole or not at all.

``written_aside`` and ``write_atomic`` write text to a hidden file first
and rename it into place (``verifier.report`` renames several together);
``offenders_csv`` is the one streamed CSV of offending rows that the cents
checks and the ledger audit write: to a hidden partial file while rows
stream in, renamed to ``offenders.csv`` when the block ends well, removed
when it does not, so no half a CSV ever sits next to a report.
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from verifier.errors import UsageError

OFFENDERS_NAME = "offenders.csv"
LEDGER_OFFENDERS_NAME = "ledger-offenders.csv"  # a rehearsal's ledger audit, beside the cents' offenders


class RowWriter(Protocol):
    """What the checks write offending rows to: a ``csv.writer``, or anything with ``writerow``."""

    def writerow(self, row: Any, /) -> Any: ...


def written_aside(path: Path, text: str, *, mode: int | None = None) -> Path:
    """``text`` in a new hidden file next to ``path``, synced to disk; removed again if that fails.
    The file is 0600 (mkstemp's, as every file of a run folder), or ``mode`` less the umask."""
    if mode is None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    else:
        # os.open applies the umask to ``mode``, as any program creating a file does; widening
        # mkstemp's 0600 afterwards would need the umask, which only a process-wide os.umask reads.
        # O_EXCL: a random name that exists already (or is a link) is an error, never followed.
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        # Text that is not UTF-8 (a path's stray bytes, as surrogate escapes) is written escaped, not fatal.
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` so that it is either all there or not at all (0600, or ``mode``
    less the umask). ``path`` itself is replaced: a symbolic link there becomes a regular file."""
    tmp = written_aside(path, text, mode=mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def offenders_csv(run_dir: Path, name: str = OFFENDERS_NAME) -> Iterator[RowWriter]:
    """A CSV writer whose rows become ``run_dir/name`` (offenders.csv) if the block ends without an
    exception.

    Raises ``OSError`` when the file cannot be written (the caller's run
    turns it into a clear error); the partial file is then gone too.
    """
    partial = run_dir / f".{name}.partial"
    try:
        # 0600, as every other file of the run folder (mkstemp's): it holds the rows' own data.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", newline="") as fh:
            yield csv.writer(fh)
        os.replace(partial, run_dir / name)
    finally:
        partial.unlink(missing_ok=True)  # no half a CSV next to the report


def check_regular(path: Path, directory: Path, *, what: str, place: str, limit: int, fix: str) -> None:
    """Raise ``UsageError`` unless ``path`` is a regular file of at most ``limit`` bytes inside
    ``directory``: a symbolic link may point to one there, never outside it (its target would reach
    the report), nor to a FIFO (reading it would wait for ever), a device or a directory.
    ``what`` names the file in the message ("The migration ..."), ``place`` the directory."""
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(directory.resolve()):
            raise UsageError(f"{what} is a symbolic link to {target}, outside the {place}.", hint=fix)
    try:
        st = path.stat()
    except OSError as exc:
        raise UsageError(f"{what} cannot be read: {exc.strerror}.", hint=fix) from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise UsageError(f"{what} is {kind}, not a regular file.", hint=fix)
    if st.st_size > limit:
        raise UsageError(f"{what} is {st.st_size:,} bytes, more than the {limit:,} it may hold.",
                         hint=fix)
