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

# The sign convention, read from (at most) the first entries, per account type.
CONVENTION_SQL = """
SELECT a.{accounts_type}::text AS a_type,
       count(*) FILTER (WHERE s.after = s.before - s.amount),
       count(*) FILTER (WHERE s.after = s.before + s.amount),
       count(*) FILTER (WHERE (s.etype = {debit}) = (s.amount > 0)),
       count(*) FILTER (WHERE (s.etype = {debit}) = (s.amount < 0)), count(*)
FROM (SELECT e.{entries_after}::numeric AS after, e.{entries_before}::numeric AS before,
             e.{entries_amount}::numeric AS amount, e.{entries_type}::text AS etype,
             e.{entries_account} AS account_id
      FROM {entries} e LIMIT {limit}) s
LEFT JOIN {accounts} a ON a.{accounts_id} = s.account_id
GROUP BY 1 ORDER BY 1
"""


def detect_convention(conn: psycopg.Connection, layout: Layout) -> tuple[inv.Convention, dict[str, Any]]:
    """The configured convention, or the one most of the first entries follow.

    The balance rule is read per account type: types configured as
    debit-normal (``debit_normal_account_types``) follow the opposite one.
    Raises ``UsageError`` when the entries follow no single rule (some
    account types one way, some the other, none configured), naming the
    types of each side and the setting that would fit them.
    """
    filled = inv.names(layout, inv.Convention(-1, 1))
    filled["limit"] = sql.Literal(CONVENTION_SAMPLE_ROWS_MAX)
    by_type = {str(t): tuple(int(v) for v in rest)
               for t, *rest in conn.execute(inv.compose(CONVENTION_SQL, filled)).fetchall()}
    normal = set(layout.debit_normal_account_types)
    # Votes, with the debit-normal types' entries counted the other way round.
    minus = sum(v[1] if t in normal else v[0] for t, v in by_type.items())
    plus = sum(v[0] if t in normal else v[1] for t, v in by_type.items())
    debit_positive = sum(v[2] for v in by_type.values())
    debit_negative = sum(v[3] for v in by_type.values())
    read = sum(v[4] for v in by_type.values())
    evidence: dict[str, Any] = {"entries_read": read, "after_is_before_minus_amount": minus,
                "after_is_before_plus_amount": plus, "positive_amount_is_debit": debit_positive,
                "negative_amount_is_debit": debit_negative,
                "debit_normal_account_types": sorted(normal)}

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
    _one_rule(by_type, normal, balance)
    convention = inv.Convention(direction=-1 if balance == 0 else 1, debit_sign=1 if positive == 0 else -1)
    return convention, evidence


def _one_rule(by_type: dict[str, tuple[int, ...]], normal: set[str], balance: int) -> None:
    """Raise ``UsageError`` when some account types' entries mostly follow the other balance rule."""
    ways: dict[int, list[str]] = {0: [], 1: []}
    for t, v in by_type.items():
        if v[0] != v[1]:
            way = 0 if v[0] > v[1] else 1
            ways[1 - way if t in normal else way].append(t)
    if ways[0] and ways[1]:
        others = sorted(ways[1 - balance])
        raise UsageError(
            "The ledger's entries follow no single sign rule: account type(s) "
            f"{', '.join(sorted(ways[0]))} follow balance_after = balance_before - amount, "
            f"{', '.join(sorted(ways[1]))} follow balance_after = balance_before + amount.",
            hint="If the second kind are kept in the other normal balance (debit-normal assets beside "
                 "credit-normal wallets and revenue), say so in [tool.verifier.ledger]: "
                 f"debit_normal_account_types = {[*sorted(normal), *others]!r}".replace("'", '"'))
