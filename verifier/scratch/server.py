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
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from verifier.errors import ScratchError
from verifier.pg import conninfo
from verifier.signals import shielded

SCRATCH_DB_PREFIX = "verifier_scratch"
SANDBOX_ROLE_PREFIX = "verifier_sandbox"  # + the database name's rest: one role per database
READER_ROLE_PREFIX = "verifier_reader"  # the same, for the role that reads and records
DROP_RETRY_S = 15.0  # how long cleanup waits for a server that went away (a restart) to come back
DROP_RETRY_INTERVAL_S = 0.5


@dataclass(frozen=True)
class ScratchDatabase:
    """A database we created and may write to. Both DSNs may hold a password.

    ``dsn`` connects as what the verifier reads and records with: the
    rehearsal's reader role (``reader_role``) where the server made one, else
    the scratch server's own role (``admin_dsn``); ``sandbox_dsn`` as the
    rehearsal's sandbox role, where
    the snapshot's and the migrations' SQL runs (``untrusted_dsn``): a role
    that owns this database and nothing else (see ``ScratchServer.database``).
    """

    dsn: str = field(repr=False)
    name: str
    server: ScratchServer
    sandbox_dsn: str = field(default="", repr=False)
    sandbox_role: str | None = None
    reader_role: str | None = None  # the role of ``dsn`` when it is not the server's own

    @property
    def admin_dsn(self) -> str:
        """This database, as the scratch server's own role (what only it may do: CREATE EXTENSION)."""
        return conninfo.with_dbname(self.server.admin_dsn, self.name)

    @property
    def display(self) -> str:
        return conninfo.describe(self.dsn)

    @property
    def untrusted_dsn(self) -> str:
        """Where SQL we did not write runs: the sandbox role's, else (no sandbox) ``dsn``."""
        return self.sandbox_dsn or self.dsn


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
    # Embedded servers' directories that runs killed with SIGKILL had left, removed on the way.
    reaped: tuple[str, ...] = ()

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
    def database(self, purpose: str = "rehearsal", *, sandbox: bool = False) -> Iterator[ScratchDatabase]:
        """Create a uniquely named database, yield it, drop it (unless ``keep``).

        With ``sandbox`` and a superuser on the server, a role is created for
        the database (``verifier_sandbox_*``: LOGIN with a random password,
        NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS,
        granted no role), the database is created with it as owner, and
        ``sandbox_dsn`` connects as it; the role is dropped with the
        database. Such a role may not COPY to or from a program or a server
        file, ALTER SYSTEM, create roles, event triggers or untrusted
        extensions, or drop or change any other database (PostgreSQL 15,
        "Role Attributes", "Predefined Roles", CREATE EVENT TRIGGER, CREATE
        EXTENSION): a snapshot's or a migration's attempt fails inside the
        server. Without a superuser there is no sandbox (``sandbox_role``
        None) and the caller says so.

        Raises ``ScratchError`` when the server refuses CREATE DATABASE (or CREATE ROLE).
        """
        name = unique_name(purpose)
        role = reader = None
        db: ScratchDatabase | None = None
        try:  # from before the first CREATE: a signal at any point leaves nothing behind
            with conninfo.connect(self.admin_dsn, autocommit=True, what="scratch server") as conn:
                if sandbox and _is_superuser(conn):
                    role = name.replace(SCRATCH_DB_PREFIX, SANDBOX_ROLE_PREFIX, 1)
                    password = secrets.token_hex(24)
                    _create_role(conn, role, password, SANDBOX_ATTRIBUTES, self)
                    if conn.info.server_version >= 140000:  # pg_read_all_data is 14's
                        reader, reader_password = (name.replace(SCRATCH_DB_PREFIX, READER_ROLE_PREFIX, 1),
                                                   secrets.token_hex(24))
                        _create_role(conn, reader, reader_password, READER_ATTRIBUTES, self)
                self._create(conn, name, role)
                if reader is not None:
                    conn.execute(sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(
                        sql.Identifier(name), sql.Identifier(reader)))
            dsn = conninfo.with_dbname(self.admin_dsn, name)
            db = ScratchDatabase(
                dsn=(psycopg.conninfo.make_conninfo(dsn, user=reader, password=reader_password) if reader
                     else dsn),
                name=name, server=self,
                sandbox_dsn=psycopg.conninfo.make_conninfo(dsn, user=role, password=password) if role else "",
                sandbox_role=role, reader_role=reader)
            yield db
        finally:
            with shielded():
                if self.keep and db is not None:
                    if self.on_keep is not None:
                        self.on_keep(db)
                else:
                    drop_database(self.admin_dsn, name)
                    for made in (reader, role):
                        if made is not None:
                            drop_role(self.admin_dsn, made)

    def _create(self, conn: psycopg.Connection[Any], name: str, owner: str | None) -> None:
        """CREATE DATABASE ``name`` (owned by ``owner``); ``ScratchError`` when the server refuses."""
        try:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'{}").format(
                    sql.Identifier(name),
                    sql.SQL(" OWNER {}").format(sql.Identifier(owner)) if owner else sql.SQL(""),
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


def _is_superuser(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


# The sandbox role: may log in, nothing else. INHERIT: the owner of a database holds public's
# rights through pg_database_owner.
SANDBOX_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
# The reader role: reads every table (pg_read_all_data), every row (BYPASSRLS), writes only its own
# record of the originals (CREATE on the scratch database, granted after it is made).
READER_ATTRIBUTES = ("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS INHERIT "
                     "IN ROLE pg_read_all_data")


def _create_role(conn: psycopg.Connection[Any], role: str, password: str, attributes: str,
                 server: ScratchServer) -> None:
    """Create ``role`` with ``attributes``; its password goes to the server already hashed
    (libpq's PQencryptPasswordConn, in the server's password_encryption), never in clear text."""
    hashed = conn.pgconn.encrypt_password(password.encode(), role.encode()).decode()
    try:
        conn.execute(sql.SQL("CREATE ROLE {} " + attributes + " PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(hashed)))
    except psycopg.Error as exc:
        raise ScratchError(
            f"Could not create the role {role} on {server.display}: "
            f"{conninfo.scrub(str(exc).strip(), server.admin_dsn)}", spec=server.kind) from None


def drop_role(admin_dsn: str, role: str) -> None:
    """Drop role ``role`` (ours, made for a scratch database); a failure is printed as a warning,
    never raised."""
    assert role.startswith((SANDBOX_ROLE_PREFIX, READER_ROLE_PREFIX)), f"not a role we create: {role}"
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=conninfo.CONNECT_TIMEOUT_S) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    except psycopg.Error as exc:
        print(f"warning: could not drop the role {role} on {conninfo.describe(admin_dsn)}: "
              f"{conninfo.scrub(str(exc).strip(), admin_dsn)} (remove it with DROP ROLE {role})",
              file=sys.stderr)


def unique_name(purpose: str) -> str:
    """A database name that no other run picks: prefix, purpose, UTC time, the process id of
    the run that made it (a leftover says which process left it), random; at most 63 bytes
    (PostgreSQL's NAMEDATALEN - 1)."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    name = f"{SCRATCH_DB_PREFIX}_{purpose}_{stamp}_{os.getpid()}_{secrets.token_hex(4)}"
    assert len(name) <= 63, name
    return name


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
                # A restored snapshot may have made its database a template (or closed it to
                # connections), which DROP DATABASE refuses.
                with contextlib.suppress(psycopg.errors.InvalidCatalogName):
                    conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false ALLOW_CONNECTIONS true")
                                 .format(sql.Identifier(name)))
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
