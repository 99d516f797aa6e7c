"""Scratch servers and databases: where a rehearsal may write.

A ``ScratchServer`` is a server where we may create databases;
``server.database()`` is a context manager yielding a ``ScratchDatabase``
created with a unique name (``unique_name``: ``verifier_scratch_*``) and
dropped afterwards (``drop_database``), however the block ends: normally,
by an exception, Ctrl-C or SIGTERM (see ``verifier.signals``). The kinds of
server (embedded, a URL, a container) are in the modules beside this one;
``verifier.scratch.provision`` picks one.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from verifier.errors import ScratchError
from verifier.pg import conninfo
from verifier.signals import shielded

SCRATCH_DB_PREFIX = "verifier_scratch"
DROP_RETRY_S = 15.0  # how long cleanup waits for a server that went away (a restart) to come back
DROP_RETRY_INTERVAL_S = 0.5


@dataclass(frozen=True)
class ScratchDatabase:
    """A database we created and may write to. ``dsn`` may hold a password."""

    dsn: str = field(repr=False)
    name: str
    server: ScratchServer

    @property
    def display(self) -> str:
        return conninfo.describe(self.dsn)


@dataclass
class ScratchServer:
    """A server where we may create databases.

    ``admin_dsn`` connects to a database we may use to CREATE/DROP others;
    ``kind`` is ``embedded``, ``url`` or ``docker``; ``keep`` leaves the
    databases in place (only meaningful for a URL; the others vanish).
    """

    kind: str
    admin_dsn: str = field(repr=False)
    keep: bool = False
    on_keep: Callable[[ScratchDatabase], None] | None = None
    version_num: int = 0
    version: str = ""

    @property
    def display(self) -> str:
        return conninfo.describe(self.admin_dsn)

    def read_version(self) -> None:
        """Record the server's version (for provenance and tool choice)."""
        with conninfo.connect(self.admin_dsn, autocommit=True, what="scratch server") as conn:
            row = conn.execute(
                "SELECT current_setting('server_version_num')::int, current_setting('server_version')"
            ).fetchone()
            assert row is not None
            self.version_num, self.version = int(row[0]), str(row[1])

    @contextlib.contextmanager
    def database(self, purpose: str = "rehearsal") -> Iterator[ScratchDatabase]:
        """Create a uniquely named database, yield it, drop it (unless ``keep``).

        Raises ``ScratchError`` when the server refuses CREATE DATABASE.
        """
        name = unique_name(purpose)
        with conninfo.connect(self.admin_dsn, autocommit=True, what="scratch server") as conn:
            try:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                        sql.Identifier(name)
                    )
                )
            except psycopg.errors.InsufficientPrivilege:
                user = conn.info.user
                raise ScratchError(
                    f"The scratch server {self.display} refused CREATE DATABASE for role {user!r}.",
                    spec=self.kind,
                    hint=(
                        "Grant it CREATEDB (ALTER ROLE ... CREATEDB), point --scratch at a server "
                        "where it may create databases, or use --scratch embedded."
                    ),
                ) from None
            except psycopg.Error as exc:
                raise ScratchError(
                    f"Could not create the scratch database {name} on {self.display}: "
                    f"{conninfo.scrub(str(exc).strip(), self.admin_dsn)}",
                    spec=self.kind,
                ) from None
        db = ScratchDatabase(dsn=conninfo.with_dbname(self.admin_dsn, name), name=name, server=self)
        try:
            yield db
        finally:
            with shielded():
                if self.keep:
                    if self.on_keep is not None:
                        self.on_keep(db)
                else:
                    drop_database(self.admin_dsn, name)


def unique_name(purpose: str) -> str:
    """A database name that no other run picks: prefix, purpose, time, random."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return f"{SCRATCH_DB_PREFIX}_{purpose}_{stamp}_{secrets.token_hex(4)}"


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database ``name`` (ours), disconnecting anyone still in it.

    A server that cannot be reached (restarting, say: often why we are
    unwinding) is retried for up to ``DROP_RETRY_S``. A failure to drop is
    not raised (we are usually already unwinding from another error) but
    printed as a warning naming the leftover and how to remove it.
    """
    assert name.startswith(SCRATCH_DB_PREFIX), f"refusing to drop a database we did not create: {name}"
    deadline = time.monotonic() + DROP_RETRY_S
    while True:
        try:
            with psycopg.connect(
                admin_dsn, autocommit=True, connect_timeout=conninfo.CONNECT_TIMEOUT_S
            ) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() < deadline:  # unreachable, or starting up: try again
                time.sleep(DROP_RETRY_INTERVAL_S)
                continue
            failure: psycopg.Error = exc
        except psycopg.Error as exc:
            failure = exc
        print(
            f"warning: could not drop scratch database {name} on {conninfo.describe(admin_dsn)}: "
            f"{conninfo.scrub(str(failure).strip(), admin_dsn)} (remove it with DROP DATABASE {name})",
            file=sys.stderr,
        )
        return
