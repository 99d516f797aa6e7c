"""The ledger's layout held against the database: every configured table and column exists.

``check_exists(conn, layout)`` reads the catalog (read only) and raises
``UsageError`` naming the table or column the database lacks; it returns
the legacy balance columns that exist to reconcile. The layout itself (the
defaults and ``[tool.verifier.ledger]``) is ``verifier.config.ledger``.
"""

from __future__ import annotations

import psycopg

from verifier.config.ledger import Layout, Reconcile
from verifier.errors import UsageError

# The columns each logical table has in the database, read once.
COLUMNS_SQL = """
SELECT c.relname, a.attname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""


def check_exists(conn: psycopg.Connection, layout: Layout) -> list[Reconcile]:
    """Raise ``UsageError`` for a ledger table or column the database lacks.

    Returns the reconciliations whose legacy table and column exist (the
    others are skipped: "where both exist").
    """
    names = list(layout.tables.values())
    found: dict[str, set[str]] = {}
    for table, column in conn.execute(COLUMNS_SQL, (layout.schema, names)).fetchall():
        found.setdefault(str(table), set()).add(str(column))
    for logical, table in layout.tables.items():
        if table not in found:
            raise UsageError(
                f"The ledger table {layout.schema}.{table} ({logical}) does not exist or is not visible "
                "to this role.",
                hint="Name the ledger's tables in [tool.verifier.ledger.tables], or GRANT SELECT on it.")
        missing = sorted(set(layout.columns[logical].values()) - found[table])
        if missing:
            raise UsageError(
                f"The ledger table {layout.schema}.{table} has no column(s) {', '.join(missing)}.",
                hint=f"Name its columns in [tool.verifier.ledger.columns] as \"{logical}.<logical name>\".")
    present = []
    for r in layout.reconcile:
        rows = conn.execute(COLUMNS_SQL, (r.schema, [r.table])).fetchall()
        if {r.key, r.column} <= {str(c) for _, c in rows}:
            present.append(r)
    return present
