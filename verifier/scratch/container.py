"""A scratch server in a throwaway Docker container (testcontainers).

Needs a running Docker engine. The image must behave like the official
``postgres`` image (honour POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB).
Ryuk, testcontainers' reaper container, is disabled unless the user enabled
it: we stop our container ourselves, and Ryuk's image is often unreachable.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

from verifier.errors import ScratchError
from verifier.scratch.server import ScratchServer
from verifier.signals import shielded

DEFAULT_IMAGE = "postgres:16"
CONTAINER_USER = "verifier"
CONTAINER_DB = "verifier"


def default_image() -> str:
    return os.environ.get("VERIFIER_DOCKER_IMAGE") or DEFAULT_IMAGE


@contextlib.contextmanager
def docker_server(image: str | None) -> Iterator[ScratchServer]:
    """Start a PostgreSQL container from ``image``; yield it; remove it.

    Raises ``ScratchError`` when testcontainers is missing, the engine is
    not reachable, or the container does not become ready.
    """
    image = image or default_image()
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    try:
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # older testcontainers releases kept it here
            from testcontainers.postgres import PostgresContainer
    except ImportError:
        raise ScratchError(
            "--scratch docker needs the testcontainers package.",
            spec="docker",
            hint="pip install 'financial-migration-verifier[docker]'.",
        ) from None
    container = None
    try:
        # The constructor already talks to the engine: it fails when none runs.
        container = PostgresContainer(
            image,
            username=CONTAINER_USER,
            password=secrets.token_hex(16),
            dbname=CONTAINER_DB,
            driver=None,
        )
        container.start()
    except Exception as exc:  # docker-py and testcontainers raise many kinds
        if container is not None:
            with shielded(), contextlib.suppress(Exception):
                container.stop()
        raise ScratchError(
            f"Could not start a PostgreSQL container from image {image!r}: "
            f"{type(exc).__name__}: {str(exc).strip()[:400]}",
            spec="docker",
            hint="Is a Docker engine running (docker info), and is the image available locally?",
        ) from None
    try:
        server = ScratchServer(kind="docker", admin_dsn=container.get_connection_url())
        server.read_version()
        yield server
    finally:
        with shielded(), contextlib.suppress(Exception):
            container.stop()
