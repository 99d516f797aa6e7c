"""Accepted findings (a baseline) and the difference from the previous run on the same target.

A team lives with a known, explained finding by accepting it: ``verifier
accept RUN_DIR --reason TEXT`` writes the findings of a run (or those of
chosen rules and tables) to a baseline file kept in the team's repository
(JSON, ``verifier-baseline.json`` by default): per finding its rule, table,
column and migration, every offending row's key (from the run's
``offenders.csv`` and ``ledger-offenders.csv``), its rows and cents impact,
the reason, who accepted it and when. The accepted cents figures are exact
integers (minor units), never floats.

A run with ``--baseline FILE`` (or the configuration's ``baseline``)
compares each finding with the entry of the same rule, table, column and
migration (``apply``): it is **accepted** (listed apart, never failing the
run) when it has no more rows and no more cents (absolute) than accepted
and every offending row is one that was accepted; otherwise it stays a
finding, marked **changed** with what grew, or **new** when no entry
matches. Entries that match no finding are **stale**: a ``baseline_stale``
warning names each, so that fixed issues leave the baseline.

Every run also compares itself with the previous run of the same report
folder on the same target (``previous``): the same ``--db`` target (its
server's system identifier and its database's name; the connection string
as described in the provenance where a run could not read the identifier),
or the same snapshot (its SHA-256) and migrations directory. It records the
findings that are new, fixed, changed (grown or turned, as ``apply`` tells
them) and unchanged since then; ``baseline_stale`` warnings, about the
baseline file and not the target, are left out.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import getpass
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from verifier.config import Config
from verifier.errors import UsageError
from verifier.files import LEDGER_OFFENDERS_NAME, OFFENDERS_NAME, write_atomic
from verifier.findings import Finding
from verifier.run import Run

FORMAT = "verifier-baseline"
VERSION = 1
DEFAULT_NAME = "verifier-baseline.json"
Identity = tuple[str, str | None, str | None, str | None]  # rule, table, column, migration
MODE = 0o644  # less the umask: a file for the team's repository, not a run's private output
LOCK_WAIT_S = 60.0  # how long ``accept`` waits for another accept on the same baseline to finish
LOCK_POLL_S = 0.05


@dataclass(frozen=True)
class Entry:
    """One accepted finding. ``rows``: the offending rows' keys (JSON text, as offenders.csv has
    them; empty for a finding without rows of its own, such as a sum or a migration rule)."""

    rule: str
    table: str | None
    column: str | None
    migration: str | None
    count: int
    cents_impact: int  # absolute, in minor units
    cents_impact_net: int
    rows: tuple[str, ...]
    reason: str
    accepted_by: str
    accepted_at: str  # ISO 8601, UTC
    run_id: str

    @property
    def identity(self) -> Identity:
        return (self.rule, self.table, self.column, self.migration)


def _column(finding: dict[str, Any]) -> str | None:
    """The column a finding is on, as offenders.csv names it: for a check without a column (a pending
    CHECK constraint's ``constraint_violation``), the check's own name (``detail.source``), so
    that one constraint's rows are never taken for another's."""
    return finding.get("column") or (finding.get("detail") or {}).get("source")


def identity(finding: dict[str, Any]) -> Identity:
    """What ties a finding to a baseline entry and to the same finding of another run."""
    return (finding["rule"], finding.get("table"), _column(finding), finding.get("migration"))


def offender_rows(run_dir: Path) -> dict[tuple[str, str, str], set[str]]:
    """Per (rule, table, column) the keys of the offending rows a run wrote: offenders.csv (cents:
    its row_key; ledger: its id) and ledger-offenders.csv (a rehearsal's ledger audit)."""
    found: dict[tuple[str, str, str], set[str]] = {}
    for name in (OFFENDERS_NAME, LEDGER_OFFENDERS_NAME):
        path = run_dir / name
        if not path.is_file():
            continue
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                key = row.get("row_key") if "row_key" in row else row.get("id")
                where = (row.get("rule") or "", row.get("table") or "", row.get("column") or "")
                found.setdefault(where, set()).add(key or "")
    return found


def _rows_of(rows: dict[tuple[str, str, str], set[str]], finding: dict[str, Any]) -> set[str]:
    return rows.get((finding["rule"], finding.get("table") or "", _column(finding) or ""), set())


def _entry(finding: dict[str, Any], rows: dict[tuple[str, str, str], set[str]], reason: str, by: str,
           at: str, run_id: str) -> Entry:
    """``finding`` (of a run's summary.json) as an entry: its identity, figures and offending rows."""
    return Entry(finding["rule"], finding.get("table"), _column(finding), finding.get("migration"),
                 int(finding.get("count") or 0), abs(int(finding.get("cents_impact") or 0)),
                 int(finding.get("cents_impact_net") or 0), tuple(sorted(_rows_of(rows, finding))), reason,
                 by, at, run_id)


def _grown(finding: dict[str, Any], rows: set[str], entry: Entry, *, than: str) -> list[str]:
    """What ``finding`` (with the offending rows ``rows``) has that ``entry`` does not, in words, or
    nothing: more rows, more cents (absolute), a larger net impact or one of the other sign, rows
    the entry does not hold. ``than`` names the entry in the words ("accepted")."""
    grew = []
    if int(finding.get("count") or 0) > entry.count:
        grew.append(f"{finding['count']:,} rows, {entry.count:,} {than}")
    if abs(int(finding.get("cents_impact") or 0)) > entry.cents_impact:
        grew.append(f"{abs(int(finding['cents_impact'])):,} cents, {entry.cents_impact:,} {than}")
    net = int(finding.get("cents_impact_net") or 0)
    if abs(net) > abs(entry.cents_impact_net) or net * entry.cents_impact_net < 0:
        grew.append(f"net {net:+,} cents, {entry.cents_impact_net:+,} {than}")
    others = sorted(rows - set(entry.rows))
    if others:
        grew.append(f"{len(others):,} row(s) not {than}, e.g. {others[0]}")
    return grew


def chosen(given: Path | None, config: Config) -> Path | None:
    """The baseline a run uses: ``given`` (--baseline), else the configuration's, else none."""
    return given or (Path(config.baseline) if config.baseline else None)


def load(path: Path) -> list[Entry]:
    """The entries of the baseline file at ``path``; ``UsageError`` naming it when it is missing or
    not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"The baseline file {path} does not exist.",
                         hint="Write one with: verifier accept RUN_DIR --reason TEXT") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"Cannot read the baseline file {path}: {exc}.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("accepted"),
                                                                                      list):
        raise UsageError(f"{path} is not a verifier baseline (no \"format\": \"{FORMAT}\" with an "
                         "\"accepted\" list).")
    if data.get("version") != VERSION:
        raise UsageError(f"{path} is a verifier baseline of version {data.get('version')!r}; this verifier "
                         f"reads version {VERSION}.")
    entries = []
    for i, item in enumerate(data["accepted"]):
        problem = _malformed(item)
        if problem:
            raise UsageError(f"{path}: accepted[{i}] is not an accepted finding: {problem}.",
                             hint="Write baselines with verifier accept; edit them only to delete entries.")
        entries.append(Entry(**{**item, "rows": tuple(item["rows"])}))
    return entries


_TEXTS = ("rule", "reason", "accepted_by", "accepted_at", "run_id")
_NAMES = ("table", "column", "migration")
_WHOLE = ("count", "cents_impact", "cents_impact_net")


def _malformed(item: Any) -> str | None:
    """What makes one entry of a baseline file unusable, or None: its figures must be exact
    integers (not floats, which JSON's 1e308 or Infinity would be, nor booleans), count and the
    absolute impact not negative, its rows a list of keys (text)."""
    if not isinstance(item, dict):
        return "not an object"
    unknown = set(item) - {*_TEXTS, *_NAMES, *_WHOLE, "rows"}
    missing = {*_TEXTS, *_NAMES, *_WHOLE, "rows"} - set(item)
    if unknown or missing:
        return f"unknown keys {sorted(unknown)}" if unknown else f"missing keys {sorted(missing)}"
    for key in _TEXTS:
        if not isinstance(item[key], str):
            return f"{key} is not text"
    for key in _NAMES:
        if item[key] is not None and not isinstance(item[key], str):
            return f"{key} is not text or null"
    for key in _WHOLE:
        if isinstance(item[key], bool) or not isinstance(item[key], int):
            return f"{key} is {item[key]!r}, not a whole number"
    if item["count"] < 0 or item["cents_impact"] < 0:
        return "count and cents_impact cannot be negative"
    if not isinstance(item["rows"], list) or not all(isinstance(r, str) for r in item["rows"]):
        return "rows is not a list of row keys"
    return None


def _save(path: Path, entries: list[Entry]) -> None:
    ordered = sorted(entries, key=lambda e: tuple(str(x or "") for x in e.identity))
    text = json.dumps({"format": FORMAT, "version": VERSION,
                       "accepted": [{**asdict(e), "rows": list(e.rows)} for e in ordered]},
                      indent=2, ensure_ascii=False)
    try:
        write_atomic(path, text + "\n", mode=MODE)
    except OSError as exc:
        raise UsageError(f"Cannot write the baseline file {path}: {exc.strerror}.") from None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the baseline ``path`` (``.<name>.lock`` beside it, left there),
    waiting up to ``LOCK_WAIT_S`` for another holder; ``UsageError`` when it cannot be had.

    The lock is a file of its own: the baseline is replaced by a rename on every write, so a lock
    on the baseline itself would be on a file the next writer no longer opens.
    """
    lock = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, MODE)
    except OSError as exc:
        raise UsageError(f"Cannot write the baseline file {path}: {exc.strerror} ({lock}).") from None
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UsageError(f"The baseline file {path} has been in use by another verifier accept "
                                     f"for {LOCK_WAIT_S:.0f} s ({lock}).",
                                     hint="Wait for the other one to end, then accept again.") from None
                time.sleep(LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def accept(run_dir: Path, baseline: Path, reason: str, *, rules: tuple[str, ...] = (),
           tables: tuple[str, ...] = (), who: str | None = None) -> tuple[int, int]:
    """Add the findings of the run in ``run_dir`` (those of ``rules`` and ``tables`` when given) to
    the baseline file (created if missing): (entries added or replaced, entries in the file).

    A ``baseline`` that is a symbolic link is written through to its target. The file is read,
    changed and replaced (atomically, mode 0644 less the umask) under an exclusive lock, so that
    two accepts at once both keep their entries.

    Raises ``UsageError`` for a run folder without a readable summary.json, a run that did not
    verify (NOT VERIFIED: it found nothing one could accept), an empty reason, a choice that
    matches no finding, or a baseline that cannot be written.
    """
    if not reason.strip():
        raise UsageError("An accepted finding needs a reason (--reason TEXT): why it may stay.")
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"Cannot read {run_dir / 'summary.json'}: {exc}.",
                         hint="Give the folder of one run (reports/<run-id>).") from None
    if summary.get("status") == "error":
        raise UsageError(f"The run {run_dir.name} did not verify (NOT VERIFIED): it has no findings to "
                         "accept.", hint="Accept the findings of a run that ended PASS or FAIL.")
    chosen = [f for f in summary.get("findings", []) + summary.get("accepted", [])
              if (not rules or f["rule"] in rules) and (not tables or f.get("table") in tables)
              and f["rule"] != "baseline_stale"]
    if not chosen:
        raise UsageError(f"No finding of the run {run_dir.name} matches the rules and tables given.")
    rows = offender_rows(run_dir)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    by = who or getpass.getuser()
    try:
        # The link's target is the file to change (the rename replaces what it is given).
        path = baseline.resolve()
    except (OSError, RuntimeError) as exc:  # a loop of links: RuntimeError before Python 3.13
        raise UsageError(f"Cannot write the baseline file {baseline}: {exc}.") from None
    with _locked(path):
        entries = {e.identity: e for e in (load(path) if path.exists() else [])}
        for f in chosen:
            entries[identity(f)] = _entry(f, rows, reason.strip(), by, now, str(summary.get("run_id")))
        _save(path, list(entries.values()))
    return len(chosen), len(entries)


def apply(run: Run, path: Path) -> None:
    """Mark each finding of ``run`` accepted, changed or new against the baseline at ``path``; move
    the accepted ones to ``run.accepted``; add a ``baseline_stale`` warning per entry no finding
    matched. Recorded in the provenance (``baseline``). Raises ``UsageError`` for a bad file."""
    entries = load(path)
    by_identity = {e.identity: e for e in entries}
    rows = offender_rows(run.run_dir)
    kept, accepted, changed, matched = [], [], 0, set()
    for f in run.findings:
        entry = by_identity.get(identity(f))
        if entry is None:
            f["baseline"] = "new"
            kept.append(f)
            continue
        matched.add(entry.identity)
        grew = _grown(f, _rows_of(rows, f), entry, than="accepted")
        if grew:
            f["baseline"] = "changed: " + "; ".join(grew)
            changed += 1
            kept.append(f)
        else:
            f["baseline"] = "accepted"
            f["accepted"] = {"reason": entry.reason, "by": entry.accepted_by, "at": entry.accepted_at,
                             "run_id": entry.run_id}
            accepted.append(f)
    run.findings = kept
    run.accepted = accepted
    stale = [e for e in entries if e.identity not in matched]
    for e in stale:
        where = ".".join(x for x in (e.table, e.column) if x) or e.migration or "the run"
        run.add(Finding("baseline_stale", "warning", table=e.table, column=e.column, migration=e.migration,
                        count=e.count,
                        message=f"The baseline accepts {e.rule} on {where} ({e.reason}), which this run no "
                                f"longer finds: remove it from {path.name} (it was accepted on "
                                f"{e.accepted_at} by {e.accepted_by}).",
                        detail={"accepted_rule": e.rule, "reason": e.reason, "accepted_at": e.accepted_at}))
    new = sum(1 for f in kept if f.get("baseline") == "new")
    run.provenance["baseline"] = {"path": str(path), "entries": len(entries), "accepted": len(accepted),
                                  "changed": changed, "new": new, "stale": len(stale)}


def _same_target(mine: dict[str, Any], theirs: dict[str, Any]) -> bool:
    if mine.get("target") is not None:
        if mine.get("target_system_identifier") and theirs.get("target_system_identifier"):
            # The same server (by its system identifier) and database, however each run spelt its
            # connection string (another host name, port forward or role).
            return ((mine["target_system_identifier"], mine.get("target_database")) ==
                    (theirs["target_system_identifier"], theirs.get("target_database")))
        # A run whose role could not read the identifier (verifier.source.live): the connection
        # string as described, and the database's name.
        return (mine.get("target"), mine.get("target_database")) == (theirs.get("target"),
                                                                       theirs.get("target_database"))
    if mine.get("snapshot_sha256") is not None:
        return ((mine.get("snapshot_sha256"), mine.get("migrations")) ==
                (theirs.get("snapshot_sha256"), theirs.get("migrations")))
    return False


def _compared(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The findings a comparison with the previous run takes: a ``baseline_stale`` warning is about
    the baseline file, not the target, and is left out."""
    return [f for f in findings if f["rule"] != "baseline_stale"]


def previous(run: Run) -> None:
    """Compare ``run`` with the newest earlier run of its report folder on the same target, by the
    same command: the findings new, fixed, changed (as ``apply`` tells a grown finding: more rows,
    more cents, a net impact larger or of the other sign, other rows; with what changed) and
    unchanged since then (``provenance.previous_run``; each finding's ``since_previous``). Reads the
    folder's summary.json, offenders.csv and ledger-offenders.csv files; writes nothing."""
    folder = run.run_dir.parent
    mine = run.started_at.isoformat()
    earlier = []
    # Ordered by start time (microseconds), not by folder name: two runs in one second share the
    # name's timestamp and differ only in its random suffix.
    for candidate in (p for p in folder.iterdir() if p.is_dir() and p.name != run.run_id):
        try:
            data = json.loads((candidate / "summary.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if str(data.get("started_at", "")) < mine:
            earlier.append((candidate, data))
    for candidate, data in sorted(earlier, key=lambda c: str(c[1].get("started_at", "")), reverse=True):
        if data.get("command") != run.command or data.get("status") == "error" or not _same_target(
                run.provenance, data.get("provenance") or {}):
            continue
        before = {identity(f): f for f in _compared(data.get("findings", []) + data.get("accepted", []))}
        findings = _compared(run.findings + run.accepted)
        now = {identity(f) for f in findings}
        rows_before, rows_now = offender_rows(candidate), offender_rows(run.run_dir)

        def named(i: Identity) -> str:
            return " ".join(x for x in (i[0], ".".join(y for y in i[1:3] if y), i[3]) if x)

        changed: dict[Identity, str] = {}
        for f in findings:
            if identity(f) not in before:
                f["since_previous"] = "new"
                continue
            was = _entry(before[identity(f)], rows_before, "", "", "", str(data.get("run_id")))
            grew = _grown(f, _rows_of(rows_now, f), was, than="in the previous run")
            f["since_previous"] = "changed: " + "; ".join(grew) if grew else "unchanged"
            if grew:
                changed[identity(f)] = f"{named(identity(f))}: {'; '.join(grew)}"
        run.provenance["previous_run"] = {
            "run_id": data.get("run_id"), "status": data.get("status"),
            "new": sorted(named(i) for i in now - before.keys()),
            "fixed": sorted(named(i) for i in before.keys() - now),
            "changed": sorted(changed.values()), "unchanged": len(now & before.keys() - changed.keys())}
        return
