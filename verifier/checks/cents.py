"""The cents checks: every row, every pair, one pass per table, in SQL.

``build_summary_query`` composes, for one table, a statement that
classifies every row of every (decimal, cents) pair and aggregates per
(pair, class): count, cents impact, sums, ties and which rounding mode the
cents fit. Expected cents are computed in ``numeric`` under the configured
rounding mode. The same per-row expressions feed ``build_offenders_query``,
whose rows stream to offenders.csv (COPY) and give the bounded samples.

Identifiers reach SQL only through ``sql.Identifier``. The one exception is
documented where it happens: a NOT VALID CHECK constraint's expression, as
PostgreSQL itself deparsed it from the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from verifier.pairs import Pair, TablePlan

BIGINT_MAX = 9223372036854775807
# Classes of one row of one pair, in the order the CASE tests them: the first
# that matches explains the row. NULL means the row is right.
ROW_CLASSES = (
    "null_coerced_to_zero", "overflow", "null_introduced", "sub_cent_loss", "missing_backfill",
    "sign_flip", "rounding_mode", "float_artifact", "scale_error", "value_mismatch",
)
TABLE_CLASSES = ("identity_violation", "constraint_violation")
WARNING_CLASSES = ("sub_cent_loss",)


@dataclass(frozen=True)
class Check:
    """One classified quantity of a table: a pair, an identity or a pending constraint."""

    index: int
    kind: str  # pair | identity | constraint
    column: str | None  # the cents column (pair), the identity's total, None for a constraint
    label: str  # how the report names it
    source: str | None = None  # the decimal column (pair) or the constraint name


@dataclass(frozen=True)
class PendingConstraint:
    name: str
    expression: str  # deparsed by PostgreSQL: pg_get_expr(conbin, conrelid)


def _expected(h: sql.Composable, rounding: str) -> sql.Composable:
    """Expected cents of h = decimal * 100 (numeric) under the rounding mode."""
    if rounding == "half_away_from_zero":
        return sql.SQL("round({h})").format(h=h)  # PostgreSQL's round(numeric): half away from zero
    if rounding == "half_even":
        return sql.SQL("(CASE WHEN abs({h} - trunc({h})) = 0.5 THEN 2 * round({h} / 2) "
                       "ELSE round({h}) END)").format(h=h)
    assert rounding == "truncate", rounding
    return sql.SQL("trunc({h})").format(h=h)


def _pair_row(index: int, pair: Pair, rounding: str, with_text: bool) -> sql.Composable:
    """The VALUES row classifying one pair for the current row of ``t``.

    ``with_text`` adds the values as text, for the offenders query only: the
    summary, which reads every row, must not pay for three casts per row.
    """
    x = sql.SQL("(t.{}::numeric)").format(sql.Identifier(pair.source))
    c = sql.SQL("t.{}").format(sql.Identifier(pair.target))
    h = sql.SQL("({x} * 100)").format(x=x)
    e = _expected(h, rounding)
    half_even = _expected(h, "half_even")
    f = sql.SQL("(t.{}::float8)").format(sql.Identifier(pair.source))
    klass = sql.SQL("""CASE
      WHEN {x} IS NULL AND {c} IS NULL THEN NULL
      WHEN {x} IS NULL AND {c} = 0 THEN 'null_coerced_to_zero'
      WHEN {x} IS NULL THEN 'value_mismatch'
      WHEN abs({e}) > {big} THEN 'overflow'
      WHEN {c} IS NULL THEN 'null_introduced'
      WHEN {c} = {e} THEN CASE WHEN {h} <> trunc({h}) THEN 'sub_cent_loss' END
      WHEN {c} = 0 THEN 'missing_backfill'
      WHEN {c} = -{e} THEN 'sign_flip'
      WHEN {c} IN (round({h}), {half_even}, trunc({h}), floor({h}), ceil({h})) THEN 'rounding_mode'
      WHEN abs({h}) < 1e15 AND {c} IN (round({f} * 100), trunc({f} * 100)) THEN 'float_artifact'
      WHEN {c} IN (round({x}), round({x} * 10), round({x} * 1000), round({x} * 10000)) THEN 'scale_error'
      ELSE 'value_mismatch' END""").format(
        x=x, c=c, h=h, e=e, half_even=half_even, f=f, big=sql.Literal(BIGINT_MAX))
    impact = sql.SQL("""CASE
      WHEN {x} IS NULL THEN {c}::numeric
      WHEN abs({e}) > {big} THEN NULL
      WHEN {c} IS NULL THEN -{e}
      ELSE {c} - {e} END""").format(x=x, c=c, e=e, big=sql.Literal(BIGINT_MAX))
    frac = sql.SQL("({x} IS NOT NULL AND {h} <> trunc({h}))").format(x=x, h=h)
    text = (sql.SQL("{x}::text, {c}::text, {e}::text").format(x=x, c=c, e=e) if with_text
            else sql.SQL("NULL::text, NULL::text, NULL::text"))
    return sql.SQL(
        "({i}, {klass}, {impact}, {c}::numeric, {e}, "
        "{x} IS NOT NULL AND abs({h} - trunc({h})) = 0.5, {frac}, "
        "{frac} AND {c} = round({h}), {frac} AND {c} = {half_even}, {frac} AND {c} = trunc({h}), "
        "{text})"
    ).format(i=sql.Literal(index), klass=klass, impact=impact, c=c, e=e, x=x, h=h, frac=frac,
             half_even=half_even, text=text)


def _identity_row(index: int, total: str, parts: tuple[str, ...]) -> sql.Composable:
    t = sql.SQL("t.{}").format(sql.Identifier(total))
    ps = [sql.SQL("t.{}").format(sql.Identifier(p)) for p in parts]
    all_set = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(p) for p in [t, *ps])
    summed = sql.SQL(" + ").join(sql.SQL("{}::numeric").format(p) for p in ps)
    return sql.SQL(
        "({i}, CASE WHEN {all_set} AND {t}::numeric <> {summed} THEN 'identity_violation' END, "
        "CASE WHEN {all_set} THEN {t}::numeric - ({summed}) END, NULL::numeric, NULL::numeric, "
        "false, false, false, false, false, {t}::text, ({summed})::text, NULL::text)"
    ).format(i=sql.Literal(index), all_set=all_set, t=t, summed=summed)


def _constraint_row(index: int, constraint: PendingConstraint) -> sql.Composable:
    # The expression is PostgreSQL's own deparse of a CHECK constraint of this
    # very table (pg_get_expr on pg_constraint.conbin), not text from a user:
    # the server parsed and stored it. Like a CHECK, NULL passes.
    expr = sql.SQL(constraint.expression)  # noqa: S608 - see the comment above
    return sql.SQL(
        "({i}, CASE WHEN NOT coalesce(({expr}), true) THEN 'constraint_violation' END, "
        "NULL::numeric, NULL::numeric, NULL::numeric, false, false, false, false, false, "
        "NULL::text, NULL::text, NULL::text)"
    ).format(i=sql.Literal(index), expr=expr)


def checks_of(plan: TablePlan, identities: list[tuple[str, tuple[str, ...]]],
              constraints: list[PendingConstraint]) -> list[Check]:
    result = [Check(i, "pair", p.target, f"{p.source} -> {p.target}", p.source)
              for i, p in enumerate(plan.pairs)]
    for total, parts in identities:
        result.append(Check(len(result), "identity", total, f"{total} = {' + '.join(parts)}"))
    for con in constraints:
        result.append(Check(len(result), "constraint", None, f"CHECK {con.name}", con.name))
    return result


def _values(plan: TablePlan, rounding: str, identities: list[tuple[str, tuple[str, ...]]],
            constraints: list[PendingConstraint], *, with_text: bool) -> sql.Composable:
    rows = [_pair_row(i, p, rounding, with_text) for i, p in enumerate(plan.pairs)]
    for total, parts in identities:
        rows.append(_identity_row(len(rows), total, parts))
    for con in constraints:
        rows.append(_constraint_row(len(rows), con))
    return sql.SQL(
        "CROSS JOIN LATERAL (VALUES {}) AS v(check_index, class, impact, cents, expected, tie, frac, "
        "fit_half_away, fit_half_even, fit_truncate, source_text, target_text, expected_text)"
    ).format(sql.SQL(", ").join(rows))


def build_summary_query(plan: TablePlan, rounding: str,
                        identities: list[tuple[str, tuple[str, ...]]],
                        constraints: list[PendingConstraint]) -> sql.Composed:
    """One statement: per (check, class) counts, impact, sums, ties and rounding fits.

    Proves, for every row and every pair, that the cents equal the decimal
    times 100 under the rounding mode; the NULL class is the right rows.
    """
    return sql.SQL("""SELECT v.check_index, v.class, count(*) AS rows, sum(v.impact) AS impact,
       sum(v.cents) AS cents_sum, sum(v.expected) AS expected_sum,
       count(*) FILTER (WHERE v.tie) AS ties, count(*) FILTER (WHERE v.frac) AS fractional,
       count(*) FILTER (WHERE v.fit_half_away) AS fit_half_away,
       count(*) FILTER (WHERE v.fit_half_even) AS fit_half_even,
       count(*) FILTER (WHERE v.fit_truncate) AS fit_truncate
FROM {table} AS t {values}
GROUP BY 1, 2""").format(table=sql.Identifier(plan.schema, plan.table),
                           values=_values(plan, rounding, identities, constraints, with_text=False))


def build_offenders_query(plan: TablePlan, rounding: str,
                          identities: list[tuple[str, tuple[str, ...]]],
                          constraints: list[PendingConstraint]) -> sql.Composed:
    """Every offending (row, check): its key (or whole row), class and values, as text."""
    key: sql.Composable
    if plan.key:
        key = sql.SQL("json_build_object({})::text").format(sql.SQL(", ").join(
            sql.SQL("{}, t.{}").format(sql.Literal(k), sql.Identifier(k)) for k in plan.key))
    else:
        key = sql.SQL("to_json(t)::text")  # no primary key: the whole row identifies it
    return sql.SQL("""SELECT {key} AS row_key, v.check_index, v.class, v.source_text, v.target_text,
       v.expected_text, v.impact::text
FROM {table} AS t {values}
WHERE v.class IS NOT NULL""").format(
        key=key, table=sql.Identifier(plan.schema, plan.table),
        values=_values(plan, rounding, identities, constraints, with_text=True))
