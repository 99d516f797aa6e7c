"""Rows found in the gaps of proven history: read as new by an incremental audit, or history_tampered.

A scheduled audit (``verifier.ledger.proven``) proves the ids of the
entries and journals up to a watermark, and keeps the ids below it that
held no row then (``State.holes``, found by ``history.gaps``). Ids are not
always handed out in the order rows commit (a sequence that caches values
for each session, a transaction that held ids for a whole audit, a row
inserted by hand), so a row may appear in such a gap later. ``late`` finds
them at the start of an incremental audit: they are read as new, as a full
audit reads every row, and proven; but an entry below its account's last
proven entry, whose chain in seq order no longer holds, is history_tampered.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg
from psycopg import sql

from verifier.config.ledger import Layout
from verifier.findings import whole_cents
from verifier.ledger import history
from verifier.ledger import state as st

# The rows of a history table in the gaps its proven ids left (``State.holes``): id, and for the
# entries the account, amount and journal (as text). One index probe per gap where the table has
# an index on its id (LATERAL: as a join, PostgreSQL walked the whole index in order for the ORDER BY and
# LIMIT, and tested every row against every gap: 1.1 s for 2 gaps in 2*10^6 entries, against 0.6 ms).
LATE_SQL = """
SELECT x.* FROM unnest({lo}, {hi}) h(lo, hi)
CROSS JOIN LATERAL (SELECT r.{id}, {account}, {amount}, {journal} FROM {table} r
                    WHERE r.{id} BETWEEN h.lo AND h.hi ORDER BY r.{id} LIMIT {limit}) x
ORDER BY 1 LIMIT {limit}
"""
# Rows found in gaps that an audit reads as new; beyond, none is (each is history_tampered, as
# before gaps were kept), and the state stage says so.
LATE_MAX = 10_000
# The other entries of the journals of entries found in gaps below their account's last proven entry,
# not proven yet: beyond the entries' watermark, or found in gaps.
SIBLINGS_SQL = """
SELECT e.{entries_seq} FROM {entries} e
WHERE e.{entries_journal}::text = ANY({broken}::text[]) AND NOT e.{entries_seq} = ANY({below})
  AND (e.{entries_seq} > {w} OR e.{entries_seq} = ANY({late}))
"""
# The journals of gaps with entries beyond the entries proven now: proven only with all of them.
HELD_SQL = """
SELECT DISTINCT e.{entries_journal} FROM {entries} e
WHERE e.{entries_journal} = ANY({late}) AND e.{entries_seq} > {w}
"""


# The newest proven entry of each of the entries ``rows``' accounts, by the account column's own
# equality, above the row (none: none above it): for rows whose account the state keeps under no
# spelling they have (an id re-spelled since, 'U1' renamed 'u1' in a case-insensitive collation,
# 690 stored as 690.00: entries below its last proven entry were proven as new, and passed every
# incremental audit; found by a break-it run). One read of the entries: only where such rows are,
# and accounts are not told apart by their ids' text (``proven.TEXT_TELLS_ACCOUNTS_SQL``). Where they
# are (the platform's bigint ids), a row the state has no entry for is of an account without proven
# entries (a new wallet's first entries, often found in gaps with cached sequences), and the read
# could be a scan of every entry.
PROVEN_ABOVE_SQL = """
SELECT r.{seq}, max(p.{seq}) FROM {entries} r
JOIN {entries} p ON p.{account} = r.{account} AND p.{seq} > r.{seq} AND p.{seq} <= {proven}
                AND NOT p.{seq} = ANY({late})
WHERE r.{seq} = ANY({rows}) GROUP BY r.{seq}
"""


def _proven_above(conn: psycopg.Connection, filled: dict[str, sql.Composable], state: st.State,
                  rows: list[int], late: list[int]) -> dict[int, int]:
    """``PROVEN_ABOVE_SQL`` of the entries of seq ``rows`` (``late``: every row found in gaps, not
    proven): seq -> the seq of the newest proven entry of its account above it."""
    if not rows:
        return {}
    return {int(r): int(p) for r, p in conn.execute(sql.SQL(PROVEN_ABOVE_SQL).format(
        seq=filled["entries_seq"], entries=filled["entries"], account=filled["entries_account"],
        proven=sql.Literal(state.proven["entries"]), late=history.ids(late), rows=history.ids(rows)))}


def late(conn: psycopg.Connection, layout: Layout, filled: dict[str, sql.Composable], state: st.State,
         text_tells: bool
         ) -> tuple[dict[str, list[int]], list[st.Tampered], list[int], set[int], dict[str, str]]:
    """Per history table, the ids of the rows found in the gaps its proven ids left (``State.holes``)
    that an incremental audit reads as new, in order; the entries found there below their account's
    last proven entry (``history_tampered``: ``inserted``, with their amounts); the other entries of
    their journals not proven yet, whose amounts the proven trial sums are to leave out (``State.live``:
    counted as they stand by every audit, as those below are); those journals, which are not to be
    proven while such an entry is there (proven complete with it, then the entry deleted, a journal
    left with one entry passed every incremental audit: found by a break-it run); and a note per
    table where some or all of them are not read as new.

    With a sequence that caches values (``CACHE 50``) and two sessions writing, ids are not handed
    out in the order rows commit: a row may commit below what an earlier audit proved, in an id no
    row held then. It was history_tampered, and its account's balance drift on every audit after
    (found by a break-it run), though a full audit passed. Such a row is read as new, as a full
    audit reads every row; so is a row inserted later by hand in a gap. Not an entry below its
    account's last proven entry: its chain, proven in seq order, no longer holds (a full audit
    finds it broken); it is history_tampered on every audit while it is there (found so at once,
    whatever share of history an audit re-hashes; its amount still counts in the trial balance).
    None of a table with more than ``LATE_MAX`` of them is read: history_tampered when re-hashed,
    as before gaps were kept. ``text_tells``: whether accounts are told apart by their ids' text
    (``proven.TEXT_TELLS_ACCOUNTS_SQL``; if not, ``PROVEN_ABOVE_SQL`` is read)."""
    found: dict[str, list[int]] = {t: [] for t in st.HISTORY_TABLES}
    below: list[st.Tampered] = []
    broken: set[str | None] = set()  # the journals of those below
    notes: dict[str, str] = {}
    for table, role in (("entries", "seq"), ("journals", "id")):
        holes = state.holes[table]
        if not holes:
            continue
        account, amount, journal = ((sql.SQL("r.{}::text").format(sql.Identifier(layout.column("entries", c)))
                                     for c in ("account", "amount", "journal")) if table == "entries"
                                    else (sql.SQL("NULL"), sql.SQL("NULL"), sql.SQL("NULL")))
        if table == "entries":  # (as the state keys it: the accounts table's spelling, where it has one;
            # 'u1' for 'U1' in a case-insensitive collation missed its last proven entry, and an entry
            # below it was read as new and proven: found by a break-it run)
            account = sql.SQL("coalesce((SELECT a.{aid}::text FROM {accounts} a WHERE a.{aid} = r.{acc} "
                              "LIMIT 1), r.{acc}::text)").format(
                aid=filled["accounts_id"], accounts=filled["accounts"],
                acc=sql.Identifier(layout.column("entries", "account")))
        rows = conn.execute(sql.SQL(LATE_SQL).format(
            id=sql.Identifier(layout.column(table, role)), account=account, amount=amount, journal=journal,
            table=filled[table],
            lo=history.ids([lo for lo, _ in holes]), hi=history.ids([hi for _, hi in holes]),
            limit=sql.Literal(LATE_MAX + 1))).fetchall()
        if len(rows) > LATE_MAX:
            notes[table] = (f"more than {LATE_MAX:,} rows in gaps of the ids earlier audits proved: none is "
                            "read as new, each is history_tampered once re-hashed")
            continue
        last = {a: entry[0] for a, entry in st.lookup(
            state.last or {}, {a for _, a, _, _ in rows if a is not None}).items()}
        by_row = (_proven_above(conn, filled, state, [int(i) for i, a, _, _ in rows if a not in last],
                                [int(i) for i, _, _, _ in rows]) if table == "entries" and not text_tells
                  else {})
        for i, a, cents, j in rows:
            above = last.get(a) if a is not None else None
            if above is None:
                above = by_row.get(int(i))
            if above is not None and above > int(i):
                broken.add(j)
                impact = abs(whole_cents(Decimal(cents))) if cents is not None else 0
                below.append(st.Tampered(
                    table, str(i), "inserted", impact,
                    f"inserted in a gap of proven ids, below account {a}'s last proven entry {above} "
                    f"(its chain in seq order no longer holds; amount {cents} cents)",
                    int(i) >> history.CHUNK_BITS))
            else:
                found[table].append(int(i))
        if below and table == "entries":
            notes[table] = (f"{len(below):,} row(s) in gaps of the ids earlier audits proved lie below their "
                            f"account's last proven entry (e.g. {below[0].id}): history_tampered")
    live: list[int] = []
    if below:
        live = [int(seq) for (seq,) in conn.execute(sql.SQL(SIBLINGS_SQL).format(
            **filled, broken=sql.Literal(sorted(j for j in broken if j is not None)),
            below=history.ids([int(t.id) for t in below]), w=sql.Literal(state.proven["entries"]),
            late=history.ids(found["entries"])))]
    return found, below, live, {int(j) for j in broken if j is not None}, notes
