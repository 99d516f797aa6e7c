"""Migration 400's ledger, the platform's layout, enforces its own rules, for real.

A journal must balance when its transaction commits: entries inserted one by
one are fine until COMMIT (a deferred constraint trigger sees the whole
journal), an unbalanced, single-entry or mixed-currency journal (an entry's
currency is its account's) is rejected at COMMIT. transfer_tokens keeps the
balance chain from each account's opening balance, honours idempotency keys,
refuses overdrafts, and, locking accounts in id order, lets concurrent
transfers in opposite directions finish without a deadlock; reverse_journal
refunds a journal and marks the original.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from verifier.demo import generate
from verifier.migrate import plan
from verifier.migrate.runner import Runner
from verifier.paths import project_migrations_dir


@pytest.fixture(scope="module")
def ledger(make_module_db) -> Iterator[str]:  # type: ignore[no-untyped-def]
    dsn = make_module_db()
    generate.generate(dsn, rows=1_000, seed=3)
    with Runner(dsn) as runner:
        for f in plan.pending(plan.discover(project_migrations_dir()).files, runner.applied()):
            assert runner.apply(f).failure is None, f.path.name
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Money enters as opening balances: Alice opens with 100,000 cents, Bob with 50,000.
        conn.execute("INSERT INTO accounts (owner_id, type, currency, balance_cents) VALUES "
                     "('a11ce000-0000-4000-8000-000000000001', 'user', 'USD', 100000), "
                     "('b0b00000-0000-4000-8000-000000000002', 'user', 'USD', 50000), "
                     "('c0000000-0000-4000-8000-000000000003', 'user', 'EUR', 50000)")
    yield dsn


def _account(conn: psycopg.Connection, who: str) -> int:
    owners = {"platform": "00000000-0000-0000-0000-000000000000",
              "alice": "a11ce000-0000-4000-8000-000000000001", "bob": "b0b00000-0000-4000-8000-000000000002",
              "carol_eur": "c0000000-0000-4000-8000-000000000003"}
    row = conn.execute("SELECT id FROM accounts WHERE owner_id = %s", (owners[who],)).fetchone()
    assert row is not None
    return int(row[0])


def _transfer(conn: psycopg.Connection, source: int, target: int, cents: int, key: str | None = None) -> int:
    row = conn.execute("SELECT transfer_tokens(%s, %s, %s, 'tip', gen_random_uuid(), 'test', %s)",
                       (source, target, cents, key)).fetchone()
    assert row is not None
    return int(row[0])


def _entry(conn: psycopg.Connection, account: int, cents: int, before: int) -> None:
    conn.execute("INSERT INTO entries (journal_id, account_id, entry_type, amount_cents, "
                 "balance_before_cents, balance_after_cents) "
                 "VALUES (currval('journals_id_seq'), %s, %s, %s, %s, %s)",
                 (account, "debit" if cents > 0 else "credit", cents, before, before - cents))


def _journal(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO journals (ref_type, ref_id) VALUES ('adjustment', gen_random_uuid())")


def test_transfer_keeps_the_balance_chain(ledger: str) -> None:
    with psycopg.connect(ledger, autocommit=True) as conn:
        alice, bob = _account(conn, "alice"), _account(conn, "bob")
        journal = _transfer(conn, alice, bob, 1_000)  # debit Alice, credit Bob
        rows = conn.execute("SELECT account_id, entry_type, amount_cents, balance_before_cents, "
                            "balance_after_cents FROM entries WHERE journal_id = %s ORDER BY id",
                            (journal,)).fetchall()
        assert sum(r[2] for r in rows) == 0 and len(rows) == 2
        for account, entry_type, amount, before, after in rows:
            assert after == before - amount
            assert (entry_type == "debit") == (amount > 0)
            # The second trigger moved the account to the entry's balance after.
            assert conn.execute("SELECT balance_cents FROM accounts WHERE id = %s",
                                (account,)).fetchone() == (after,)
        logged = conn.execute("SELECT count(*) FROM financial_audit_log WHERE journal_id = %s "
                              "AND action = 'balance_update'", (journal,)).fetchone()
        assert logged == (2,)


def test_half_a_journal_is_fine_until_commit_and_rejected_at_commit(ledger: str) -> None:
    with psycopg.connect(ledger) as conn:
        alice = _account(conn, "alice")
        _journal(conn)
        # One entry alone: the platform's row trigger rejects it here; the deferred one waits.
        _entry(conn, alice, 700, 100_000)
        with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"):
            conn.commit()


def test_balanced_journal_entered_line_by_line_commits(ledger: str) -> None:
    with psycopg.connect(ledger) as conn:
        alice, bob = _account(conn, "alice"), _account(conn, "bob")
        (a,), (b,) = conn.execute("SELECT balance_cents FROM accounts WHERE id IN (%s, %s) ORDER BY id",
                                  (alice, bob)).fetchall()
        _journal(conn)
        _entry(conn, alice, 300, a)
        _entry(conn, bob, -300, b)
        conn.commit()


def test_mixed_currency_journal_is_rejected(ledger: str) -> None:
    with psycopg.connect(ledger) as conn:
        alice, carol = _account(conn, "alice"), _account(conn, "carol_eur")
        (a,), (c,) = conn.execute("SELECT balance_cents FROM accounts WHERE id IN (%s, %s) ORDER BY id",
                                  (alice, carol)).fetchall()
        _journal(conn)
        _entry(conn, alice, 100, a)
        _entry(conn, carol, -100, c)  # Carol's account is in EUR
        with pytest.raises(psycopg.errors.CheckViolation, match="2 currencies"):
            conn.commit()


def test_idempotency_key_posts_once(ledger: str) -> None:
    with psycopg.connect(ledger, autocommit=True) as conn:
        alice, bob = _account(conn, "alice"), _account(conn, "bob")
        first = _transfer(conn, alice, bob, 250, key="stripe:evt_1")
        count = conn.execute("SELECT count(*) FROM entries").fetchone()
        again = _transfer(conn, alice, bob, 250, key="stripe:evt_1")
        assert again == first
        assert conn.execute("SELECT count(*) FROM entries").fetchone() == count


def test_overdraft_is_refused(ledger: str) -> None:
    with psycopg.connect(ledger, autocommit=True) as conn:
        bob, platform = _account(conn, "bob"), _account(conn, "platform")
        with pytest.raises(psycopg.errors.CheckViolation, match="overdrawn"):
            _transfer(conn, bob, platform, 10**9)


def test_a_refund_negates_the_journal_and_marks_the_original(ledger: str) -> None:
    with psycopg.connect(ledger, autocommit=True) as conn:
        alice, bob = _account(conn, "alice"), _account(conn, "bob")
        start = dict(conn.execute("SELECT id, balance_cents FROM accounts WHERE id IN (%s, %s)",
                                  (alice, bob)).fetchall())
        original = _transfer(conn, alice, bob, 400)
        row = conn.execute("SELECT reverse_journal(%s)", (original,)).fetchone()
        assert row is not None
        refund = int(row[0])
        marked = conn.execute("SELECT reversed_by, is_reversed FROM journals WHERE id = %s",
                              (original,)).fetchone()
        assert marked == (refund, True)
        end = dict(conn.execute("SELECT id, balance_cents FROM accounts WHERE id IN (%s, %s)",
                                (alice, bob)).fetchall())
        assert end == start
        with pytest.raises(psycopg.errors.CheckViolation, match="already reversed"):
            conn.execute("SELECT reverse_journal(%s)", (original,))


def test_concurrent_opposite_postings_do_not_deadlock(ledger: str) -> None:
    with psycopg.connect(ledger, autocommit=True) as conn:
        alice, bob = _account(conn, "alice"), _account(conn, "bob")
        before = conn.execute("SELECT sum(balance_cents) FROM accounts").fetchone()
        start = dict(conn.execute("SELECT id, balance_cents FROM accounts WHERE id IN (%s, %s)",
                                  (alice, bob)).fetchall())
    errors: list[BaseException] = []

    def worker(source: int, target: int, cents: int) -> None:
        try:
            with psycopg.connect(ledger, autocommit=True) as c:
                for _ in range(150):
                    with c.transaction():
                        _transfer(c, source, target, cents)
                        c.execute("SELECT pg_sleep(0.001)")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    # Alice pays Bob while Bob pays Alice: the two transfers name the accounts
    # in opposite orders; transfer_tokens locks them in id order regardless.
    threads = [threading.Thread(target=worker, args=(alice, bob, 7)),
               threading.Thread(target=worker, args=(bob, alice, 5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with psycopg.connect(ledger) as conn:
        assert conn.execute("SELECT sum(balance_cents) FROM accounts").fetchone() == before
        unbalanced = conn.execute("SELECT count(*) FROM (SELECT journal_id FROM entries GROUP BY 1 "
                                  "HAVING sum(amount_cents) <> 0) j").fetchone()
        assert unbalanced == (0,)
        end = dict(conn.execute("SELECT id, balance_cents FROM accounts WHERE id IN (%s, %s)",
                                (alice, bob)).fetchall())
    # A debit lowers the balance (after = before - amount): Alice pays 150 x 7
    # and receives 150 x 5; Bob the reverse.
    assert end[alice] == start[alice] - 150 * 7 + 150 * 5
    assert end[bob] == start[bob] + 150 * 7 - 150 * 5
