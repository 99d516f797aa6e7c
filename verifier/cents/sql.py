"""The cents checks: every row, every pair, one pass per table, in SQL.

Two statements per table, both composed here:

- ``build_summary_query`` reads every row once and proves, per pair, that
  the cents equal the decimal times 100 exactly (an integral number of
  cents: the row is right under any rounding mode), per identity that it
  holds, per pending constraint that the row passes. It returns, per
  check, the number of rows that are not right, and per pair the sum of
  the cents. This is the cost every run pays: one multiplication and one
  comparison per pair and row, in ``numeric``.
- ``build_offenders_query`` runs only when the summary counted offending
  rows. It classifies those rows (and no others: the same predicate,
  negated, filters the scan) into DESIGN's classes, with the expected
  cents under the configured rounding mode, the cents impact, whether the
  original was a tie and which rounding modes the cents fit. Its rows
  stream to offenders.csv (COPY); the engine counts them per class and
  checks the counts against the summary.

Identifiers reach SQL only through ``sql.Identifier``. The one exception is
documented where it happens: a NOT VALID CHECK constraint's expression, as
PostgreSQL itself deparsed it from the catalog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from psycopg import sql

from verifier.cents import currency
from verifier.cents.pairs import Kept, Pair, TablePlan
from verifier.findings import ROW_RULES, rule

BIGINT_MAX = 9223372036854775807
# How a real or double precision original is read. Its shortest round-trip decimal (what the
# session prints with extra_float_digits = 1, PostgreSQL 12 and later: at most 9 significant digits
# for real, 17 for double) is the value its cents must equal; its exact binary value (decoded from
# its IEEE 754 bits) and PostgreSQL's own cast to numeric (6 significant digits for real, 15 for
# double: float4_numeric and float8_numeric) are what float arithmetic on the way would give, so
# cents that fit only those are float_artifact.
FLOAT_DIGITS = ("Read at its shortest round-trip decimal (real: at most 9 significant digits, double: "
                "at most 17); cents that fit only its exact binary value, or PostgreSQL's cast to numeric "
                "(real: 6 significant digits, double: 15), are float_artifact.")
ROW_FLAGS = ("row_missing", "row_added")  # checks of a table read with its originals
# The classes of a row whose findings are warnings, not errors (from the registry).
WARNING_CLASSES = tuple(name for name in ROW_RULES if rule(name).severities[0] == "warning")


# The report's histogram of differences (cents minus expected cents) of offending pair rows: by sign
# and order of magnitude, so one bucket list fits a 1-cent rounding slip and a 100x scale error alike.
DIFF_LIMITS = (1, 10, 100, 1_000, 100_000)
_NEGATIVE = tuple(f"<= -{lo:,}" if i == len(DIFF_LIMITS) - 1 else f"-{lo:,} to -{DIFF_LIMITS[i + 1] - 1:,}"
                  for i, lo in enumerate(DIFF_LIMITS))
_POSITIVE = tuple(f">= +{lo:,}" if i == len(DIFF_LIMITS) - 1 else f"+{lo:,} to +{DIFF_LIMITS[i + 1] - 1:,}"
                  for i, lo in enumerate(DIFF_LIMITS))
DIFF_BUCKETS = (*reversed(_NEGATIVE), "0", *_POSITIVE, "not a number")


def diff_bucket(impact: str) -> str:
    """The histogram bucket of one offending pair row's difference in cents (exact, from its text)."""
    if not impact:  # no expected cents (overflow, or a NaN or infinite original): nothing to measure
        return DIFF_BUCKETS[-1]
    d = Decimal(impact)
    if d == 0:
        return "0"
    # Pairs' differences are whole cents; a fraction (none expected) joins the smallest bucket.
    i = max((i for i, lo in enumerate(DIFF_LIMITS) if abs(d) >= lo), default=0)
    return _POSITIVE[i] if d > 0 else _NEGATIVE[i]


@dataclass(frozen=True)
class Check:
    """One classified quantity of a table: a pair, an identity or a pending constraint."""

    index: int
    kind: str  # pair | identity | constraint | kept | row
    column: str | None  # the cents column (pair), the identity's total, None for a constraint
    label: str  # how the report names it
    source: str | None = None  # the decimal column (pair) or the constraint name


@dataclass(frozen=True)
class PendingConstraint:
    """A rule rows must pass before a later migration enforces it: a NOT VALID CHECK (its
    expression deparsed by PostgreSQL: pg_get_expr(conbin, conrelid)), or a SET NOT NULL a pending
    migration or the configuration announces (``column`` set; its expression composed by us)."""

    name: str
    expression: str
    column: str | None = None

    @property
    def label(self) -> str:
        return self.name if self.column is not None else f"CHECK {self.name}"


def _expected(h: sql.Composable, rounding: str) -> sql.Composable:
    """Expected cents of h = decimal * 100 (numeric) under the rounding mode."""
    if rounding == "half_away_from_zero":
        return sql.SQL("round({h})").format(h=h)  # PostgreSQL's round(numeric): half away from zero
    if rounding == "half_even":
        return sql.SQL("(CASE WHEN abs({h} - trunc({h})) = 0.5 THEN 2 * round({h} / 2) "
                       "ELSE round({h}) END)").format(h=h)
    assert rounding == "truncate", rounding
    return sql.SQL("trunc({h})").format(h=h)


def relation(plan: TablePlan) -> sql.Composable:
    """What the checks read as ``t``: the table, or in a rehearsal the table with its originals.

    With originals, ``t`` is the FULL JOIN of the live table and the
    recorded originals on the key: every live column under its own name,
    each recorded original as ``verifier_original_<i>``, and the flags
    ``verifier_matched``, ``row_missing`` and ``row_added``. With a currency
    column, each row also has its currency's factor (``currency.FACTOR``).
    """
    rel = _relation(plan)
    return rel if plan.currency is None else currency.join(rel, plan.currency)


def _relation(plan: TablePlan) -> sql.Composable:
    # ONLY: an inheritance child is a table of its own, verified on its own (never twice).
    table: sql.Composable = sql.Identifier(plan.schema, plan.table)
    if not plan.partitioned:
        table = sql.SQL("ONLY {}").format(table)
    if plan.originals is None:
        return table
    orig = plan.originals
    by_live = dict(zip(orig.live_key_names, orig.key, strict=True))  # live key column -> recorded name
    live = [sql.SQL("coalesce(l.{c}, o.{r}) AS {c}").format(c=sql.Identifier(c), r=sql.Identifier(by_live[c]))
            if c in by_live else sql.SQL("l.{c}").format(c=sql.Identifier(c)) for c in plan.columns]
    recorded = [sql.SQL("o.{} AS {}").format(sql.Identifier(name), sql.Identifier(f"verifier_original_{i}"))
                for i, name in enumerate(o.name for o in orig.sources)]
    recorded += [sql.SQL("o.{} AS {}").format(sql.Identifier(code.name), sql.Identifier(f"verifier_code_{j}"))
                 for j, code in enumerate(orig.codes)]
    flags = sql.SQL("l.{k} IS NOT NULL AND o.{r} IS NOT NULL AS verifier_matched, "
                    "l.{k} IS NULL AS row_missing, o.{r} IS NULL AS row_added").format(
        k=sql.Identifier(orig.live_key_names[0]), r=sql.Identifier(orig.key[0]))
    # Key columns of one type, or of integer types a migration widened: pg_catalog's own equality.
    on = sql.SQL(" AND ").join(sql.SQL("l.{c} = o.{r}").format(c=sql.Identifier(c), r=sql.Identifier(r))
                               for c, r in by_live.items())
    return sql.SQL("(SELECT {columns}, {flags} FROM {table} AS l FULL JOIN {orig} AS o ON {on})").format(
        columns=sql.SQL(", ").join(live + recorded), flags=flags, table=table,
        orig=sql.Identifier(orig.schema, orig.relation), on=on)


def _source(pair: Pair) -> sql.Composable:
    return sql.SQL("t.{}").format(sql.Identifier(pair.source_ref or pair.source))


_SPACE = r"[\s\u00A0]"  # white space, and the no-break space


def _text_shape(pair: Pair) -> str:
    """The pattern an amount must match once trimmed (symbols and white space at its ends): digits in
    groups of three between thousands separators (or none), then the decimal separator and digits."""
    assert pair.text is not None
    t, d = (re.escape(c) for c in (pair.text.thousands, pair.text.decimal))
    whole = rf"([0-9]{{1,3}}({t}[0-9]{{3}})+|[0-9]+)" if t else "[0-9]+"
    return rf"^[+-]?({whole}({d}[0-9]*)?|{d}[0-9]+)$"


def _text_cleaned(pair: Pair) -> sql.Composable:
    """A text original trimmed of white space and of the configured symbols at either end (after a
    sign: ``-$5.00``), an accounting negative ``(1,072.50)`` made ``-1,072.50``."""
    assert pair.text is not None
    symbols = "|".join(re.escape(x) for x in sorted(pair.text.symbols, key=len, reverse=True))
    s: sql.Composable = _source(pair)
    s = sql.SQL("regexp_replace({}, {}, '', 'g')").format(s, sql.Literal(rf"^{_SPACE}+|{_SPACE}+$"))
    s = sql.SQL("regexp_replace({}, {}, '-\\1')").format(s, sql.Literal(r"^\((.*)\)$"))
    if symbols:
        s = sql.SQL(r"regexp_replace({}, {}, '\1')").format(
            s, sql.Literal(rf"^([+-]?){_SPACE}*(?:{symbols}){_SPACE}*"))
        s = sql.SQL("regexp_replace({}, {}, '')").format(s, sql.Literal(rf"{_SPACE}*(?:{symbols})$"))
    return s


def _text_number(pair: Pair, cleaned: sql.Composable) -> sql.Composable:
    """The cleaned text as a numeric literal's text: thousands separators dropped, the decimal one ``.``."""
    assert pair.text is not None
    if pair.text.thousands:
        cleaned = sql.SQL("replace({}, {}, '')").format(cleaned, sql.Literal(pair.text.thousands))
    if pair.text.decimal != ".":
        cleaned = sql.SQL("replace({}, {}, '.')").format(cleaned, sql.Literal(pair.text.decimal))
    return cleaned


def unreadable(pair: Pair) -> sql.Composable:
    """True where a text original is set but is no amount once cleaned (``unparsable_original``);
    false for every other source. Never NULL."""
    if pair.text is None:
        return sql.SQL("false")
    return sql.SQL("({raw} IS NOT NULL AND {s} !~ {pattern})").format(
        raw=_source(pair), s=_text_cleaned(pair), pattern=sql.Literal(_text_shape(pair)))


def factor(pair: Pair) -> sql.Composable:
    """Minor units per major unit for the current row of ``t``: 10 ** the pair's exponent (100 for
    cents), or the row's currency's factor (``verifier.cents.currency``; NULL for an unknown code)."""
    if pair.exponent is None:
        return sql.SQL("t.{}").format(sql.Identifier(currency.FACTOR))
    return sql.Literal(10 ** pair.exponent)


def _pair_terms(pair: Pair) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """x (the original, as numeric), c (the cents) and h = x * factor (100 for cents) for the
    current row of ``t``.

    A float original is its shortest round-trip decimal (``FLOAT_DIGITS``; the session's
    extra_float_digits is 1, ``verifier.pg.snapshot.PINNED``): 12345.67 stored as real is
    12345.67, not PostgreSQL's cast to numeric (12345.7). A money original is its exact amount
    (PostgreSQL's money-to-numeric cast). A text original is read by its ``[[text_amounts]]``
    rule; one that is no amount is NULL here (``unreadable`` tells it from a NULL original).
    """
    if pair.text is not None:
        cleaned = _text_cleaned(pair)
        x: sql.Composable = sql.SQL("(CASE WHEN {s} ~ {pattern} THEN {n}::numeric END)").format(
            s=cleaned, pattern=sql.Literal(_text_shape(pair)), n=_text_number(pair, cleaned))
    else:
        cast = "({}::text::numeric)" if pair.float_source else "({}::numeric)"
        x = sql.SQL(cast).format(_source(pair))
    c = sql.SQL("t.{}").format(sql.Identifier(pair.target))
    return x, c, sql.SQL("({x} * {m})").format(x=x, m=factor(pair))


def float_exact(f: sql.Composable) -> sql.Composable:
    """The exact value of the float8 ``f`` as numeric (NULL for NaN and infinities): its IEEE 754
    bits (float8send) decoded into sign, exponent and significand m, the value m * 2^k written in
    decimal as m * 5^-k shifted -k places (every binary fraction is a finite decimal). A real is
    widened to float8 first, which is exact. Costly: the classification reads it, for offenders
    only."""
    return sql.SQL("""(SELECT CASE WHEN e = 2047 THEN NULL
      WHEN k >= 0 THEN sgn * trunc(m::numeric * power(2::numeric, k))
      ELSE sgn * (left(p, k::int) || '.' || right(p, -k::int))::numeric END
    FROM (SELECT e, sgn, m, k, lpad(s, greatest(length(s), 1 - k::int), '0') AS p
          FROM (SELECT *, trunc(m::numeric * power(5::numeric, greatest(-k, 0)))::text AS s
                FROM (SELECT (bits >> 52) & 2047 AS e, CASE WHEN bits < 0 THEN -1 ELSE 1 END AS sgn,
                             (bits & 4503599627370495)
                               + CASE WHEN (bits >> 52) & 2047 = 0 THEN 0 ELSE 4503599627370496 END AS m,
                             CASE WHEN (bits >> 52) & 2047 = 0 THEN -1074
                                  ELSE ((bits >> 52) & 2047) - 1075 END AS k
                      FROM (SELECT ('x' || encode(float8send(({f})::float8), 'hex'))::bit(64)::bigint
                                   AS bits) b0) b1) b2) b3)""").format(f=f)


def _pair_wrong(plan: TablePlan, pair: Pair) -> sql.Composable:
    """True unless the cents are exactly the original times 100 (or both are NULL). Never NULL.

    With originals, only rows on both sides are compared (the others are
    row_missing or row_added).
    """
    _, c, h = _pair_terms(pair)
    # (IS DISTINCT FROM: the same truth as NOT coalesce(c = h, both NULL), some 8% cheaper per row.)
    wrong: sql.Composable = sql.SQL("({c} IS DISTINCT FROM {h})").format(c=c, h=h)
    if pair.text is not None:  # an unparsable text with NULL cents is wrong, not "both NULL"
        wrong = sql.SQL("({} OR {})").format(unreadable(pair), wrong)
    return sql.SQL("(t.verifier_matched AND {})").format(wrong) if plan.originals else wrong


def _identity_wrong(total: str, parts: tuple[str, ...]) -> sql.Composable:
    """True where every part is set and the total is not their sum (a NULL total included). Never NULL."""
    summed = sql.SQL(" + ").join(sql.SQL("t.{}::numeric").format(sql.Identifier(p)) for p in parts)
    return sql.SQL("(({s}) IS NOT NULL AND t.{t}::numeric IS DISTINCT FROM ({s}))").format(
        t=sql.Identifier(total), s=summed)


def _constraint_wrong(constraint: PendingConstraint) -> sql.Composable:
    # The expression is PostgreSQL's own deparse of a CHECK constraint of this
    # very table (pg_get_expr on pg_constraint.conbin), or "<identifier> IS NOT
    # NULL" composed with psycopg.sql; never text from a user. Like a CHECK,
    # NULL passes.
    expr = sql.SQL(constraint.expression)  # noqa: S608 - see the comment above
    return sql.SQL("NOT coalesce(({}), true)").format(expr)


def _non_finite(x: sql.Composable) -> sql.Composable:
    """True where the original is NaN, Infinity or -Infinity: no cents can stand for it.

    Compared as text: PostgreSQL before 14 has no numeric infinity, so the
    literal 'Infinity'::numeric would not even parse there. Only offending
    rows are classified, so the cast costs nothing on right rows.
    """
    return sql.SQL("({x}::text IN ('NaN', 'Infinity', '-Infinity'))").format(x=x)


def _storable(x: sql.Composable, e: sql.Composable, pair: Pair) -> sql.Composable:
    """The expected cents ``e`` where the target's type can hold them, else NULL (overflow, NaN,
    infinity).

    What the sums add up: cents a column cannot hold are no part of the
    sum it should have, and a number of 10^5000 cents would not even print.
    """
    return sql.SQL("CASE WHEN {nonfinite} OR abs({e}) > {big} THEN NULL ELSE {e} END").format(
        nonfinite=_non_finite(x), e=e, big=sql.Literal(pair.target_max))


def precedence(pair: Pair) -> tuple[str, ...]:
    """The row classes in the order a pair's classification tests them (before value_mismatch).

    The registry's order, except that for a real or double original float_artifact comes before
    rounding_mode: 1.005 stored as a double is 1.00499999999999989..., and cents of 100 are what its
    binary value rounds to before they are a rounding rule's (a numeric 1.005 at 100 is half-even's).
    """
    order = [r for r in ROW_RULES if r != "value_mismatch"]
    if pair.float_source:
        order.remove("float_artifact")
        order.insert(order.index("rounding_mode"), "float_artifact")
    return tuple(order)


def _pair_row(index: int, plan: TablePlan, pair: Pair, rounding: str) -> sql.Composable:
    """The VALUES row classifying one pair for the current (offending) row of ``t``."""
    x, c, h = _pair_terms(pair)
    unmatched = sql.SQL("WHEN NOT t.verifier_matched THEN NULL" if plan.originals else "")
    e = _expected(h, rounding)
    half_even = _expected(h, "half_even")
    nonfinite = _non_finite(x)
    f = sql.SQL("({}::float8)").format(_source(pair) if pair.float_source else x)
    tie = sql.SQL("({x} IS NOT NULL AND abs({h} - trunc({h})) = 0.5)").format(x=x, h=h)
    # float arithmetic on the way: the cents of the original through float8, and for a float
    # original those of its exact binary value and of PostgreSQL's cast to numeric.
    m = factor(pair)
    floats = [sql.SQL("round({f} * {m})").format(f=f, m=m), sql.SQL("trunc({f} * {m})").format(f=f, m=m)]
    if pair.float_source:
        for v in (float_exact(_source(pair)), sql.SQL("{}::numeric").format(_source(pair))):
            floats += [sql.SQL("round({v} * {m})").format(v=v, m=m),
                       sql.SQL("trunc({v} * {m})").format(v=v, m=m)]
    # When each class fits a row whose cents are not exactly its original times 100 (the right
    # rows give NULL first), given that no class before it fits; e is the expected cents under
    # the rounding mode. In the registry's precedence; the last, value_mismatch, is anything else.
    # A NULL original makes every test after null_coerced_to_zero NULL: its other cents fall to it.
    terms = {"x": x, "c": c, "h": h, "e": e, "half_even": half_even, "nonfinite": nonfinite,
             "big": sql.Literal(pair.target_max), "tie": tie, "floats": sql.SQL(", ").join(floats),
             "unreadable": unreadable(pair), "m": m}
    fits = {name: sql.SQL(test).format(**terms) for name, test in (
        ("unparsable_original", "{unreadable}"),
        ("unknown_currency", "{x} IS NOT NULL AND {m} IS NULL"),
        ("null_coerced_to_zero", "{x} IS NULL AND {c} = 0"),
        ("non_finite_original", "{nonfinite}"),
        ("overflow", "abs({e}) > {big}"),
        ("null_introduced", "{c} IS NULL"),
        ("sub_cent_loss", "{c} = {e}"),  # right under the rounding mode, but for the cent's fraction
        # A tie that a tie rule rounds to 0 (0.005 under half-even or truncation) is rounding_mode.
        ("missing_backfill", "{c} = 0 AND NOT {tie}"),
        ("sign_flip", "{c} = -{e}"),
        ("rounding_mode", "{c} IN (round({h}), {half_even}, trunc({h}), floor({h}), ceil({h}))"),
        ("float_artifact", "abs({h}) < 1e15 AND {c} IN ({floats})"),
        # The original times a power of ten other than its own (x1, x10, x1000, x10000 for cents).
        ("scale_error", "{c} IN (round({h} / 100), round({h} / 10), round({h} * 10), round({h} * 100))"),
    )}
    assert (*fits, "value_mismatch") == ROW_RULES, "the CASE must test the classes in the registry's order"
    klass = sql.SQL("CASE {unmatched} WHEN NOT {unreadable} AND (({x} IS NULL AND {c} IS NULL) OR {c} = {h}) "
                    "THEN NULL {whens} ELSE 'value_mismatch' END").format(
        unmatched=unmatched, x=x, c=c, h=h, unreadable=unreadable(pair),
        whens=sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}").format(fits[name], sql.Literal(name))
                                for name in precedence(pair)))
    impact = sql.SQL("""CASE
      WHEN {unreadable} THEN NULL
      WHEN {x} IS NULL THEN {c}::numeric
      WHEN {nonfinite} OR abs({e}) > {big} THEN NULL
      WHEN {c} IS NULL THEN -{e}
      ELSE {c} - {e} END""").format(x=x, c=c, e=e, big=sql.Literal(pair.target_max), nonfinite=nonfinite,
                                    unreadable=unreadable(pair))
    frac = sql.SQL("({x} IS NOT NULL AND {h} <> trunc({h}))").format(x=x, h=h)
    return sql.SQL(
        "({i}, {klass}, {impact}, {c}::numeric, {e_sum}, "
        "{tie}, {frac}, "
        "{frac} AND {c} = round({h}), {frac} AND {c} = {half_even}, {frac} AND {c} = trunc({h}), "
        "{shown}, {c}::text, CASE WHEN {nonfinite} THEN NULL ELSE {e}::text END)"
    ).format(i=sql.Literal(index), klass=klass, impact=impact, c=c, e=e, x=x, h=h, frac=frac,
             half_even=half_even, e_sum=_storable(x, e, pair), nonfinite=nonfinite, tie=tie,
             shown=sql.SQL("{}::text").format(_source(pair) if pair.text is not None else x))


def _identity_row(index: int, total: str, parts: tuple[str, ...]) -> sql.Composable:
    t = sql.SQL("t.{}").format(sql.Identifier(total))
    summed = sql.SQL(" + ").join(sql.SQL("t.{}::numeric").format(sql.Identifier(p)) for p in parts)
    return sql.SQL(
        "({i}, CASE WHEN {wrong} THEN 'identity_violation' END, coalesce({t}::numeric, 0) - ({summed}), "
        "NULL::numeric, NULL::numeric, false, false, false, false, false, "
        "{t}::text, ({summed})::text, NULL::text)"
    ).format(i=sql.Literal(index), wrong=_identity_wrong(total, parts), t=t, summed=summed)


def _constraint_row(index: int, constraint: PendingConstraint) -> sql.Composable:
    return sql.SQL(
        "({i}, CASE WHEN {wrong} THEN 'constraint_violation' END, "
        "NULL::numeric, NULL::numeric, NULL::numeric, false, false, false, false, false, "
        "NULL::text, NULL::text, NULL::text)"
    ).format(i=sql.Literal(index), wrong=_constraint_wrong(constraint))


def _row_row(index: int, plan: TablePlan, flag: str, rounding: str) -> sql.Composable:
    """The VALUES row of row_missing (impact: minus the expected cents the row held) or
    row_added (impact: the cents it brings)."""
    impact: sql.Composable
    if flag == "row_missing":
        impact = sql.SQL("-({})").format(_held(plan, rounding))
    else:
        brought = [sql.SQL("coalesce(t.{}, 0)::numeric").format(sql.Identifier(p.target)) for p in plan.pairs]
        brought += [sql.SQL("coalesce({}, 0)").format(e) for e in _unpaired_cents(plan, rounding, live=True)]
        impact = sql.SQL(" + ").join(brought) if brought else sql.SQL("NULL::numeric")
    return sql.SQL(
        "({i}, CASE WHEN t.{flag} THEN {rule} END, {impact}, NULL::numeric, NULL::numeric, "
        "false, false, false, false, false, NULL::text, NULL::text, NULL::text)"
    ).format(i=sql.Literal(index), flag=sql.Identifier(flag), rule=sql.Literal(flag), impact=impact)


def _unpaired_cents(plan: TablePlan, rounding: str, *, live: bool) -> list[sql.Composable]:
    """The cents of each amount (numeric, money, real, double) that the migrations kept and no pair
    verifies, live or as recorded (``Kept.ref``), each once: the amount times 100 under the
    rounding mode, as a pair's expected cents (a float read at its shortest round-trip decimal);
    NULL where it is NaN or infinite."""
    paired = {p.source_ref for p in plan.pairs}
    columns: dict[str, str] = {}
    for k in plan.kept:
        if k.kind in ("numeric", "money", "float") and k.ref not in paired:
            columns.setdefault(k.column if live else k.ref, k.kind)
    cents: list[sql.Composable] = []
    for column, kind in columns.items():
        x = sql.SQL("t.{}::text::numeric" if kind == "float" else "t.{}::numeric").format(
            sql.Identifier(column))
        cents.append(sql.SQL("CASE WHEN {} THEN NULL ELSE {} END").format(
            _non_finite(x), _expected(sql.SQL("({} * 100)").format(x), rounding)))
    return cents


def _held(plan: TablePlan, rounding: str) -> sql.Composable:
    """The cents a row's originals hold (what a lost row takes away, a copied one adds): the
    expected cents of every pair, and of each amount no cents replaced (``_unpaired_cents``); 0
    for a row with neither. NaN and infinite amounts count 0."""
    held = []
    for p in plan.pairs:
        x, _, h = _pair_terms(p)
        held.append(_storable(x, _expected(h, rounding), p))
    held += _unpaired_cents(plan, rounding, live=False)
    if not held:
        return sql.SQL("0::numeric")
    return sql.SQL(" + ").join(sql.SQL("coalesce({}, 0)").format(e) for e in held)


# Whether a unique, valid, whole-table index on plain columns covers a subset of the given columns
# (then no key value can repeat). PostgreSQL 15, "CREATE INDEX": a partial or expression index
# does not make the columns unique.
UNIQUE_KEY_SQL = """
SELECT 1 FROM pg_catalog.pg_index i
WHERE i.indrelid = %(oid)s::oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
  AND i.indexprs IS NULL
  AND (SELECT pg_catalog.array_agg(a.attname::text) FROM pg_catalog.pg_attribute a
       WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])) <@ %(names)s::text[]
LIMIT 1
"""


def build_duplicates_query(plan: TablePlan, rounding: str) -> sql.Composed:
    """Originals matched by more than one live row (a migration dropped the key's uniqueness and
    copied rows): per such key its JSON, the copies beyond the first, and the expected cents those
    copies add (copies x the cents the original holds), as text."""
    assert plan.originals is not None
    live = plan.originals.live_key_names
    key = sql.SQL("json_build_object({})::text").format(sql.SQL(", ").join(
        sql.SQL("{}, t.{}").format(sql.Literal(k), sql.Identifier(k)) for k in live))
    return sql.SQL("SELECT {key}, (count(*) - 1)::text, ((count(*) - 1) * min({held}))::text "
                   "FROM {table} AS t WHERE t.verifier_matched GROUP BY {cols} HAVING count(*) > 1 "
                   "ORDER BY 1").format(
        key=key, held=_held(plan, rounding), table=relation(plan),
        cols=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in live))


def _kept_wrong(kept: Kept) -> sql.Composable:
    """True where a matched row's kept column differs from its recorded value. Never NULL."""
    return sql.SQL("(t.verifier_matched AND t.{} IS DISTINCT FROM t.{})").format(
        sql.Identifier(kept.column), sql.Identifier(kept.ref))


def _kept_row(index: int, kept: Kept) -> sql.Composable:
    """The VALUES row of original_changed: the impact is the change in cents for an exact amount
    (numeric, money; NULL where either side is NaN or infinite), NULL for floats, text and codes."""
    live = sql.SQL("t.{}").format(sql.Identifier(kept.column))
    was = sql.SQL("t.{}").format(sql.Identifier(kept.ref))
    impact: sql.Composable = sql.SQL("NULL::numeric")
    if kept.kind in ("numeric", "money"):
        x, y = sql.SQL("{}::numeric").format(live), sql.SQL("{}::numeric").format(was)
        impact = sql.SQL("CASE WHEN {a} OR {b} THEN NULL ELSE ({x} - coalesce({y}, 0)) * 100 END").format(
            a=_non_finite(x), b=_non_finite(y), x=sql.SQL("coalesce({}, 0)").format(x), y=y)
    return sql.SQL(
        "({i}, CASE WHEN {wrong} THEN 'original_changed' END, {impact}, NULL::numeric, NULL::numeric, "
        "false, false, false, false, false, pg_catalog.format('%s', {was}), pg_catalog.format('%s', {live}), "
        "NULL::text)"
    ).format(i=sql.Literal(index), wrong=_kept_wrong(kept), impact=impact, was=was, live=live)


def checks_of(plan: TablePlan, identities: list[tuple[str, tuple[str, ...]]],
              constraints: list[PendingConstraint]) -> list[Check]:
    result = [Check(i, "pair", p.target, f"{p.source} -> {p.target}", p.source)
              for i, p in enumerate(plan.pairs)]
    for total, parts in identities:
        result.append(Check(len(result), "identity", total, f"{total} = {' + '.join(parts)}"))
    for con in constraints:
        result.append(Check(len(result), "constraint", con.column, con.label, con.name))
    for kept in plan.kept:
        result.append(Check(len(result), "kept", kept.column, f"{kept.column} as recorded ({kept.recorded})",
                            kept.recorded))
    for flag in ROW_FLAGS if plan.originals else ():
        result.append(Check(len(result), "row", None, flag))
    return result


def _wrongs(plan: TablePlan, identities: list[tuple[str, tuple[str, ...]]],
            constraints: list[PendingConstraint]) -> list[sql.Composable]:
    """One never-NULL predicate per check, in check order: the row is not right."""
    return ([_pair_wrong(plan, p) for p in plan.pairs]
            + [_identity_wrong(total, parts) for total, parts in identities]
            + [_constraint_wrong(con) for con in constraints]
            + [_kept_wrong(kept) for kept in plan.kept]
            + [sql.SQL("t.{}").format(sql.Identifier(f)) for f in (ROW_FLAGS if plan.originals else ())])


def build_summary_query(plan: TablePlan, identities: list[tuple[str, tuple[str, ...]]],
                        constraints: list[PendingConstraint]) -> sql.Composed:
    """One statement, one row: the row count, then per check (offending rows, sum of the cents),
    then per pair the largest |cents| where the target is a narrow integer (else NULL).

    A pair's row is right when its cents are exactly its original times 100
    (both NULL counts as right); anything else is an offender, to be
    classified by ``build_offenders_query``. The sum is NULL for checks
    that are not pairs.
    """
    columns: list[sql.Composable] = [sql.SQL("count(*)")]
    for i, wrong in enumerate(_wrongs(plan, identities, constraints)):
        columns.append(sql.SQL("count(*) FILTER (WHERE {})").format(wrong))
        matched = sql.SQL(" FILTER (WHERE t.verifier_matched)" if plan.originals else "")
        columns.append(sql.SQL("sum(t.{}){}").format(sql.Identifier(plan.pairs[i].target), matched)
                       if i < len(plan.pairs) else sql.SQL("NULL::numeric"))
    for pair in plan.pairs:  # headroom of an integer or smallint target
        columns.append(sql.SQL("max(abs(t.{}::bigint))").format(sql.Identifier(pair.target)) if pair.narrow
                       else sql.SQL("NULL::bigint"))
    return sql.SQL("SELECT {} FROM {} AS t").format(sql.SQL(", ").join(columns), relation(plan))


OFFENDER_COLUMNS = ("row_key", "check_index", "class", "source_text", "target_text", "expected_text",
                    "impact", "cents", "expected", "tie", "frac", "fit_half_away", "fit_half_even",
                    "fit_truncate", "first")


def build_offenders_query(plan: TablePlan, rounding: str,
                          identities: list[tuple[str, tuple[str, ...]]],
                          constraints: list[PendingConstraint]) -> sql.Composed:
    """Every offending (row, check), classified: the columns of ``OFFENDER_COLUMNS``, as text.

    The scan keeps only rows the summary's predicates call offending, so the
    classification runs on offenders only, and of each such row only on its
    offending checks (each check's row is computed only where its predicate
    holds: as one VALUES list, every check's row was computed for every
    offending row, and a table of two pairs with one wrong took 4.4 times as
    long as the wrong pair alone). ``first`` is true on the line of a row's
    first offending check: counting those counts offending rows once.
    """
    key: sql.Composable
    if plan.key:
        key = sql.SQL("json_build_object({})::text").format(sql.SQL(", ").join(
            sql.SQL("{}, t.{}").format(sql.Literal(k), sql.Identifier(k)) for k in plan.key))
    else:
        # No primary key: the whole row identifies it (the table's own columns only).
        key = (sql.SQL("(to_jsonb(t) - {})::text").format(sql.Literal(currency.FACTOR)) if plan.currency
               else sql.SQL("to_json(t)::text"))
    rows = [_pair_row(i, plan, p, rounding) for i, p in enumerate(plan.pairs)]
    for total, parts in identities:
        rows.append(_identity_row(len(rows), total, parts))
    for con in constraints:
        rows.append(_constraint_row(len(rows), con))
    for kept in plan.kept:
        rows.append(_kept_row(len(rows), kept))
    for flag in ROW_FLAGS if plan.originals else ():
        rows.append(_row_row(len(rows), plan, flag, rounding))
    wrongs = _wrongs(plan, identities, constraints)
    first = sql.SQL("CASE {} END").format(sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(w, sql.Literal(i)) for i, w in enumerate(wrongs)))
    return sql.SQL("""SELECT {key}, v.check_index, v.class, v.source_text, v.target_text, v.expected_text,
       v.impact::text, v.cents::text, v.expected::text, v.tie, v.frac, v.fit_half_away, v.fit_half_even,
       v.fit_truncate, v.check_index = {first}
FROM {table} AS t
CROSS JOIN LATERAL ({values}) AS v(check_index, class, impact, cents, expected, tie, frac,
     fit_half_away, fit_half_even, fit_truncate, source_text, target_text, expected_text)
WHERE ({any_wrong}) AND v.class IS NOT NULL""").format(
        key=key, table=relation(plan), values=sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT * FROM (VALUES {}) AS r WHERE {}").format(row, wrong)
            for row, wrong in zip(rows, wrongs, strict=True)),
        first=first, any_wrong=sql.SQL(" OR ").join(wrongs))
