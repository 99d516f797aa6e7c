"""Writers for the demo ledger: transfers posted through its own ``transfer_tokens``, as production does.

For the concurrency tests and the ledger benchmark, which audit a ledger
while it is written to. ``posting(dsn, writers)`` runs ``writers`` threads
that post until the block ends. They write to ``dsn``: a test database or a
scratch database, never a user's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import psycopg


def post_load(dsn: str, stop: Callable[[], bool], worker: int, posted: list[int]) -> None:
    """Post transfers through the ledger's own ``transfer_tokens`` until ``stop()``, as production does.

    Tips between the first user accounts (a user to a creator) and platform
    fees from them to the platform account, spread by ``worker``; each
    posting that commits adds one to ``posted[worker]``. A transfer the
    source cannot pay is refused by ``transfer_tokens`` (CheckViolation) and
    not counted. For the concurrency test and the benchmark: it writes to ``dsn``.
    """
    i = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        users = [r[0] for r in conn.execute("SELECT id FROM accounts WHERE type = 'user' "
                                            "ORDER BY id LIMIT 200").fetchall()]
        platform = conn.execute("SELECT min(id) FROM accounts WHERE type = 'platform'").fetchone()
        assert platform is not None and users
        while not stop():
            i += 1
            source, target = users[(i * 7 + worker) % len(users)], users[(i * 3 + worker + 1) % len(users)]
            if source == target or i % 3 == 0:
                target = platform[0]
            try:
                conn.execute("SELECT transfer_tokens(%s, %s, %s, 'tip', gen_random_uuid())",
                             (source, target, 100 if i % 3 else 20))
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
