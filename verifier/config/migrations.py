"""How a team's migrations are ordered and how the database records which ran.

``migration_order`` (``"number"``, the default, or ``"name"``) and
``[tool.verifier.migration_tracker]`` (``table``, ``column``, ``records``)
of the configuration. By default the tracker is the seed's own
``schema_migrations(version)`` (../shared/seed/migrations-README.md:
``INSERT INTO schema_migrations (version) VALUES (<migration-number>)``),
created when a database has none. A configured tracker is another tool's
table (node-pg-migrate's ``pgmigrations(name)``, Sequelize's
``"SequelizeMeta"(name)``, knex's ``knex_migrations(name)``), which must
exist. ``parse`` raises ``UsageError`` naming the file and key for anything
malformed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verifier.errors import UsageError

# What a tracker's column holds for an applied file 300_add_cents.sql:
#   version    300 (an integer column) or "300" (text); a file whose number other files share is
#              recorded by its stem, "300_add_cents"
#   file_name  "300_add_cents.sql"
#   file_stem  "300_add_cents"
# A file counts as applied when its name or its stem is recorded, whichever the team writes.
RECORDS = ("version", "file_name", "file_stem")
# "number": by numeric prefix, then suffix letter, then name (9_x before 10_y; files without a number
# are listed and not applied). "name": plain file-name order (10_y before 9_x), every *.sql file.
ORDERS = ("number", "name")
KEYS = ("table", "column", "records")


@dataclass(frozen=True)
class Tracker:
    """The table and column that record applied migrations, and what the column holds (``RECORDS``).

    ``configured`` trackers must exist in the database; the default one is created when absent.
    """

    schema: str = "public"
    table: str = "schema_migrations"
    column: str = "version"
    records: str = "version"
    configured: bool = False

    def __post_init__(self) -> None:
        assert self.records in RECORDS
        assert self.schema and self.table and self.column

    def describe(self) -> str:
        return f"{self.schema}.{self.table}({self.column})"


DEFAULT_TRACKER = Tracker()


def parse_tracker(section: Any, where: str) -> Tracker:
    """``[tool.verifier.migration_tracker]``: ``table`` ([schema.]table) and ``column`` are required,
    ``records`` defaults to ``version``, as the default tracker's."""
    if not isinstance(section, dict):
        raise UsageError(f"{where}: [tool.verifier.migration_tracker] must be a table.")
    unknown = sorted(set(section) - set(KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) in [tool.verifier.migration_tracker]: "
                         f"{', '.join(unknown)} (known: {', '.join(KEYS)}).")
    table, column = section.get("table"), section.get("column")
    records = section.get("records", "version")
    if not isinstance(table, str) or not isinstance(column, str) or not column:
        raise UsageError(f"{where}: migration_tracker needs 'table' ([schema.]table) and 'column', the "
                         "column that records each applied migration.")
    pieces = table.split(".")
    if len(pieces) == 1:
        pieces = ["public", *pieces]
    if len(pieces) != 2 or not all(pieces):
        raise UsageError(f"{where}: migration_tracker.table {table!r} should be [schema.]table.")
    if records not in RECORDS:
        raise UsageError(f"{where}: migration_tracker.records {records!r} is not one of "
                         f"{', '.join(RECORDS)}.")
    return Tracker(pieces[0], pieces[1], column, records, configured=True)


def parse_order(value: Any, where: str) -> str:
    if value not in ORDERS:
        raise UsageError(f"{where}: migration_order {value!r} is not one of {', '.join(ORDERS)} "
                         "(number: by numeric prefix; name: plain file-name order).")
    return str(value)
