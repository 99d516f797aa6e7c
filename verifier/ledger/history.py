"""Digests of proven history: any change to a row an earlier audit proved, found and named by id.

The rows of a history table (entries, journals) are digested in chunks of
``2**CHUNK_BITS`` ids. Each row's hash ``h`` is a 64-bit hash of the whole
row (every column, not only the ledger's), keyed with the state file's own
random seed: PostgreSQL's ``hash_record_extended`` (the per-type hash
functions that hash partitioning relies on, stable across versions), or
``hashtextextended`` of the row's text where a column's type has no hash
function. Per chunk the state keeps the row count, the exact sum of the
hashes, ``s1 = sum((id mod P) * (h mod P))`` modulo the prime
``P = 2**31 - 1``, and the sum of the entries' amounts. All of them add up
over sub-ranges, so the proven history grows chunk by chunk without
reading it again, and PostgreSQL computes them in one aggregate of bigint
sums (one statement per table, each row hashed once: ``DIGEST_SQL``).

Re-hashing a chunk and comparing tells whether anything in it changed (a
change goes unseen only if a row's 64-bit keyed hash stays the same). When
one row changed, was deleted or was inserted, the differences name it:
``d1 / d0 = id (mod P)``, and a chunk holds fewer than ``P`` ids. When
several did, the chunk's id range is reported instead. The change in the
amounts' sum is the finding's cents impact. The hash is not a cryptographic
signature: it finds accidental and unauthorized changes by anyone without
the state file, not a forger who holds it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

import psycopg
from psycopg import sql

from verifier.config.ledger import Layout
from verifier.findings import whole_cents
from verifier.ledger.state import Chunk, State, Tampered
from verifier.pg.snapshot import planned

CHUNK_BITS = 10
P = (1 << 31) - 1
# The name of the audit's check of proven history: its findings' ``detail.check``, its junit case.
HISTORY_CHECK = "history digests"

# Each row's hash is read twice: OFFSET 0 keeps PostgreSQL from inlining the subquery, which
# computed it twice per row (10^6 entries: 0.64 s against 0.97 s). It also keeps the statement in
# one process, where PostgreSQL's parallel plan took about three processes for that 0.97 s (10^7: one
# process 5.1 s, against 6.2 s on three): the audit's other passes use the other cores.
DIGEST_SQL = """
SELECT t.id >> {bits} AS chunk, {part} AS part, count(*), coalesce(sum(t.h), 0),
       coalesce(sum((t.id % {p}) * (t.h % {p})), 0), coalesce(sum(t.amount), 0), min(t.id), max(t.id)
FROM (SELECT r.{id} AS id, {row_hash} AS h, {amount} AS amount FROM {table} r WHERE {ranges} OFFSET 0) t
GROUP BY 1, 2
"""
# Which part of the digest a row is in: 0 proven history (re-hashed), 1 beyond the watermark (newly
# proven), 2 in a gap of proven history and proven now, 3 in such a gap and not proven yet (left out).
PART_SQL = ("CASE WHEN t.id > {old} THEN 1 WHEN t.id = ANY({late}) THEN 2 WHEN t.id = ANY({held}) THEN 3 "
            "ELSE 0 END")
# The gaps among a table's ids in a range (each as the ids either side of it), in order: an index
# scan of the range where the table has an index on its id, no sort. (nxt - 1, not id + 1: the id
# 2^63 - 1 has no successor in a bigint, and nxt is above the smallest.)
GAPS_SQL = """
SELECT g.id, g.nxt FROM (SELECT r.{id} AS id, lead(r.{id}) OVER (ORDER BY r.{id}) AS nxt
                         FROM {table} r WHERE r.{id} >= {lo} AND r.{id} <= {new}) g
WHERE g.nxt - 1 > g.id ORDER BY g.id LIMIT {limit}
"""
# Gaps kept per table (``State.holes``): beyond, the oldest are dropped (a row found there later is
# history_tampered, as before they were kept). And gaps one audit finds in what it proves: beyond,
# the ids are sparse (drawn with an increment, or from several sequences), and none are kept.
HOLES_KEPT_MAX = 10_000
HOLES_NEW_MAX = 10_000
# Chunks with gaps inside whose ids a proof reads one range each; beyond, every id once.
GAP_CHUNKS_READ_MAX = 64
# One group per chunk of 2**CHUNK_BITS ids, which PostgreSQL cannot know: it estimates a group per
# row and sorts them all. A hash of the chunks holds one entry per chunk.
DIGEST_PLAN = {"enable_sort": "off"}
# As the trial pass sums them (``invariants._TRIAL``): per account first, then per currency, where
# entries take their account's (10^7 entries, one process: 2.0 s against 2.9 s for joining each
# entry with its account).
TRIAL_SQL = """
SELECT {trial_currency}, sum(t.total)
FROM (SELECT {trial_key} AS key, sum(e.{entries_amount}) AS total FROM {entries} e
      WHERE (e.{entries_seq} > {old} AND e.{entries_seq} <= {new}{left_out}){late} GROUP BY 1) t {trial_join}
GROUP BY 1
"""
# A table's columns in order, each with whether its type's hash tells apart every two values whose
# text differs: integers, bool, oid, "char", name, text and varchar in a deterministic collation,
# bytea, uuid, date and timestamp(tz) (pg_type oids, fixed since PostgreSQL 7-8.3). Not so: numeric
# (1.0 and 1.00 hash alike), float (0 and -0), jsonb (its numbers), interval ('1 day' and '24
# hours'), bpchar ('a' and 'a '), citext and nondeterministic collations (case), enums (a renamed
# label keeps its hash), and every other type, which an "exact" digest hashes as its text in the
# "C" collation: its output function's, through ROW(column)::text (a cast of bpchar to text drops
# its trailing blanks; the audit's session pins DateStyle, IntervalStyle and extra_float_digits;
# lc_monetary and bytea_output, which a bytea inside an array prints by, are pinned while hashing).
EXACT_COLUMNS_SQL = """
SELECT a.attname,
       a.atttypid IN (16, 17, 18, 19, 20, 21, 23, 25, 26, 1043, 1082, 1114, 1184, 2950)
       AND (a.attcollation = 0 OR coalesce((SELECT c.collisdeterministic FROM pg_collation c
                                            WHERE c.oid = a.attcollation), false))
FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def row_hash_kind(conn: psycopg.Connection, layout: Layout, table: str) -> str:
    """How a new state hashes ``table``'s rows: ``exact`` (PostgreSQL 14+: hash_record_extended of
    the row, with each column whose type's hash could take two different texts for one value as
    its text: ``EXACT_COLUMNS_SQL``) or ``text`` (the whole row's text).

    A state keeps the kind it was started with (``verifier.ledger.proven.as_written``): ``text``,
    or ``record`` (every column by its type's hash, as releases before this one did where every type
    had one) until ``--full``. Hashing by value is about 2.3 times faster than as text on the
    platform's entries (10^6 rows: 0.6-0.8 s against 1.6-1.7 s), and the same in every time zone."""
    return "exact" if conn.info.server_version >= 140000 else "text"


EMPTY = Chunk(0, 0, 0, Decimal(0))  # the digest of no rows
# The chunk number that stands for every id below a plan's first chunk (a row inserted there, a
# negative id, say, is re-hashed by every incremental audit: no proven chunk would ever cover it).
BELOW = -(1 << (63 - CHUNK_BITS))


@dataclass(frozen=True)
class Digests:
    rehashed: dict[int, Chunk]  # chunk -> digest of its proven ids now
    beyond: dict[int, Chunk]  # chunk -> digest of its ids newly proven
    trial: dict[str | None, Decimal]  # currency -> sum of the newly proven entries' amounts
    late: dict[int, Chunk] = field(default_factory=dict)  # chunk -> digest of rows of gaps proven now
    late_ids: tuple[int, ...] = ()  # the ids of those rows
    # The gaps among the newly proven ids (``gaps``); None: more than ``HOLES_NEW_MAX``, none kept.
    holes: list[tuple[int, int]] | None = field(default_factory=list)


def chunk_range(chunk: int) -> tuple[int, int]:
    return chunk << CHUNK_BITS, ((chunk + 1) << CHUNK_BITS) - 1


def plan_rehash(state: State, table: str, share: float) -> list[tuple[int, int]]:
    """The chunk numbers (inclusive ranges) whose proven rows this audit re-hashes.

    ``share`` 1: every chunk of proven history. Less: that share of the
    chunks (at least one), continuing where the last audit's rotation
    stopped, so that every chunk is re-hashed within ``ceil(1 / share)`` audits.
    Whatever the share, the first range is ``(BELOW, first - 1)``: every id
    below the first proven chunk, where no row was proven, so that a row
    inserted there is found by the next audit (its digest is read by index
    where the table has one on its id, and costs nothing more where that
    range is empty).
    """
    upto = state.proven[table]
    if upto <= 0 and not state.chunks[table]:
        return []
    first = min([0, *state.chunks[table]])
    last = upto >> CHUNK_BITS
    total = last - first + 1
    below = (BELOW, first - 1)
    if share >= 1:
        return [below, (first, last)]
    count = max(1, min(total, math.ceil(total * share)))
    start = first + state.rotation[table] % total
    end = start + count - 1
    state.rotation[table] = (start - first + count) % total
    if end <= last:
        return [below, (start, end)]
    return [below, (start, last), (first, end - total)]


def chunk_count(state: State, table: str, ranges: list[tuple[int, int]]) -> int:
    """How many of ``state``'s proven chunks of ``table`` ``ranges`` re-hash: those that hold rows,
    not every number in the ranges (ids far apart leave most of them empty: a share of ids up to
    9 * 10^18 counted 8.8 * 10^15 chunks where 148 held rows; found by a break-it run)."""
    return sum(1 for c in state.chunks[table] if any(a <= c <= b for a, b in ranges))


def ids(values: Sequence[int]) -> sql.Composable:
    """A bigint[] literal of ``values``."""
    return sql.SQL("{}::bigint[]").format(sql.Literal([str(v) for v in values]))


def digest(conn: psycopg.Connection, layout: Layout, table: str, seed: int, kind: str,
           chunks: list[tuple[int, int]], old: int, new: int, leave_out: list[str] | None = None,
           filled: dict[str, sql.Composable] | None = None, timezone: str | None = None,
           late: Sequence[int] = (), held: Sequence[int] = (), live: Sequence[int] = ()) -> Digests:
    """Digests of ``table``'s rows per chunk: of the ``chunks`` ranges (ids up to ``old``), of
    the ids in ``(old, new]`` (with, for entries, their amounts per currency for the trial balance),
    of the rows found in gaps of proven history that this audit proves (``late``, ids), and the
    gaps among the ids in ``(old, new]`` (``gaps``). The rows of gaps not proven yet (``held``)
    are left out of the re-hash, and the entries ``live`` out of the trial sums.

    Ids are the table's order: ``entries.seq``, ``journals.id``. A row's hash covers every column
    but those of ``leave_out`` (columns that legitimately change after posting). ``filled``: the
    audit's placeholders (``verifier.ledger.invariants.names``), for the trial sums. ``timezone``: the
    session's TimeZone while hashing (``State.digest_timezone``; None: the session's own).
    """
    ident = sql.Identifier(layout.column(table, "seq" if table == "entries" else "id"))
    col = sql.SQL("r.{}").format(ident)
    ranges = [sql.SQL("{} <= {}").format(col, sql.Literal(min(chunk_range(b)[1], old))) if a == BELOW
              else sql.SQL("{} BETWEEN {} AND {}").format(col, sql.Literal(chunk_range(a)[0]),
                                                         sql.Literal(min(chunk_range(b)[1], old)))
              for a, b in chunks]
    if new > old:
        ranges.append(sql.SQL("{} > {} AND {} <= {}").format(col, sql.Literal(old), col, sql.Literal(new)))
    if late or held:
        ranges.append(sql.SQL("{} = ANY({})").format(col, ids([*late, *held])))
    found = Digests({}, {}, {}, late_ids=tuple(late))
    if not ranges:
        return found
    amount = (sql.SQL("r.{}").format(sql.Identifier(layout.column("entries", "amount"))) if table == "entries"
              else sql.SQL("0"))
    name = sql.Identifier(layout.schema, layout.tables[table])
    row: sql.Composable = sql.SQL("r")
    settings = {**DIGEST_PLAN, **({"TimeZone": timezone} if timezone else {})}
    if kind == "exact" or leave_out:
        # "text" and "record" (earlier releases' states): the row of the columns kept, each as it is.
        kinds = conn.execute(EXACT_COLUMNS_SQL, (name.as_string(conn),)).fetchall()
        columns = [(str(c), bool(exact) or kind != "exact") for c, exact in kinds
                   if c not in (leave_out or [])]
        row = sql.SQL("ROW({})").format(sql.SQL(", ").join(
            sql.SQL("r.{}" if exact else '(ROW(r.{})::text COLLATE "C")').format(sql.Identifier(c))
            for c, exact in columns))
    if kind == "exact":
        settings.update(lc_monetary="C", bytea_output="hex")
    row_hash = (sql.SQL("hash_record_extended({}, {})") if kind in ("record", "exact")
                else sql.SQL("hashtextextended({}::text, {})")).format(row, sql.Literal(seed))
    part = (sql.SQL(PART_SQL).format(old=sql.Literal(old), late=ids(late), held=ids(held)) if late or held
            else sql.SQL("(t.id > {})::int").format(sql.Literal(old)))
    query = sql.SQL(DIGEST_SQL).format(
        bits=sql.Literal(CHUNK_BITS), part=part, id=ident, row_hash=row_hash, amount=amount,
        p=sql.Literal(P), table=name,
        ranges=sql.SQL(" OR ").join(sql.SQL("({})").format(r) for r in ranges))
    with planned(conn, settings):
        rows = conn.execute(query).fetchall()
    spans: dict[int, tuple[int, int, int]] = {}
    for chunk, part, n, s0, s1, amount_sum, first, last in rows:
        if part == 1:
            spans[int(chunk)] = (int(n), int(first), int(last))
        if part != 3:
            into = (found.rehashed, found.beyond, found.late)[part]
            into[int(chunk)] = Chunk(int(n), int(s0), int(s1) % P, Decimal(amount_sum))
    if table == "entries" and (new > old or late):
        assert filled is not None
        counted_live = set(live)
        found.trial.update(trial(conn, filled, old, new, [i for i in late if i not in counted_live], live))
    if new > old:
        found = replace(found, holes=gaps(conn, ident, name, old, new, spans))
    return found


BIGINT_MIN = -(1 << 63)


def gaps(conn: psycopg.Connection, ident: sql.Identifier, name: sql.Identifier, old: int, new: int,
         spans: dict[int, tuple[int, int, int]]) -> list[tuple[int, int]] | None:
    """The ids in ``(old, new]`` that hold no row (inclusive ranges, in order); of a first proof
    (``old`` below every bigint), those from its first row on. ``spans``: per chunk of ids, how many
    rows of the range it holds, its first id and its last. None where there are more than
    ``HOLES_NEW_MAX`` gaps.

    A chunk whose rows fill its ids from first to last has no gap inside: only the others are read
    (their ids, by index where the table has one on its id; more than ``GAP_CHUNKS_READ_MAX`` of
    them: the range's every id, once). A scan of every id of the range was 0.23 s per 10^6 rows, a
    fifth of a first proof's time."""
    if not spans:
        return [] if old < BIGINT_MIN else [(old + 1, new)]
    holed = [c for c, (n, first, last) in spans.items() if n != last - first + 1]
    every = len(holed) > GAP_CHUNKS_READ_MAX
    bounds = ([(spans[min(spans)][1], spans[max(spans)][2])] if every
              else [(spans[c][1], spans[c][2]) for c in sorted(holed)])
    inner: list[tuple[int, int]] = []
    for lo, hi in bounds:
        pairs = conn.execute(sql.SQL(GAPS_SQL).format(
            id=ident, table=name, lo=sql.Literal(lo), new=sql.Literal(hi),
            limit=sql.Literal(HOLES_NEW_MAX + 1))).fetchall()
        inner += [(int(a) + 1, int(b) - 1) for a, b in pairs]
        if len(inner) > HOLES_NEW_MAX:
            return None
    found = inner
    previous = None if old < BIGINT_MIN else old  # the id below the range's first row
    for chunk in sorted(spans):  # between chunks (read already where every id was)
        _, first, last = spans[chunk]
        if previous is not None and first > previous + 1 and not (every and chunk != min(spans)):
            found.append((previous + 1, first - 1))
        previous = last
        if len(found) > HOLES_NEW_MAX:
            return None
    if previous is not None and previous < new:
        found.append((previous + 1, new))
    found.sort()
    return None if len(found) > HOLES_NEW_MAX else found


def trial(conn: psycopg.Connection, filled: dict[str, sql.Composable], old: int, new: int,
          late: Sequence[int] = (), left_out: Sequence[int] = ()) -> dict[str | None, Decimal]:
    """The entries' amounts summed per currency (as the trial balance takes it: the entry's own, or
    its account's; None: none) over the seqs in ``(old, new]`` but ``left_out``, and ``late``, in
    cents."""
    also = sql.SQL(" OR e.{} = ANY({})").format(filled["entries_seq"], ids(late)) if late else sql.SQL("")
    but = (sql.SQL(" AND e.{} <> ALL({})").format(filled["entries_seq"], ids(left_out)) if left_out
           else sql.SQL(""))
    return {currency: Decimal(total) for currency, total in conn.execute(sql.SQL(TRIAL_SQL).format(
        **filled, old=sql.Literal(old), new=sql.Literal(new), late=also,
        left_out=but))}  # noqa: S608 (constant text)


# Entries beyond the entries' watermark in a journal at or below the journals' (an incremental
# audit's INC_JOURNALS finds the same: a journal is proven complete only with all of its entries).
GAINED_SQL = """
SELECT e.{entries_journal}, count(*), max(e.{entries_seq}),
       coalesce(sum(e.{entries_amount}) FILTER (WHERE e.{entries_amount} > 0), 0)
FROM {entries} e JOIN {journals} j ON j.{journals_id} = e.{entries_journal}
WHERE e.{entries_seq} > {w} AND j.{journals_id} <= {jw}{not_late}
GROUP BY 1 ORDER BY 1
"""


def gained(conn: psycopg.Connection, filled: dict[str, sql.Composable], entries: int, journals: int,
           late: Sequence[int] = ()) -> list[Tampered]:
    """The journals proven complete (ids up to ``journals``, but those of gaps: ``late``) that have
    entries beyond ``entries`` (the entries' watermark) now: one ``history_tampered`` row of the
    journals each."""
    not_late = (sql.SQL(" AND j.{} <> ALL({})").format(filled["journals_id"], ids(late)) if late
                else sql.SQL(""))
    rows = conn.execute(sql.SQL(GAINED_SQL).format(  # noqa: S608 (constant text)
        **filled, w=sql.Literal(entries), jw=sql.Literal(journals), not_late=not_late)).fetchall()
    return [Tampered("journals", str(j), "gained", int(moved),
                     f"{n} new entries (up to id {last}) added to journal {j}, which an earlier audit "
                     f"proved complete", BELOW) for j, n, last, moved in rows]


def _cents(total: Decimal | None) -> str:
    return "none" if total is None else f"{total} cents in all"


def moved(proved: dict[str | None, Decimal], now: dict[str | None, Decimal]) -> list[Tampered]:
    """The currencies whose proven entries' sum ``proved`` (a state's trial, kept per currency since
    its first audit) differs from ``now`` (the same entries summed under the accounts' currencies as
    they are now: ``trial``): an account moved to another currency after its entries were proven.
    One ``history_tampered`` row of the entries per currency, its id the currency."""
    found = []
    for currency in sorted(set(proved) | set(now), key=lambda c: (c is None, c or "")):
        was, cur = proved.get(currency), now.get(currency)
        if was != cur:
            shown = "no currency" if currency is None else currency
            found.append(Tampered(
                "entries", shown, "moved", int(abs((cur or Decimal(0)) - (was or Decimal(0)))),
                f"the proven entries in {shown}: {_cents(was)} when earlier audits proved them, "
                f"{_cents(cur)} under the accounts' currencies now (an account moved to another "
                f"currency since)", BELOW))
    return found


def compare(state: State, table: str, chunks: list[tuple[int, int]], rehashed: dict[int, Chunk]
            ) -> list[Tampered]:
    """Every re-hashed chunk whose digest differs from the proven one, pinpointed where it can be."""
    found = []
    known = set(state.chunks[table]) | set(rehashed)
    for a, b in chunks:
        for chunk in sorted(c for c in known if a <= c <= b):
            old, cur = state.chunks[table].get(chunk, EMPTY), rehashed.get(chunk, EMPTY)
            if old != cur:
                found.append(_pinpoint(table, chunk, old, cur, state.proven[table]))
    return found


def _pinpoint(table: str, chunk: int, old: Chunk, cur: Chunk, proven: int) -> Tampered:
    lo, hi = chunk_range(chunk)
    upto = min(hi, proven)
    d0, d1, dn = (cur.s0 - old.s0) % P, (cur.s1 - old.s1) % P, cur.n - old.n
    impact = whole_cents(abs(cur.amount - old.amount))
    if d0 and abs(dn) <= 1:
        residue = d1 * pow(d0, -1, P) % P  # the changed row's id, modulo P
        candidate = lo + (residue - lo) % P
        if candidate <= upto:
            what = {0: "changed", -1: "deleted", 1: "inserted"}[dn]
            detail = {"changed": "changed since an earlier audit proved it",
                      "deleted": "deleted since an earlier audit proved it",
                      "inserted": "inserted among ids an earlier audit had proven"}[what]
            if table == "entries" and impact:
                detail += f" (amounts off by {impact} cents)"
            return Tampered(table, str(candidate), what, impact, detail, chunk)
    return Tampered(table, f"{lo}..{upto}", "several", impact,
                    f"more than one row changed, deleted or inserted among ids {lo}..{upto} since an "
                    f"earlier audit proved them ({old.n} rows then, {cur.n} now)", chunk)


def extend(state: State, table: str, found: Digests, new: int) -> bool:
    """Add the digests (and trial sums) of the rows in ``(proven, new]``, and of the rows of gaps
    proven now (``Digests.late``), to the proven history; the gaps kept (``State.holes``) less those
    rows, with the gaps among the ids newly proven. False where those were too many to keep."""
    for currency, total in found.trial.items():
        state.trial[currency] = state.trial.get(currency, Decimal(0)) + total
    for chunk, d in [*found.beyond.items(), *found.late.items()]:
        c = state.chunks[table].get(chunk, EMPTY)
        state.chunks[table][chunk] = Chunk(c.n + d.n, c.s0 + d.s0, (c.s1 + d.s1) % P, c.amount + d.amount)
    if new > state.proven[table] or found.late_ids:
        kept = without(state.holes[table], found.late_ids) if found.late_ids else state.holes[table]
        state.holes[table] = [*kept, *(found.holes or [])][-HOLES_KEPT_MAX:]
    state.proven[table] = new
    return found.holes is not None


def without(holes: list[tuple[int, int]], taken: Sequence[int]) -> list[tuple[int, int]]:
    """``holes`` (inclusive ranges, in order) less the ids ``taken``: ranges split where they are."""
    out: list[tuple[int, int]] = []
    points = sorted(set(taken))
    i = 0
    for lo, hi in holes:
        while i < len(points) and points[i] < lo:
            i += 1
        start = lo
        while i < len(points) and points[i] <= hi:
            if points[i] > start:
                out.append((start, points[i] - 1))
            start = points[i] + 1
            i += 1
        if start <= hi:
            out.append((start, hi))
    return out
