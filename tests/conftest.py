"""Shared fixtures: a real PostgreSQL server and a fresh database per test.

The server is ``VERIFIER_TEST_DSN`` when set (CI points it at the local
PostgreSQL 15), otherwise an embedded server started once for the session.
Every test that touches data gets its own database with a random name,
dropped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from verifier.pg import conninfo
from verifier.scratch import SCRATCH_DB_PREFIX, provision
from verifier.scratch.embedded import TEMP_PREFIX, temp_root

BIN_DIR = Path(sys.executable).parent


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A conninfo for a server where tests may create databases."""
    dsn = os.environ.get("VERIFIER_TEST_DSN")
    if dsn:
        yield dsn
        return
    with provision("embedded") as server:
        yield server.admin_dsn


def _create_db(server_dsn: str, prefix: str) -> str:
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _drop_db(server_dsn: str, name: str) -> None:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def fresh_db(server_dsn: str) -> Iterator[str]:
    """The conninfo of a new, empty database with a random name (dropped afterwards)."""
    name = _create_db(server_dsn, "test")
    try:
        yield conninfo.with_dbname(server_dsn, name)
    finally:
        _drop_db(server_dsn, name)


def _db_factory(server_dsn: str) -> Iterator[object]:
    names: list[str] = []

    def make() -> str:
        names.append(_create_db(server_dsn, "test"))
        return conninfo.with_dbname(server_dsn, names[-1])

    yield make
    for name in names:
        _drop_db(server_dsn, name)


@pytest.fixture
def make_db(server_dsn: str) -> Iterator[object]:
    """A factory of fresh databases (for tests that need several)."""
    yield from _db_factory(server_dsn)


@pytest.fixture(scope="module")
def make_module_db(server_dsn: str) -> Iterator[object]:
    """Like ``make_db``, for databases shared by the tests of one module."""
    yield from _db_factory(server_dsn)


def copy_db(make_db: Any, source: str) -> str:
    """A new database (from ``make_db``) that is a copy of ``source`` (which must be idle)."""
    copy = str(make_db())
    name = psycopg.conninfo.conninfo_to_dict(copy)["dbname"]
    original = psycopg.conninfo.conninfo_to_dict(source)["dbname"]
    with psycopg.connect(psycopg.conninfo.make_conninfo(source, dbname="postgres"), autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(str(name))))
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(str(name)), sql.Identifier(str(original))))
    return copy


@contextlib.contextmanager
def reader_role(dsn: str, *extra: sql.Composable) -> Iterator[str]:
    """A login role that may SELECT every table of ``dsn`` (then ``extra`` statements); its conninfo.

    Each of ``extra`` is a statement with one placeholder, the role.
    """
    name = f"test_reader_{secrets.token_hex(4)}"
    role = sql.Identifier(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(role))
        for statement in extra:
            conn.execute(statement.format(role))  # type: ignore[attr-defined]
    try:
        yield psycopg.conninfo.make_conninfo(dsn, user=name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
            conn.execute(sql.SQL("DROP ROLE {}").format(role))


def scratch_databases(server_dsn: str) -> set[str]:
    """Names of the verifier's scratch databases now on the server."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (SCRATCH_DB_PREFIX + "%",)
        ).fetchall()
    return {r[0] for r in rows}


def sandbox_roles(server_dsn: str) -> set[str]:
    """Names of the rehearsals' sandbox and reader roles now on the server."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'verifier\\_sandbox\\_%' "
            "OR rolname LIKE 'verifier\\_reader\\_%'").fetchall()
    return {r[0] for r in rows}


def embedded_dirs() -> set[str]:
    """Embedded scratch server directories now in the scratch temp root."""
    return {p.name for p in temp_root().glob(TEMP_PREFIX + "*")}


def only_run(report_dir: Path) -> Path:
    """The one run folder in a test's report directory."""
    runs = sorted(p for p in report_dir.iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def run_summary(report_dir: Path) -> dict[str, Any]:
    """summary.json of the one run in ``report_dir``."""
    data = json.loads((only_run(report_dir) / "summary.json").read_text())
    assert isinstance(data, dict)
    return data


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, timeout: float = 600, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> CliResult:
    """Run one of the installed console scripts in a subprocess, as a user would (in ``cwd``)."""
    done = subprocess.run(
        [str(BIN_DIR / args[0]), *args[1:]],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def _maker_pid(name: str) -> int | None:
    """The process id in a scratch database's or sandbox role's name (``..._STAMP_PID_hex8``) or
    an embedded server's directory (``verifier-embedded-PID-...``)."""
    found = (re.search(r"_\d{14}_(\d+)_[0-9a-f]{8}$", name)
             or re.match(re.escape(TEMP_PREFIX) + r"(\d+)-", name))
    return int(found.group(1)) if found else None


def _ours(names: set[str]) -> set[str]:
    """Of ``names``, those this test could have left: made by this process or by one that has
    ended (a CLI run of the test's). Another verifier still running on the machine (a demo in
    another terminal, a second test session) makes its own, which are not this test's; a name
    without a process id is an older verifier's."""
    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    return {n for n in names
            if (pid := _maker_pid(n)) is not None and (pid == os.getpid() or not alive(pid))}


@pytest.fixture
def leftovers(server_dsn: str) -> Iterator[None]:
    """Assert that the test leaves no scratch database or embedded directory behind (of its own:
    see ``_ours``)."""
    dbs_before, dirs_before = scratch_databases(server_dsn), embedded_dirs()
    roles_before = sandbox_roles(server_dsn)
    yield
    assert _ours(scratch_databases(server_dsn) - dbs_before) == set(), "scratch database left behind"
    assert _ours(sandbox_roles(server_dsn) - roles_before) == set(), "sandbox role left behind"
    assert _ours(embedded_dirs() - dirs_before) == set(), "embedded server directory left behind"


def new_of_ours(now: set[str], before: set[str]) -> set[str]:
    """Names in ``now`` and not in ``before`` that this test could have made (``_ours``)."""
    return _ours(now - before)


def made_by(names: set[str], pid: int) -> set[str]:
    """Of ``names``, those made by process ``pid`` (a run the test started with Popen)."""
    return {n for n in names if _maker_pid(n) == pid}


def embedded_processes(dirs: set[str] | None = None) -> list[str]:
    """Live (not zombie) processes whose command line names an embedded server directory: of
    ``dirs`` when given, else any this test could have made (``_ours``). ``ps -ww``: the whole
    command line, whatever the terminal's width."""
    ps = subprocess.run(["ps", "-ww", "-eo", "stat,args"], capture_output=True, text=True).stdout
    found = []
    for line in ps.splitlines():
        if line.startswith("Z"):
            continue
        names = set(re.findall(re.escape(TEMP_PREFIX) + r"[^/\s]+", line))
        if names & (dirs if dirs is not None else _ours(names)):
            found.append(line)
    return found


def table_digests(dsn: str) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent digest of every table (but schema_migrations).

    The same digest the rehearsal's idempotency check uses (rule_checks.fingerprint).
    """
    from verifier.migrate import rule_checks

    return {name.split(".", 1)[1]: value for name, value in rule_checks.fingerprint(dsn).tables.items()}


@pytest.fixture(scope="session")
def demo_source(server_dsn: str) -> Iterator[str]:
    """A small generated demo database (2,000 money rows, seed 7), made once per session."""
    from verifier.demo import generate

    name = _create_db(server_dsn, "test_source")
    try:
        dsn = conninfo.with_dbname(server_dsn, name)
        generate.generate(dsn, rows=2_000, seed=7)
        yield dsn
    finally:
        _drop_db(server_dsn, name)


@pytest.fixture(scope="session")
def dumps(tmp_path_factory: pytest.TempPathFactory, demo_source: str) -> dict[str, Path]:
    """The demo source dumped in every format pg_dump writes: custom, directory, tar, plain."""
    from verifier.pg import tools as pgtools

    out = tmp_path_factory.mktemp("dumps")
    with psycopg.connect(demo_source) as conn:
        pg_dump = pgtools.find("pg_dump", conn.info.server_version // 10000)
    paths = {}
    for fmt, name in (("custom", "demo.dump"), ("directory", "demo.dir"), ("tar", "demo.tar"),
                      ("plain", "demo.sql")):
        paths[fmt] = out / name
        done = pgtools.run(pg_dump, [f"--format={fmt}", "--file", str(paths[fmt])], dsn=demo_source)
        assert done.returncode == 0, done.stderr
    return paths


@pytest.fixture(scope="session")
def small_dump(dumps: dict[str, Path]) -> Path:
    """The small demo database as a custom-format dump."""
    return dumps["custom"]


@pytest.fixture(scope="session")
def targets(server_dsn: str) -> Iterator[dict[str, str]]:
    """What each --db command reads (never writes): a platform backfilled by 301 for verify-cents,
    one migrated through 400 with a clean ledger for verify-ledger."""
    from verifier.demo import generate, ledger
    from verifier.jobs.migrations import up
    from verifier.paths import project_migrations_dir

    names = [_create_db(server_dsn, "test_target"), _create_db(server_dsn, "test_target")]
    try:
        cents, books = (conninfo.with_dbname(server_dsn, n) for n in names)
        generate.generate(cents, rows=2_000, seed=3)
        assert [r.ok for r in up(project_migrations_dir(), cents, to="301", confirm=names[0])] == [True, True]
        ledger.build(books, entries=3_000, seed=3)
        yield {"verify-cents": cents, "verify-ledger": books}
    finally:
        for name in names:
            _drop_db(server_dsn, name)


SLOW_LIST = Path(__file__).with_name("slow.txt")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test function named in tests/slow.txt (measured, see its header), so that
    ``-m "not slow"`` (make test outside CI) runs the rest in a few minutes."""
    listed = {line.strip() for line in SLOW_LIST.read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    for item in items:
        if item.nodeid.split("[", 1)[0] in listed:
            item.add_marker(pytest.mark.slow)


def pg_dump_custom(dsn: str, out: Path) -> Path:
    """``pg_dump -Fc`` of ``dsn`` to ``out`` with the pg_dump of the server's own major version (the
    embedded wheel's for the embedded server, the system's for the one of VERIFIER_TEST_DSN)."""
    from verifier.pg import tools as pgtools

    with psycopg.connect(dsn) as conn:
        major = conn.info.server_version // 10000
    done = pgtools.run(pgtools.find("pg_dump", major), ["--format=custom", "--file", str(out)], dsn=dsn)
    assert done.returncode == 0, done.stderr
    return out
