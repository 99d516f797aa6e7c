"""The ledger's sign convention: configured, or detected from its entries, and stated in the report.

Two halves (``verifier.ledger.invariants.Convention``): does a balance after
equal the balance before minus the amount, or plus it; is a positive amount
a debit or a credit. Each is configured (``balance_rule``, ``positive_is``
in ``[tool.verifier.ledger]``) or read from the first entries by id: the
way most of them follow wins, a tie is an error that asks for the setting.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from verifier.config.ledger import BALANCE_RULES, POSITIVE_IS, Layout
from verifier.errors import UsageError
from verifier.ledger import invariants as inv

CONVENTION_SAMPLE_ROWS_MAX = 100_000  # entries read to detect the sign convention

# The sign convention, read from (at most) the first entries by id.
CONVENTION_SQL = """
SELECT count(*) FILTER (WHERE after = before - amount), count(*) FILTER (WHERE after = before + amount),
       count(*) FILTER (WHERE (etype = {debit}) = (amount > 0)),
       count(*) FILTER (WHERE (etype = {debit}) = (amount < 0)), count(*)
FROM (SELECT {entries_after}::numeric AS after, {entries_before}::numeric AS before,
             {entries_amount}::numeric AS amount, {entries_type}::text AS etype
      FROM {entries} LIMIT {limit}) s
"""


def detect_convention(conn: psycopg.Connection, layout: Layout) -> tuple[inv.Convention, dict[str, Any]]:
    """The configured convention, or the one most of the first entries follow."""
    filled = inv.names(layout, inv.Convention(-1, 1))
    filled["limit"] = sql.Literal(CONVENTION_SAMPLE_ROWS_MAX)
    row = conn.execute(inv.compose(CONVENTION_SQL, filled)).fetchone()
    assert row is not None
    minus, plus, debit_positive, debit_negative, read = (int(v) for v in row)
    evidence: dict[str, Any] = {"entries_read": read, "after_is_before_minus_amount": minus,
                "after_is_before_plus_amount": plus, "positive_amount_is_debit": debit_positive,
                "negative_amount_is_debit": debit_negative}

    def choose(configured: str, options: tuple[str, str], votes: tuple[int, int], what: str) -> int:
        """0 for the first option (the platform's), 1 for the second."""
        if configured != "detect":
            evidence[what] = "configured"
            return options.index(configured)
        if read == 0:  # nothing to detect from: the platform's convention, said so
            evidence[what] = "assumed (no entries)"
            return 0
        if votes[0] == votes[1]:
            raise UsageError(f"Cannot tell the ledger's {what} from its entries ({votes[0]} entries each "
                             "way).", hint=f"Set ledger.{what} in [tool.verifier.ledger].")
        evidence[what] = "detected"
        return 0 if votes[0] > votes[1] else 1

    balance = choose(layout.balance_rule, BALANCE_RULES, (minus, plus), "balance_rule")
    positive = choose(layout.positive_is, POSITIVE_IS, (debit_positive, debit_negative), "positive_is")
    convention = inv.Convention(direction=-1 if balance == 0 else 1, debit_sign=1 if positive == 0 else -1)
    return convention, evidence
