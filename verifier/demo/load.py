"""Writers for the demo ledger: transfers posted through the ledger's own ``ledger_post``, as production does.

For the concurrency tests and the ledger benchmark, which audit a ledger
while it is written to. ``posting(dsn, writers)`` runs ``writers`` threads
that post until the block ends. They write to ``dsn``: a test database or a
scratch database, never a user's.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator

import psycopg


def post_load(dsn: str, stop: Callable[[], bool], worker: int, posted: list[int]) -> None:
    """Post transfers through the ledger's own ``ledger_post`` until ``stop()``, as production does.

    Deposits (platform cash to a user) and tips (a user to a creator and the
    platform), spread over the first users and creators by ``worker``; each
    posting that commits adds one to ``posted[worker]``. A tip the user
    cannot pay is refused by ledger_post (CheckViolation) and not counted.
    For the concurrency test and the benchmark: it writes to ``dsn``.
    """
    i = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        users = [r[0] for r in conn.execute("SELECT id FROM accounts WHERE account_type = 'user' "
                                            "AND owner_user_id > 0 ORDER BY id LIMIT 200").fetchall()]
        creators = [r[0] for r in conn.execute("SELECT id FROM accounts WHERE account_type = 'creator' "
                                               "AND owner_user_id > 0 ORDER BY id LIMIT 50").fetchall()]
        while not stop():
            i += 1
            user, creator = users[(i * 7 + worker) % len(users)], creators[(i + worker) % len(creators)]
            lines = ([{"account_id": 1, "amount_cents": 500}, {"account_id": user, "amount_cents": -500}]
                     if i % 3 == 0 else
                     [{"account_id": user, "amount_cents": 100}, {"account_id": creator, "amount_cents": -80},
                      {"account_id": 2, "amount_cents": -20}])
            try:
                conn.execute("SELECT ledger_post('load', %s::jsonb)", (json.dumps(lines),))
            except psycopg.errors.CheckViolation:
                continue
            posted[worker] += 1


@contextlib.contextmanager
def posting(dsn: str, writers: int = 4) -> Iterator[list[int]]:
    """``writers`` threads running ``post_load`` on ``dsn`` while the block runs; yields their counts."""
    stop = threading.Event()
    posted = [0] * writers
    threads = [threading.Thread(target=post_load, args=(dsn, stop.is_set, w, posted)) for w in range(writers)]
    for t in threads:
        t.start()
    try:
        yield posted
    finally:
        stop.set()
        for t in threads:
            t.join()
