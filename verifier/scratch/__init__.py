"""Scratch PostgreSQL: where a rehearsal may write.

``provision(spec)`` is a context manager yielding a ``ScratchServer``
(``server.py``); leaving the block removes what it created: the databases,
the container, the embedded server and its directory. ``restore`` fills a
scratch database from a snapshot.

Specs: ``embedded`` (default, ``embedded.py``), a ``postgresql://`` URL of a
server where we may CREATE DATABASE (``remote.py``), ``docker`` or
``docker:IMAGE`` (``container.py``). The embedded server finds our SQL
stand-ins for the contrib extensions its wheel lacks (``standin.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from verifier.errors import UsageError
from verifier.pg import conninfo
from verifier.scratch.server import (
    SCRATCH_DB_PREFIX,
    ScratchDatabase,
    ScratchServer,
    drop_database,
    unique_name,
)

__all__ = ["DEFAULT_SPEC", "SCRATCH_DB_PREFIX", "ScratchDatabase", "ScratchServer", "drop_database",
           "provision", "unique_name"]

DEFAULT_SPEC = "embedded"


@contextlib.contextmanager
def provision(spec: str = DEFAULT_SPEC, *, keep: bool = False) -> Iterator[ScratchServer]:
    """Yield a scratch server for ``spec`` and remove it afterwards.

    Raises ``UsageError`` for an unknown spec, ``ScratchError`` or
    ``DatabaseUnreachable`` when the server cannot be had.
    """
    spec = spec.strip()
    if spec == "embedded":
        from verifier.scratch.embedded import embedded_server

        with embedded_server() as server:
            yield server
    elif spec == "docker" or spec.startswith("docker:"):
        from verifier.scratch.container import docker_server

        image = spec.partition(":")[2] or None
        with docker_server(image) as server:
            yield server
    elif spec.startswith(("postgresql://", "postgres://")) or "=" in spec:
        from verifier.scratch.remote import url_server

        with url_server(spec, keep=keep) as server:
            yield server
    else:
        raise UsageError(
            f"Unknown --scratch value {conninfo.redact(spec)!r}.",
            hint="Use 'embedded', a postgresql:// URL, 'docker' or 'docker:IMAGE'.",
        )
