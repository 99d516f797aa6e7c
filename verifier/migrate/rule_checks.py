"""Rehearsal checks of the team's own migration rules, in scratch only.

``not_idempotent``: a copy of the migrated database gets the migration a
second time; the rule breaks when that fails or changes the schema or any
table's rows. ``down_mismatch``: another copy gets the down block; the rule
breaks when the schema differs from the schema before the migration.
Copies are ``CREATE DATABASE ... TEMPLATE`` of our own scratch database,
made and dropped here; the database under rehearsal is never changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from verifier.config.migrations import DEFAULT_TRACKER, Tracker
from verifier.errors import ScratchError
from verifier.findings import Finding
from verifier.migrate.plan import MigrationFile
from verifier.migrate.runner import Runner
from verifier.pg import conninfo
from verifier.pg.snapshot import configure
from verifier.scratch.server import ScratchDatabase, drop_database, unique_name
from verifier.signals import shielded

# The schema, as rows of text that do not depend on physical details (column
# order, OIDs, constraint validation state): each row proves one object's
# shape. NOT VALID is stripped: validating is a data check, not a shape change.
# Schemas the migrations' role may not use are left out: the rehearsal's record of the originals
# (owned by its reader role, whatever its name) and nothing the migrations could change.
SCHEMA_SQL = """
SELECT 'column', format('%s.%s %s %s default %s', c.relname, a.attname,
       format_type(a.atttypid, a.atttypmod), CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END,
       pg_get_expr(d.adbin, d.adrelid))
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
  AND n.nspname NOT LIKE 'pg_t%'
UNION ALL
SELECT 'constraint', format('%s %s %s', c.conrelid::regclass, c.conname,
       replace(pg_get_constraintdef(c.oid), ' NOT VALID', ''))
FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
UNION ALL
SELECT 'index', pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
  AND n.nspname NOT LIKE 'pg_t%'
UNION ALL
SELECT 'function', format('%s(%s) %s', p.proname, pg_get_function_identity_arguments(p.oid),
       md5(p.prosrc))
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
UNION ALL
SELECT 'trigger', pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
UNION ALL
SELECT 'relation', format('%s.%s %s', n.nspname, c.relname, c.relkind)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
  AND n.nspname NOT LIKE 'pg_t%'
ORDER BY 1, 2
"""

TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
  AND n.nspname NOT LIKE 'pg_t%%' AND (n.nspname, c.relname) <> (%s, %s)
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class Fingerprint:
    schema: tuple[tuple[str, str], ...]
    tables: dict[str, tuple[int, str]]  # table -> (rows, digest of its rows)

    def schema_diff(self, other: Fingerprint) -> list[str]:
        mine, theirs = set(self.schema), set(other.schema)
        return ([f"- {k} {v}" for k, v in sorted(mine - theirs)]
                + [f"+ {k} {v}" for k, v in sorted(theirs - mine)])

    def table_diff(self, other: Fingerprint) -> list[str]:
        names = sorted(set(self.tables) | set(other.tables))
        return [n for n in names if self.tables.get(n) != other.tables.get(n)]


def schema_of(conn: psycopg.Connection, tracker: Tracker = DEFAULT_TRACKER) -> tuple[tuple[str, str], ...]:
    """The schema rows, without the migration tracker's (the runner's bookkeeping, which the
    default tracker creates when absent)."""
    # No parameters: the query's format() patterns must reach the server as written.
    rows = conn.execute(SCHEMA_SQL).fetchall()
    return tuple((str(k), str(v)) for k, v in rows if tracker.table not in str(v))


def fingerprint(dsn: str, *, with_data: bool = True, tracker: Tracker = DEFAULT_TRACKER) -> Fingerprint:
    """The schema and (optionally) a digest of every table's rows, order-free; the migration
    tracker's table left out (recording a migration is not a change it makes)."""
    with conninfo.connect(dsn, what="scratch database") as conn:
        # The migrations' role may define functions and operators in public and set the database's
        # search_path: ours resolve in pg_catalog (the role may define casts of its row types too,
        # so a row's text is its output function's, not a ::text cast).
        configure(conn, {"search_path": "pg_catalog, pg_temp"})
        conn.commit()
        schema = schema_of(conn, tracker)
        tables: dict[str, tuple[int, str]] = {}
        if with_data:
            for nsp, rel in conn.execute(TABLES_SQL, (tracker.schema, tracker.table)).fetchall():
                row = conn.execute(sql.SQL(
                    "SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '') "
                    "FROM (SELECT md5(format('%s', t)) AS h FROM {}.{} t) r").format(
                        sql.Identifier(nsp), sql.Identifier(rel))).fetchone()
                assert row is not None
                tables[f"{nsp}.{rel}"] = (int(row[0]), str(row[1]))
    return Fingerprint(schema, tables)


@contextlib.contextmanager
def clone(db: ScratchDatabase, purpose: str) -> Iterator[str]:
    """A copy of scratch database ``db`` (which must have no open connections), owned by its
    sandbox role (when it has one), and the DSN to reach it as that role."""
    name = unique_name(purpose)
    admin = db.server.admin_dsn
    try:  # from before CREATE DATABASE: a signal while it runs must not leave the copy behind
        with conninfo.connect(admin, autocommit=True, what="scratch server") as conn:
            strategy = (sql.SQL(" STRATEGY FILE_COPY") if conn.info.server_version >= 150000
                        else sql.SQL(""))
            owner = (sql.SQL(" OWNER {}").format(sql.Identifier(db.sandbox_role)) if db.sandbox_role
                     else sql.SQL(""))
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}{}{}").format(
                    sql.Identifier(name), sql.Identifier(db.name), strategy, owner))
            except psycopg.errors.ObjectInUse as exc:
                raise ScratchError(
                    f"Could not copy the scratch database {db.name} to check {purpose}: another session "
                    f"is connected to it ({exc.diag.message_detail or exc.diag.message_primary}).",
                    spec=db.server.kind,
                    hint="Nothing else should use a scratch database during a rehearsal.") from None
            except psycopg.Error as exc:
                raise ScratchError(f"Could not copy the scratch database {db.name} to check {purpose}: "
                                   f"{conninfo.scrub(str(exc).strip(), admin)}",
                                   spec=db.server.kind) from None
        yield conninfo.with_dbname(db.untrusted_dsn, name)
    finally:
        with shielded():
            drop_database(admin, name)


def check_idempotent(db: ScratchDatabase, f: MigrationFile, after: Fingerprint,
                     timeout_s: float | None, tracker: Tracker = DEFAULT_TRACKER) -> Finding | None:
    """Apply ``f`` again to a copy of ``db``; a failure or any change breaks the rule."""
    with clone(db, "idempotency") as copy, Runner(copy, timeout_s=timeout_s) as runner:
        again = runner.apply(f, record=False)
        runner.close()
        if again.failure is not None:
            return Finding("not_idempotent", "error", migration=f.path.name,
                           message=f"{f.path.name} fails when applied a second time: "
                                   f"{again.failure.describe()}",
                           detail={"failure": again.failure.__dict__})
        second = fingerprint(copy, tracker=tracker)
    schema_changes = after.schema_diff(second)
    tables = after.table_diff(second)
    if not schema_changes and not tables:
        return None
    changed = [p for p in ("the schema" if schema_changes else "",
                           "the rows of " + ", ".join(tables) if tables else "") if p]
    return Finding("not_idempotent", "error", migration=f.path.name,
                   count=len(schema_changes) + len(tables),
                   table=tables[0] if len(tables) == 1 else None,
                   message=f"{f.path.name} changes {' and '.join(changed)} when applied a second time.",
                   detail={"schema_changes": schema_changes[:50], "tables_changed": tables})


def check_down(db: ScratchDatabase, f: MigrationFile, before: Fingerprint,
               timeout_s: float | None, tracker: Tracker = DEFAULT_TRACKER) -> Finding | None:
    """Run ``f``'s down block on a copy of ``db``; the schema must be as before ``f``."""
    if f.text.down is None:
        return Finding("down_missing", "warning", migration=f.path.name,
                       message=f"{f.path.name} has no -- Down Migration block.")
    with clone(db, "down") as copy, Runner(copy, timeout_s=timeout_s) as runner:
        down = runner.apply(f, direction="down", record=False)
        runner.close()
        if down.failure is not None:
            return Finding("down_mismatch", "error", migration=f.path.name,
                           message=f"The down block of {f.path.name} fails: {down.failure.describe()}",
                           detail={"failure": down.failure.__dict__})
        restored = fingerprint(copy, with_data=False, tracker=tracker)
    diff = before.schema_diff(restored)
    if not diff:
        return None
    return Finding("down_mismatch", "error", migration=f.path.name, count=len(diff),
                   message=f"Up, then the down block of {f.path.name}, leaves {len(diff)} schema "
                           f"difference(s), e.g. {diff[0]}",
                   detail={"schema_changes": diff[:50]})
