"""The demo data generator: a creator platform just before the cents migration.

``generate(dsn, rows, seed)`` fills an empty database (ours: a scratch
database) with the base schema and about ``rows`` money rows spread over the
platform's tables; ``write_snapshot`` then dumps it with pg_dump -Fc. The
data is a function of (rows, seed) only. All work is set-based SQL in the
server (see demo_data.sql): the client sends ~25 statements whatever the size.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.types.numeric import Int8

from verifier.errors import ScratchError, ToolError, UsageError
from verifier.migrate import plan as migration_plan
from verifier.migrate import series
from verifier.paths import base_schema_file, project_migrations_dir
from verifier.pg import conninfo, tools

ROWS_MIN = 1_000
ROWS_MAX = 10_000_000
DEFAULT_ROWS = 20_000
DEFAULT_SEED = 42

# Share of the money rows each table gets, in thousandths. Users (and their
# token balances) are 4% of the rows; creators are every tenth user; tiers,
# stream rates and the gift catalogue follow from those counts.
TABLE_SHARE = {
    "token_transactions": 200,
    "tips": 280,
    "payments": 100,
    "creator_earnings": 80,
    "gift_transactions": 80,
    "ppv_messages": 50,
    "subscriptions": 40,
    "show_tickets": 30,
    "vod_purchases": 30,
    "live_shopping_orders": 20,
    "shop_items": 8,
    "creator_payouts": 5,
    "withdrawals": 5,
    "creator_offers": 2,
    "ticketed_shows": 2,
}
USERS_SHARE = 40
STATEMENTS_FILE = Path(__file__).with_name("demo_data.sql")
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Plan:
    """Row counts per table for a requested size (validated, derived)."""

    rows: int
    seed: int
    users: int
    creators: int
    counts: dict[str, int]

    @property
    def money_rows(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Generated:
    plan: Plan
    duration_s: float

    @property
    def rows_per_s(self) -> float:
        return self.plan.money_rows / self.duration_s if self.duration_s > 0 else 0.0


def plan(rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> Plan:
    """Split ``rows`` money rows over the tables. Raises ``UsageError`` out of range."""
    if not ROWS_MIN <= rows <= ROWS_MAX:
        raise UsageError(f"--rows must be between {ROWS_MIN:,} and {ROWS_MAX:,} (got {rows:,}).")
    total_share = sum(TABLE_SHARE.values()) + 2 * USERS_SHARE
    users = max(20, rows * USERS_SHARE // total_share)
    creators = max(2, users // 10)
    counts = {t: max(1, rows * s // total_share) for t, s in TABLE_SHARE.items()}
    counts.update(
        users=users,
        token_balances=users,
        subscription_tiers=3 * creators,
        stream_rates=creators,
        virtual_gifts=20,
    )
    result = Plan(rows, seed, users, creators, counts)
    # The tables reference creators by id 10*k: there must be that many users.
    assert result.creators * 10 <= result.users
    return result


def statements(path: Path = STATEMENTS_FILE) -> list[tuple[str, str]]:
    """Named statements (``-- name: X``) in order, from demo_data.sql or another file like it."""
    text = path.read_text()
    parts = _NAME.split(text)[1:]
    named = list(zip(parts[0::2], parts[1::2], strict=True))
    assert named and named[0][0] == "helpers"
    return [(name, body.strip()) for name, body in named]


def generate(dsn: str, rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> Generated:
    """Create the base schema in the (empty) database at ``dsn`` and fill it.

    Writes only to that database. Raises ``UsageError`` for a size out of
    range, ``DatabaseUnreachable`` when the database cannot be reached.
    """
    p = plan(rows, seed)
    started = time.monotonic()
    assert len(apply_own_migrations(dsn, lambda f: f.path == base_schema_file())) == 1
    with conninfo.connect(dsn, autocommit=True, what="demo database") as conn:
        _skip_row_triggers(conn)
        for name, body in statements():
            if name.startswith("helpers"):
                conn.execute(body)
                continue
            # bigint, always: psycopg sends a small int as smallint, where 3 * creators could overflow.
            params = {k: Int8(v) for k, v in {
                "seed": seed,
                "users": p.users,
                "creators": p.creators,
                "shows": p.counts["ticketed_shows"],
                "n": p.counts.get(name, 0),
            }.items()}
            with conn.transaction():
                cur = conn.execute(body, params)
            assert cur.rowcount == p.counts[name], (name, cur.rowcount, p.counts[name])
        conn.execute("ANALYZE")
    return Generated(p, time.monotonic() - started)


def apply_own_migrations(dsn: str, wanted: Callable[[migration_plan.MigrationFile], bool]) -> list[str]:
    """Apply the project's own migrations that are ``wanted``, in order, to the demo database at ``dsn``.

    The runner records them in schema_migrations (created first, as a
    rehearsal then finds it). Returns their versions; every one must apply.
    """
    files = [f for f in migration_plan.discover(project_migrations_dir()).files if wanted(f)]
    series.applied(dsn)
    for result in series.apply_files(dsn, files):
        if result.failure is not None:
            # Our own migrations apply to our own demo database; failing, the scratch server broke
            # (its directory removed, its disk full), or a migration in this release is wrong.
            raise ScratchError(f"The demo database could not be built: {result.failure.describe()}",
                               spec="embedded",
                               hint="Check the scratch folder (VERIFIER_SCRATCH_DIR) and its free space, "
                                    "and run again; if it recurs, report it.")
    return [f.version for f in files]


def _skip_row_triggers(conn: psycopg.Connection) -> None:
    """Skip per-row foreign-key checks while generating, where we may.

    They cost ~40% of the time and prove nothing here: every reference is
    built in range, and pg_restore re-creates and so re-validates every
    foreign key of the dump. A role that may not set this just pays the cost.
    """
    try:
        with conn.transaction():
            conn.execute("SET session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        pass


def write_snapshot(dsn: str, out: Path) -> None:
    """Dump the database at ``dsn`` to ``out`` in pg_dump's custom format.

    Uses the pg_dump of the server's own major version where one is
    installed, so the dump restores into servers of that version too.
    Raises ``ToolError`` when pg_dump fails.
    """
    with conninfo.connect(dsn, autocommit=True, what="demo database") as conn:
        server_major = conn.info.server_version // 10000
    tool = tools.find("pg_dump", server_major)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = tools.run(tool, ["--format=custom", "--no-owner", "--file", str(out)], dsn=dsn)
    if done.returncode != 0:
        raise ToolError(f"pg_dump could not write {out}: {tools.stderr_tail(done.stderr)}",
                        tool="pg_dump")
