"""Configuration: ``[tool.verifier]`` in pyproject.toml, or a verifier.toml.

``load(path)`` reads the file given (``--config``), else the first
``verifier.toml`` or ``pyproject.toml`` found in the current directory or
its parents (``verifier.toml`` first in each, as git finds its
repository), else the defaults. It raises ``UsageError`` naming the file
and the key for anything malformed, and for a ``[tool.*]`` section of a
pyproject.toml named like ours but misspelt (``[tool.verifer]``), which
would otherwise be ignored while the run says the file was applied.
Identifiers in the configuration are data: they reach SQL only through
``psycopg.sql.Identifier``, never as text. The ledger's section
(``[tool.verifier.ledger]``) has its own module, ``ledger.py``; the
migrations' order and tracker (``migration_order``,
``[tool.verifier.migration_tracker]``) theirs, ``migrations.py``.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.config.ledger import Layout
from verifier.config.ledger import parse as parse_ledger
from verifier.config.migrations import Tracker, parse_order, parse_tracker
from verifier.errors import UsageError

ROUNDING_MODES = ("half_away_from_zero", "half_even", "truncate")
# A rehearsal's pg_restore runs at most this long (damaged tar archives can make it loop).
RESTORE_TIMEOUT_S = 6 * 3600.0
# A rehearsal's migration file runs at most this long (0: no limit). A backfill of the platform's
# largest money table fits with room to spare (the README gives the measurement); a loop that never
# ends (the real 301 on a balance of 0.00) is cancelled with a stall report instead of hanging.
MIGRATION_TIMEOUT_S = 3600.0
EXPONENT_MAX = 8  # ISO 4217's largest minor unit is 4 (CLF, UYW); 8 leaves room for token units
# The keys of [tool.verifier] (the README documents each).
KEYS = ("rounding", "sample_rows_max", "statement_timeout_s", "lock_timeout_s", "migration_lock_timeout_s",
        "migration_timeout_s", "restore_timeout_s", "migrations", "migration_order", "migration_tracker",
        "pairs", "exclude", "identities", "text_amounts", "minor_units", "not_null", "ledger", "baseline")


@dataclass(frozen=True)
class PairConfig:
    """A configured pair: ``source`` is ``[schema.]table.column``, ``target`` a column of that table."""

    schema: str
    table: str
    source: str
    target: str


@dataclass(frozen=True)
class TextAmount:
    """A text column that holds amounts, and how to read one: strip each of ``symbols`` and all
    white space, drop ``thousands``, read ``decimal`` as the point; ``(1,072.50)`` is negative.
    Whatever is then not ``[+-]digits[.digits]`` is unparsable (a finding of its own)."""

    schema: str
    table: str
    column: str
    thousands: str = ","
    decimal: str = "."
    symbols: tuple[str, ...] = ("$", "€", "£", "¥", "USD", "EUR", "GBP")

    def __post_init__(self) -> None:
        assert len(self.decimal) == 1 and len(self.thousands) <= 1 and self.decimal != self.thousands


@dataclass(frozen=True)
class MinorUnits:
    """How a table's amounts become minor units: each row's currency (``currency_column``, its ISO
    4217 minor unit) or one fixed ``exponent`` (0 for yen, 3 for dinars, 2 for cents)."""

    schema: str
    table: str
    currency_column: str | None = None
    exponent: int | None = None

    def __post_init__(self) -> None:
        assert (self.currency_column is None) != (self.exponent is None)
        assert self.exponent is None or 0 <= self.exponent <= EXPONENT_MAX


@dataclass(frozen=True)
class Identity:
    """``total = part + part + ...`` in cents, on rows where every part is set (where the total is
    NULL there, it breaks)."""

    schema: str
    table: str
    total: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    rounding: str = "half_away_from_zero"
    sample_rows_max: int = 5
    statement_timeout_s: float = 600.0
    lock_timeout_s: float = 5.0
    # A rehearsal's migrations run on a scratch database nobody else uses: a
    # lock wait this long means another session is in the way (exit 2).
    migration_lock_timeout_s: float = 60.0
    migration_timeout_s: float = MIGRATION_TIMEOUT_S  # 0: no limit
    restore_timeout_s: float = RESTORE_TIMEOUT_S
    pairs: tuple[PairConfig, ...] = ()
    exclude: tuple[str, ...] = ()  # "table", "schema.table" or "schema.table.column"
    identities: tuple[Identity, ...] = ()
    text_amounts: tuple[TextAmount, ...] = ()
    minor_units: tuple[MinorUnits, ...] = ()
    not_null: tuple[tuple[str, str, str], ...] = ()  # (schema, table, column) a later step sets NOT NULL
    ledger: Layout = field(default_factory=Layout)
    migrations: str | None = None  # a rehearsal's migrations directory (relative: to the file's folder)
    baseline: str | None = None  # the accepted findings' file (relative: to the file's folder)
    migration_order: str = "number"  # verifier.config.migrations.ORDERS
    migration_tracker: Tracker = field(default_factory=Tracker)
    source: str | None = None  # the file it came from
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        assert self.rounding in ROUNDING_MODES
        assert 0 <= self.sample_rows_max <= 1000
        assert min(self.statement_timeout_s, self.lock_timeout_s, self.migration_lock_timeout_s,
                   self.restore_timeout_s) > 0
        assert self.migration_timeout_s >= 0

    def excluded(self, schema: str, table: str, column: str | None = None) -> bool:
        return self.exclusion(schema, table, column) is not None

    def exclusion(self, schema: str, table: str, column: str | None = None) -> str | None:
        """The ``exclude`` entry that excludes the table (``column`` None) or the column, if any:
        a table's entry excludes its columns too."""
        names = [table, f"{schema}.{table}"]
        if column is not None:
            names += [f"{n}.{column}" for n in names]
        return next((e for e in self.exclude if e in names), None)

    def minor_units_of(self, schema: str, table: str) -> MinorUnits | None:
        return next((m for m in self.minor_units if (m.schema, m.table) == (schema, table)), None)

    def text_amount(self, schema: str, table: str, column: str) -> TextAmount | None:
        wanted = (schema, table, column)
        return next((t for t in self.text_amounts if (t.schema, t.table, t.column) == wanted), None)


def _split_name(raw: str, parts: int, where: str) -> list[str]:
    pieces = raw.split(".")
    if len(pieces) == parts - 1:
        pieces = ["public", *pieces]
    if len(pieces) != parts or not all(pieces):
        raise UsageError(f"{where}: {raw!r} should be {'[schema.]table' + '.column' * (parts - 2)}.")
    return pieces


def load(path: Path | None = None) -> Config:
    """Read the configuration (see the module docstring)."""
    if path is None:
        path = find()
        if path is None:
            return Config()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"The config file {path} does not exist.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"The config file {path} is not valid TOML: {exc}") from None
    tools = data.get("tool", {}) if path.name == "pyproject.toml" else {}
    section = tools.get("verifier") if path.name == "pyproject.toml" else data
    if path.name == "pyproject.toml" and section is None:
        near = _misspelt(tools)
        if near:
            raise UsageError(f"{path}: [tool.{near}] is not a section the verifier reads; did you mean "
                             "[tool.verifier]?", hint="Rename the section (its keys are ignored otherwise).")
        return Config(source=str(path))
    if not isinstance(section, dict):
        raise UsageError(f"{path}: [tool.verifier] must be a table.")
    return _parse(section, str(path))


def _path(section: dict[str, Any], key: str, kind: str, where: str) -> str | None:
    """The path the configuration gives at ``key`` (a ``kind``), relative to the file's folder."""
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: {key} must be the path of a {kind} (a string), relative to this "
                         "file's folder or absolute.")
    return str(Path(where).parent / value)


def find(start: Path | None = None) -> Path | None:
    """The configuration file a run without --config reads: in ``start`` (the current directory)
    or the nearest of its parents that holds one, ``verifier.toml`` before a ``pyproject.toml``
    with a [tool.verifier] section (``_ours``)."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / "verifier.toml").is_file():
            return directory / "verifier.toml"
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and _ours(candidate):
            return candidate
    return None


def _ours(pyproject: Path) -> bool:
    """Whether a pyproject.toml speaks to the verifier: a [tool.verifier] section, or one named like
    it (which ``load`` then refuses), or a file that does not parse (``load`` says so). Another
    project's pyproject.toml (only [tool.black]) is passed over on the way up."""
    try:
        tools = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return True
    if not isinstance(tools, dict):
        return True
    return "verifier" in tools or _misspelt(tools) is not None


def _misspelt(tools: dict[str, Any]) -> str | None:
    """A [tool.*] section named like ours but not ours (verifer, Verifier, verifiers), if any."""
    near = difflib.get_close_matches("verifier", [str(k) for k in tools], n=1, cutoff=0.75)
    return near[0] if near else None


def _parse(section: dict[str, Any], where: str) -> Config:
    unknown = sorted(set(section) - set(KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(KEYS))}).")
    rounding = section.get("rounding", "half_away_from_zero")
    if rounding not in ROUNDING_MODES:
        raise UsageError(f"{where}: rounding {rounding!r} is not one of {', '.join(ROUNDING_MODES)}.")
    numbers: dict[str, Any] = {}
    for key, low, high in (("sample_rows_max", 0, 1000), ("statement_timeout_s", 0.001, 86400.0),
                           ("lock_timeout_s", 0.001, 3600.0),
                           ("migration_lock_timeout_s", 0.001, 86400.0),
                           ("migration_timeout_s", 0.0, 7 * 86400.0),
                           ("restore_timeout_s", 1.0, 7 * 86400.0)):
        if key in section:
            value = section[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise UsageError(f"{where}: {key} must be a number from {low} to {high}.")
            numbers[key] = int(value) if key == "sample_rows_max" else float(value)
    pairs = []
    for i, item in enumerate(_list_of_tables(section, "pairs", where)):
        at = f"{where}: pairs[{i}]"
        if set(item) != {"source", "target"} or not all(isinstance(v, str) for v in item.values()):
            raise UsageError(f"{at} needs exactly 'source' ([schema.]table.column) and 'target' (column).")
        schema, table, column = _split_name(item["source"], 3, at)
        pairs.append(PairConfig(schema, table, column, item["target"]))
    exclude = section.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(e, str) and e for e in exclude):
        raise UsageError(f"{where}: exclude must be a list of table or table.column names.")
    identities = []
    for i, item in enumerate(_list_of_tables(section, "identities", where)):
        at = f"{where}: identities[{i}]"
        parts = item.get("parts")
        if (set(item) != {"table", "total", "parts"} or not isinstance(item.get("total"), str)
                or not isinstance(parts, list) or len(parts) < 2
                or not all(isinstance(p, str) and p for p in parts)):
            raise UsageError(f"{at} needs 'table', 'total' (column) and 'parts' (two or more columns).")
        schema, table = _split_name(str(item["table"]), 2, at)
        identities.append(Identity(schema, table, item["total"], tuple(parts)))
    text_amounts = []
    for i, item in enumerate(_list_of_tables(section, "text_amounts", where)):
        at = f"{where}: text_amounts[{i}]"
        unknown_keys = sorted(set(item) - {"column", "thousands", "decimal", "symbols"})
        symbols = item.get("symbols", list(TextAmount.symbols))
        thousands, decimal = item.get("thousands", ","), item.get("decimal", ".")
        if (unknown_keys or not isinstance(item.get("column"), str) or not isinstance(thousands, str)
                or not isinstance(decimal, str) or len(thousands) > 1 or len(decimal) != 1
                or thousands == decimal or not isinstance(symbols, list)
                or not all(isinstance(x, str) and x for x in symbols)):
            raise UsageError(f"{at} needs 'column' ([schema.]table.column) and may give 'thousands' (one "
                             "character or \"\"), 'decimal' (one other character) and 'symbols' (a list of "
                             "strings to strip)" + (f"; unknown: {', '.join(unknown_keys)}" if unknown_keys
                                                    else "") + ".")
        schema, table, column = _split_name(item["column"], 3, at)
        text_amounts.append(TextAmount(schema, table, column, thousands, decimal, tuple(symbols)))
    minor_units = []
    for i, item in enumerate(_list_of_tables(section, "minor_units", where)):
        at = f"{where}: minor_units[{i}]"
        currency, exponent = item.get("currency_column"), item.get("exponent")
        if (set(item) - {"table", "currency_column", "exponent"} or not isinstance(item.get("table"), str)
                or (currency is None) == (exponent is None)
                or (currency is not None and (not isinstance(currency, str) or not currency))
                or (exponent is not None and (isinstance(exponent, bool) or not isinstance(exponent, int)
                                              or not 0 <= exponent <= EXPONENT_MAX))):
            raise UsageError(f"{at} needs 'table' and one of 'currency_column' (the column holding each "
                             f"row's ISO 4217 code) or 'exponent' (0 to {EXPONENT_MAX}: 2 for cents).")
        schema, table = _split_name(item["table"], 2, at)
        minor_units.append(MinorUnits(schema, table, currency, exponent))
    not_null = section.get("not_null", [])
    if not isinstance(not_null, list) or not all(isinstance(n, str) and n for n in not_null):
        raise UsageError(f"{where}: not_null must be a list of [schema.]table.column names.")
    not_null_columns = tuple(tuple(_split_name(n, 3, f"{where}: not_null")) for n in not_null)
    ledger = parse_ledger(section["ledger"], where) if "ledger" in section else Layout()
    migrations = _path(section, "migrations", "directory", where)
    baseline = _path(section, "baseline", "file", where)
    order = parse_order(section["migration_order"], where) if "migration_order" in section else "number"
    tracker = (parse_tracker(section["migration_tracker"], where) if "migration_tracker" in section
               else Tracker())
    return Config(rounding=rounding, pairs=tuple(pairs), exclude=tuple(exclude),
                  identities=tuple(identities), text_amounts=tuple(text_amounts),
                  minor_units=tuple(minor_units), not_null=not_null_columns,  # type: ignore[arg-type]
                  ledger=ledger,
                  migrations=migrations, baseline=baseline, source=where,
                  migration_order=order, migration_tracker=tracker, **numbers)


def _list_of_tables(section: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = section.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise UsageError(f"{where}: {key} must be an array of tables ([[tool.verifier.{key}]]).")
    return value
