"""Digests of proven history: any change to a row an earlier audit proved, found and named by id.

The rows of a history table (entries, journals) are digested in chunks of
``2**CHUNK_BITS`` ids. Each row's hash ``h`` is 60 bits of
``md5(salt || row)``, where ``row`` is the whole row as text (every
column, not only the ledger's) and ``salt`` is the state file's own random
value. Per chunk the state keeps the row count, ``s0 = sum(h)`` and
``s1 = sum(id * h)`` modulo the prime ``P = 2**61 - 1``, and the sum of the
entries' amounts. All of them add up over sub-ranges, so the proven
history grows chunk by chunk without reading it again, and PostgreSQL
computes them in one parallel aggregate.

Re-hashing a chunk and comparing tells whether anything in it changed.
When one row changed, was deleted or was inserted, the differences give
its id: ``d1 / d0 = id (mod P)``. When several did, the chunk's id range is
reported instead. The change in the amounts' sum is the finding's cents
impact.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import psycopg
from psycopg import sql

from verifier.ledger.layout import Layout
from verifier.ledger.state import Chunk, State

CHUNK_BITS = 10
P = (1 << 61) - 1

DIGEST_SQL = """
SELECT t.id >> {bits} AS chunk, t.id > {old} AS beyond, t.currency, count(*), coalesce(sum(t.h), 0),
       coalesce(sum(t.id::numeric * t.h), 0), coalesce(sum(t.amount), 0)
FROM (SELECT r.{id} AS id, ('x' || substr(md5({salt} || r::text), 1, 15))::bit(60)::bigint AS h,
             {amount} AS amount, {currency} AS currency
      FROM {table} r WHERE {ranges}) t
GROUP BY 1, 2, 3
"""


@dataclass(frozen=True)
class Digest:
    n: int
    s0: int
    s1: int
    amount: Decimal


@dataclass(frozen=True)
class Tampered:
    table: str  # logical: entries or journals
    id: str  # the row's id, or "first..last" for a chunk with several changes
    what: str  # changed, deleted, inserted, or several
    cents_impact: int
    detail: str


@dataclass(frozen=True)
class Digests:
    rehashed: dict[int, Digest]  # chunk -> digest of its proven ids now
    beyond: dict[int, Digest]  # chunk -> digest of its ids newly proven
    trial: dict[str | None, Decimal]  # currency -> sum of the newly proven entries' amounts


def chunk_range(chunk: int) -> tuple[int, int]:
    return chunk << CHUNK_BITS, ((chunk + 1) << CHUNK_BITS) - 1


def plan_rehash(state: State, table: str, share: float) -> list[tuple[int, int]]:
    """The chunk numbers (inclusive ranges) whose proven rows this audit re-hashes.

    ``share`` 1: every chunk of proven history. Less: that share of the
    chunks (at least one), continuing where the last audit's rotation
    stopped, so that every chunk is re-hashed within ``ceil(1 / share)`` audits.
    """
    upto = state.proven[table]
    if upto <= 0 and not state.chunks[table]:
        return []
    first = min([0, *state.chunks[table]])
    last = upto >> CHUNK_BITS
    total = last - first + 1
    if share >= 1:
        return [(first, last)]
    count = max(1, min(total, int(-(-total * share // 1))))
    start = first + state.rotation[table] % total
    end = start + count - 1
    state.rotation[table] = (start - first + count) % total
    if end <= last:
        return [(start, end)]
    return [(start, last), (first, end - total)]


def digest(conn: psycopg.Connection, layout: Layout, table: str, salt: str,
           chunks: list[tuple[int, int]], old: int, new: int) -> Digests:
    """Digests of ``table``'s rows per chunk: of the ``chunks`` ranges (ids up to ``old``), and of
    the ids in ``(old, new]`` (with their amounts per currency, for the trial balance)."""
    ident = sql.Identifier(layout.columns[table]["id"])
    col = sql.SQL("r.{}").format(ident)
    ranges = [sql.SQL("{} BETWEEN {} AND {}").format(col, sql.Literal(chunk_range(a)[0]),
                                                     sql.Literal(min(chunk_range(b)[1], old)))
              for a, b in chunks]
    if new > old:
        ranges.append(sql.SQL("{} > {} AND {} <= {}").format(col, sql.Literal(old), col, sql.Literal(new)))
    found = Digests({}, {}, {})
    if not ranges:
        return found
    amount: sql.Composable
    currency: sql.Composable
    if table == "entries":
        amount = sql.SQL("r.{}").format(sql.Identifier(layout.columns["entries"]["amount"]))
        currency = sql.SQL("r.{}::text").format(sql.Identifier(layout.columns["entries"]["currency"]))
    else:
        amount, currency = sql.SQL("0"), sql.SQL("NULL::text")
    query = sql.SQL(DIGEST_SQL).format(
        bits=sql.Literal(CHUNK_BITS), old=sql.Literal(old), id=ident, salt=sql.Literal(salt), amount=amount,
        currency=currency, table=sql.Identifier(layout.schema, layout.tables[table]),
        ranges=sql.SQL(" OR ").join(sql.SQL("({})").format(r) for r in ranges))
    for chunk, is_beyond, cur, n, s0, s1, amount_sum in conn.execute(query):
        into = found.beyond if is_beyond else found.rehashed
        d = into.get(int(chunk), Digest(0, 0, 0, Decimal(0)))
        into[int(chunk)] = Digest(d.n + int(n), (d.s0 + int(s0)) % P, (d.s1 + int(s1)) % P,
                                  d.amount + Decimal(amount_sum))
        if is_beyond and table == "entries":
            found.trial[cur] = found.trial.get(cur, Decimal(0)) + Decimal(amount_sum)
    return found


def compare(state: State, table: str, chunks: list[tuple[int, int]], rehashed: dict[int, Digest]
            ) -> list[Tampered]:
    """Every re-hashed chunk whose digest differs from the proven one, pinpointed where it can be."""
    found = []
    for a, b in chunks:
        for chunk in sorted(set(range(a, b + 1)) & (set(state.chunks[table]) | set(rehashed))):
            was = state.chunks[table].get(chunk)
            now = rehashed.get(chunk)
            if was is None and now is None:
                continue
            old = Digest(was.n, was.s0, was.s1, was.amount) if was else Digest(0, 0, 0, Decimal(0))
            cur = now or Digest(0, 0, 0, Decimal(0))
            if old == cur:
                continue
            found.append(_pinpoint(table, chunk, old, cur, was.upto if was else chunk_range(chunk)[1]))
    return found


def _pinpoint(table: str, chunk: int, old: Digest, cur: Digest, upto: int) -> Tampered:
    lo, _ = chunk_range(chunk)
    d0, d1, dn = (cur.s0 - old.s0) % P, (cur.s1 - old.s1) % P, cur.n - old.n
    impact = int(abs(cur.amount - old.amount))
    if d0 and abs(dn) <= 1:
        candidate = d1 * pow(d0, -1, P) % P
        if candidate > P // 2:
            candidate -= P
        if lo <= candidate <= upto:
            what = {0: "changed", -1: "deleted", 1: "inserted"}[dn]
            detail = {"changed": "changed since an earlier audit proved it",
                      "deleted": "deleted since an earlier audit proved it",
                      "inserted": "inserted among ids an earlier audit had proven"}[what]
            if table == "entries" and impact:
                detail += f" (amounts off by {impact} cents)"
            return Tampered(table, str(candidate), what, impact, detail)
    return Tampered(table, f"{lo}..{upto}", "several", impact,
                    f"more than one row changed, deleted or inserted among ids {lo}..{upto} since an "
                    f"earlier audit proved them ({old.n} rows then, {cur.n} now)")


def extend(state: State, table: str, found: Digests, new: int) -> None:
    """Add the digests (and trial sums) of the rows in ``(proven, new]`` to the proven history."""
    beyond = found.beyond
    for currency, total in found.trial.items():
        state.trial[currency] = state.trial.get(currency, Decimal(0)) + total
    for chunk, d in beyond.items():
        c = state.chunks[table].setdefault(chunk, Chunk(0, 0, 0, 0, Decimal(0)))
        c.n, c.s0, c.s1, c.amount = c.n + d.n, (c.s0 + d.s0) % P, (c.s1 + d.s1) % P, c.amount + d.amount
    for chunk, c in state.chunks[table].items():
        c.upto = min(chunk_range(chunk)[1], new)
    state.proven[table] = new
