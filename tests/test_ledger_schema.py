"""Migration 400's ledger enforces its own rules, for real.

A journal must balance when its transaction commits: entries inserted one by
one are fine until COMMIT (a deferred constraint trigger sees the whole
journal), an unbalanced, single-entry or mixed-currency journal is rejected
at COMMIT. ledger_post keeps the balance chain, honours idempotency keys,
refuses overdrafts, and, locking accounts in id order, lets concurrent
postings in opposite directions finish without a deadlock.
"""

from __future__ import annotations

import json
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
        conn.execute("INSERT INTO accounts (account_type, owner_user_id, allow_negative) VALUES "
                     "('platform_cash', NULL, true), ('user', 1, false), ('user', 2, false), "
                     "('creator', 10, false)")
    yield dsn


def _account(conn: psycopg.Connection, type_: str, owner: int | None) -> int:
    row = conn.execute("SELECT id FROM accounts WHERE account_type = %s AND owner_user_id "
                       "IS NOT DISTINCT FROM %s", (type_, owner)).fetchone()
    assert row is not None
    return int(row[0])


def _post(conn: psycopg.Connection, lines: list[tuple[int, int]], key: str | None = None) -> int:
    payload = json.dumps([{"account_id": a, "amount_cents": c} for a, c in lines])
    row = conn.execute("SELECT ledger_post('test', %s::jsonb, %s)", (payload, key)).fetchone()
    assert row is not None
    return int(row[0])


def test_post_keeps_the_balance_chain(ledger: str) -> None:
    with psycopg.connect(ledger, autocommit=True) as conn:
        cash, alice = _account(conn, "platform_cash", None), _account(conn, "user", 1)
        journal = _post(conn, [(cash, 1_000), (alice, -1_000)])  # fund Alice: debit cash, credit Alice
        rows = conn.execute("SELECT account_id, entry_type, amount_cents, balance_before_cents, "
                            "balance_after_cents FROM entries WHERE journal_id = %s ORDER BY account_id",
                            (journal,)).fetchall()
        assert sum(r[2] for r in rows) == 0 and len(rows) == 2
        for _account_id, entry_type, amount, before, after in rows:
            assert after == before - amount
            assert (entry_type == "debit") == (amount > 0)
        balance = conn.execute("SELECT balance_cents FROM accounts WHERE id = %s", (alice,)).fetchone()
        assert balance is not None and balance[0] >= 1_000


def test_half_a_journal_is_fine_until_commit_and_rejected_at_commit(ledger: str) -> None:
    with psycopg.connect(ledger) as conn:
        cash = _account(conn, "platform_cash", None)
        conn.execute("INSERT INTO journals (journal_type) VALUES ('manual')")
        # One entry alone: a row trigger would reject it here; the deferred one waits.
        conn.execute("INSERT INTO entries (journal_id, account_id, entry_type, amount_cents, "
                     "balance_before_cents, balance_after_cents) "
                     "VALUES (currval('journals_id_seq'), %s, 'debit', 700, 0, -700)", (cash,))
        with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"):
            conn.commit()


def test_balanced_journal_entered_line_by_line_commits(ledger: str) -> None:
    with psycopg.connect(ledger) as conn:
        cash, bob = _account(conn, "platform_cash", None), _account(conn, "user", 2)
        conn.execute("INSERT INTO journals (journal_type) VALUES ('manual')")
        conn.execute("INSERT INTO entries (journal_id, account_id, entry_type, amount_cents, "
                     "balance_before_cents, balance_after_cents) "
                     "VALUES (currval('journals_id_seq'), %s, 'debit', 300, 0, -300)", (cash,))
        conn.execute("INSERT INTO entries (journal_id, account_id, entry_type, amount_cents, "
                     "balance_before_cents, balance_after_cents) "
                     "VALUES (currval('journals_id_seq'), %s, 'credit', -300, 0, 300)", (bob,))
        conn.commit()


def test_mixed_currency_journal_is_rejected(ledger: str) -> None:
    with psycopg.connect(ledger) as conn:
        cash, bob = _account(conn, "platform_cash", None), _account(conn, "user", 2)
        conn.execute("INSERT INTO journals (journal_type) VALUES ('manual')")
        for account, amount, currency in ((cash, 100, "USD"), (bob, -100, "EUR")):
            conn.execute("INSERT INTO entries (journal_id, account_id, entry_type, amount_cents, currency, "
                         "balance_before_cents, balance_after_cents) VALUES (currval('journals_id_seq'), "
                         "%s, %s, %s, %s, 0, %s)",
                         (account, "debit" if amount > 0 else "credit", amount, currency, -amount))
        with pytest.raises(psycopg.errors.CheckViolation, match="2 currencies"):
            conn.commit()


def test_idempotency_key_posts_once(ledger: str) -> None:
    with psycopg.connect(ledger, autocommit=True) as conn:
        cash, alice = _account(conn, "platform_cash", None), _account(conn, "user", 1)
        first = _post(conn, [(cash, 250), (alice, -250)], key="stripe:evt_1")
        count = conn.execute("SELECT count(*) FROM entries").fetchone()
        again = _post(conn, [(cash, 250), (alice, -250)], key="stripe:evt_1")
        assert again == first
        assert conn.execute("SELECT count(*) FROM entries").fetchone() == count


def test_overdraft_of_an_account_that_must_not_go_negative(ledger: str) -> None:
    with psycopg.connect(ledger, autocommit=True) as conn:
        creator, cash = _account(conn, "creator", 10), _account(conn, "platform_cash", None)
        with pytest.raises(psycopg.errors.CheckViolation, match="accounts_no_overdraft"):
            _post(conn, [(creator, 10**9), (cash, -(10**9))])  # debit the creator below zero


def test_concurrent_opposite_postings_do_not_deadlock(ledger: str) -> None:
    with psycopg.connect(ledger, autocommit=True) as conn:
        cash, alice, bob = (_account(conn, "platform_cash", None), _account(conn, "user", 1),
                            _account(conn, "user", 2))
        _post(conn, [(cash, 100_000), (alice, -50_000), (bob, -50_000)])
        before = conn.execute("SELECT sum(balance_cents) FROM accounts").fetchone()
        start = dict(conn.execute("SELECT id, balance_cents FROM accounts WHERE id IN (%s, %s)",
                                  (alice, bob)).fetchall())
    errors: list[BaseException] = []

    def worker(lines: list[tuple[int, int]]) -> None:
        try:
            with psycopg.connect(ledger, autocommit=True) as c:
                for _ in range(150):
                    with c.transaction():
                        _post(c, lines)
                        c.execute("SELECT pg_sleep(0.001)")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    # Alice pays Bob while Bob pays Alice: the lines name the accounts in
    # opposite orders; ledger_post locks them in id order regardless.
    threads = [threading.Thread(target=worker, args=([(alice, 7), (bob, -7)],)),
               threading.Thread(target=worker, args=([(bob, 5), (alice, -5)],))]
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
