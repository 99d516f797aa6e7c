"""A scratch server given by URL: any server where we may CREATE DATABASE.

We only ever write to databases we create there (named ``verifier_scratch_*``)
and drop them at the end, unless ``--keep-scratch`` asks to keep them, in
which case we print how to connect (without the password).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from verifier.pg import conninfo
from verifier.scratch.server import ScratchDatabase, ScratchServer


def _print_keep(db: ScratchDatabase) -> None:
    print(
        f"Kept scratch database {db.name} on {conninfo.describe(db.server.admin_dsn)}.\n"
        f"  Connect:  psql '{conninfo.redact(db.dsn)}'\n"
        f"  Drop it:  DROP DATABASE \"{db.name}\";"
        + "".join(f" DROP ROLE \"{r}\";" for r in (db.reader_role, db.sandbox_role) if r),
        file=sys.stderr,
    )


@contextlib.contextmanager
def url_server(url: str, *, keep: bool) -> Iterator[ScratchServer]:
    """Yield the server at ``url`` as a scratch server.

    Raises ``UsageError`` for a malformed URL and ``DatabaseUnreachable``
    when the server cannot be reached.
    """
    conninfo.parse(url)
    server = ScratchServer(kind="url", admin_dsn=url, keep=keep, on_keep=_print_keep)
    server.read_version()
    yield server
