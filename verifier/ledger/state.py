"""The state file of scheduled ledger audits (``verify-ledger --state FILE``): what earlier audits proved.

A SQLite file, read at the start of an audit (but for the last proven
entries, ``StoredLast``) and written as a new file renamed over the old
one, only after the audit has finished: a killed or failed audit leaves
the previous state as it was, never half of a new one. An exclusive lock
on ``FILE.lock`` keeps two audits from using one state file at once (the
second stops with exit 2).

It holds no secrets and no connection details: the ledger's identity
(server system identifier, database, schema, tables and the entries' and
journals' columns), the random salt of the history digests, per table the
watermark up to which rows are proven and the digests of that history in
chunks of ids, the trial balance of the proven entries, each account's last
proven entry (its seq and balance after, and the account's currency and type
when its entries were first proven: about 34 bytes per account in the file;
an audit reads them from it as it needs them, not all into memory:
``StoredLast``), the gaps among the proven ids (up to
``history.HOLES_KEPT_MAX`` ranges per table), the offending rows
found in proven history (reported again by every audit), where the
rotating re-hash stopped, and one line per audit for the trend charts.

A file that is not such a state, or that was written for another ledger,
is an error (exit 2) and is never overwritten.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import glob
import itertools
import json
import operator
import os
import re
import secrets
import shutil
import sqlite3
import weakref
from collections.abc import ItemsView, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from verifier.errors import UsageError

FORMAT = "verifier-ledger-state"
VERSION = 1
HISTORY_TABLES = ("entries", "journals")  # the logical tables whose rows, once proven, never change
# An account's last proven entry: (seq, balance after as text, the account's currency and type when its
# first entries were proven, and whether it existed then).
LastEntry = tuple[int, str | None, str | None, str | None, bool]
# Each account's last proven entry: account id (as text) -> its entry.
LastEntries = dict[str, LastEntry]

LAST_ENTRIES_DDL = """
CREATE TABLE last_entries (account TEXT PRIMARY KEY, seq INTEGER NOT NULL, after TEXT, currency TEXT,
                           type TEXT, existed INTEGER NOT NULL) WITHOUT ROWID"""
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE chunks (tbl TEXT NOT NULL, chunk INTEGER NOT NULL, n INTEGER NOT NULL,
                     s0 TEXT NOT NULL, s1 INTEGER NOT NULL, amount TEXT NOT NULL,
                     PRIMARY KEY (tbl, chunk));
CREATE TABLE trial (currency TEXT, total TEXT NOT NULL);
{last_entries};
CREATE TABLE offenders (pass TEXT NOT NULL, rule_index INTEGER NOT NULL, id TEXT, impact TEXT,
                        weight INTEGER NOT NULL, detail TEXT, found_by TEXT NOT NULL);
CREATE TABLE tampered (tbl TEXT NOT NULL, chunk INTEGER NOT NULL, id TEXT NOT NULL, what TEXT NOT NULL,
                       impact INTEGER NOT NULL, detail TEXT NOT NULL, found_by TEXT NOT NULL);
CREATE TABLE holes (tbl TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL);
CREATE TABLE live (seq INTEGER NOT NULL);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, mode TEXT NOT NULL,
                   status TEXT NOT NULL, duration_s REAL NOT NULL, entries INTEGER NOT NULL,
                   proven_entries INTEGER NOT NULL, checked_entries INTEGER NOT NULL,
                   rehashed_chunks INTEGER NOT NULL, findings INTEGER NOT NULL,
                   offending_rows INTEGER NOT NULL, cents_impact TEXT NOT NULL, rules TEXT NOT NULL,
                   unsettled INTEGER NOT NULL DEFAULT 0);
""".replace("{last_entries}", LAST_ENTRIES_DDL)


@dataclass(frozen=True)
class Chunk:
    """The digest of the rows of one chunk of ids (those up to the watermark, once proven).

    ``n`` rows; ``s0`` the exact sum of their hashes, ``s1`` the sum of
    each id times its hash modulo the prime ``history.P``; ``amount`` the
    sum of the entries' amounts (0 for journals). All four add up over
    sub-ranges (see ``verifier.ledger.history``).
    """

    n: int
    s0: int
    s1: int
    amount: Decimal


@dataclass(frozen=True)
class Carried:
    """An offending row in proven history, found by an earlier audit and reported by every later one."""

    pass_name: str
    rule_index: int
    id: str | None
    impact: str | None
    weight: int
    detail: str | None
    found_by: str  # the run id of the audit that found it


@dataclass(frozen=True)
class Tampered:
    table: str  # logical: entries or journals
    id: str  # the row's id, "first..last" for a chunk with several changes, or a currency (moved)
    what: str  # changed, deleted, inserted, several, or moved (``history.moved``)
    cents_impact: int
    detail: str
    chunk: int = 0  # the chunk of ids whose digest told it
    found_by: str = ""  # the run id of the audit that found it (set once reported)


@dataclass
class State:
    identity: dict[str, Any]
    salt: str
    proven: dict[str, int] = field(default_factory=lambda: {t: 0 for t in HISTORY_TABLES})
    seen: dict[str, int] = field(default_factory=lambda: {t: 0 for t in HISTORY_TABLES})
    seen_xmax: int | None = None  # an xid above every transaction running when ``seen`` was read
    chunks: dict[str, dict[int, Chunk]] = field(default_factory=lambda: {t: {} for t in HISTORY_TABLES})
    trial: dict[str | None, Decimal] = field(default_factory=dict)
    # Each account's last proven entry: account id (as text) -> (seq, balance after as text, the
    # account's currency and type when its first entries were proven, and whether it existed then: an
    # orphan's entries are proven too). None: a state written before it kept them (the next audit
    # finds them by a scan of the proven entries).
    # A loaded state's are read from its file when asked (``StoredLast``), not all at once.
    last: LastEntries | StoredLast | None = field(default_factory=dict)
    carried: list[Carried] = field(default_factory=list)
    # Changes to proven history found by an earlier audit, whose chunk has not been re-hashed since:
    # reported by every audit until a re-hash finds the chunk as proven again, or --full starts anew.
    tampered: list[Tampered] = field(default_factory=list)
    rotation: dict[str, int] = field(default_factory=lambda: {t: 0 for t in HISTORY_TABLES})
    # Per table, the ids below its watermark that held no row when proven (inclusive ranges, in
    # order): a row found there later is read as new, not as a change to proven history (a cached
    # sequence value another session used after a later id was proven; ``verifier.ledger.gaps.late``).
    # Empty: none, or a state written before they were kept.
    holes: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: {t: [] for t in HISTORY_TABLES})
    # Proven entries whose amounts ``trial`` leaves out, counted as they stand by every audit: the
    # legs of a journal of which another lies in a gap below its account's last proven entry (that
    # one is never proven; deleting the journal left the proven sums off by the proven legs).
    live: list[int] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    proven_at: str | None = None  # the run id of the audit that last extended the proven history
    # The TimeZone the digests are computed in: rows hashed as text print their timestamptz columns in
    # it, so a session of another time zone (PGTZ, ALTER DATABASE ... SET timezone) saw every chunk as
    # changed. None: a state written before it was pinned (the session's own, as then).
    digest_timezone: str | None = None
    # The accounts whose last proven entry this audit changed, where the state goes on from the file
    # it was loaded from (an incremental audit): ``save`` copies that file and rewrites only their rows
    # of ``last_entries`` (400,000 accounts: 0.9 s of a 4 s audit went to writing them all again).
    # None: every row is written.
    last_changed: set[str] | None = field(default=None, compare=False)
    # The file this state was loaded from, as it stood then (``_stamp``): ``save`` goes on from it only
    # if it still stands so (a backup put back during an audit held other rows: found by a break-it
    # run). None: not loaded from a file.
    loaded_from: tuple[int, int, int, int] | None = field(default=None, compare=False)
    # That file: a save refuses to replace it if it no longer stands as it did then (``changed``); a
    # full audit that starts anew from a loaded state keeps it. None: not loaded from a file.
    loaded_path: Path | None = field(default=None, compare=False)

    @property
    def seed(self) -> int:
        """The key of the row hashes (from the salt): 60 random bits."""
        return int(self.salt[:15], 16)

    @property
    def empty(self) -> bool:
        return not any(self.proven.values()) and not self.chunks["entries"]


_LAST_SQL = "SELECT account, seq, after, currency, type, existed FROM main.last_entries"
_ONE_SQL = _LAST_SQL + " WHERE account = ?"
BATCH = 10_000  # accounts per statement or per fetch where the state file is read by account


# A last entry whose balance's text is not a finite number's (as PostgreSQL prints NaN, Infinity).
_NOT_A_NUMBER_SQL = """
SELECT 1 FROM main.last_entries
WHERE after IS NOT NULL AND (after NOT GLOB '*[0-9]*' OR after GLOB '*[^-+.0-9eE]*') LIMIT 1"""


class StoredLast(Mapping[str, LastEntry]):
    """Each account's last proven entry as a loaded state file holds them (``State.last``), read from
    it when asked, with those this audit changed (``changed``) over them.

    Loaded whole, the last entries of 400,000 accounts took 1.3 s and about half of an incremental
    audit's 268 MB, and comparing every account with its own 1.3 s more (measured: a platform of
    many wallets, ``bench_ledger.py --accounts``): the comparison is one merge of the accounts, in
    order, with the file's index (``compare``). ``db``: a read-only connection to ``source``: the
    state file itself (``path``; ``save`` refuses to go on from it if it changed meanwhile), or, for
    a full audit's (``spilled``), the file ``save`` then completes as the new state (removed with
    this mapping if no save takes it). Iterating, ``len`` and ``items`` read it row by row.
    """

    def __init__(self, db: sqlite3.Connection, path: Path, source: Path, spill: bool) -> None:
        self.path = path  # the state file, as named (for messages)
        self.source = source
        self.spill = spill
        self.changed: LastEntries = {}
        self.stamp: tuple[int, int, int, int] | None = None  # the source's as loaded (``_stamp``)
        self._db = db
        self._finalizer = weakref.finalize(self, _discard, db, source if spill else None)

    def taken(self) -> None:
        """The file it reads has become the state file (``save``): it is no longer removed."""
        self._finalizer.detach()
        self.spill = False

    def __getitem__(self, account: str) -> LastEntry:
        if account in self.changed:
            return self.changed[account]
        with self._reading():
            row = self._db.execute(_ONE_SQL, (account,)).fetchone()
            if row is None:
                raise KeyError(account)
            return _entry(row)[1]

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A damaged row of the file (found as it is read: an audit does not read every row into
        Python): ``UsageError``, as ``load`` for any other damage, or ``changed`` where
        the file no longer stands as it was loaded (found by a break-it run: a backup put back while
        it was read said "damaged", and advised moving a good state away)."""
        try:
            yield
        except (sqlite3.DatabaseError, ValueError, TypeError, ArithmeticError) as exc:
            if not self.spill and not _unchanged(self.source, self.stamp):  # (a backup put back meanwhile)
                raise changed(self.path) from None
            raise damaged(self.path, exc) from None

    def __iter__(self) -> Iterator[str]:
        return (account for account, _ in self.rows())

    def __len__(self) -> int:
        with self._reading():
            stored = self._db.execute("SELECT count(*) FROM main.last_entries").fetchone()[0]
        return int(stored) + len(self.changed) - len(self._stored(self.changed))

    def items(self) -> ItemsView[str, LastEntry]:
        return _StreamedItems(self)

    def rows(self) -> Iterator[tuple[str, LastEntry]]:
        """Every (account, last entry), as the file holds them and as this audit changed them."""
        with self._reading():
            cursor = self._db.execute(_LAST_SQL)
            while batch := cursor.fetchmany(BATCH):
                for row in batch:
                    account, entry = _entry(row)
                    if account not in self.changed:
                        yield account, entry
        yield from self.changed.items()

    def finite(self) -> bool:
        """Whether the balances of the last entries this audit wrote are finite numbers (``finite``):
        those it changed and, for a full audit's (``spilled``), every row, in one scan of the file
        for a balance whose text is not a number's (NaN, Infinity)."""
        if not _finite_balances(self.changed.values()):
            return False
        if not self.spill:
            return True
        with self._reading():
            return self._db.execute(_NOT_A_NUMBER_SQL).fetchone() is None

    def lookup(self, accounts: Iterable[str]) -> LastEntries:
        """The last entries of those of ``accounts`` (ids as text) that have one, read in batches."""
        wanted = list(accounts)
        found = self._stored(wanted)
        found.update((a, self.changed[a]) for a in wanted if a in self.changed)
        return found

    def _stored(self, accounts: Iterable[str]) -> LastEntries:
        wanted, found = list(accounts), dict[str, LastEntry]()
        with self._reading():
            for i in range(0, len(wanted), BATCH):
                found.update(_entry(row) for row in self._db.execute(
                    "SELECT l.account, l.seq, l.after, l.currency, l.type, l.existed "
                    "FROM json_each(?) j JOIN main.last_entries l ON l.account = j.value",
                    (json.dumps(wanted[i:i + BATCH]),)))
        return found

    def compare(self, batches: Iterable[list[tuple[str, str | None, str | None, str | None]]],
                fresh: set[str]) -> tuple[LastEntries, list[str], bool, int]:
        """Every account as it stands, held to its last proven entry, both read in the order of their
        ids' UTF-8 bytes (SQLite's BINARY order of this file; ``ValueError`` for accounts out of that
        order). ``batches``: lists of (id, balance, currency, type), each as text (balance, currency
        and type None for NULL; no NULL id), no id on two lists (``whole_ids``); ``fresh``:
        the accounts with entries the audit reads as new.

        An account is as it was when its entries were proven if its last proven entry's account
        existed then, its balance equals that entry's balance after (as numbers, ``same_balance``),
        its currency and type are the same text, it has no fresh entries and its id is on one row.
        Returns the last entries of every other account that has one (also those deleted since),
        the fewer of the accounts as they were and the accounts without proven entries (each once),
        whether that list is the latter, and how many accounts are as they were.

        Each batch is held to the file's rows of the same range of ids, as a whole where they are
        equal (the common case: 1.6 million accounts in about 1.5 s, reading the file's rows
        included), else account by account."""
        assert not self.changed  # (what the file holds, before this audit changes anything)
        with self._reading():
            return self._compare(batches, fresh)

    def _compare(self, batches: Iterable[list[tuple[str, str | None, str | None, str | None]]],
                 fresh: set[str]) -> tuple[LastEntries, list[str], bool, int]:
        needed: LastEntries = {}
        unchanged, unproven = _Ids(), _Ids()
        previous: str | None = None
        for batch in batches:
            ids = [row[0] for row in batch]
            if (previous is not None and not previous < ids[0]) or ids != sorted(ids):
                raise ValueError(f"accounts out of the order of their ids' UTF-8 bytes after {previous!r}")
            bounds = (ids[-1],) if previous is None else (previous, ids[-1])
            proven = self._db.execute(_AS_PROVEN_SQL[len(bounds)], bounds).fetchall()
            if batch == proven and fresh.isdisjoint(ids):
                unchanged.extend(ids)
            elif len(proven) == len(ids) and [row[0] for row in proven] == ids:  # (one row each, all proven)
                differ = {row[0] for row, was in zip(batch, proven, strict=True)
                          if row != was or row[0] in fresh}
                unchanged.extend([a for a in ids if a not in differ])
                entries = self._stored(differ)
                _merge([row for row in batch if row[0] in entries], sorted(entries.items()), fresh, needed,
                       unchanged, unproven)
            else:
                stored = [_entry(row) for row in self._db.execute(_RANGE_SQL[len(bounds)], bounds)]
                _merge(batch, stored, fresh, needed, unchanged, unproven)
            previous = ids[-1]
        needed.update(_entry(row) for row in (self._db.execute(_RANGE_SQL[0]) if previous is None
                                              else self._db.execute(_BEYOND_SQL, (previous,))))
        by_unproven = len(unproven) < len(unchanged)  # (name the fewer)
        return needed, (unproven if by_unproven else unchanged).ids(), by_unproven, len(unchanged)


def _merge(batch: list[tuple[str, str | None, str | None, str | None]], stored: list[tuple[str, LastEntry]],
           fresh: set[str], needed: LastEntries, unchanged: _Ids, unproven: _Ids) -> None:
    """``StoredLast.compare`` account by account: ``batch`` and ``stored`` (the file's last entries of
    the same range of ids), both in order."""
    kept = iter(stored)
    entry = next(kept, None)
    for account, group in itertools.groupby(batch, key=operator.itemgetter(0)):
        while entry is not None and entry[0] < account:  # no longer there: deleted
            needed[entry[0]] = entry[1]
            entry = next(kept, None)
        if entry is None or entry[0] != account:
            unproven.add(account)
            continue
        proven, entry = entry[1], next(kept, None)
        row, *twice = group
        if (proven[4] and not twice and account not in fresh
                and same_balance(proven[1], row[1]) and proven[2] == row[2] and proven[3] == row[3]):
            unchanged.add(account)
        else:
            needed[account] = proven
    while entry is not None:
        needed[entry[0]] = entry[1]
        entry = next(kept, None)


def whole_ids(chunks: Iterable[list[tuple[str, str | None, str | None, str | None]]]
              ) -> Iterator[list[tuple[str, str | None, str | None, str | None]]]:
    """``chunks`` of rows ordered by id (as fetched), again in lists, the rows of one id in one list."""
    carry: list[tuple[str, str | None, str | None, str | None]] = []
    for chunk in chunks:
        rows = carry + chunk
        cut = len(rows)
        while cut and rows[cut - 1][0] == rows[-1][0]:
            cut -= 1
        if cut:
            yield rows[:cut]
        carry = rows[cut:]
    if carry:
        yield carry


# The file's last entries of a range of accounts (all; up to the first bound; between the two), as
# ``StoredLast.compare`` holds a batch of accounts to them: as the accounts read where they are as they
# were proven (an account that did not exist then, or a seq that is no integer: a type no text equals,
# as PostgreSQL's holds no NUL; such a row is read one by one, ``_entry``, and checked).
_AS_PROVEN_SQL = {n: "SELECT account, after, currency, "
                     "CASE WHEN existed AND typeof(seq) = 'integer' THEN type ELSE char(0) END "
                     "FROM main.last_entries" + where + " ORDER BY account"
                  for n, where in ((1, " WHERE account <= ?"), (2, " WHERE account > ? AND account <= ?"))}
_RANGE_SQL = {n: _LAST_SQL + where + " ORDER BY account" for n, where in (
    (0, ""), (1, " WHERE account <= ?"), (2, " WHERE account > ? AND account <= ?"))}
_BEYOND_SQL = _LAST_SQL + " WHERE account > ? ORDER BY account"


class _Ids:
    """Ids (text without NUL, as PostgreSQL's is) kept as one string per ``BATCH`` of them: 400,000
    ids of 7 digits took 25.7 MB as Python strings in a list, 3.2 MB so (tracemalloc)."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._batch: list[str] = []
        self._count = 0

    def add(self, value: str) -> None:
        self.extend([value])

    def extend(self, values: list[str]) -> None:
        self._batch.extend(values)
        self._count += len(values)
        if len(self._batch) >= BATCH:
            self._parts.append("\0".join(self._batch))
            self._batch = []

    def __len__(self) -> int:
        return self._count

    def ids(self) -> list[str]:
        return [i for part in self._parts for i in part.split("\0")] + self._batch


class _StreamedItems(ItemsView[str, LastEntry]):
    def __init__(self, mapping: StoredLast) -> None:
        super().__init__(mapping)
        self._stored = mapping

    def __iter__(self) -> Iterator[tuple[str, LastEntry]]:
        return self._stored.rows()


def same_balance(after: str | None, balance: str | None) -> bool:
    """Whether a last proven entry's balance after and an account's balance, as text, are equal
    numbers (``10000`` as the state keeps it, ``10000.00`` as a numeric(14, 2) column reads)."""
    if after == balance:
        return True
    if after is None or balance is None:
        return False
    try:
        return Decimal(after) == Decimal(balance)
    except ArithmeticError:
        return False


def spill_file(path: Path) -> Path:
    """The partial file ``save`` writes the state file at ``path`` into, made now, empty and its
    owner's alone, for ``write_last``: a full audit's last proven entries are written into it as they
    are read, and ``save`` completes it (no more disk than a save takes). Removed at exit if no save
    takes it, or by the next save after a killed audit. ``UsageError`` where it cannot be made."""
    spill = _partial(path)
    try:
        spill.unlink(missing_ok=True)
        os.close(os.open(spill, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise UsageError(f"Cannot write the state file {path}: {exc.strerror}.",
                         hint="The previous state is unchanged.") from None
    atexit.register(_discard_unsaved, spill, path)
    return spill


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def _discard_unsaved(spill: Path, path: Path) -> None:
    with contextlib.suppress(OSError):
        if not (path.exists() and os.path.samefile(spill, path)):
            spill.unlink(missing_ok=True)


def write_last(spill: Path, path: Path, batches: Iterable[list[tuple[str, LastEntry]]]) -> None:
    """Write each account's last proven entry, in ``batches`` (best in the order of the ids' UTF-8
    bytes), into the empty file ``spill`` (``spill_file`` of the state file ``path``), as a state
    file's ``last_entries`` table: a full audit's, of every account, not held in memory (1.6 million
    accounts took 900 MB as a dict; measured). ``UsageError`` where it cannot be written."""
    try:
        db = sqlite3.connect(spill)
        try:
            db.execute("PRAGMA journal_mode = OFF")  # (a scratch file: nothing to roll back to)
            db.execute(LAST_ENTRIES_DDL)
            for batch in batches:
                db.executemany("INSERT OR REPLACE INTO last_entries VALUES (?, ?, ?, ?, ?, ?)",
                               ((a, *entry) for a, entry in batch))
            db.commit()
        finally:
            db.close()
    except (OSError, sqlite3.Error) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"Cannot write the state file {path}: {why}.",
                         hint="The previous state is unchanged.") from None


def spilled(spill: Path, path: Path) -> StoredLast:
    """The last proven entries ``write_last`` wrote into ``spill`` (for the state file ``path``), read
    as a loaded state's are; the file is removed with them."""
    db = sqlite3.connect(f"{spill.resolve().as_uri()}?mode=ro", uri=True)
    return StoredLast(db, path, spill, spill=True)


def lookup(last: Mapping[str, LastEntry], accounts: Iterable[str]) -> LastEntries:
    """The last entries of those of ``accounts`` that have one in ``last`` (a state's)."""
    if isinstance(last, StoredLast):
        return last.lookup(accounts)
    return {a: last[a] for a in accounts if a in last}


def _entry(row: tuple[Any, ...]) -> tuple[str, LastEntry]:
    account, seq, after, currency, kind, existed = row
    return str(account), (int(seq), None if after is None else _exact_text(after),
                          None if currency is None else str(currency), None if kind is None else str(kind),
                          bool(existed))


def _discard(db: sqlite3.Connection, spill: Path | None) -> None:
    db.close()
    if spill is not None:
        with contextlib.suppress(OSError):
            spill.unlink(missing_ok=True)


def new(identity: dict[str, Any]) -> State:
    return State(identity=identity, salt=secrets.token_hex(16), digest_timezone="UTC")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the state file's lock (``path.lock``) for one audit; another holder: ``UsageError``."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise UsageError(f"Cannot use the state file {path}: {exc.strerror} ({lock_path}).") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"The state file {path} is in use by another ledger audit.",
                             hint="Two audits must not share a state file; wait for the other one "
                                  "or give this one its own --state.") from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def load(path: Path) -> State | None:
    """The state in ``path`` (None if there is no such file); ``UsageError`` if it is not one."""
    if not path.exists():
        return None
    if not path.is_file():
        raise UsageError(f"The state file {path} is not a file.")
    if path.stat().st_size == 0:  # an empty file (``touch``): nothing to lose, a new state is written
        return None
    try:
        stamp = _stamp(path)
        # Read only: a file that is not ours is never modified, not even by SQLite.
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            state = _read(db, path)
        except BaseException:
            db.close()
            raise
        if not isinstance(state.last, StoredLast):
            db.close()
        state.loaded_from = stamp if _stamp(path) == stamp else None
        state.loaded_path = path
        if isinstance(state.last, StoredLast):
            state.last.stamp = state.loaded_from
        return state
    except (sqlite3.DatabaseError, KeyError, ValueError, TypeError, ArithmeticError) as exc:
        raise damaged(path, exc) from None


def damaged(path: Path, exc: Exception) -> UsageError:
    """The error for a state file that is not one, or is damaged (exit 2; the file is left as it is)."""
    return UsageError(f"The state file {path} is not a ledger audit state, or is damaged ({exc}).",
                      hint="Give --state a file of its own; to start a new proven history, move this "
                           "file away (it is left as it is).")


def _read(db: sqlite3.Connection, path: Path) -> State:
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
    if int(meta["version"]) != VERSION:
        raise ValueError(f"version {meta['version']} (this verifier reads version {VERSION})")
    state = State(identity=json.loads(meta["identity"]), salt=str(meta["salt"]),
                  proven=json.loads(meta["proven"]), seen=json.loads(meta["seen"]),
                  seen_xmax=json.loads(meta["seen_xmax"]), rotation=json.loads(meta["rotation"]),
                  proven_at=json.loads(meta["proven_at"]), digest_timezone=meta.get("digest_timezone"))
    if db.execute("PRAGMA encoding").fetchone()[0] != "UTF-8":  # (the order ``StoredLast.compare`` reads in)
        raise ValueError("a text encoding other than UTF-8")
    if not all(isinstance(d, dict) for d in (state.identity, state.proven, state.seen, state.rotation)) \
            or not (state.digest_timezone is None or type(state.digest_timezone) is str):
        raise ValueError("an identity, watermarks, rotation or time zone of another kind than written")
    if set(state.proven) != set(HISTORY_TABLES) or set(state.seen) != set(HISTORY_TABLES):
        raise ValueError("watermarks of unknown tables")
    # The digests' key (State.seed), 32 hex digits as written (``new``): a shorter one hashed
    # every row otherwise, and all history was tampered (found by a break-it run).
    if not re.fullmatch(r"[0-9a-f]{32}", state.salt):
        raise ValueError("a salt that is not the one written")
    if not all(type(v) is int for d in (state.proven, state.seen, state.rotation) for v in d.values()) \
            or not (state.seen_xmax is None or type(state.seen_xmax) is int):
        raise ValueError("watermarks, rotation or xid that are not integers")
    for tbl, chunk, n, s0, s1, amount in db.execute(
            "SELECT tbl, chunk, n, s0, s1, amount FROM chunks ORDER BY tbl, chunk"):
        state.chunks[tbl][int(chunk)] = Chunk(int(n), int(s0), int(s1), _finite(amount))
    state.trial = {currency: _finite(total)
                   for currency, total in db.execute("SELECT currency, total FROM trial")}
    # A state written before the last proven entries were kept has no such table.
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'last_entries'").fetchone():
        state.last = StoredLast(db, path, path, spill=False)
        kept = db.execute("SELECT count(*) FROM main.last_entries").fetchone()[0]
        if "last_entries" in meta and str(kept) != meta["last_entries"]:  # (none before this release)
            raise ValueError(f"{kept:,} last proven entries where it was saved with {meta['last_entries']}")
    else:
        state.last = None
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'holes'").fetchone():
        for tbl, lo, hi in db.execute("SELECT tbl, lo, hi FROM holes ORDER BY tbl, lo"):
            if not (type(lo) is int and type(hi) is int and lo <= hi):
                raise ValueError(f"a gap of ids that is not one: {lo!r}..{hi!r}")
            state.holes[tbl].append((lo, hi))
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'live'").fetchone():
        state.live = [int(seq) for (seq,) in db.execute("SELECT seq FROM live ORDER BY seq")]
    state.carried = [Carried(*row) for row in db.execute(
        "SELECT pass, rule_index, id, impact, weight, detail, found_by FROM offenders ORDER BY rowid")]
    # Rows read as they are used, checked here: a hand-edited one was an internal error (found by a
    # break-it run), in a pass, in the report, or in every later audit's report.
    for c in state.carried:
        if not (type(c.rule_index) is int and c.rule_index >= 0 and type(c.weight) is int and c.weight >= 0):
            raise ValueError(f"an offending row of rule {c.rule_index!r}, weight {c.weight!r}")
        if c.impact is not None:
            _finite(c.impact)
    # A state written before tampering was carried has no such table: none was.
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tampered'").fetchone():
        state.tampered = [Tampered(tbl, str(i), what, int(impact), detail, int(chunk), found_by)
                          for tbl, chunk, i, what, impact, detail, found_by in db.execute(
                              "SELECT tbl, chunk, id, what, impact, detail, found_by FROM tampered "
                              "ORDER BY rowid")]
    columns = [d[0] for d in db.execute("SELECT * FROM runs LIMIT 0").description]
    state.runs = [dict(zip(columns, row, strict=True)) for row in
                  db.execute("SELECT * FROM runs ORDER BY started_at, run_id")]
    for run in state.runs:
        run["rules"] = json.loads(run["rules"])
        counts = [run[k] for k in _RUN_COUNTS if k in run]
        if not (all(type(v) is int for v in counts) and isinstance(run["rules"], list)
                and type(run["duration_s"]) in (int, float) and _INTEGER.fullmatch(str(run["cents_impact"]))):
            raise ValueError(f"an audit {run['run_id']!r} of its history whose figures are not numbers")
    if any(t.table not in HISTORY_TABLES for t in state.tampered):
        raise ValueError("changes found in a table the audit keeps no history of")
    return state


# The figures of an audit in a state file's history that are counts (``runs``).
_RUN_COUNTS = ("entries", "proven_entries", "checked_entries", "rehashed_chunks", "findings",
               "offending_rows")


def _stamp(path: Path) -> tuple[int, int, int, int]:
    """What tells one content of the file at ``path`` from another, short of reading it: its device,
    inode, size and time of last change (a copy put back, in place or by a rename, changes them)."""
    info = path.stat()
    return info.st_dev, info.st_ino, info.st_size, info.st_ctime_ns


# The most digits before the point a figure of the file may have: PostgreSQL's numeric holds up to
# 131,072 (its documentation, "Arbitrary Precision Numbers"); ``1e999999999`` took the audit minutes
# to write out as an integer, and SIGTERM could not stop it (found by a break-it run).
FIGURE_DIGITS_MAX = 131_072


def finite(state: State) -> bool:
    """Whether the figures ``save`` would keep of ``state``'s proven entries are all finite numbers:
    trial sums, chunks' amounts and the last entries' balances this audit wrote (``State.last``:
    those of a loaded file were checked by the audit that saved them). In ``numeric`` and ``double
    precision`` columns PostgreSQL keeps NaN and Infinity (PostgreSQL documentation, "Numeric
    Types"); saved, one made every later audit refuse the file as damaged, even once mended (found by
    break-it runs), so such a state is not saved and its entries are checked again."""
    if not (all(t.is_finite() for t in state.trial.values())
            and all(c.amount.is_finite() for chunks in state.chunks.values() for c in chunks.values())):
        return False
    last = state.last
    if isinstance(last, StoredLast):
        return last.finite()
    return _finite_balances((last or {}).values())


def _finite_balances(entries: Iterable[LastEntry]) -> bool:
    """Whether every balance after of ``entries`` that is not NULL is a finite number."""
    try:
        for _, after, *_ in entries:
            if after is not None:
                _finite(after)
    except (ValueError, ArithmeticError):
        return False
    return True


def _finite(text: Any) -> Decimal:
    """A figure of the file as a Decimal; ``ValueError`` for one that is not a finite number, or has
    more than ``FIGURE_DIGITS_MAX`` digits before its point."""
    value = Decimal(str(text))
    if not value.is_finite():
        raise ValueError(f"a figure that is not a finite number: {text!r}")
    if value and value.adjusted() >= FIGURE_DIGITS_MAX:
        raise ValueError(f"a figure of more digits than any numeric holds: {str(text)[:40]!r}")
    return value


_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def _exact_text(text: Any) -> str:
    """A balance of the file as SQL reads it back into its column: an integral value without a
    fraction (``31732.0`` fits a bigint column as ``31732``); ``ValueError`` for one not finite.
    An integer's text is itself, read as is (a state of 400,000 accounts loaded in 1.5 s, 0.84 s so)."""
    if isinstance(text, str) and _INTEGER.fullmatch(text):
        return text
    value = _finite(text)
    return str(int(value)) if value == value.to_integral_value() else str(value)


def _remove_leftovers(path: Path) -> None:
    """Remove the partial files of ``path`` that audits killed while saving left (``save``'s own name,
    of another process id): ``save`` runs under the state's lock (``locked``), so no other audit is
    writing one (found by a break-it run: they stayed for good). One that cannot be removed (another
    user's, in a shared directory) is left: the state is saved already."""
    mine = re.compile(r"\." + re.escape(path.name) + r"\.[0-9]+\.partial(-journal)?")  # and SQLite's
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.partial*"):
        if mine.fullmatch(leftover.name) and not leftover.is_dir():
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)


def _unchanged(path: Path, stamp: tuple[int, int, int, int] | None) -> bool:
    """Whether the file at ``path`` stands as ``stamp`` says it did (``_stamp``)."""
    try:
        return stamp is not None and _stamp(path) == stamp
    except OSError:
        return False


def changed(path: Path) -> UsageError:
    """The error for a state file that changed while the audit ran (exit 2; it is left as it is)."""
    return UsageError(f"The state file {path} changed while this audit ran.",
                      hint="It is left as it is now; the next audit goes on from it.")


def _check_unchanged(state: State) -> None:
    """``UsageError`` where the file ``state`` was loaded from no longer stands as it did then (a backup
    put back during the audit: a new state written over it would lose it, and one going on from it
    would mix the two)."""
    if state.loaded_path is not None and not _unchanged(state.loaded_path, state.loaded_from):
        raise changed(state.loaded_path)


def _basis(path: Path, state: State) -> bool:
    """Whether a save to ``path`` goes on from the file there: ``state`` was loaded from it and changed
    only some last entries (``State.last_changed``). ``UsageError`` where the file its last entries
    are read from has changed since it was loaded (a backup put back during the audit: its rows are
    no longer what was loaded, and a new state written from them would mix the two)."""
    last = state.last
    if not isinstance(last, StoredLast) or last.spill:
        return False
    if not _unchanged(last.source, last.stamp):
        raise changed(last.source)
    return state.last_changed is not None and last.source.resolve() == path.resolve()


# Every table a save writes whole, where it goes on from the file (``State.last_changed``).
WHOLE_TABLES = ("meta", "chunks", "trial", "holes", "live", "offenders", "tampered", "runs")


def save(path: Path, state: State) -> None:
    """Write ``state`` to ``path`` atomically: a new file, synced, then renamed over the old one.

    Where ``state.last_changed`` is set (the state was loaded from ``path`` and goes on from it), the
    new file is a copy of it whose tables are written again, but for ``last_entries``, where only
    the rows of those accounts are."""
    _check_unchanged(state)
    tmp = _partial(path)
    last = state.last
    spill = isinstance(last, StoredLast) and last.spill and last.source == tmp
    if not spill:
        tmp.unlink(missing_ok=True)
    try:
        if not spill:  # (a spill is made so, ``spill_file``)
            # The owner's alone (0600): it names offending rows and their amounts, as offenders.csv does.
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        go_on = _basis(path, state)
        if go_on:
            shutil.copyfile(path, tmp)  # (into the file made above: its mode stays 0600)
            go_on = _basis(path, state)
            if not go_on:
                tmp.write_bytes(b"")
        db = sqlite3.connect(tmp)
        try:
            if go_on or spill:  # (tables as this release makes them: an earlier one's may lack a column)
                for table in WHOLE_TABLES:
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                db.executescript(SCHEMA.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS "))
            else:
                db.executescript(SCHEMA)
                if isinstance(last, StoredLast):  # (its file's rows as they are, by SQLite: 1.6 million
                    # accounts took 11 s read into Python and written back, against 1 s)
                    db.execute("ATTACH DATABASE ? AS source", (str(last.source),))
                    db.execute("INSERT INTO main.last_entries "
                               "SELECT account, seq, after, currency, type, existed FROM source.last_entries")
                    db.commit()
                    db.execute("DETACH DATABASE source")
            meta = {"format": FORMAT, "version": str(VERSION), "identity": json.dumps(state.identity),
                    "salt": state.salt, "proven": json.dumps(state.proven), "seen": json.dumps(state.seen),
                    "seen_xmax": json.dumps(state.seen_xmax), "rotation": json.dumps(state.rotation),
                    "proven_at": json.dumps(state.proven_at),
                    **({"digest_timezone": state.digest_timezone} if state.digest_timezone else {})}
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                           ((tbl, k, c.n, str(c.s0), c.s1, str(c.amount))
                            for tbl, chunks in state.chunks.items() for k, c in chunks.items()))
            db.executemany("INSERT INTO trial VALUES (?, ?)", ((c, str(t)) for c, t in state.trial.items()))
            db.executemany("INSERT INTO holes VALUES (?, ?, ?)",
                           ((tbl, lo, hi) for tbl, gaps in state.holes.items() for lo, hi in gaps))
            db.executemany("INSERT INTO live VALUES (?)", ((seq,) for seq in state.live))
            last = state.last or {}
            # (a loaded state's or a spill's: those this audit changed over its file's rows)
            written = (last.changed if isinstance(last, StoredLast) else last).items()
            db.executemany("INSERT OR REPLACE INTO last_entries VALUES (?, ?, ?, ?, ?, ?)",
                           ((a, *last[a]) for a in (state.last_changed or ()) if a in last) if go_on
                           else ((a, *entry) for a, entry in written))
            # Their number, which ``load`` holds the table to (found by break-it runs: rows deleted
            # from it by hand let an account's drift pass, as if it had no proven entries).
            db.execute("INSERT INTO meta SELECT 'last_entries', count(*) FROM main.last_entries")
            db.executemany("INSERT INTO tampered VALUES (?, ?, ?, ?, ?, ?, ?)",
                           ((t.table, t.chunk, t.id, t.what, t.cents_impact, t.detail, t.found_by)
                            for t in state.tampered))
            db.executemany("INSERT INTO offenders VALUES (?, ?, ?, ?, ?, ?, ?)",
                           ((c.pass_name, c.rule_index, c.id, c.impact, c.weight, c.detail, c.found_by)
                            for c in state.carried))
            db.executemany(
                "INSERT INTO runs VALUES (:run_id, :started_at, :mode, :status, :duration_s, :entries, "
                ":proven_entries, :checked_entries, :rehashed_chunks, :findings, :offending_rows, "
                ":cents_impact, :rules, :unsettled)",
                ({**r, "rules": json.dumps(r["rules"]), "unsettled": int(bool(r.get("unsettled")))}
                 for r in state.runs))
            db.commit()
        finally:
            db.close()
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        _check_unchanged(state)  # (again: the save took a moment; a put-back in the last one is lost)
        os.replace(tmp, path)
        if spill and isinstance(last, StoredLast):
            last.taken()
        _remove_leftovers(path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except (OSError, sqlite3.Error) as exc:  # (SQLite's own for a full disk: found by a break-it run)
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"Cannot write the state file {path}: {why}.",
                         hint="The previous state is unchanged.") from None
    finally:
        tmp.unlink(missing_ok=True)
