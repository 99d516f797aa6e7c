"""What scheduled audits have proven (``--state``), and when what an audit saw is settled.

``read_state`` is an audit's "state" stage: it loads the state file
(``verifier.ledger.state``), holds its identity against this ledger's, and
says what this audit covers (a ``Scope``: full or incremental, and the ids
up to which history is settled now). ``advance`` is the state after the
audit: proven history extended to what settled, the audit in its history.

History is proven only once settled: an audit proves what the previous
audit saw, once every transaction that was running then has ended
(``settle``, ``running_bound``). So the first audit of a new state proves
nothing and the second proves what the first saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from verifier.config.ledger import ALL_TYPES, Layout
from verifier.errors import UsageError
from verifier.findings import Finding
from verifier.ledger import gaps as gaps_
from verifier.ledger import history
from verifier.ledger import invariants as inv
from verifier.ledger import state as st
from verifier.run import Run

FULL_FROM = -(1 << 63) - 1  # below every bigint: a full audit digests every id
TREND_RUNS_MAX = 60  # audits of the state's history a report carries (for its trend charts)
RUNS_KEPT_MAX = 1000  # audits the state file remembers

# What makes a state file this ledger's: the server, the database, the history tables' columns.
IDENTITY_SQL = """
SELECT (SELECT system_identifier::text FROM pg_control_system()), current_database(),
       (SELECT coalesce(json_object_agg(c.relname, (
                SELECT json_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)), '{}')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = ANY(%s))::text
"""
# This audit's snapshot (oldest running xid, xmax, how many run) and the newest ids it sees.
SNAPSHOT_SQL = """
SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text, (SELECT count(*) FROM pg_snapshot_xip(s)),
       (SELECT max({entries_seq}) FROM {entries}), (SELECT max({journals_id}) FROM {journals})
FROM pg_current_snapshot() s
"""
# Every transaction running now holds the lock on its own xid (pg_locks shows them to every role).
RUNNING_XIDS_SQL = """
SELECT transactionid::text FROM pg_locks
WHERE locktype = 'transactionid' AND mode = 'ExclusiveLock' AND granted
"""
# The sequences a history table's id column draws from: a serial's or an identity column's own
# (pg_depend: 'a' or 'i' on the column) or one its default calls (pg_depend from pg_attrdef), each
# with the last value it handed out: NULL where it never has, counts down, or this role may read
# neither it nor its value (as the pg_sequences system view reads it: PostgreSQL's system_views.sql).
SEQUENCE_SQL = """
WITH col AS (
  SELECT a.attrelid, a.attnum FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND a.attname = %(column)s AND NOT a.attisdropped
), seqs AS (
  SELECT d.refobjid AS seq FROM col
  JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = col.attrelid AND ad.adnum = col.attnum
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
  UNION
  SELECT d.objid FROM col
  JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
   AND d.refobjid = col.attrelid AND d.refobjsubid = col.attnum
   AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i')
)
SELECT s.seq::pg_catalog.regclass::text, pg_catalog.has_sequence_privilege(s.seq, 'SELECT,USAGE'),
       CASE WHEN q.seqincrement > 0 AND pg_catalog.has_sequence_privilege(s.seq, 'SELECT,USAGE')
            THEN pg_catalog.pg_sequence_last_value(s.seq) END
FROM seqs s JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.seq
ORDER BY 1
"""
# The rows of a history table with ids beyond what its sequence has handed out: how many, the
# first of them.
BEYOND_SQL = """
SELECT count(*), (SELECT array_agg(i ORDER BY i) FROM (
         SELECT {id} AS i FROM {table} WHERE {id} > {position} ORDER BY {id} LIMIT {sample}) f)
FROM {table} WHERE {id} > {position}
"""


# Accounts moved onto a type held to a floor, or off one, since their entries were proven (a type
# change): an incremental audit reads only new entries, so none of theirs would be held to a new
# floor, and the offenders a lifted floor no longer makes would be carried on.
MOVED_ACROSS_FLOOR_SQL = """
SELECT l.account::text, l.type, a.{accounts_type}::text, count(*) OVER ()
FROM {proven_last} l JOIN {accounts} a ON a.{accounts_id} = l.account
WHERE NOT {all_non_negative} AND l.type IS NOT NULL
  AND (a.{accounts_type}::text = ANY({non_negative})) IS DISTINCT FROM (l.type = ANY({non_negative}))
ORDER BY 1 LIMIT 1
"""
# The first journal beyond the proven ones that has an entry beyond the entries' watermark.
OPEN_JOURNAL_SQL = """
SELECT min({entries_journal}) FROM {entries} WHERE {entries_seq} > {w} AND {entries_journal} > {jw}
"""


@dataclass(frozen=True)
class Schedule:
    """What ``--state``, ``--full`` and ``--verify-history-share`` ask of an audit."""

    state: Path | None = None
    full: bool = False
    history_share: float = 1.0

    def __post_init__(self) -> None:
        assert 0 < self.history_share <= 1


@dataclass(frozen=True)
class Scope:
    """What one audit covers: ``full`` or ``incremental`` (beyond the proven watermarks of
    ``state``), and per history table the id up to which history is settled now."""

    mode: str
    state: st.State | None  # None: an audit without a state file
    settled: dict[str, int]
    unsettled: bool = False  # an incremental audit that could settle nothing the last one saw
    # A full audit of a state file an earlier release wrote (``read_state``): that state, whose
    # proven history this audit re-hashes all of, before the state starts anew (if it is intact).
    previous: st.State | None = None
    # An incremental audit's placeholders (``invariants.incremental``), built once per audit.
    placeholders: dict[str, sql.Composable] | None = None
    # Per history table, the ids of the rows found in gaps of proven history (``gaps.late``): read as new
    # by an incremental audit (and left out of the re-hash), and proven by it but those ``held``
    # (journals with entries beyond what is proven now).
    late: dict[str, list[int]] = field(default_factory=lambda: {t: [] for t in st.HISTORY_TABLES})
    held: dict[str, set[int]] = field(default_factory=lambda: {t: set() for t in st.HISTORY_TABLES})
    # The entries of gaps below their account's last proven entry (``gaps.late``): history_tampered on
    # every audit while they are there (not kept in the state: found again each time), held too.
    below: list[st.Tampered] = field(default_factory=list)
    # The other entries of their journals, not proven before this audit (``gaps.late``): proven
    # without their amounts in the proven trial sums, which count them as they stand (``State.live``).
    live: list[int] = field(default_factory=list)
    # The accounts' last proven entries whose rows changed since proven (``shipped``): history_tampered,
    # kept in the state as a re-hash's finding is, until one finds their chunk as proven again.
    changed_last: list[st.Tampered] = field(default_factory=list)

    def proving(self, table: str) -> list[int]:
        """The rows of gaps of ``table`` this audit proves (an incremental one's)."""
        if self.mode != "incremental":
            return []
        return [i for i in self.late[table] if i not in self.held[table]]

    def __post_init__(self) -> None:
        assert self.mode in ("full", "incremental")
        assert self.mode == "full" or self.state is not None
        assert set(self.settled) == set(st.HISTORY_TABLES)

    @property
    def carried(self) -> list[st.Carried]:
        """The offending rows of proven history that earlier audits found (an incremental audit's)."""
        return list(self.state.carried) if self.state is not None and self.mode == "incremental" else []


UNSCHEDULED = Scope("full", None, dict.fromkeys(st.HISTORY_TABLES, 0))


# The identity's record of which account types the proven entries were held to (the configured
# floors and sign rules): proven under others, they are audited in full again.
RULES = "rules"


def identity(conn: psycopg.Connection, layout: Layout, convention: inv.Convention,
             mutable: dict[str, list[str]]) -> dict[str, Any]:
    """What makes a state file this ledger's: the server, database, tables, their columns, the
    convention, the order of the entries and the columns the digests leave out; and (``RULES``,
    not checked by ``check_identity``) the account types its entries were held to a floor or the
    other sign by."""
    tables = [layout.tables[t] for t in st.HISTORY_TABLES]
    row = conn.execute(IDENTITY_SQL, (layout.schema, tables)).fetchone()
    assert row is not None
    columns = json.loads(row[2])
    return {"system_identifier": row[0], "database": row[1], "schema": layout.schema,
            "tables": {t: layout.tables[t] for t in st.HISTORY_TABLES},
            "columns": {t: columns.get(layout.tables[t]) for t in st.HISTORY_TABLES},
            "convention": convention.describe(),
            "row_hash": {t: history.row_hash_kind(conn, layout, t) for t in st.HISTORY_TABLES},
            "order": layout.column("entries", "seq"), "left_out": mutable,
            RULES: {"non_negative_account_types": _types(layout.non_negative_account_types or ()),
                    "debit_normal_account_types": _types(layout.debit_normal_account_types)}}


def _types(listed: tuple[str, ...]) -> list[str]:
    """Account types as a set: in order, once each; every type (``ALL_TYPES``) alone, whatever else
    is listed."""
    return [ALL_TYPES] if ALL_TYPES in listed else sorted(set(listed))


def as_written(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """``current`` (``identity``) with the row hashing a state was written with (``text`` or
    ``record``, by releases before ``exact``): the same ledger, whose state goes on with the
    digests it holds until ``--full`` (``history.row_hash_kind``)."""
    kinds = stored.get("row_hash")
    if not isinstance(kinds, dict):
        return current
    row_hash = {t: (kinds[t] if k == "exact" and kinds.get(t) in ("text", "record") else k)
                for t, k in current["row_hash"].items()}
    return {**current, "row_hash": row_hash}


def check_identity(path: Path, stored: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise ``UsageError`` when the state file at ``path`` was written for another ledger (its
    ``RULES`` changed: the same ledger, audited in full again by ``read_state``)."""
    differ = [k for k in current if k != RULES and stored.get(k) != current[k]]
    if differ:
        what = "; ".join(f"{k}: {stored.get(k)} in the state, {current[k]} here" for k in differ)
        raise UsageError(f"The state file {path} was written for another ledger ({what}).",
                         hint="Give each ledger its own --state file. After an intended change to the "
                              "ledger's tables, move the file away to start a new proven history "
                              "(it is left as it is).")


def running_bound(conn: psycopg.Connection, xmax: int) -> int:
    """An xid above every transaction running now (``xmax``: the snapshot's, as an xid8).

    A snapshot's xmax is one past the newest *completed* transaction, not
    the next xid: a transaction that took its xid after the newest one to
    commit is running, yet neither in the snapshot's list of running xids
    nor below its xmax. Each running transaction holds the lock on its own
    xid, which pg_locks shows to every role (as a 32-bit xid, placed here in
    xmax's epoch: running xids lie within 2^31 of it).
    """
    bound = xmax
    for (xid32,) in conn.execute(RUNNING_XIDS_SQL).fetchall():
        delta = (int(xid32) - xmax) % 2**32
        delta -= 2**32 if delta >= 2**31 else 0
        bound = max(bound, xmax + delta + 1)
    return bound


def settle(proven: dict[str, int], last_seen: dict[str, int] | None, last_bound: int | None,
           xmin: int) -> dict[str, int]:
    """How far history is settled (no transaction can still add a row below): the new watermarks.

    What the previous audit saw (``last_seen``) settles once every
    transaction that was running then has ended: ``xmin`` (this snapshot's
    oldest running xid) has reached ``last_bound`` (``running_bound`` of the
    previous audit). What this audit sees settles at a later audit, never
    at once: a transaction running now may hold ids below what it sees. So
    the first audit of a state proves nothing, the second what the first
    saw. (Rows added later below a watermark, by explicit ids, cached
    sequence values, or a transaction that took sequence values and wrote
    nothing for a whole audit, are history_tampered.)
    """
    if last_seen is None or last_bound is None or xmin < last_bound:
        return dict(proven)
    return {t: max(proven[t], last_seen[t]) for t in st.HISTORY_TABLES}


# Whether accounts are told apart by their ids' text: the entries' account and the accounts' id
# are integers, uuid, or text or varchar in a deterministic collation (pg_type oids, as
# ``history.EXACT_COLUMNS_SQL``). Elsewhere ('A1' and 'a1' one account in a case-insensitive
# collation, citext, numeric 1.0 and 1.00) every account's last proven entry is sent.
TEXT_TELLS_ACCOUNTS_SQL = """
SELECT count(*) = 2 AND bool_and(a.atttypid IN (20, 21, 23, 25, 1043, 2950) AND (
         a.attcollation = 0 OR coalesce((SELECT c.collisdeterministic FROM pg_catalog.pg_collation c
                                         WHERE c.oid = a.attcollation), false)))
FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class t ON t.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
WHERE NOT a.attisdropped AND (n.nspname, t.relname, a.attname) IN ((%s, %s, %s), (%s, %s, %s))
"""
# Every account as an incremental audit compares it with its last proven entry, by text, in the order
# of its id's UTF-8 bytes, as the state file orders them (``state.StoredLast.compare``; a NULL id: no
# entry can name it).
ACCOUNTS_NOW_SQL = """
SELECT a.{accounts_id}::text, a.{accounts_balance}::text, a.{accounts_currency}::text,
       a.{accounts_type}::text
FROM {accounts} a WHERE a.{accounts_id} IS NOT NULL
ORDER BY pg_catalog.convert_to(a.{accounts_id}::text, 'UTF8')
"""
# The accounts of the entries an incremental audit reads (as ``INC_ACCOUNTS`` finds them).
ACCOUNTS_NEW_SQL = """
SELECT DISTINCT e.{entries_account}::text FROM {entries} e
WHERE e.{entries_seq} > {w} OR e.{entries_seq} IS NULL{late_e}
"""

# The last proven entries sent (``proven_last``) whose rows no longer stand as proven: the account's
# entry of that seq (of several, the one of the highest id, as the chain orders them) is gone, or its
# balance after differs. An index probe per account where the seq has an index (the platform's id).
LAST_AS_THEY_STAND_SQL = """
SELECT x.account, x.seq, x.proven_after, x.now_after, x.found FROM (
  SELECT DISTINCT ON (l.account{as_text}) l.account::text AS account, l.seq, l.after::text AS proven_after,
         c.{entries_after}::text AS now_after, c.{entries_seq} IS NOT NULL AS found,
         c.{entries_after} IS DISTINCT FROM l.after AS differs
  FROM {proven_last} l
  LEFT JOIN {entries} c ON c.{entries_seq} = l.seq AND c.{entries_account}{as_text} = l.account{as_text}
  ORDER BY l.account{as_text}, c.{entries_id} DESC) x
WHERE NOT x.found OR x.differs
"""


def text_tells_accounts(conn: psycopg.Connection, layout: Layout) -> bool:
    """Whether accounts are told apart by their ids' text (``TEXT_TELLS_ACCOUNTS_SQL``)."""
    columns = (layout.schema, layout.tables["entries"], layout.column("entries", "account"),
               layout.schema, layout.tables["accounts"], layout.column("accounts", "id"))
    return bool((conn.execute(TEXT_TELLS_ACCOUNTS_SQL, columns).fetchone() or (False,))[0])


def shipped(conn: psycopg.Connection, layout: Layout, filled: dict[str, sql.Composable], state: st.State,
            text_tells: bool, gaps: dict[str, list[int]] | None = None, below: list[int] | None = None
            ) -> tuple[dict[str, sql.Composable], dict[str, int], list[st.Tampered]]:
    """An incremental audit's placeholders (``invariants.incremental``), how many accounts' last
    proven entries they send (``sent``) and name as unchanged, and those of the entries sent whose
    rows changed since proven (``history_tampered`` at once, also where no re-hash reads their
    chunk). Their accounts are still chained and held from the entry as proven: chained from the row
    as it stands, an account's next entries were proven against a changed value, and once the row
    was changed back every audit passed the break a full audit finds there (found by a break-it
    run). With the last proven entries of only
    the accounts whose rules need them: those with new entries, and those not as they were
    when their entries were proven (balance, currency and type, by their text; deleted; orphans).

    Every account's, sent as one literal to each statement that reads them, made an incremental
    audit of a ledger of 400,000 accounts (420,000 entries) 14.7 s and 742 MB, against 2.3 s for a
    full audit (measured: the state stage's and the accounts pass's reading of them, 2 s each time).
    The others are read as they stand, once, here (one scan of the accounts), and named to the
    accounts pass as unchanged: they have entries, and no rule of its holds for them. Every account's
    is sent where accounts are not told apart by their ids' text (``text_tells``,
    ``text_tells_accounts``).
    ``gaps``: the rows found in gaps of proven history (``gaps.late``), read as new; ``below``: the
    entries counted in the trial balance as they stand (those found there below their account's last
    proven entry, and ``State.live``)."""
    last = state.last
    assert last is not None
    needed: Mapping[str, st.LastEntry] = last
    named: list[str] = []
    by_unproven, unchanged = False, 0
    if text_tells and isinstance(last, st.StoredLast):
        fresh = {str(a) for (a,) in conn.execute(inv.compose(ACCOUNTS_NEW_SQL, {
            **filled, "w": sql.Literal(state.proven["entries"]),
            **inv.late(filled, (gaps or {}).get("entries", []))}))}
        with conn.cursor(name="verifier_accounts") as cursor:
            cursor.execute(inv.compose(ACCOUNTS_NOW_SQL, filled))
            needed, named, by_unproven, unchanged = last.compare(
                st.whole_ids(iter(lambda: cursor.fetchmany(st.BATCH), [])), fresh)
    placeholders = inv.incremental(filled, state.proven["entries"], state.proven["journals"], state.trial,
                                   layout, needed, named, by_unproven, gaps, below)
    # The entries sent, read here as every pass reads them: one the entries' columns cannot hold (an
    # account 'zzz' where ids are bigint, a fraction in a bigint balance) is the state file's damage,
    # not an internal error in a pass (found by break-it runs).
    try:
        with conn.transaction():  # (a savepoint: the audit's transaction goes on)
            rows = conn.execute(inv.compose(LAST_AS_THEY_STAND_SQL, placeholders)).fetchall()
    except psycopg.errors.DataError as exc:
        raise st.damaged(state.loaded_path or Path("--state"), exc) from None
    return placeholders, {"sent": len(needed), "unchanged": unchanged}, [_changed_last(*row) for row in rows]


def _changed_last(account: str, seq: int, proven: str | None, now: str | None, found: bool) -> st.Tampered:
    """An account's last proven entry whose row no longer stands as proven, as ``history_tampered``
    (impact 0: a balance column, not an amount, as a re-hash reports it)."""
    what = "changed" if found else "deleted"
    detail = (f"account {account}'s last proven entry: balance after {now if now is not None else 'NULL'}, "
              f"{proven if proven is not None else 'NULL'} when an earlier audit proved it" if found else
              f"account {account}'s last proven entry (balance after {proven}) is no longer there, or no "
              "longer that account's")
    return st.Tampered("entries", str(seq), what, 0, detail, int(seq) >> history.CHUNK_BITS)


def _moved_across_floor(conn: psycopg.Connection, placeholders: dict[str, sql.Composable]) -> str | None:
    """Why the audit must be a full one, where accounts moved onto a type held to a floor
    (``non_negative_account_types``) since their entries were proven under a type without one, or
    off one: all of their entries are held to the floor they have now, as a full audit holds them.
    Before, a move onto a floor was ``history_tampered`` every night, while a full audit passed an
    account that never went below zero; and a move off one carried its ``negative_balance``
    offenders on, which a full audit no longer makes (found by break-it runs). None where none did."""
    row = conn.execute(inv.compose(MOVED_ACROSS_FLOOR_SQL, placeholders)).fetchone()
    if row is None:
        return None
    account, was, now, count = row
    return (f"{count} account(s) moved onto or off a type held to a floor since their entries were "
            f"proven (e.g. account {account}, {was} then, {now} now)")


BEYOND_SAMPLE = 5  # ids an id_beyond_sequence warning names
# More rows beyond a sequence than this: their ids do not come from it (an application that draws
# them from another sequence than the column's default, a sequence moved back or cycled), and the
# newest id is the watermark, as where there is no sequence.
BEYOND_HELD_MAX = 1_000


def within_sequences(conn: psycopg.Connection, layout: Layout, filled: dict[str, sql.Composable],
                     seen: dict[str, int], proven: dict[str, int]
                     ) -> tuple[dict[str, int], list[Finding], dict[str, str]]:
    """``seen`` (the newest id per history table) held to what the table's id sequence has handed
    out, one ``id_beyond_sequence`` warning per table with rows beyond it, and a note per table
    whose sequence was not followed (for the state stage).

    A journal inserted by hand with an explicit id far beyond its sequence (900001 while the
    sequence stood at 37,000) became the watermark once proven, and every journal the application
    posted afterwards lay below it: ``history_tampered`` every night, and ``--full`` proved the
    same watermark again (found by a break-it run). Rows beyond the sequence are not proven: they
    are checked as new on every audit, until the sequence passes them. ``seen`` is unchanged for a
    column that draws from no sequence, whose sequence has handed out nothing or counts down, that
    this role may not read (``SEQUENCE_SQL``), or with more than ``BEYOND_HELD_MAX`` rows beyond
    it. ``proven``: the watermarks proven already (rows beyond the sequence below them were proven
    by an earlier audit)."""
    held, found, notes = dict(seen), [], {}
    for table, role in (("entries", "seq"), ("journals", "id")):
        column = layout.column(table, role)
        rows = conn.execute(SEQUENCE_SQL, {"schema": layout.schema, "table": layout.tables[table],
                                           "column": column}).fetchall()
        known = [(str(name), int(value)) for name, _, value in rows if value is not None]
        hidden = [str(name) for name, readable, _ in rows if not readable]
        if hidden and not known:
            notes[table] = (f"this role may not read the sequence {', '.join(hidden)} (grant it USAGE or "
                            "SELECT on it, or pg_read_all_data): an id inserted beyond it by hand would "
                            "become the watermark once proven, and the rows posted after it "
                            "history_tampered")
        if not known:
            continue
        sequence, position = max(known, key=lambda k: k[1])
        if seen[table] <= position:
            continue
        count, first = conn.execute(sql.SQL(BEYOND_SQL).format(
            id=sql.Identifier(column), table=filled[table], position=sql.Literal(position),
            sample=sql.Literal(BEYOND_SAMPLE))).fetchone() or (0, None)
        if int(count) > BEYOND_HELD_MAX:
            notes[table] = (f"{int(count):,} rows have ids beyond the last value of {sequence} "
                            f"({position:,}): their ids do not come from it, and the newest id is the "
                            "watermark")
            continue
        held[table] = position
        where = layout.table(table)
        if proven[table] > position:
            standing = (f"An earlier audit proved the ids up to {proven[table]:,}: a row added below that "
                        "id since, outside the gaps it kept, is history_tampered until --full starts a new "
                        "history (which proves ids only up to the sequence's last value).")
        else:
            standing = ("They are checked as new on every audit and proven only once the sequence passes "
                        "them: until then the history digests do not hold them against later edits"
                        + (", and an entry among them keeps its journal and every later journal from being "
                           "proven" if table == "entries" else "") + ".")
        top = conn.execute("SELECT seqmax FROM pg_catalog.pg_sequence WHERE seqrelid = %s::regclass",
                           (sequence,)).fetchone()
        left = int(top[0]) - seen[table] if top else None
        if left is not None and left < position:
            # (Near the type's maximum, a setval past them would use the sequence up: found by a
            # break-it run, an id of 2^63 - 1 advised setval to it.)
            advice = (f"Do not move the sequence past them: it would have {left:,} values left (its "
                      f"maximum is {int(top[0]):,}; it has handed out {position:,}). Give those rows ids "
                      "the sequence has handed out, or remove them.") if top else ""
        else:
            advice = (f"If they are meant to stay, move the sequence past them (SELECT setval('{sequence}', "
                      f"{seen[table]})).")
        found.append(Finding(
            "id_beyond_sequence", "warning", table=where, column=column, count=int(count),
            sample=tuple({"id": str(i), "cents_impact": 0, "detail": f"beyond {sequence} at {position:,}"}
                         for i in first or ()),
            message=f"{int(count):,} row(s) of {where} have ids beyond the last value its sequence "
                    f"{sequence} handed out ({position:,}; the newest id is {seen[table]:,}): rows "
                    f"inserted with explicit ids, or the sequence was moved back. {standing} When the "
                    f"sequence reaches one, the insert that draws that id fails on a unique key. {advice}",
            detail={"sequence": sequence, "last_value": position, "newest_id": seen[table]}))
    return held, found, notes


def _known_timezone(conn: psycopg.Connection, path: Path, timezone: str) -> None:
    """``UsageError`` (the state file's damage) where the server does not take ``timezone``, the
    TimeZone the state's digests were made in, as a setting (tried in a savepoint, then undone): a
    hand-edited one ('Mars/Olympus') failed each digest, and the audit, as an internal error (found
    by a break-it run)."""
    try:
        with conn.transaction() as savepoint:
            conn.execute("SELECT pg_catalog.set_config('TimeZone', %s, true)", (timezone,))
            raise psycopg.Rollback(savepoint)
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.DataError) as exc:
        raise st.damaged(path, ValueError(f"a digest time zone the server does not know: {exc}")) from None


def read_state(run: Run, conn: psycopg.Connection, layout: Layout, convention: inv.Convention,
               filled: dict[str, sql.Composable], schedule: Schedule, mutable: dict[str, list[str]]) -> Scope:
    """The "state" stage: what earlier audits proved, and what this audit covers.

    Raises ``UsageError`` for a state file that is not one, or was written
    for another ledger (it is left as it is).
    """
    assert schedule.state is not None
    with run.stage("state") as detail:
        before = st.load(schedule.state)
        if before is not None and before.digest_timezone:
            _known_timezone(conn, schedule.state, before.digest_timezone)
        current = identity(conn, layout, convention, mutable)
        if before is not None:
            check_identity(schedule.state, before.identity, as_written(before.identity, current))
        last_seen = dict(before.seen) if before is not None else None  # before this audit overwrites it
        # A state written before the accounts' last proven entries were kept (releases before
        # 2026-12-07) does not say which currency and type each account's entries were proven in:
        # an account moved since would pass every incremental audit (the full journals and trial
        # passes find it). So its next audit is a full one, which also re-hashes all of the history
        # it proved (an edit that breaks no rule is found only so); the state starts anew only if
        # that history is intact (``verifier.ledger.audit``).
        # So is a state whose entries were proven under other floors or sign rules than this
        # audit's (non_negative_account_types, debit_normal_account_types; a state written before
        # it recorded them, too): an incremental audit would hold only the new entries to them.
        again, placeholders = None, None
        gaps: dict[str, list[int]] = {t: [] for t in st.HISTORY_TABLES}
        below: list[st.Tampered] = []
        live: list[int] = []
        broken: set[int] = set()
        changed_last: list[st.Tampered] = []
        if before is not None and not before.empty and not schedule.full:
            text_tells = text_tells_accounts(conn, layout)
            if before.last is not None:
                gaps, below, live, broken, late_notes = gaps_.late(conn, layout, filled, before, text_tells)
                if late_notes:
                    detail["gaps"] = late_notes
            if before.last is None:
                again = ("the state file does not keep each account's last proven entry and currency "
                         "(written by an earlier release)")
            elif before.identity.get(RULES) != current[RULES]:
                again = (f"the account types held to a floor or to the other sign differ from those its "
                         f"entries were proven under ({before.identity.get(RULES) or 'not recorded'} then, "
                         f"{current[RULES]} now)")
            else:
                placeholders, detail["last_entries"], changed_last = shipped(
                    conn, layout, filled, before, text_tells, gaps,
                    [*(int(t.id) for t in below), *before.live])
                again = _moved_across_floor(conn, placeholders)
        previous = before if again else None
        if before is None or schedule.full or before.empty or again:
            state, mode = st.new(current), "full"
            state.runs = before.runs if before else []
            if before is not None:  # (its save refuses to replace a file that changed meanwhile)
                state.loaded_from, state.loaded_path = before.loaded_from, before.loaded_path
            if again:
                detail["full_because"] = f"{again}: all is checked again, its proven history re-hashed"
        else:
            state, mode = before, "incremental"
        xmin, xmax, in_progress, max_entry, max_journal = conn.execute(
            inv.compose(SNAPSHOT_SQL, filled)).fetchone() or ()
        seen = {"entries": int(max_entry or 0), "journals": int(max_journal or 0)}
        # What the last audit saw settles now (also after --full: it is a fact about the ledger).
        # Not on a hot standby: its pg_locks does not show the primary's transactions, and its
        # snapshot leaves out those that took their xid after the newest commit, so nothing bounds
        # what may still commit below what an earlier audit saw (see running_bound).
        standby = bool((conn.execute("SELECT pg_is_in_recovery()").fetchone() or (False,))[0])
        if not standby:  # (a standby proves nothing: what it sees is not kept)
            seen, beyond, notes = within_sequences(conn, layout, filled, seen,
                                                   (previous or state).proven)
            run.add(*beyond)
            if notes:
                detail["sequences"] = notes
        # Proven already: the state's, or, in the full audit that goes on from an earlier state
        # (``previous``), that state's, which this audit holds against its digests before it saves
        # anything (a transaction open since its last audit must not make the new state forget it:
        # found by a break-it run).
        base = previous.proven if previous is not None else state.proven
        settled = dict(base) if standby else settle(
            base, before.seen if before else None, before.seen_xmax if before else None, int(xmin))
        # Ids interleave across transactions: a journal below the journals' watermark may own
        # entries above the entries' one. It is proven complete only with all of its entries.
        open_journal = conn.execute(inv.compose(OPEN_JOURNAL_SQL, {
            **filled, "w": sql.Literal(settled["entries"]), "jw": sql.Literal(base["journals"])
        })).fetchone()
        if open_journal and open_journal[0] is not None:
            settled["journals"] = max(base["journals"], min(settled["journals"], int(open_journal[0]) - 1))
        # So is a journal with an entry in a gap below its account's last proven entry (never proven):
        # held back while it is there, as every journal after it.
        after = [j for j in broken if j > base["journals"]]
        if mode == "incremental" and after:
            settled["journals"] = max(base["journals"], min(settled["journals"], min(after) - 1))
        # Rows of gaps: an incremental audit reads them as new and proves them, but the journals with
        # entries it does not prove yet; a full audit that goes on from an earlier state leaves them
        # out of its re-hash of that state's history (it reads every row anyway).
        held: dict[str, set[int]] = {t: set() for t in st.HISTORY_TABLES}
        if mode == "incremental" and gaps["journals"]:
            held["journals"] = {int(j) for (j,) in conn.execute(inv.compose(gaps_.HELD_SQL, {
                **filled, "late": history.ids(gaps["journals"]), "w": sql.Literal(settled["entries"])}))}
        if mode == "incremental":
            held["entries"] |= {int(t.id) for t in below}
            held["journals"] |= broken & set(gaps["journals"])
        if any(gaps.values()):
            detail["late"] = {t: {"read_as_new": len(gaps[t]) if mode == "incremental" else 0,
                                  "proven_now": len(set(gaps[t]) - held[t]) if mode == "incremental" else 0}
                              for t in st.HISTORY_TABLES}
        # Saved only if the audit completes: what the next audit may settle, and when.
        if not standby:
            state.seen, state.seen_xmax = seen, running_bound(conn, int(xmax))
        else:  # a standby's bound would be too low for a later audit on the primary to trust
            detail["standby"] = ("a hot standby: what is new is checked, nothing new is proven (run "
                                 "--state on the primary to extend the proven history)")
        detail.update(path=str(schedule.state), mode=mode, proven_before=dict(state.proven),
                      seen=seen, settled=settled, transactions_in_progress=int(in_progress),
                      history_share=schedule.history_share)
        # Held back by a running transaction: what the last audit saw lies above what may be proven,
        # and the xmin moved nothing (open journals hold back the journals' watermark only).
        unsettled = bool(last_seen is not None and mode == "incremental" and not standby
                         and last_seen["entries"] > state.proven["entries"]
                         and settled["entries"] <= state.proven["entries"])
        if unsettled and last_seen is not None:
            run.add(_not_settled(conn, state, layout, last_seen["entries"] - state.proven["entries"]))
    read = gaps if mode == "incremental" else {t: [] for t in st.HISTORY_TABLES}
    if previous is not None:  # (left out of its re-hash, all of them)
        read = {**gaps, "entries": sorted([*gaps["entries"], *(int(t.id) for t in below)])}
    return Scope(mode, state, settled, unsettled, previous, placeholders if mode == "incremental" else None,
                 read, held, below if mode == "incremental" else [], live if mode == "incremental" else [],
                 changed_last if mode == "incremental" else [])


OLDEST_SQL = """
SELECT pid, coalesce(nullif(application_name, ''), 'no application name'),
       extract(epoch FROM now() - xact_start)::bigint, coalesce(usename::text, 'a role not shown')
FROM pg_catalog.pg_stat_activity
WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) AND pid <> pg_catalog.pg_backend_pid()
  AND xact_start IS NOT NULL
ORDER BY xact_start LIMIT 1
"""


def _not_settled(conn: psycopg.Connection, state: st.State, layout: Layout, waiting: int) -> Finding:
    """``history_not_settled``: nothing the last audit saw could be proven; a warning, an error once
    ``layout.unsettled_audits_max`` audits in a row (this one included) proved nothing new."""
    row = conn.execute(OLDEST_SQL).fetchone()
    oldest = (f"the oldest transaction running is pid {row[0]} ({row[1]}, role {row[3]}), open for "
              f"{int(row[2]):,} s" if row else "no running transaction is visible to this role "
              "(pg_stat_activity shows others' only to members of pg_read_all_stats)")
    in_a_row = 1
    for earlier in reversed(state.runs):
        if not earlier.get("unsettled"):
            break
        in_a_row += 1
    error = in_a_row >= layout.unsettled_audits_max
    return Finding(
        "history_not_settled", "error" if error else "warning", table=layout.table("entries"), count=waiting,
        message=f"This audit proved no new history: {waiting:,} entries the previous audit saw are still "
                f"held back by a transaction that may add rows below them; {oldest}. {in_a_row} audit(s) "
                f"in a row proved nothing new (an error from {layout.unsettled_audits_max}, "
                "ledger.unsettled_audits_max).",
        detail={"entries_waiting": waiting, "audits_in_a_row": in_a_row,
                "oldest_transaction": None if row is None else
                {"pid": row[0], "application": row[1], "age_s": int(row[2]), "role": row[3]}})


def newly_proven_last(conn: psycopg.Connection, filled: dict[str, sql.Composable], old: int, new: int,
                      late: list[int] | None = None) -> st.LastEntries:
    """Each account's last entry among the entries whose seq is in ``(old, new]`` or ``late`` (rows of
    gaps proven now): account id (as text) -> (seq, balance after as text, the account's currency and
    type now, whether it exists). One scan of those entries, aggregated per account."""
    if new <= old and not late:
        return {}
    return dict(_last_row(row) for row in conn.execute(_newly_proven_last_query(filled, old, new, late)))


def all_last(conn: psycopg.Connection, filled: dict[str, sql.Composable], new: int, late: list[int] | None,
             spill: Path, path: Path) -> Path:
    """``newly_proven_last`` of every entry up to ``new`` (a full audit's), written into ``spill``
    (``state.write_last``, for the state file ``path``) as it is read, in the order of the ids' UTF-8
    bytes, not held in memory. Returns ``spill``."""
    query = sql.SQL("SELECT * FROM ({}) x(account, seq, after, currency, type, existed) "
                    "ORDER BY pg_catalog.convert_to(x.account, 'UTF8')").format(
        _newly_proven_last_query(filled, FULL_FROM, new, late))
    with conn.cursor(name="verifier_last_entries") as cursor:
        cursor.execute(query)
        st.write_last(spill, path, ([_last_row(row) for row in batch]
                                    for batch in iter(lambda: cursor.fetchmany(st.BATCH), [])))
    return spill


def _newly_proven_last_query(filled: dict[str, sql.Composable], old: int, new: int, late: list[int] | None
                             ) -> sql.Composed:
    also = (sql.SQL(" OR l.{} = ANY({})").format(filled["entries_seq"], history.ids(late)) if late
            else sql.SQL(""))
    return inv.compose(inv.NEWLY_PROVEN_LAST, {
        **filled, "old": sql.Literal(old), "new": sql.Literal(new), "late_l": also})


def _last_row(row: tuple[Any, ...]) -> tuple[str, st.LastEntry]:
    a, seq, after, cur, kind, existed = row
    return str(a), (int(seq), None if after is None else str(after), None if cur is None else str(cur),
                    None if kind is None else str(kind), bool(existed))


def merged_last(kept: st.LastEntries | st.StoredLast, new: st.LastEntries) -> st.LastEntries | st.StoredLast:
    """The state's last proven entries after this audit: ``new``'s (seq, after) over ``kept``'s where
    later, each account keeping the currency, type and existence its first entries were proven with
    (a change is history_tampered on every audit until --full, not only on the first). A loaded
    state's (``StoredLast``) takes them as its ``changed``: only those accounts' are read."""
    old = st.lookup(kept, new)
    out = kept.changed if isinstance(kept, st.StoredLast) else dict(kept)
    for account, (seq, after, currency, kind, existed) in new.items():
        was = old.get(account)
        if was is None:
            out[account] = (seq, after, currency, kind, existed)
        elif seq > was[0]:
            out[account] = (seq, after, was[2], was[3], was[4])
    return kept if isinstance(kept, st.StoredLast) else out


def advance(state: st.State, run: Run, digests: list[history.Digests], scope: Scope,
            carried: list[st.Carried], rehashed: int, checked_entries: int, findings: list[Finding]
            ) -> list[str]:
    """The state after this audit: proven history extended to what settled, this audit in its history.
    Returns the tables whose gaps among the newly proven ids were too many to keep
    (``history.HOLES_NEW_MAX``)."""
    sparse = [table for table, found in zip(st.HISTORY_TABLES, digests, strict=True)
              if not history.extend(state, table, found, scope.settled[table])]
    proving = set(scope.proving("entries"))
    state.live = sorted({*state.live,
                         *(i for i in scope.live if i <= scope.settled["entries"] or i in proving)})
    state.carried = carried
    state.proven_at = run.run_id
    state.runs.append({
        "run_id": run.run_id, "started_at": run.started_at.isoformat(), "mode": scope.mode,
        # An audit whose findings are warnings only passed (exit 0), as its run says.
        "status": "fail" if any(f.severity == "error" for f in findings) else "pass",
        "duration_s": round(time.monotonic() - run._t0, 3),
        "entries": scope.settled["entries"], "proven_entries": state.proven["entries"],
        "checked_entries": checked_entries, "rehashed_chunks": rehashed,
        "unsettled": scope.unsettled,
        "findings": len(findings), "offending_rows": sum(f.count for f in findings),
        "cents_impact": str(sum(f.cents_impact for f in findings)),
        "rules": sorted({f.rule for f in findings})})
    del state.runs[:-RUNS_KEPT_MAX]
    return sparse
