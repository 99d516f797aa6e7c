"""The demo ledger: a clean double-entry ledger on the demo platform, and its planted defects.

``build(dsn, entries, seed)`` takes an empty database to the ledger:
the demo platform (``generate``), every project migration up to 400, and
about ``entries`` ledger entries (``ledger_data.sql``, set-based). Every
invariant of the audit holds in it. ``plant(dsn)`` then adds, beside the
clean ledger and on accounts of their own, a defect for every ledger rule
at known ids and returns them; the tests assert the audit reports exactly
those ids under those rules.

Written only to the database the caller created (a scratch or test
database): planting lifts constraints and skips triggers
(``session_replication_role = replica``, which needs a superuser).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.types.numeric import Int8

from verifier.config.ledger import Reconcile
from verifier.demo import generate
from verifier.errors import UsageError
from verifier.pg import conninfo

ENTRIES_MIN = 1_000
ENTRIES_MAX = 100_000_000
DEFAULT_ENTRIES = 20_000
PLATFORM_ROWS = 20_000  # the demo platform under the ledger: its users own the accounts
STATEMENTS_FILE = Path(__file__).with_name("ledger_data.sql")


@dataclass(frozen=True)
class Built:
    entries: int
    journals: int
    accounts: int
    duration_s: float


@dataclass(frozen=True)
class LedgerPlanted:
    rule: str
    table: str  # schema.table whose id the audit reports
    id: str


def sizes(entries: int, users: int) -> dict[str, int]:
    """Tips and platform fees for about ``entries`` entries (money enters as opening balances).

    ``users`` is accepted for the callers' sake; the entries do not depend on it.
    """
    del users
    if not ENTRIES_MIN <= entries <= ENTRIES_MAX:
        raise UsageError(f"--entries must be between {ENTRIES_MIN:,} and {ENTRIES_MAX:,} (got {entries:,}).")
    # Per tip: 3 entries, plus 2/50 for the platform fees and 2/200 for their refunds.
    tips = max(50, int(entries / 3.05))
    return {"tips": tips, "adjustments": max(4, tips // 50)}


# The demo's legacy wallet table (ledger_data.sql), reconciled with the user accounts.
DEMO_RECONCILE = Reconcile("public", "legacy_wallets", "owner_id", "balance_cents", "user")
PLANT_OPENING_CENTS = 10_000  # each planted account's opening balance: no balance goes negative by accident


def build(dsn: str, entries: int = DEFAULT_ENTRIES, seed: int = generate.DEFAULT_SEED) -> Built:
    """The demo platform, migrated through 400, with a clean ledger of about ``entries`` entries."""
    p = generate.plan(PLATFORM_ROWS, seed)
    counts = sizes(entries, p.users)
    started = time.monotonic()
    generate.generate(dsn, PLATFORM_ROWS, seed)
    generate.apply_own_migrations(dsn, lambda f: f.version >= "300")
    # bigint, always: psycopg sends a small int as smallint, and users + tips could overflow it.
    values = {"seed": seed, "users": p.users, "creators": p.creators, **counts}
    params = {k: Int8(v) for k, v in values.items()}
    with conninfo.connect(dsn, what="demo database") as conn:
        conn.execute("SET session_replication_role = replica")  # no per-row triggers: built consistent
        for _, body in generate.statements(STATEMENTS_FILE):
            conn.execute(body, params if "%(" in body else None)
        conn.commit()
        conn.execute("SET session_replication_role = origin")
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
        row = conn.execute("SELECT (SELECT count(*) FROM entries), (SELECT count(*) FROM journals), "
                           "(SELECT count(*) FROM accounts)").fetchone()
    assert row is not None
    return Built(int(row[0]), int(row[1]), int(row[2]), round(time.monotonic() - started, 3))


# Pairs of new user wallets, the first tipping the second 1.00 from an opening balance of 100.00 each:
# a journal and two entries per pair, ids after every existing one, sequences moved past them.
WALLETS_SQL = """
CREATE TEMP TABLE verifier_pairs ON COMMIT DROP AS
SELECT k, (SELECT max(id) FROM accounts) + 2 * k - 1 AS payer,
       (SELECT max(id) FROM accounts) + 2 * k AS payee,
       (SELECT max(id) FROM journals) + k AS journal, (SELECT max(id) FROM entries) + 2 * k - 1 AS entry
FROM generate_series(1, %(pairs)s) k;
INSERT INTO accounts (id, owner_id, type, currency, balance_cents, available_balance_cents)
SELECT payer, gen_random_uuid(), 'user'::account_type, 'USD', 9900, 9900 FROM verifier_pairs
UNION ALL SELECT payee, gen_random_uuid(), 'user'::account_type, 'USD', 10100, 10100 FROM verifier_pairs;
INSERT INTO journals (id, ref_type, ref_id, description, idempotency_key)
SELECT journal, 'tip'::transaction_type, gen_random_uuid(), 'wallet tip', 'wallet-' || journal
FROM verifier_pairs;
INSERT INTO entries (id, journal_id, account_id, amount_cents, balance_before_cents, balance_after_cents,
                     entry_type)
SELECT entry, journal, payer, 100, 10000, 9900, 'debit' FROM verifier_pairs
UNION ALL SELECT entry + 1, journal, payee, -100, 10000, 10100, 'credit' FROM verifier_pairs;
SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT max(id) FROM accounts)),
       setval(pg_get_serial_sequence('journals', 'id'), (SELECT max(id) FROM journals)),
       setval(pg_get_serial_sequence('entries', 'id'), (SELECT max(id) FROM entries));
"""


def add_wallets(dsn: str, accounts: int) -> None:
    """``accounts`` more user wallets (rounded down to pairs) on a built demo ledger, each with one
    entry: a platform of many wallets, few entries each (the benchmark's ``--accounts``). Their legacy
    wallets are not added: audit with ``reconcile = []``."""
    with conninfo.connect(dsn, what="demo database") as conn:
        conn.execute("SET session_replication_role = replica")  # built consistent, as ``build``
        for statement in WALLETS_SQL.split(";\n"):
            if statement.strip():
                conn.execute(statement, {"pairs": Int8(accounts // 2)} if "%(" in statement else None)
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")


class _Book:
    """Posts hand-made journals on fresh accounts, keeping each account's running balance."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.balances: dict[int, int] = {}
        self.planted: list[LedgerPlanted] = []

    def account(self, account_type: str = "platform", currency: str = "USD",
                opening: int = PLANT_OPENING_CENTS) -> int:
        """A fresh account (an owner of its own) that opens with ``opening`` cents."""
        row = self.conn.execute(
            "INSERT INTO accounts (owner_id, type, currency, balance_cents) "
            "VALUES (gen_random_uuid(), %s, %s, %s) RETURNING id",
            (account_type, currency, opening)).fetchone()
        assert row is not None
        self.balances[int(row[0])] = opening
        return int(row[0])

    def journal(self, *lines: tuple[int, int], key: str | None = None, journal_id: int | None = None,
                before: dict[int, int] | None = None, types: dict[int, str] | None = None
                ) -> tuple[int, list[int]]:
        """Post ``lines`` (account, amount); overrides by line index. Returns (journal, entry ids).

        With ``journal_id`` given, no journal row is written (the entries are orphans).
        """
        if journal_id is None:
            journal_id = self.bare_journal("planted", key)
        ids = []
        for i, (account, amount) in enumerate(lines):
            start = (before or {}).get(i, self.balances.get(account, 0))
            row = self.conn.execute(
                "INSERT INTO entries (journal_id, account_id, entry_type, amount_cents, "
                "balance_before_cents, balance_after_cents) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (journal_id, account, (types or {}).get(i, "debit" if amount > 0 else "credit"), amount,
                 start, start - amount)).fetchone()
            assert row is not None
            ids.append(int(row[0]))
            if account in self.balances:
                self.balances[account] = start - amount
        return journal_id, ids

    def bare_journal(self, description: str, key: str | None = None) -> int:
        row = self.conn.execute(
            "INSERT INTO journals (ref_type, ref_id, description, idempotency_key) "
            "VALUES ('adjustment', gen_random_uuid(), %s, %s) RETURNING id", (description, key)).fetchone()
        assert row is not None
        return int(row[0])

    def reversed_by(self, original: int, reverser: int | None, flag: bool = True) -> None:
        """Mark ``original`` reversed, the platform's way: its link and flag."""
        self.conn.execute("UPDATE journals SET reversed_by = %s, is_reversed = %s WHERE id = %s",
                          (reverser, flag, original))

    def settle(self) -> None:
        """Every fresh account's balance = its running balance."""
        for account, balance in self.balances.items():
            self.conn.execute("UPDATE accounts SET balance_cents = %s WHERE id = %s", (balance, account))

    def mark(self, rule: str, table: str, *ids: object) -> None:
        self.planted += [LedgerPlanted(rule, f"public.{table}", str(i)) for i in ids]


# Constraints of our 400 that a real platform's ledger may lack; planting
# lifts them (and puts them back NOT VALID: existing rows are not checked).
LIFTED = (("entries", "entries_sign_matches_type"), ("journals", "journals_idempotency_key_key"))


def plant(dsn: str) -> list[LedgerPlanted]:
    """Plant a defect of every ledger rule in the built demo ledger at ``dsn``; return them."""
    with conninfo.connect(dsn, what="demo database") as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")  # no FK or journal triggers
        lifted = []
        for table, name in LIFTED:
            row = conn.execute("SELECT pg_get_constraintdef(oid), contype FROM pg_constraint "
                               "WHERE conrelid = %s::regclass AND conname = %s", (table, name)).fetchone()
            assert row is not None, f"no constraint {name} on {table}"
            lifted.append((table, name, str(row[0]), str(row[1])))
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(table), sql.Identifier(name)))
        b = _Book(conn)
        drifted = _plant_all(b, conn)
        b.settle()
        # After settling: a balance that disagrees with its account's entries.
        conn.execute("UPDATE accounts SET balance_cents = balance_cents + 33 WHERE id = %s", (drifted,))
        for table, name, definition, kind in lifted:
            if kind == "c":  # a CHECK goes back NOT VALID; the UNIQUE cannot, it stays lifted
                conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
                    # PostgreSQL's own deparse of the constraint we just dropped.
                    sql.Identifier(table), sql.Identifier(name), sql.SQL(definition)))  # noqa: S608
    return b.planted


def tamper(dsn: str) -> LedgerPlanted:
    """Backdate one entry an earlier audit proved, keeping every arithmetic invariant: history_tampered."""
    with conninfo.connect(dsn, what="demo database") as conn, conn.transaction():
        # An entry of the clean ledger the audits proved (built before the plants, which follow
        # it in id order; a planted journal's entry fails the journals' deferred balance check).
        row = conn.execute("UPDATE entries SET created_at = created_at - interval '30 days' "
                           "WHERE id = (SELECT min(id) + least(1000, (max(id) - min(id)) / 4) FROM entries) "
                           "RETURNING id").fetchone()
    assert row is not None
    return LedgerPlanted("history_tampered", "public.entries", str(row[0]))


def _plant_all(b: _Book, conn: psycopg.Connection) -> int:
    """Post every planted defect; return the account whose balance is to drift after settling."""
    _plant_journals(b, conn)
    _plant_chain(b)
    drift, c = b.account("user"), b.account()
    b.journal((drift, 700), (c, -700))
    b.mark("account_balance_drift", "accounts", drift)
    _plant_reversals(b)
    _plant_side_tables(b, conn)
    return drift


def _plant_journals(b: _Book, conn: psycopg.Connection) -> None:
    """Journals that do not balance, have one entry, mix currencies, or none; orphans; a key reused."""
    a, c = b.account(), b.account()
    j1, _ = b.journal((a, 500), (c, -400))  # sums to +100
    j2, _ = b.journal((a, -300), (c, 200))  # sums to -100: USD's trial balance stays zero
    b.mark("journal_unbalanced", "journals", j1, j2)
    a, c = b.account(), b.account()
    j3, _ = b.journal((a, 250))
    j4, _ = b.journal((c, -250))
    b.mark("journal_too_few_entries", "journals", j3, j4)
    usd1, eur1 = b.account(), b.account(currency="EUR")
    usd2, eur2 = b.account(), b.account(currency="EUR")
    j5, _ = b.journal((usd1, 300), (eur1, -300), (usd2, -300), (eur2, 300))  # balanced per currency, mixed
    b.mark("journal_mixed_currency", "journals", j5)
    eur_a, eur_c = b.account(currency="EUR"), b.account(currency="EUR")
    j13, _ = b.journal((eur_a, 600), (eur_c, -500))
    b.mark("journal_unbalanced", "journals", j13)
    b.mark("trial_balance_nonzero", "entries", "EUR")
    a, c = b.account(), b.account()
    b.journal((a, 75), (c, -75), journal_id=-424242)  # entries of a journal that does not exist
    # Entries of accounts that do not exist (their currency unknown: they balance each other).
    _, orphans = b.journal((-5151, 60), (-5152, -60))
    b.mark("orphan_entry", "entries", -424242, *orphans)
    b.mark("empty_journal", "journals", b.bare_journal("no entries"))
    a, c = b.account(), b.account()
    b.journal((a, 10), (c, -10), key="plant-dup")
    dup, _ = b.journal((a, 20), (c, -20), key="plant-dup")  # the key again, other lines
    b.mark("idempotency_conflict", "journals", dup)
    del conn


def _plant_chain(b: _Book) -> None:
    """An entry's sign against its type, a broken running balance, a balance below zero."""
    a, c = b.account(), b.account()
    _, (e_sign, _) = b.journal((a, 120), (c, -120), types={0: "credit"})
    b.mark("entry_sign_mismatch", "entries", e_sign)
    a, c = b.account(), b.account()
    b.journal((a, -1000), (c, 1000))  # a: 10,000 -> 11,000
    _, (e_up, _) = b.journal((a, 100), (c, -100), before={0: 11_050})  # starts 50 too high
    _, (e_down, _) = b.journal((a, -100), (c, 100), before={0: 10_900})  # and 50 back: ends right
    b.mark("running_balance_break", "entries", e_up, e_down)
    user, c = b.account("user", opening=0), b.account()
    _, (e_neg, _) = b.journal((user, 500), (c, -500))  # a user spends money it does not have
    b.journal((user, -800), (c, 800))  # and is topped up: the balance ends positive
    b.mark("negative_balance", "entries", e_neg)


def _plant_reversals(b: _Book) -> None:
    """Refunds the platform's way (the original names its reverser), each wrong in its own way."""
    a, c = b.account(), b.account()
    o1, _ = b.journal((a, 200), (c, -200))
    r1, _ = b.journal((a, -150), (c, 150))  # refunds only part of it
    b.reversed_by(o1, r1)
    o2, _ = b.journal((a, 90), (c, -90))
    r2, _ = b.journal((a, -90), (c, 90))
    b.reversed_by(o2, r2, flag=False)  # linked, but not flagged reversed
    o3, _ = b.journal((a, 40), (c, -40))
    b.reversed_by(o3, None)  # flagged reversed, with no reversing journal
    o4, _ = b.journal((a, 30), (c, -30))
    o5, _ = b.journal((a, 30), (c, -30))
    r4, _ = b.journal((a, -30), (c, 30))
    b.reversed_by(o4, r4)
    b.reversed_by(o5, r4)  # one refund named by two originals
    b.mark("reversal_mismatch", "journals", o1, o2, o3, o5)


def _plant_side_tables(b: _Book, conn: psycopg.Connection) -> None:
    """A snapshot that disagrees with its entry, stale and unlinked pending transactions, a legacy wallet."""
    a, c = b.account(), b.account()
    _, (e_snap, _) = b.journal((a, -40), (c, 40))
    row = conn.execute("INSERT INTO ledger_snapshots (account_id, balance_cents, entry_count, last_entry_id, "
                       "snapshot_date) VALUES (%s, %s, 1, %s, '2025-06-01') RETURNING id",
                       (a, PLANT_OPENING_CENTS + 41, e_snap)).fetchone()  # the entry says + 40
    assert row is not None
    b.mark("snapshot_mismatch", "ledger_snapshots", row[0])
    for key, status, expires, rule in (("plant-stale", "pending", "2024-01-01 00:00:00+00", "pending_stale"),
                                       ("plant-unlinked", "completed", "2100-01-01 00:00:00+00",
                                        "pending_unlinked")):
        row = conn.execute("INSERT INTO pending_transactions (idempotency_key, transaction_type, "
                           "amount_cents, status, expires_at) VALUES (%s, 'tip', 500, %s, %s) RETURNING id",
                           (key, status, expires)).fetchone()
        assert row is not None
        b.mark(rule, "pending_transactions", row[0])
    row = conn.execute("UPDATE legacy_wallets SET balance_cents = balance_cents + 13 "
                       "WHERE owner_id = (SELECT owner_id FROM legacy_wallets ORDER BY owner_id LIMIT 1) "
                       "RETURNING owner_id").fetchone()
    assert row is not None
    account = conn.execute("SELECT id FROM accounts WHERE type = 'user' AND owner_id = %s",
                           (row[0],)).fetchone()
    assert account is not None
    b.mark("reconciliation_mismatch", "accounts", account[0])
