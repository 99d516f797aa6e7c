"""Connection strings: parse, redact, connect with our safety settings.

Reads nothing but its arguments; ``connect`` opens a psycopg connection and
raises ``DatabaseUnreachable`` (never psycopg's own error) when it cannot.
Passwords never leave this module in text meant for people: ``redact`` is
what logs, reports and messages show.

Names: a ``url`` is a database the user named (the ``--db`` target, a
``--scratch`` server, the database ``verifier migrations`` works on); a
``dsn`` is one the verifier made or derived (a scratch database, a copy of
it). Both are connection strings of either form, URL or ``key=value``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import NoReturn
from urllib.parse import unquote

import psycopg
from psycopg import conninfo as pg_conninfo

from verifier.errors import DatabaseUnreachable, UsageError, VerifierError

APPLICATION_NAME = "financial-migration-verifier"
CONNECT_TIMEOUT_S = 10

# A password can hide in a URL's userinfo or in a key=value pair; both are
# masked in any text that might reach a person (error messages included).
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*):[^@\s]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def parse(dsn: str) -> dict[str, str]:
    """Return the connection parameters of ``dsn`` (a URL or key=value string).

    Raises ``UsageError`` naming the (redacted) string when it does not parse.
    """
    scheme = re.match(r"\s*([A-Za-z][A-Za-z0-9+.-]*)://", dsn)
    if scheme and scheme.group(1).lower() not in ("postgresql", "postgres"):
        # libpq would read it as key=value pairs and say only 'missing "=" after ...'.
        raise UsageError(
            f"The connection string {redact(dsn)!r} is not valid: a PostgreSQL URL starts with "
            f"postgresql:// or postgres://, not {scheme.group(1)}://.", hint=CONNINFO_HINT)
    try:
        params = pg_conninfo.conninfo_to_dict(dsn)
    except (psycopg.ProgrammingError, ValueError) as exc:
        raise UsageError(
            f"The connection string {redact(dsn)!r} is not valid (libpq: {scrub(str(exc), dsn).strip()}).",
            hint=CONNINFO_HINT,
        ) from None
    return {k: str(v) for k, v in params.items() if v is not None}


CONNINFO_HINT = ("Give a URL, postgresql://user@host:5432/dbname, or key=value pairs, host=localhost "
                 "port=5432 dbname=app user=verifier (PostgreSQL 15, \"Connection Strings\"); keep the "
                 "password out of it, in PGPASSWORD or ~/.pgpass.")


_URL_AUTHORITY = re.compile(r"\s*postgres(?:ql)?://([^/?#]*)")
SECRET_CHARS_MIN = 3  # shorter candidates would mask ordinary words and digits of a message


def _secrets(dsn: str) -> set[str]:
    """Every text of ``dsn`` that may be its password, as libpq reads it and as a person meant it.

    A URL whose user or password holds an unescaped ``@``, ``:``, ``/`` or
    ``?`` parses differently in libpq (the password may become the port, and
    libpq's error message quotes it): everything after the first ``:`` of
    the userinfo, up to the last ``@``, counts as the password too, and so
    does each piece of it. (A query holding ``@`` may mask the host or port
    in a message: a price paid for never showing a password.)
    """
    found: set[str] = set()
    try:
        password = pg_conninfo.conninfo_to_dict(dsn).get("password")
    except (psycopg.Error, ValueError):
        password = None
    if password:
        found.add(str(password))
    url = _URL_AUTHORITY.match(dsn)
    if url:
        # The userinfo up to the authority's last @, and (an unescaped / or ? in the user or
        # password ends the authority early) up to the last @ before the query, or at all.
        rest = dsn[url.start(1):]
        for span in (url.group(1), rest.split("?", 1)[0], rest):
            userinfo = span.rsplit("@", 1)[0] if "@" in span else ""
            if ":" in userinfo:
                candidate = userinfo.split(":", 1)[1]
                found.add(candidate)
                found.update(re.split(r"[/@:?#]", candidate))  # libpq may quote a piece of it
    found |= {unquote(s) for s in found}
    return {s for s in found if len(s) >= SECRET_CHARS_MIN}


def _mask(text: str, dsn: str) -> str:
    for secret in sorted(_secrets(dsn), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\1:***@", _mask(dsn, dsn))
    return _KV_PASSWORD.sub(r"\1***", text)


def scrub(text: str, *dsns: str) -> str:
    """``text`` with every password of ``dsns`` (and any URL password) masked."""
    for dsn in dsns:
        text = _mask(text, dsn)
    return redact(text)


def describe(dsn: str) -> str:
    """A short, password-free name for a server and database: ``user@host:port/db``."""
    try:
        p = pg_conninfo.conninfo_to_dict(dsn)
    except (psycopg.Error, ValueError):
        return redact(dsn)
    # What the string leaves out, libpq takes from its environment variables (PostgreSQL 15,
    # "Environment Variables"): a target named by PGHOST, PGPORT... is described as reached.
    env = os.environ
    host = str(p.get("host") or p.get("hostaddr") or env.get("PGHOST") or env.get("PGHOSTADDR")
               or "localhost")
    port = str(p.get("port") or env.get("PGPORT") or "5432")
    user = str(p.get("user") or env.get("PGUSER") or "")
    db = str(p.get("dbname") or env.get("PGDATABASE") or user)
    service = p.get("service") or env.get("PGSERVICE")
    named = f"{user + '@' if user else ''}{host}:{port}/{db}"
    return scrub(f"service {service} ({named})" if service else named, dsn)


def with_dbname(dsn: str, dbname: str) -> str:
    """``dsn`` pointing at another database of the same server."""
    return pg_conninfo.make_conninfo(dsn, dbname=dbname)


def connect(dsn: str, *, autocommit: bool = False, what: str = "database") -> psycopg.Connection:
    """Open a connection that names itself and cannot hang forever on connect.

    Raises ``DatabaseUnreachable`` with the redacted target and the server's
    reason when the connection fails.
    """
    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            application_name=APPLICATION_NAME,
            connect_timeout=CONNECT_TIMEOUT_S,
            # Text as UTF-8 whatever ALTER DATABASE/ROLE ... SET client_encoding says: a setting of the
            # connection request wins over those defaults (PostgreSQL 15, "Setting Parameters").
            client_encoding="UTF8",
        )
    except psycopg.OperationalError as exc:
        reason = scrub(str(exc).strip(), dsn).replace("\n", " ")
        password = any(w in reason for w in ("password authentication failed", "no password supplied",
                                             "password is required"))
        # too_many_connections (53300), of the server, the role or the database: psycopg gives no
        # SQLSTATE for a connection refused at startup, so the server's (English) text tells it.
        crowded = exc.sqlstate == "53300" or any(w in reason for w in ("too many connections",
                                                                      "too many clients"))
        raise DatabaseUnreachable(
            f"Could not connect to the {what} {describe(dsn)}: {reason.rstrip('.')}.",
            target=describe(dsn),
            hint=("Give the password in PGPASSWORD or in ~/.pgpass (hostname:port:database:username:"
                  "password, mode 0600), not in the URL, and check the user name." if password else
                  "The server, or the role's or database's CONNECTION LIMIT, admits no more "
                  "connections: a ledger audit needs `workers` + 1 of them at once ([ledger] workers in "
                  "the configuration, at least 1): raise the limit to that, or lower workers." if crowded else
                  "Check the host, port, user, password and database name in the URL."),
        ) from None
    except (psycopg.ProgrammingError, ValueError) as exc:  # ValueError: a host name IDNA cannot encode
        raise UsageError(
            f"The connection string {redact(dsn)!r} is not valid: {scrub(str(exc), dsn)}"
        ) from None


# SQLSTATE classes of an OperationalError that mean the connection is gone (PostgreSQL's
# documentation, Appendix A "PostgreSQL Error Codes"): 08 connection exception, 57P operator
# intervention (the server shutting down or restarting); so is an error of severity FATAL or PANIC
# (the server ends the session: "Message Severity Levels"), and one without a SQLSTATE (on our side
# of the socket).
LOST_CONNECTION_CLASSES = ("08", "57P")
LOST_SEVERITIES = ("FATAL", "PANIC")
STANDBY_HINT = ("On a hot standby, recovery cancels what conflicts with it: set hot_standby_feedback "
                "or raise max_standby_streaming_delay on the standby, or audit the primary.")
OPERATIONAL_HINTS = {
    "40": STANDBY_HINT,  # 40001 "conflict with recovery"
    "53": "The server ran out of a resource (disk, memory, connections) or reached a limit it is "
          "configured with (temp_file_limit): free it or raise it, or run when the server is less busy.",
    "54": "The ledger or the tables exceed a limit of PostgreSQL for a statement this version writes: "
          "report this with the run's report folder.",
}


@contextlib.contextmanager
def reading(url: str, statement_timeout_s: float) -> Iterator[None]:
    """Turn a timed-out statement, a lock wait, a statement the server refused for want of
    resources or beyond one of its limits, or a dropped connection on ``url`` into a
    ``VerifierError`` that says which."""
    where = describe(url)
    try:
        yield
    except psycopg.errors.QueryCanceled as exc:  # before OperationalError: it is one
        # The server's text, in English unless its lc_messages says otherwise (then: as a timeout).
        if "due to user request" in (exc.diag.message_primary or ""):
            raise VerifierError(f"A statement on {where} was cancelled by another session "
                                f"({exc.diag.message_primary}).",
                                hint="Run again; if it recurs, find who cancels sessions on this server "
                                     "(pg_cancel_backend, a pooler, a watchdog).") from None
        raise VerifierError(f"A statement on {where} was cancelled ({exc.diag.message_primary}): "
                            f"the statement_timeout of {statement_timeout_s} s was reached.",
                            hint="Raise statement_timeout_s in verifier.toml (or in [tool.verifier] of "
                                 "pyproject.toml).") from None
    except psycopg.errors.LockNotAvailable as exc:  # also an OperationalError, but not a lost connection
        raise VerifierError(f"A statement on {where} waited longer than lock_timeout_s for a lock that "
                            f"another session holds ({exc.diag.message_primary}).",
                            hint="Run when no migration holds the tables, or raise lock_timeout_s in "
                                 "verifier.toml (or in [tool.verifier] of pyproject.toml).") from None
    except psycopg.OperationalError as exc:
        state = exc.sqlstate or ""
        severity = exc.diag.severity_nonlocalized or exc.diag.severity or ""
        if state and not state.startswith(LOST_CONNECTION_CLASSES) and severity not in LOST_SEVERITIES:
            # The server refused a statement and the connection is fine: out of resources (class
            # 53), a limit of PostgreSQL's exceeded (54), an I/O error (58), ...
            raise VerifierError(
                f"A statement on {where} failed: {exc.diag.message_primary} (SQLSTATE {state}, "
                f"{type(exc).__name__}).",
                hint=OPERATIONAL_HINTS.get(state[:2], "Report this with the run's report folder.")) from None
        _lost(exc, where, url)
    except psycopg.Error as exc:
        # Another class the server ends the session with (idle_in_transaction_session_timeout is
        # FATAL 25P03): the connection is gone all the same. Else not ours to explain.
        if (exc.diag.severity_nonlocalized or exc.diag.severity or "") not in LOST_SEVERITIES:
            raise
        _lost(exc, where, url)


def _lost(exc: psycopg.Error, where: str, url: str) -> NoReturn:
    """Raise the ``VerifierError`` of a connection lost during the run (the server's reason, with
    ``url``'s password scrubbed)."""
    state = exc.sqlstate or ""
    reason = exc.diag.message_primary or str(exc).strip()
    raise VerifierError(f"The connection to {where} failed during the run: {scrub(reason, url)}",
                        hint=STANDBY_HINT if state.startswith("40") else None) from None
