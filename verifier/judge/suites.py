"""Great Expectations suites: the files, and one suite validated by GX with its outcomes recorded.

A suite file is JSON: ``{"name", "meta": {"target": ...}, "expectations":
[{"type", "kwargs"}]}``, the shape of GX 1.x's own suite JSON; ``load``
reads the built-in suites (the project's ``expectations/``) and the user's
own (``--expectations DIR``), raising ``UsageError`` naming the file for
anything malformed. ``prepare`` turns a suite into GX's (numbers as
``Decimal``, refused where GX would compare another float); ``record``
turns GX's result into outcomes and ``expectation_failed`` findings.
GX is imported here only when a run asks for a judgement (``gx_context``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from verifier.errors import UsageError, VerifierError
from verifier.files import check_regular
from verifier.findings import Finding
from verifier.paths import project_expectations_dir
from verifier.run import Run

TARGETS = ("results", "table")
UNEXPECTED_VALUES_MAX = 10  # unexpected values recorded per expectation


@dataclass(frozen=True)
class Suite:
    path: Path
    name: str
    target: str
    expectations: list[dict[str, Any]]
    schema: str | None = None  # target "table"
    table: str | None = None

    @property
    def relation(self) -> str | None:
        return None if self.table is None else f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class Prepared:
    """A suite as GX holds it, and each GX expectation's kwargs as the suite file wrote them."""

    suite: Suite
    gx_suite: Any
    written: dict[Any, dict[str, Any]]  # GX expectation id -> kwargs from the file


def _name(value: Any, path: Path, key: str) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise UsageError(f"The expectation suite {path}: meta.{key} must be a non-empty name, "
                         f"not {value!r}.")
    return value


def load_suite(path: Path) -> Suite:
    """Read and check one suite file; raise ``UsageError`` naming the file and the problem."""
    try:
        # Numbers with a fraction become Decimal: a bound such as 0.01 stays exact.
        spec = json.loads(path.read_text(), parse_float=Decimal)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"Cannot read the expectation suite {path}: {exc}.") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("expectations"), list):
        raise UsageError(f"The expectation suite {path} has no \"expectations\" list.")
    meta = spec.get("meta") or {}
    if not isinstance(meta, dict):
        raise UsageError(f"The expectation suite {path}: \"meta\" must be an object.")
    target = meta.get("target")
    if target not in TARGETS:
        raise UsageError(f"The expectation suite {path} has meta.target {target!r}; "
                         f"expected one of {', '.join(TARGETS)}.")
    for i, e in enumerate(spec["expectations"]):
        if not isinstance(e, dict) or not isinstance(e.get("type"), str) or not isinstance(
                e.get("kwargs", {}), dict):
            raise UsageError(f"The expectation suite {path}: expectation {i} needs a \"type\" and "
                             "\"kwargs\".")
    name = spec.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise UsageError(f"The expectation suite {path}: \"name\" must be a non-empty string.")
    if target == "table":
        return Suite(path, name, target, spec["expectations"],
                     schema=_name(meta.get("schema", "public"), path, "schema"),
                     table=_name(meta.get("table"), path, "table"))
    return Suite(path, name, target, spec["expectations"])


SUITE_BYTES_MAX = 16 * 1024 * 1024  # a suite file larger than this is refused (16 MiB)


def suite_files(directory: Path | None = None) -> list[Path]:
    """The suite files (``*.json``) of ``directory`` (the project's expectations by default), in
    name order. Raises ``UsageError`` for one that is not a regular file inside the directory, or
    larger than SUITE_BYTES_MAX (``verifier.files.check_regular``)."""
    where = directory or project_expectations_dir()
    found = sorted(where.glob("*.json"))
    for path in found:
        check_regular(path, where, what=f"The expectation suite {path}", place="expectations directory",
                      limit=SUITE_BYTES_MAX, fix="Keep only regular .json suite files in the expectations "
                                                 "directory.")
    return found


def load(user_dir: Path | None = None) -> list[Suite]:
    """The built-in suites, then the user's own from ``user_dir`` (every ``*.json`` there)."""
    files = suite_files()
    if user_dir is not None:
        if not user_dir.is_dir():
            raise UsageError(f"The expectations directory {user_dir} does not exist.")
        mine = suite_files(user_dir)
        if not mine:
            raise UsageError(f"The expectations directory {user_dir} holds no suite (*.json).")
        built_in = {f.resolve() for f in files}
        files += [p for p in mine if p.resolve() not in built_in]
    suites = [load_suite(p) for p in files]
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise UsageError(f"Two expectation suites are named {', '.join(twice)}; suite names must differ.")
    return suites


def _plain(value: Any) -> Any:
    """``value`` for summary.json: numbers with a fraction as their exact text (a float as the
    shortest text that reads back as it), never a float."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "batch_id")


def gx_context() -> Any:
    """GX and an ephemeral data context without progress bars; ``VerifierError`` without GX installed."""
    try:
        import great_expectations as gx
    except ImportError:
        raise VerifierError("--gx needs Great Expectations.",
                            hint="pip install 'financial-migration-verifier[gx]'") from None
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return gx, context


def _exception(result: Any) -> str | None:
    """The message of the first exception GX caught while computing ``result``, if any.

    GX 1.x keeps them per metric (``{metric id: {"raised_exception", "exception_message"}}``).
    """
    infos = result.exception_info if isinstance(result.exception_info, dict) else {}
    for info in [infos, *infos.values()]:
        if isinstance(info, dict) and str(info.get("raised_exception")) == "True":
            return str(info.get("exception_message") or "unknown error")
    return None


def _exact_bounds(suite: Suite, given: dict[str, Any], kept: dict[str, Any]) -> None:
    """Refuse a number GX would not keep: it holds bounds as floats (``min_value`` 0.01 is the
    double nearest 0.01), so a bound is allowed only if that float reads back as the same decimal."""
    for key, value in given.get("kwargs", {}).items():
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            continue
        back = kept.get(key)
        if isinstance(back, float) and Decimal(repr(back)) != Decimal(value):
            raise UsageError(f"The expectation suite {suite.path}: {given['type']} {key}={value} would be "
                             f"compared as the float {back!r}, which is another number.",
                             hint="GX compares numbers as double precision: give a bound of at most 15 "
                                  "significant digits (a cents column's integer bound is exact below 2^53).")


def prepare(gx: Any, context: Any, suite: Suite) -> Prepared:
    """``suite`` as GX's own, added to ``context``; ``UsageError`` for an expectation GX refuses."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    gx_suite = gx.ExpectationSuite(name=suite.name)
    for i, e in enumerate(suite.expectations):
        try:
            gx_suite.add_expectation_configuration(
                ExpectationConfiguration(type=e["type"], kwargs=e.get("kwargs", {})))
        except Exception as exc:  # GX raises its own kinds for unknown types and kwargs
            raise UsageError(f"The expectation suite {suite.path}: {e['type']}: {exc}") from None
        if len(gx_suite.expectations) != i + 1:  # GX keeps one of two equal expectations
            raise UsageError(f"The expectation suite {suite.path}: expectation {i} ({e['type']}) "
                             "repeats an earlier one.")
        _exact_bounds(suite, e, dict(gx_suite.expectations[-1].configuration.kwargs))
    gx_suite = context.suites.add(gx_suite)
    # Each result's kwargs as the suite file wrote them (GX turns 0 into 0.0; _exact_bounds
    # has made sure the number it compares with is the same).
    given = [e.get("kwargs", {}) for e in suite.expectations]
    written = dict(zip((e.id for e in gx_suite.expectations), given, strict=True))
    return Prepared(suite, gx_suite, written)


def record(run: Run, prepared: Prepared, result: Any, outcomes: list[dict[str, Any]],
           where: str | None) -> None:
    """Each expectation's outcome into ``outcomes``, each failed one an ``expectation_failed`` finding.

    Raises ``VerifierError`` for an expectation whose metric GX could not
    compute (a column that does not exist, a timeout): it did not run.
    """
    suite, written = prepared.suite, prepared.written
    for r in result.results:
        config = r.expectation_config
        assert config is not None
        kwargs = {k: v for k, v in dict(written.get(config.id, config.kwargs)).items() if k != "batch_id"}
        failure = _exception(r)
        if failure is not None:
            raise VerifierError(f"The expectation suite {suite.path}: {config.type} "
                                f"({_kwargs_text(kwargs)}) could not run"
                                f"{' on ' + where if where else ''}: {failure.splitlines()[0]}")
        got = r.result or {}
        outcome = {"suite": suite.name, "table": suite.relation, "type": config.type,
                   "kwargs": _plain(kwargs), "success": bool(r.success),
                   "unexpected_count": got.get("unexpected_count"),
                   "observed_value": None if got.get("observed_value") is None
                   else str(got["observed_value"]),
                   "unexpected": [str(v) for v in got.get("partial_unexpected_list") or []
                                  ][:UNEXPECTED_VALUES_MAX]}
        outcomes.append(outcome)
        if not r.success:
            count = got.get("unexpected_count")
            run.add(Finding(
                rule="expectation_failed", severity="error", table=suite.relation,
                column=kwargs.get("column") if isinstance(kwargs.get("column"), str) else None,
                count=int(count) if count else 1,
                message=f"GX suite {suite.name}: {config.type} ({_kwargs_text(kwargs)}) failed"
                        + (f" for {count} row(s)" if count is not None else
                           f" (observed {outcome['observed_value']})"),
                detail=outcome,
            ))
