"""The ledger's invariants as SQL: a few passes, each proving several rules at once.

A ``Pass`` is one relation ``x`` (a scan of the ledger, joined and windowed
as its rules need) and the ``Rule``s that each row of ``x`` may break.
From a pass, ``summary_query`` builds the one statement every audit runs:
it reads ``x`` once and returns, per rule, how many rows break it (a
weighted count: a missing journal's row stands for its entries) and their
cents impact. ``offenders_query`` runs only for a pass whose summary found
something: it lists the offending rows, one per (row, rule), to stream to
offenders.csv and to keep samples from; its counts must equal the
summary's.

The SQL text here is constant. Table and column names are placeholders
(``{entries}``, ``{entries_amount}``) that ``compose`` fills with
``psycopg.sql.Identifier``s from the layout; the sign convention and the
configured values are ``psycopg.sql.Literal``s.

What the passes prove, and what they cost on a ledger of n entries:

- ``journals``: one scan of the entries, aggregated per journal, joined
  to the journals. A journal balances (sum zero), has at least two entries and
  one currency (its own); no journal is empty; no entry names a journal
  that does not exist.
- ``chain``: the entries in (account, seq) order with a window, joined to
  the accounts (a full audit sorts them, in account ranges that the
  workers read at once: ``verifier.ledger.audit.split_chain``). Every
  entry's sign matches its type; its before
  equals its account's previous after (0 for the first), and its after
  follows from before and amount; no account that must not go negative
  ever did; every entry names an account; every account's balance equals
  its last entry's balance after.
- ``trial``: per currency, the entries sum to zero.
- ``accounts``: an account without entries holds nothing.
- ``reversals``, ``snapshots``, ``pending``, ``idempotency``: the smaller
  tables, each joined to the entries through their indexes.
- ``reconcile``: each legacy balance column against the balance of its
  owner's ledger account.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from psycopg import sql

from verifier.config.ledger import Layout, Reconcile
from verifier.ledger.history import ids
from verifier.ledger.state import LastEntry


@dataclass(frozen=True)
class Rule:
    rule: str
    table: str  # the logical table whose ids the rule reports
    when: str  # SQL over x: the row breaks the rule
    id: str  # SQL over x: the id reported (as text)
    impact: str = "0"  # SQL over x: cents impact (numeric)
    weight: str = "1"  # SQL over x: how many rows of ``table`` the row stands for
    detail: str = "NULL"  # SQL over x: a short text saying what is wrong
    # For a rule about rows of proven history: (history table, SQL over x: the id that decides whether
    # the row lies in the proven part). An incremental audit re-checks only rows beyond the watermark,
    # and reports the offenders found earlier in proven history from the state file.
    scope: tuple[str, str] | None = None
    group: str = "NULL"  # SQL over x: what the report totals the rule's offenders by (an account type)


@dataclass(frozen=True)
class Pass:
    name: str
    source: str  # SQL: the relation x
    rules: tuple[Rule, ...]
    totals: tuple[tuple[str, str], ...] = ()  # (name, aggregate over x): what the pass read
    # SQL after the summary's FROM (a placeholder): "GROUP BY ..." reads it as rows whose counts,
    # impacts and totals add up (``verifier.ledger.audit._summary``); "" as one row.
    group_by: str = ""


def _fill(template: str, **parts: str) -> str:
    """``template`` with each ``<<part>>`` replaced: one text for a full and an incremental pass."""
    filled = re.sub(r"<<(\w+)>>", lambda m: parts[m.group(1)], template)
    assert "<<" not in filled
    return filled


# Per journal: its entries aggregated. A full audit reads every entry; an
# incremental one the entries beyond the watermark and those of new journals
# (an old, proven journal that gained entries is history_tampered).
# An entry's currency is {entry_currency}: its own column, or (where entries
# carry none) its account's, through {currency_join}: in the journals pass
# ({journal_cur_min}, {journal_cur_max}, {journal_currency_join}) a constant
# where the accounts hold at most one currency and neither entries nor
# journals carry one, since no journal can then mix currencies (min and max
# pass over an orphan's NULL; an account without a currency is a finding of
# the accounts pass): the join with the accounts was 37% of the pass on 10^7
# entries, min and max of the constant 16% of the rest. A journal's currency
# is {journal_currency} (NULL where journals carry none).
_JOURNALS_GROUPED = """
    SELECT g.journal_id, g.n, g.total, g.moved, g.cur_min, g.cur_max, g.max_entry,
           j.{journals_id} AS j_id, {journal_currency} AS j_currency, <<proven>> AS j_proven
    FROM (SELECT e.{entries_journal} AS journal_id, count(*) AS n, sum(e.{entries_amount}) AS total,
                 sum(e.{entries_amount}) FILTER (WHERE e.{entries_amount} > 0) AS moved,
                 {journal_cur_min} AS cur_min, {journal_cur_max} AS cur_max, max(e.{entries_seq}) AS max_entry
          FROM {entries} e {journal_currency_join} WHERE <<entries>> GROUP BY e.{entries_journal}) g
    <<join>> (SELECT * FROM {journals} jj WHERE <<journals>>) j ON j.{journals_id} = g.journal_id
    """
_NEW_EMPTY_JOURNALS = """
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, j.{journals_id}, {journal_currency}, false
    FROM {journals} j WHERE (j.{journals_id} > {jw}{late_j})
      AND NOT EXISTS (SELECT 1 FROM {entries} e WHERE e.{entries_journal} = j.{journals_id})
    """
_JOURNAL_OK = "NOT x.j_proven AND "  # a proven journal's new entries are history_tampered, nothing else
JOURNALS = Pass(
    "journals",
    _fill(_JOURNALS_GROUPED, proven="false", entries="true", join="FULL JOIN", journals="true"),
    (
        Rule("journal_unbalanced", "journals",
             _JOURNAL_OK + "x.j_id IS NOT NULL AND x.n >= 2 AND x.total <> 0",
             "x.journal_id", impact="x.total", detail="'entries sum to ' || x.total || ' cents'",
             scope=("journals", "x.j_id")),
        Rule("journal_too_few_entries", "journals", _JOURNAL_OK + "x.j_id IS NOT NULL AND x.n = 1",
             "x.journal_id", impact="x.total", detail="'one entry of ' || x.total || ' cents'",
             scope=("journals", "x.j_id")),
        Rule("journal_mixed_currency", "journals",
             _JOURNAL_OK + "x.j_id IS NOT NULL AND x.n IS NOT NULL "
             "AND (x.cur_min <> x.cur_max "
             "OR ({has_journal_currency} AND x.cur_min IS DISTINCT FROM x.j_currency))",
             "x.journal_id",
             detail="CASE WHEN {has_journal_currency} THEN 'journal in ' || coalesce(x.j_currency, 'NULL') "
                    "|| ', ' ELSE '' END || 'entries in ' || coalesce(x.cur_min, 'NULL') "
                    "|| CASE WHEN x.cur_min <> x.cur_max THEN '..' || x.cur_max ELSE '' END",
             scope=("journals", "x.j_id")),
        Rule("empty_journal", "journals", "x.n IS NULL", "x.j_id", scope=("journals", "x.j_id")),
        Rule("orphan_entry", "entries", "x.n IS NOT NULL AND x.j_id IS NULL", "x.journal_id",
             impact="coalesce(x.moved, 0)", weight="x.n",
             detail="x.n || ' entries name journal ' || coalesce(x.journal_id::text, 'NULL') "
                    "|| ', which does not exist'", scope=("entries", "x.max_entry")),
        Rule("history_tampered", "entries", "x.j_proven", "x.journal_id",
             impact="coalesce(x.moved, 0)", weight="x.n",
             detail="x.n || ' new entries (up to id ' || x.max_entry || ') added to journal ' "
                    "|| x.journal_id || ', which an earlier audit proved complete'",
             scope=("entries", "x.max_entry")),
    ),
    totals=(("entries", "coalesce(sum(x.n), 0)"), ("journals", "count(x.j_id)")),
)
# The new entries' journals only, each found through the journals' key (LATERAL; OFFSET 0 keeps
# PostgreSQL from flattening it into a join that reads every journal: 2.9 s of a 3.5 s
# incremental audit of 10^7 entries). Entries without a seq are read here only as entries of new
# journals: read with a proven journal, they would make it one that "gained entries" on every audit
# (found by a break-it run); an entry without a seq added to a proven journal is therefore a full
# audit's to find (the chain and trial passes read it every time).
INC_JOURNALS = replace(JOURNALS, source=_fill(
    _JOURNALS_GROUPED, proven="(j.{journals_id} <= {jw}{not_late_j})",
    entries="e.{entries_seq} > {w} OR e.{entries_journal} > {jw}{late_e}{late_ej}", join="LEFT JOIN LATERAL",
    journals="jj.{journals_id} = g.journal_id OFFSET 0") + _NEW_EMPTY_JOURNALS)

# Per currency, every entry of the ledger: few groups, so PostgreSQL's own
# parallel workers can share the scan. Where entries take their account's
# currency, summed per account first, then per currency ({trial_key},
# {trial_join}, {trial_currency}): 0.7 s against 1.05 s for joining every
# entry with its account, on 10^7 entries.
_TRIAL = """
    SELECT {trial_currency} AS currency, sum(t.total) AS total
    FROM (SELECT {trial_key} AS key, sum(e.{entries_amount}) AS total FROM {entries} e
          WHERE <<entries>> GROUP BY 1) t {trial_join}
    GROUP BY 1"""
TRIAL = Pass(
    "trial",
    _fill(_TRIAL, entries="true"),
    (
        Rule("trial_balance_nonzero", "entries", "x.total <> 0", "coalesce(x.currency, 'NULL')",
             impact="x.total",
             detail="'entries in ' || coalesce(x.currency, 'NULL') || ' sum to ' || x.total || ' cents'"),
    ),
    totals=(("currencies", "count(*)"),
            # The report's trial balance chart: per currency, what its entries sum to (exact, as text).
            ("by_currency", "coalesce(jsonb_object_agg(coalesce(x.currency, 'NULL'), x.total::text), "
                            "jsonb_build_object())")),
)
# The full trial pass folded into the full chain pass (``fold_trial``): the same rows (currency,
# total), from the chain's figures ({chain_trial}: a VALUES list), with the same rules and totals.
TRIAL_FOLDED = replace(TRIAL, source="SELECT t.currency, t.total FROM {chain_trial} t(currency, total)")
TRIAL_FIGURES = ("trial_rows", "trial_sums", "trial_null")
# The chain's totals that are breakdowns (currency -> exact sum as text); the others are counts.
BREAKDOWNS = frozenset({"opening_by_currency", *TRIAL_FIGURES})

# The entries beyond the watermark, plus the proven entries' sums per
# currency ({carried}: from the state file).
INC_TRIAL = replace(TRIAL, source=_fill("""
    SELECT currency, sum(total) AS total
    FROM (SELECT n.currency, n.total::numeric FROM (<<new>>) n
          UNION ALL SELECT * FROM {carried}) u
    GROUP BY 1
    """, new=_fill(_TRIAL, entries="(e.{entries_seq} > {w} OR e.{entries_seq} IS NULL{late_t})")))

# Below 2^62 in magnitude, before + direction * amount cannot overflow a
# bigint; beyond (corrupt values), the same comparison runs in numeric.
_SAFE = ("x.before BETWEEN -4611686018427387904 AND 4611686018427387903 "
         "AND x.amount BETWEEN -4611686018427387904 AND 4611686018427387903")

# The window reads the entries alone, in (account, seq) order; the accounts
# join afterwards. An account's first entry starts from its opening balance
# (its balance before; money enters a ledger whose balances never go below
# zero only so); every later entry's before must be the previous after, and
# every after follow from before and amount, in the account's direction
# ({direction}: -1 for after = before - amount; the opposite for the
# debit-normal account types). An account's balance is held against its
# last entry's balance after; a break in the chain is reported where it
# happens. The accounts' own figures (type as text, direction) are computed
# once per account (OFFSET 0 keeps them below the join), not once per entry;
# an entry's id stays in its own type until an offender is written.
_CHAIN = """
    SELECT w.*, a.a_id, a.a_type, a.a_balance, a.a_currency, coalesce(a.dir, {direction}) AS dir
    FROM (SELECT e.{entries_id} AS id, e.{entries_seq} AS seq, e.{entries_account} AS account_id,
                 e.{entries_type}::text AS entry_type, {own_currency} AS e_currency,
                 e.{entries_amount} AS amount, e.{entries_before} AS before, e.{entries_after} AS after,
                 <<prev_after>> AS prev_after, <<is_last>> AS is_last
          FROM {entries} e <<seed>> WHERE <<entries>> AND {chain_range}
          WINDOW w AS (<<window>>)) w
    LEFT JOIN (SELECT a.{accounts_id} AS a_id, a.{accounts_type}::text AS a_type,
                      a.{accounts_balance} AS a_balance, a.{accounts_currency}::text AS a_currency,
                      CASE WHEN a.{accounts_type}::text = ANY({debit_normal}) THEN -{direction}
                           ELSE {direction} END AS dir
               FROM {accounts} a OFFSET 0) a ON a.a_id = w.account_id
    """
_BREAK = ("x.before IS NULL OR (x.prev_after IS NOT NULL AND x.before <> x.prev_after) OR CASE WHEN "
          + _SAFE + " THEN x.after IS DISTINCT FROM x.before + x.dir * x.amount"
          " ELSE x.after::numeric IS DISTINCT FROM x.before::numeric + x.dir * x.amount::numeric END")
_CHAIN_RULES = (
    Rule("entry_sign_mismatch", "entries",
         "NOT coalesce((x.entry_type = {debit} AND sign(x.amount) = {debit_sign}) "
         "OR (x.entry_type = {credit} AND sign(x.amount) = -{debit_sign}), false)",
         "x.id", detail="coalesce(x.entry_type, 'NULL') || ' of ' || x.amount || ' cents'",
         scope=("entries", "x.seq")),
    Rule("running_balance_break", "entries", _BREAK, "x.id",
         impact="CASE WHEN x.prev_after IS NOT NULL AND x.before IS DISTINCT FROM x.prev_after "
                "THEN x.before::numeric - x.prev_after "
                "ELSE x.after::numeric - (x.before::numeric + x.dir * x.amount::numeric) END",
         detail="CASE WHEN x.prev_after IS NOT NULL AND x.before IS DISTINCT FROM x.prev_after "
                "THEN 'before ' || coalesce(x.before::text, 'NULL') || ', previous after ' || x.prev_after "
                "ELSE 'after ' || coalesce(x.after::text, 'NULL') || ' from before ' "
                "|| coalesce(x.before::text, 'NULL') || ' and amount ' || x.amount END",
         scope=("entries", "x.seq")),
    Rule("negative_balance", "entries",
         "x.after < 0 AND x.a_id IS NOT NULL AND ({all_non_negative} OR x.a_type = ANY({non_negative}))",
         "x.id", impact="x.after",
         detail="x.a_type || ' account ' || x.account_id || ' at ' || x.after || ' cents'",
         scope=("entries", "x.seq")),
    Rule("orphan_entry", "entries", "x.a_id IS NULL", "x.id", impact="abs(x.amount::numeric)",
         detail="'account ' || coalesce(x.account_id::text, 'NULL') || ' does not exist'",
         scope=("entries", "x.seq")),
    Rule("account_balance_drift", "accounts",
         "x.is_last AND x.a_id IS NOT NULL AND x.a_balance IS DISTINCT FROM x.after",
         "x.a_id", group="x.a_type",
         # (a NULL balance, or balance after, counts as 0: the drift is the other, as an incremental
         # audit counts it; it counted nothing, found by a break-it run)
         impact="coalesce(x.a_balance::numeric, 0) - coalesce(x.after::numeric, 0)",
         detail="'balance ' || coalesce(x.a_balance::text, 'NULL') || ', its last entry says ' "
                "|| coalesce(x.after::text, 'NULL')"),
)
# Only where entries carry a currency of their own.
ENTRY_CURRENCY = Rule(
    "entry_currency_mismatch", "entries",
    "x.a_id IS NOT NULL AND x.e_currency IS DISTINCT FROM x.a_currency", "x.id",
    impact="abs(x.amount::numeric)",
    detail="'entry in ' || coalesce(x.e_currency, 'NULL') || ', account ' || x.account_id || ' in ' "
           "|| coalesce(x.a_currency, 'NULL')", scope=("entries", "x.seq"))
# The window: each account's entries in seq order, or (``packed_chain``) every entry in the order of
# one integer key that orders them alike, where prev_after and is_last look at the account.
_PARTITIONED = dict(window="PARTITION BY e.{entries_account}{as_text} "
                           "ORDER BY e.{entries_seq}, e.{entries_id}",
                    is_last="lead(true) OVER w IS NULL")
CHAIN = Pass(
    "chain",
    _fill(_CHAIN, prev_after="{chain_prev_after}", is_last="{chain_is_last}", window="{chain_window}",
          entries="true", seed=""),
    _CHAIN_RULES,
    totals=(("accounts_with_entries", "count(*) FILTER (WHERE x.is_last AND x.a_id IS NOT NULL)"),
            # Opening balances: each account's first entry starts from one (0 is none).
            ("accounts_with_opening_balance",
             "count(*) FILTER (WHERE x.prev_after IS NULL AND x.before <> 0)"),
            ("opening_by_currency", "{opening_by_currency}"),
            # The trial balance's figures, where a full audit folds that pass into this one
            # (``fold_trial``); else empty.
            *((name, "{chain_" + name + "}") for name in TRIAL_FIGURES)),
    # Per currency, where the accounts hold several (``names``): its figures per currency then cost
    # one aggregate each, not one per currency and entry (10^7 entries of 20 currencies: a chain
    # range 5.5 s against 9.0 s of CPU).
    group_by="{chain_group_by}",
)
# Each account's last entry among those <<upto>> admits (account, seq,
# after; of entries that share its seq, the one of the highest id, as the
# chain's window orders them): one scan, aggregated per account, then each
# found by its seq. Not a probe per account: without an index on (account,
# seq), as the platform has none, "its newest entry" walks an index of the
# account's every entry, or the table's newest ids back to the account's,
# for each account (20 s on 10^7).
_LAST_ENTRIES = """
    (SELECT DISTINCT ON (m.account) m.account, p.{entries_seq} AS seq, p.{entries_after} AS after
     FROM (SELECT l.{entries_account}{as_text} AS account, max(l.{entries_seq}) AS seq FROM {entries} l
           WHERE <<upto>> GROUP BY 1) m
     JOIN {entries} p ON p.{entries_seq} = m.seq AND p.{entries_account}{as_text} = m.account
     ORDER BY m.account, p.{entries_id} DESC)"""
# The state's: a json array of objects keyed by the entries' own column names, read into the
# entries' row type, so that each value has its column's type (a citext account compares as citext).
# One per account as the audit tells accounts apart (``as_text``; else the column's own equality, a
# nondeterministic collation's too): the state keys them by their text, so ids that such a
# collation holds equal ('A1', 'a1') were two last entries, and an account's next entries were
# chained from both (false running_balance_break, every night; found by a break-it run). Its last
# is the one of the highest seq; its currency, type and existence those its first entries were
# proven with, the lowest seq's (the highest's were taken as they were when 'U1' was first proven:
# an account moved to another currency, then posted to as 'U1', was history_tampered no more, and
# every audit after passed what a full audit finds: found by a break-it run).
PROVEN_LAST_STATE = """
    (SELECT DISTINCT ON (t.{entries_account}{as_text})
            t.{entries_account} AS account, t.{entries_seq} AS seq, t.{entries_after} AS after,
            first_value(j ->> 'verifier_currency') OVER first_proven AS currency,
            first_value(j ->> 'verifier_type') OVER first_proven AS type,
            first_value((j ->> 'verifier_existed')::boolean) OVER first_proven AS existed
     FROM json_array_elements({proven_last_json}::json) j
     CROSS JOIN LATERAL json_populate_record(NULL::{entries}, j) t
     WINDOW first_proven AS (PARTITION BY t.{entries_account}{as_text} ORDER BY t.{entries_seq})
     ORDER BY t.{entries_account}{as_text}, t.{entries_seq} DESC)"""
# The newly proven entries' last per account (as text), for the state: those in (old, new]. Keyed by
# the account's id as the accounts table spells it, where it exists: entries may spell it otherwise
# where a case-insensitive collation holds them equal ('u1' for 'U1'), and a key per spelling, its
# currency taken as it was when that spelling was first proven, let an account moved to another
# currency pass once posted to in a new spelling (found by break-it runs).
NEWLY_PROVEN_LAST = _fill(
    "SELECT coalesce(ca.{accounts_id}::text, n.account::text), n.seq, n.after::text, "
    "ca.{accounts_currency}::text, ca.{accounts_type}::text, "
    "ca.{accounts_id} IS NOT NULL "
    "FROM <<last>> n "
    "LEFT JOIN {accounts} ca ON ca.{accounts_id} = n.account",
    last=_fill(_LAST_ENTRIES, upto="(l.{entries_seq} > {old} AND l.{entries_seq} <= {new}){late_l}"))
# The entries beyond the watermark; an account's first of them follows its
# last proven entry.
INC_CHAIN = replace(CHAIN, source=_fill(
    _CHAIN, **_PARTITIONED, entries="(e.{entries_seq} > {w} OR e.{entries_seq} IS NULL{late_e})",
    seed="LEFT JOIN {proven_last} lp ON lp.account = e.{entries_account}",
    prev_after="CASE WHEN lag(e.{entries_seq}) OVER w IS NULL THEN lp.after "
               "ELSE lag(e.{entries_after}) OVER w END"))

# An account without a currency: its entries belong to no currency's trial
# balance, and no journal can be shown to be in one currency (min and max
# pass over NULL; the journals pass's one-currency shortcut assumes it).
_CURRENCY_MISSING = Rule(
    "account_currency_missing", "accounts", "x.id IS NOT NULL AND x.a_currency IS NULL", "x.id",
    impact="abs(coalesce(x.balance::numeric, 0))", group="x.a_type",
    detail="'no currency, balance ' || coalesce(x.balance::text, 'NULL')")
# A balance no cents can stand for (numeric NaN, and Infinity from PostgreSQL 14): an account without
# entries holding one passed every rule (found by a break-it run). Compared as text: PostgreSQL 13
# cannot read 'Infinity' as numeric.
_BALANCE_NOT_FINITE = Rule(
    "balance_not_finite", "accounts",
    "x.id IS NOT NULL AND x.balance::numeric::text IN ('NaN', 'Infinity', '-Infinity')", "x.id",
    group="x.a_type", detail="'balance ' || x.balance::text")
# Accounts without a single entry hold their opening balance (stated, per
# currency); with entries, the chain pass holds them against their last one.
ACCOUNTS = Pass(
    "accounts",
    """
    SELECT a.{accounts_id} AS id, a.{accounts_balance} AS balance, a.{accounts_type}::text AS a_type,
           a.{accounts_currency}::text AS a_currency,
           EXISTS (SELECT 1 FROM {entries} e WHERE e.{entries_account} = a.{accounts_id}) AS has_entries
    FROM {accounts} a
    """,
    (_CURRENCY_MISSING, _BALANCE_NOT_FINITE),
    totals=(("accounts", "count(x.id)"),
            ("accounts_without_entries_holding_money",
             "count(x.id) FILTER (WHERE NOT x.has_entries AND x.balance <> 0)"),
            ("opening_without_entries_by_currency", "{opening_idle_by_currency}"),
            ("balances_by_currency", "{balances_by_currency}")),
)
# Incremental: every account (an account is mutable: its currency too). Those
# with entries beyond the watermark are held against their last entry by the
# chain pass; every other account with entries, against its last proven one.
# Reads the new entries only (and no entry at all where the state keeps the
# last proven ones: a scan of every entry was 1.6 s of 3.4 on 10^7). An
# account whose entries were proven must still be there, in the currency its
# entries were proven in (x.id NULL: deleted; the proven journals' currencies
# and the proven trial balance would no longer hold, and only a full audit
# reads the entries again): history_tampered, until --full starts anew. So is
# a type change that changes the sign its proven entries were held to
# (debit-normal types), or holds them to a floor they were not held to
# (non-negative types; a floor lifted asks nothing of them, as a full audit
# would not); one that does neither is not. (A move onto or off a floor makes
# the audit a full one before this pass runs, ``proven.MOVED_ACROSS_FLOOR_SQL``,
# in the same snapshot: the rule stands where that read finds no such account.)
# Entries without a seq are never proven: every incremental audit reads them.
# The accounts an audit found as they were when their entries were proven (same balance as the last
# proven entry's, currency and type, by their text) are not sent with their last entries: none of
# these rules holds for them, and they have entries. ``proven_unchanged`` names them, or the accounts
# without proven entries, whichever are fewer (``verifier.ledger.proven.shipped``).
INC_ACCOUNTS = Pass(
    "accounts",
    """
    SELECT a.{accounts_id} AS id, a.{accounts_balance} AS balance, a.{accounts_type}::text AS a_type,
           a.{accounts_currency}::text AS a_currency, l.account AS l_account, l.seq AS last_id, l.after,
           l.currency AS proven_currency, l.type AS proven_type, l.existed AS proven_existed,
           l.seq IS NOT NULL OR n.account IS NOT NULL OR {proven_has} AS has_entries,
           n.account IS NOT NULL AS has_new
    FROM {accounts} a
    FULL JOIN {proven_last} l ON l.account = a.{accounts_id}
    LEFT JOIN {proven_unchanged} k(id) ON k.id = a.{accounts_id}::text
    LEFT JOIN (SELECT DISTINCT e.{entries_account}{as_text} AS account FROM {entries} e
               WHERE e.{entries_seq} > {w} OR e.{entries_seq} IS NULL{late_e}) n
      ON n.account = a.{accounts_id}
    """,
    (
        _CURRENCY_MISSING,
        Rule("history_tampered", "accounts",
             "x.l_account IS NOT NULL AND ((x.id IS NULL AND x.proven_existed) "
             "OR (x.proven_currency IS NOT NULL AND x.proven_currency IS DISTINCT FROM x.a_currency) "
             "OR (x.proven_type IS NOT NULL "
             "AND ((x.proven_type = ANY({debit_normal})) IS DISTINCT FROM (x.a_type = ANY({debit_normal})) "
             "OR (x.a_type = ANY({non_negative}) AND NOT x.proven_type = ANY({non_negative})))))",
             "coalesce(x.id::text, x.l_account::text)", impact="abs(coalesce(x.after::numeric, 0))",
             detail="CASE WHEN x.id IS NULL "
                    "THEN 'deleted, though an earlier audit proved its entries (up to ' || x.last_id "
                    "|| ', balance after ' || coalesce(x.after::text, 'NULL') || ')' "
                    "WHEN x.proven_currency IS DISTINCT FROM x.a_currency "
                    "THEN 'in ' || coalesce(x.a_currency, 'NULL') || ', but an earlier audit proved its "
                    "entries in ' || x.proven_currency "
                    "ELSE 'of type ' || coalesce(x.a_type, 'NULL') || ', but an earlier audit proved its "
                    "entries as ' || x.proven_type || ', whose sign or floor differs' END"),
        Rule("account_balance_drift", "accounts",
             "x.id IS NOT NULL AND NOT x.has_new AND x.last_id IS NOT NULL "
             "AND x.balance IS DISTINCT FROM x.after",
             "x.id", impact="coalesce(x.balance::numeric, 0) - coalesce(x.after, 0)", group="x.a_type",
             detail="'balance ' || coalesce(x.balance::text, 'NULL') "
                    "|| ', its last entry says ' || coalesce(x.after::text, 'NULL')"),
        _BALANCE_NOT_FINITE,  # (last: a rule's index names it in a state file's offenders)
    ),
    totals=ACCOUNTS.totals,
)

# A proven row that a row of a gap (``late``) now precedes as the first of its ``group``, which it
# was (no proven row before it): a second one now, as a full audit finds it (found by a break-it
# run: a journal committed late into a gap, with the key, or the original, of a proven journal above
# it, made that one the second; it was never read again, and every incremental audit passed).
def _first_no_more(group: str, ident: str, late: str) -> str:
    """The count of proven rows before each row of its ``group`` (ordered by ``ident``; ``late``: the
    ``late`` placeholder that reads rows of gaps as new)."""
    return (f"count(*) FILTER (WHERE NOT ({ident} > {{jw}}{late})) OVER (PARTITION BY {group} "
            f"ORDER BY {ident} ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)")


_REVERSALS = """
    SELECT r.id, r.original, o.{journals_id} AS o_id, s.residual, s.moved, r.nth
    FROM (SELECT * FROM (SELECT {journals_id} AS id, {journals_reverses} AS original,
                                row_number() OVER (PARTITION BY {journals_reverses}
                                                   ORDER BY {journals_id}) AS nth,
                                <<proven_before>> AS proven_before
                         FROM {journals} WHERE {journals_reverses} IS NOT NULL<<originals>>) every
          WHERE <<reversals>>) r
    LEFT JOIN {journals} o ON o.{journals_id} = r.original
    LEFT JOIN LATERAL (
      SELECT coalesce(sum(abs(per_account.total)), 0) AS residual,
             coalesce(sum(per_account.moved), 0) AS moved
      FROM (SELECT e.{entries_account}{as_text}, sum(e.{entries_amount}) AS total,
                   sum(e.{entries_amount}) FILTER (WHERE e.{entries_journal} = r.id
                                                   AND e.{entries_amount} > 0) AS moved
            FROM {entries} e WHERE e.{entries_journal} IN (r.id, r.original)
            GROUP BY e.{entries_account}{as_text}) per_account) s ON true
    """
REVERSALS = Pass(
    "reversals",
    _fill(_REVERSALS, originals="", reversals="true", proven_before="0"),
    (
        Rule("reversal_mismatch", "journals",
             "x.o_id IS NULL OR x.residual <> 0 OR x.nth > 1", "x.id",
             impact="CASE WHEN x.o_id IS NULL OR x.nth > 1 THEN x.moved ELSE x.residual END",
             detail="CASE WHEN x.o_id IS NULL THEN 'reverses journal ' || x.original "
                    "|| ', which does not exist' "
                    "WHEN x.nth > 1 THEN 'reverses journal ' || x.original || ' again (reversal #' "
                    "|| x.nth || ')' "
                    "ELSE 'does not negate journal ' || x.original || ': off by ' || x.residual "
                    "|| ' cents over its accounts' END", scope=("journals", "x.id")),
    ),
    totals=(("reversals", "count(*)"),),
)
# New reversals, counted among every reversal of the same original.
INC_REVERSALS = replace(REVERSALS, source=_fill(
    _REVERSALS, originals=" AND {journals_reverses} IN (SELECT {journals_reverses} FROM {journals} "
                          "WHERE {journals_id} > {jw}{late_jid})",
    reversals="(id > {jw}{late_id} OR (nth > 1 AND proven_before = 0))",
    proven_before=_first_no_more("{journals_reverses}", "{journals_id}", "{late_jid}")))

# The platform's direction: the ORIGINAL journal names the journal that
# reverses it ({journals_reversed_by}) and is flagged ({is_reversed}: its
# is_reversed column, or "true" where there is none). A reversed journal and
# its reverser must negate each other account by account; a flag without a
# link, a link without the flag, a reverser that does not exist or is the
# journal itself, and a reverser named by two originals are mismatches.
# Reversals set the link on old journals, so an incremental audit reads them all
# (the reversed journals only: few, and is_reversed is indexed on the platform).
REVERSED = Pass(
    "reversed",
    """
    SELECT o.id, o.reverser, o.flag, r.{journals_id} AS r_id, s.residual, s.moved, o.nth
    FROM (SELECT j.{journals_id} AS id, j.{journals_reversed_by} AS reverser, {is_reversed} AS flag,
                 CASE WHEN j.{journals_reversed_by} IS NOT NULL THEN row_number() OVER (
                   PARTITION BY j.{journals_reversed_by} ORDER BY j.{journals_id}) END AS nth
          FROM {journals} j WHERE j.{journals_reversed_by} IS NOT NULL OR {is_reversed}) o
    LEFT JOIN {journals} r ON r.{journals_id} = o.reverser
    LEFT JOIN LATERAL (
      SELECT coalesce(sum(abs(per_account.total)), 0) AS residual,
             coalesce(sum(per_account.moved), 0) AS moved
      FROM (SELECT e.{entries_account}{as_text}, sum(e.{entries_amount}) AS total,
                   sum(e.{entries_amount}) FILTER (WHERE e.{entries_journal} = o.id
                                                   AND e.{entries_amount} > 0) AS moved
            FROM {entries} e WHERE e.{entries_journal} IN (o.id, o.reverser)
            GROUP BY e.{entries_account}{as_text}) per_account) s ON true
    """,
    (
        Rule("reversal_mismatch", "journals",
             "x.reverser IS NULL OR NOT x.flag OR x.r_id IS NULL OR x.reverser = x.id OR x.nth > 1 "
             "OR x.residual <> 0", "x.id",
             impact="CASE WHEN x.reverser IS NULL OR x.r_id IS NULL OR x.nth > 1 OR x.reverser = x.id "
                    "THEN x.moved WHEN NOT x.flag THEN 0 ELSE x.residual END",
             detail="CASE WHEN x.reverser IS NULL THEN 'flagged reversed, but names no reversing journal' "
                    "WHEN x.r_id IS NULL THEN 'reversed by journal ' || x.reverser "
                    "|| ', which does not exist' "
                    "WHEN x.reverser = x.id THEN 'names itself as its reversal' "
                    "WHEN x.nth > 1 THEN 'reversed by journal ' || x.reverser "
                    "|| ', which already reverses another journal' "
                    "WHEN NOT x.flag THEN 'reversed by journal ' || x.reverser "
                    "|| ', but not flagged reversed' "
                    "ELSE 'journal ' || x.reverser || ' does not negate it: off by ' || x.residual "
                    "|| ' cents over its accounts' END"),
    ),
    totals=(("reversed", "count(*)"),),
)

SNAPSHOTS = Pass(
    "snapshots",
    """
    SELECT s.{snapshots_id} AS id, s.{snapshots_account} AS account_id,
           s.{snapshots_last_entry} AS last_entry, s.{snapshots_balance} AS balance,
           e.{entries_id} AS e_id, e.{entries_account} AS e_account, e.{entries_after} AS e_after
    FROM {snapshots} s LEFT JOIN {entries} e ON e.{snapshot_entry} = s.{snapshots_last_entry}
    """,
    (
        Rule("snapshot_mismatch", "snapshots",
             "x.e_id IS NULL OR x.e_account IS DISTINCT FROM x.account_id "
             "OR x.balance IS DISTINCT FROM x.e_after",
             "x.id", impact="coalesce(x.balance - x.e_after, 0)",
             detail="CASE WHEN x.e_id IS NULL THEN 'entry ' || x.last_entry || ' does not exist' "
                    "WHEN x.e_account IS DISTINCT FROM x.account_id THEN 'entry ' || x.last_entry "
                    "|| ' is not of account ' || x.account_id "
                    "ELSE 'balance ' || x.balance || ', entry ' || x.last_entry || ' says ' "
                    "|| x.e_after END"),
    ),
    totals=(("snapshots", "count(*)"),),
)

# now() is the start of the audit's transaction: the snapshot's time. A completed
# transaction's journal is looked up by key (a hash join read every journal:
# 0.5 s for 65,573 pending transactions beside 3.4 million journals).
PENDING = Pass(
    "pending",
    """
    SELECT p.{pending_id} AS id, p.{pending_status}::text AS status, p.{pending_journal} AS journal_id,
           p.{pending_expires} AS expires,
           CASE WHEN p.{pending_status}::text = 'completed' THEN (
             SELECT j.{journals_id} FROM {journals} j WHERE j.{journals_id} = p.{pending_journal}) END AS j_id
    FROM {pending} p
    """,
    (
        Rule("pending_stale", "pending", "x.status = 'pending' AND x.expires < now()", "x.id",
             detail="'pending, expired at ' || x.expires"),
        Rule("pending_unlinked", "pending", "x.status = 'completed' AND x.j_id IS NULL", "x.id",
             detail="CASE WHEN x.journal_id IS NULL THEN 'completed without a journal' "
                    "ELSE 'completed with journal ' || x.journal_id || ', which does not exist' END"),
    ),
    totals=(("pending_transactions", "count(*)"),),
)

# Journals sharing an idempotency key: the first posted stands, every later
# one is a second posting (same content: a double charge; other content: a
# key reused for something else).
_IDEMPOTENCY = """SELECT * FROM (
    SELECT d.id, d.key, d.content, d.moved,
           row_number() OVER k AS nth, first_value(d.content) OVER k AS first_content,
           first_value(d.id) OVER k AS first_id, <<proven_before>> AS proven_before
    FROM (SELECT j.{journals_id} AS id, j.{journals_idempotency_key}::text AS key,
                 {journal_type} || ':' || coalesce(c.lines, '') AS content, c.moved
          FROM {journals} j
          LEFT JOIN LATERAL (
            SELECT string_agg(e.{entries_account} || '=' || e.{entries_amount}, ','
                              ORDER BY e.{entries_account}, e.{entries_amount}) AS lines,
                   sum(e.{entries_amount}) FILTER (WHERE e.{entries_amount} > 0) AS moved
            FROM {entries} e WHERE e.{entries_journal} = j.{journals_id}) c ON true
          WHERE j.{journals_idempotency_key} IN (
            SELECT {journals_idempotency_key} FROM {journals}
            WHERE {journals_idempotency_key} IS NOT NULL
            <<keys>> GROUP BY 1 HAVING count(*) > 1)) d
    WINDOW k AS (PARTITION BY d.key ORDER BY d.id)) every WHERE <<journals>>
    """
IDEMPOTENCY = Pass(
    "idempotency",
    _fill(_IDEMPOTENCY, keys="", journals="true", proven_before="0"),
    (
        Rule("idempotency_conflict", "journals", "x.nth > 1", "x.id", impact="coalesce(x.moved, 0)",
             detail="'key ' || x.key || ' already used by journal ' || x.first_id || CASE "
                    "WHEN x.content = x.first_content THEN ' for the same lines (posted twice)' "
                    "ELSE ' for other lines' END", scope=("journals", "x.id")),
    ),
)
# Keys of new journals, against every journal that used them.
INC_IDEMPOTENCY = replace(IDEMPOTENCY, source=_fill(
    _IDEMPOTENCY, keys="AND {journals_idempotency_key} IN (SELECT {journals_idempotency_key} FROM {journals} "
                       "WHERE {journals_id} > {jw}{late_jid})",
    journals="(id > {jw}{late_id} OR (nth > 1 AND proven_before = 0))",
    proven_before=_first_no_more("d.key", "d.id", "{late_id}")))


def reconcile_pass(r: Reconcile) -> Pass:
    """A legacy balance column against its owner's ledger account of ``r.account_type``."""
    return Pass(
        f"reconcile {r.schema}.{r.table}.{r.column}",
        """
        SELECT t.{legacy_key}::text AS owner, t.{legacy_column}::numeric AS legacy,
               a.{accounts_id} AS a_id, a.{accounts_balance}::numeric AS balance
        FROM {legacy} t JOIN {accounts} a
          ON a.{accounts_owner} = t.{legacy_key} AND a.{accounts_type}::text = {account_type}
        """,
        (
            Rule("reconciliation_mismatch", "accounts", "x.legacy IS DISTINCT FROM x.balance", "x.a_id",
                 impact="coalesce(x.legacy - x.balance, 0)",
                 detail="'owner ' || x.owner || ': legacy ' || coalesce(x.legacy::text, 'NULL') "
                        "|| ', ledger ' || x.balance"),
        ),
        totals=(("reconciled", "count(*)"),),
    )


# Which optional role or table each pass needs, and the rules it stands for.
_NEEDS = {"reversals": ("journals", "reverses"), "reversed": ("journals", "reversed_by"),
          "snapshots": ("snapshots", None), "pending": ("pending", None),
          "idempotency": ("journals", "idempotency_key")}
FULL = (CHAIN, JOURNALS, TRIAL, ACCOUNTS, REVERSALS, REVERSED, SNAPSHOTS, PENDING, IDEMPOTENCY)
# An incremental audit: the same passes (same names and rules, in the same
# order), each reading what is new beyond the watermarks {w} (entries) and {jw} (journals).
INCREMENTAL = (INC_CHAIN, INC_JOURNALS, INC_TRIAL, INC_ACCOUNTS, INC_REVERSALS, REVERSED, SNAPSHOTS, PENDING,
               INC_IDEMPOTENCY)


def plan(layout: Layout, incremental: bool) -> tuple[list[Pass], list[tuple[str, str]]]:
    """The passes a (detected) layout can run, and the rules it cannot check, with why.

    A pass whose optional table or role is absent is left out, and its rules
    are listed as not checked; where entries carry a currency of their own,
    the chain pass also holds it against the account's.
    """
    passes, not_checked = [], []
    for p in INCREMENTAL if incremental else FULL:
        table, role = _NEEDS.get(p.name, (None, None))
        if table is not None and not layout.has(table, role):
            if p.name in ("reversals", "reversed"):
                continue  # one direction is enough; neither is said below
            what = f"{table}.{role}" if role else f"{table} table"
            not_checked += [(r.rule, f"the ledger has no {what}") for r in p.rules]
            continue
        if p.name == "chain" and layout.has("entries", "currency"):
            p = replace(p, rules=(*p.rules, ENTRY_CURRENCY))
        passes.append(p)
    if not (layout.has("journals", "reverses") or layout.has("journals", "reversed_by")):
        not_checked.append(("reversal_mismatch", "the ledger has no reversal link "
                                                 "(journals.reverses or journals.reversed_by)"))
    return passes, not_checked


@dataclass(frozen=True)
class Convention:
    """How the ledger's numbers relate: after = before + direction * amount; a debit's sign."""

    direction: int  # -1: after = before - amount (the platform's)
    debit_sign: int  # +1: a positive amount is a debit (the platform's)

    def __post_init__(self) -> None:
        assert self.direction in (-1, 1) and self.debit_sign in (-1, 1)

    def describe(self) -> str:
        return (f"balance_after = balance_before {'-' if self.direction < 0 else '+'} amount; "
                f"a {'positive' if self.debit_sign > 0 else 'negative'} amount is a debit")


def names(layout: Layout, convention: Convention, currencies: tuple[str, ...] = (),
          reconcile: Reconcile | None = None, grouped: bool | None = None,
          account_as_text: bool = False) -> dict[str, sql.Composable]:
    """The placeholders of every pass: the layout's names (identifiers), the convention and the
    configured values (literals), and the fragments that stand in for optional roles.

    ``currencies``: the accounts' currencies, for the per-currency figures
    (opening balances, balances). ``grouped``: whether the chain's summary is read per currency
    (``CHAIN.group_by``); by default where there are several. ``account_as_text``: the entries'
    account is of an extension's type (``verifier.ledger.audit._builtin_account``), grouped by its
    text.
    """
    filled: dict[str, sql.Composable] = {}
    for logical, table in layout.tables.items():
        if not table:
            continue
        filled[logical] = sql.Identifier(layout.schema, table)
        for column, name in layout.columns[logical].items():
            if name:
                filled[f"{logical}_{column}"] = sql.Identifier(name)
    non_negative = layout.non_negative_account_types or ()
    # Parenthesized: "- {direction}" must never become the comment "--1".
    filled.update(direction=sql.SQL("({})").format(sql.Literal(convention.direction)),
                  debit_sign=sql.SQL("({})").format(sql.Literal(convention.debit_sign)),
                  debit=sql.Literal(layout.debit_value), credit=sql.Literal(layout.credit_value),
                  non_negative=sql.SQL("{}::text[]").format(
                      sql.Literal([t for t in non_negative if t != "*"])),
                  all_non_negative=sql.Literal("*" in non_negative),
                  debit_normal=sql.SQL("{}::text[]").format(sql.Literal(list(layout.debit_normal_account_types))))
    own = layout.has("entries", "currency")
    filled["own_currency"] = (sql.SQL("e.{}::text").format(filled["entries_currency"]) if own
                              else sql.SQL("NULL::text"))
    filled["entry_currency"] = (filled["own_currency"] if own else sql.SQL("ca.{}::text").format(
        filled["accounts_currency"]))
    filled["currency_join"] = sql.SQL("") if own else sql.SQL("LEFT JOIN {} ca ON ca.{} = e.{}").format(
        filled["accounts"], filled["accounts_id"], filled["entries_account"])
    # An account of an extension's type (citext) is grouped and partitioned by its text: GROUP BY,
    # DISTINCT and PARTITION BY use the type's own equality (citext's: case-insensitive), while
    # every join of the audit compares ids as text (the pinned search_path sees pg_catalog's "="
    # only). Grouped so, an entry of 'c1', which no account has, joined account C1's chain or
    # sums (found by break-it runs).
    filled["as_text"] = sql.SQL("::text" if account_as_text else "")
    filled["trial_key"] = filled["own_currency"] if own else sql.SQL("e.{}{}").format(
        filled["entries_account"], filled["as_text"])
    filled["trial_join"] = sql.SQL("") if own else sql.SQL("LEFT JOIN {} ca ON ca.{}{} = t.key").format(
        filled["accounts"], filled["accounts_id"], filled["as_text"])
    filled["trial_currency"] = (sql.SQL("t.key") if own else
                                sql.SQL("ca.{}::text").format(filled["accounts_currency"]))
    has_journal_currency = layout.has("journals", "currency")
    one = not own and not has_journal_currency and len(currencies) <= 1
    only = sql.Literal(currencies[0] if currencies else None)
    for name, agg in (("journal_cur_min", "min"), ("journal_cur_max", "max")):
        filled[name] = (sql.SQL("{}::text").format(only) if one else
                        sql.SQL(agg + '({} COLLATE "C")').format(filled["entry_currency"]))
    filled["journal_currency_join"] = sql.SQL("") if one else filled["currency_join"]
    filled["has_journal_currency"] = sql.Literal(has_journal_currency)
    filled["journal_currency"] = (sql.SQL("j.{}::text").format(filled["journals_currency"])
                                  if has_journal_currency else sql.SQL("NULL::text"))
    filled["journal_type"] = (sql.SQL("j.{}::text").format(filled["journals_type"])
                              if layout.has("journals", "type") else sql.SQL("''"))
    filled["is_reversed"] = (sql.SQL("j.{}").format(filled["journals_is_reversed"])
                             if layout.has("journals", "is_reversed") else sql.SQL("true"))
    if layout.has("snapshots"):
        filled["snapshot_entry"] = filled[f"entries_{layout.snapshot_entry}"]
    filled["chain_range"] = sql.SQL("true")  # every account (``chain_ranges`` splits the pass)
    filled.update(chain_window=compose(_PARTITIONED["window"], filled),
                  chain_is_last=sql.SQL(_PARTITIONED["is_last"]),
                  chain_prev_after=sql.SQL("lag(e.{}) OVER w").format(filled["entries_after"]))
    filled.update({f"chain_{name}": sql.SQL("jsonb_build_object()") for name in TRIAL_FIGURES})
    # One currency or none: its figures filtered, in one row (grouping cost 3% more there).
    grouped = len(currencies) > 1 if grouped is None else grouped
    filled["chain_group_by"] = sql.SQL("GROUP BY x.a_currency" if grouped else "")
    filled["opening_by_currency"] = (
        _in_group("coalesce(sum(x.before) FILTER (WHERE x.prev_after IS NULL), 0)") if grouped
        else _by_currency(currencies, "x.before", "x.prev_after IS NULL"))
    filled["opening_idle_by_currency"] = _by_currency(currencies, "x.balance", "NOT x.has_entries")
    filled["balances_by_currency"] = _by_currency(currencies, "x.balance", "true")
    if reconcile is not None:
        filled.update(legacy=sql.Identifier(reconcile.schema, reconcile.table),
                      legacy_key=sql.Identifier(reconcile.key),
                      legacy_column=sql.Identifier(reconcile.column),
                      account_type=sql.Literal(reconcile.account_type))
    return filled


def packed_chain(filled: dict[str, sql.Composable], account_min: int, seq_min: int, seq_slots: int
                 ) -> dict[str, sql.Composable]:
    """``filled`` with the full chain pass's window ordered by one bigint key instead of (account,
    seq, id): ``(account - account_min) * seq_slots + (seq - seq_min)``, with a NULL seq in the last
    slot of its account (after every other, as NULLS LAST puts it) and a NULL account's entries last
    (NULL key), each in (seq, id) order. Each entry's previous entry and whether it is its account's
    last are then read from its neighbours in that order, when they belong to the same account
    (is_last is not computed for a NULL account's entries: the rules that read it need an account).

    The caller guarantees, from the minimum and maximum of the same snapshot, that every seq lies in
    ``[seq_min, seq_min + seq_slots - 2]`` and every key fits a bigint (an overflow raises; the key's
    arithmetic never wraps). Why: PostgreSQL sorts by a first key alone while it differs, and calls
    the full comparison, which reads each further key from the tuples, on ties; with (account, seq),
    nearly every comparison is a tie on the account (5 * 10^6 entries of 795 accounts: 3.4 s of sort
    against 1.5 s with one key)."""
    account = sql.SQL("e.{}").format(filled["entries_account"])
    key = sql.SQL("({}::int8 - {}) * {} + (coalesce(e.{}::int8, {}) - {})").format(
        account, sql.Literal(account_min), sql.Literal(seq_slots), filled["entries_seq"],
        sql.Literal(seq_min + seq_slots - 1), sql.Literal(seq_min))
    return {**filled,
            "chain_window": sql.SQL("ORDER BY {}, e.{}, e.{}").format(key, filled["entries_seq"],
                                                                      filled["entries_id"]),
            "chain_prev_after": sql.SQL("CASE WHEN lag({a}) OVER w IS NOT DISTINCT FROM {a} "
                                        "THEN lag(e.{after}) OVER w END").format(
                a=account, after=filled["entries_after"]),
            # Not for a NULL account's entries (a NULL account joins no account: every rule that reads
            # is_last holds an account).
            "chain_is_last": sql.SQL("lead({a}) OVER w IS DISTINCT FROM {a}").format(a=account)}


def fold_trial(filled: dict[str, sql.Composable], currencies: tuple[str, ...]) -> dict[str, sql.Composable]:
    """``filled`` with the full chain pass also summing the entries per currency, for the trial
    balance (``TRIAL_FOLDED``, ``trial_rows``), where entries take their account's currency and
    ``currencies`` are all of the accounts' (``audit._currencies``): the chain joins every entry to
    its account already, and the trial pass was a scan of its own (about 2.5 s of CPU on 10^7
    entries). An entry of a missing account, or of one without a currency, is in the NULL bucket,
    as the trial pass groups it."""
    if filled["chain_group_by"] != sql.SQL(""):  # the chain's summary is read per currency (``names``)
        return {**filled, "chain_trial_rows": _in_group("count(*)"),
                "chain_trial_sums": _in_group("coalesce(sum(x.amount), 0)"),
                "chain_trial_null": sql.SQL(
                    "CASE WHEN x.a_currency IS NULL THEN jsonb_build_object('rows', count(*)::text, "
                    "'sum', coalesce(sum(x.amount), 0)::text) ELSE jsonb_build_object() END")}
    rows = [sql.SQL("{c}, (count(*) FILTER (WHERE x.a_currency = {c}))::text").format(c=sql.Literal(c))
            for c in currencies]
    sums = [sql.SQL("{c}, coalesce(sum(x.amount) FILTER (WHERE x.a_currency = {c}), 0)::text").format(
        c=sql.Literal(c)) for c in currencies]
    return {**filled,
            "chain_trial_rows": jsonb_object(rows), "chain_trial_sums": jsonb_object(sums),
            "chain_trial_null": sql.SQL(
                "jsonb_build_object('rows', (count(*) FILTER (WHERE x.a_currency IS NULL))::text, "
                "'sum', coalesce(sum(x.amount) FILTER (WHERE x.a_currency IS NULL), 0)::text)")}


def trial_from_chain(filled: dict[str, sql.Composable], totals: dict[str, Any]) -> dict[str, sql.Composable]:
    """``filled`` for ``TRIAL_FOLDED``: {chain_trial}, the currencies that have entries and their
    sums, from the chain pass's merged ``totals`` (``fold_trial``; exact, as text)."""
    rows = [(c, totals["trial_sums"][c]) for c, n in totals["trial_rows"].items() if int(n)]
    if int(totals["trial_null"].get("rows", 0)):
        rows.append((None, totals["trial_null"]["sum"]))
    values = [sql.SQL("({}::text, {}::numeric)").format(sql.Literal(c), sql.Literal(str(t))) for c, t in rows]
    return {**filled, "chain_trial": (sql.SQL("(VALUES {})").format(sql.SQL(", ").join(values)) if values
                                      else sql.SQL("(SELECT NULL::text, NULL::numeric WHERE false)"))}


def _in_group(value: str) -> sql.Composable:
    """A jsonb of the group's currency -> ``value`` (an aggregate, as text), in a summary read per
    account currency (``CHAIN.group_by``); empty in the group of no currency."""
    return sql.SQL("CASE WHEN x.a_currency IS NULL THEN jsonb_build_object() "
                   "ELSE jsonb_build_object(x.a_currency, ({})::text) END").format(sql.SQL(value))


def _by_currency(currencies: tuple[str, ...], value: str, where: str) -> sql.Composable:
    """A jsonb of currency -> the exact sum (as text) of ``value`` over the rows of x where ``where``."""
    parts = [sql.SQL("{}, coalesce(sum({}) FILTER (WHERE {} AND x.a_currency = {}), 0)::text").format(
        sql.Literal(c), sql.SQL(value), sql.SQL(where), sql.Literal(c)) for c in currencies]
    return jsonb_object(parts)


# jsonb_build_object takes at most 100 arguments (a function's, PostgreSQL Limits,
# https://www.postgresql.org/docs/current/limits.html): 50 key-value pairs.
JSONB_PAIRS_MAX = 50


def jsonb_object(pairs: Sequence[sql.Composable]) -> sql.Composable:
    """A jsonb object of ``pairs`` (each "key, value"), however many: built 50 pairs at a time and
    joined with ``||`` (a ledger of 51 currencies was exit 2 before, found by a break-it run)."""
    if not pairs:
        return sql.SQL("jsonb_build_object()")
    groups = [pairs[i:i + JSONB_PAIRS_MAX] for i in range(0, len(pairs), JSONB_PAIRS_MAX)]
    return sql.SQL("({})").format(sql.SQL(" || ").join(
        sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(g)) for g in groups))


def late(filled: dict[str, sql.Composable], entries: Sequence[int] = (), journals: Sequence[int] = (),
         below: Sequence[int] = ()) -> dict[str, sql.Composable]:
    """The placeholders by which an incremental audit reads the rows found in gaps of proven
    history (``verifier.ledger.gaps.late``: ids of ``entries`` and ``journals``) as new, each an
    ``OR`` (or an ``AND NOT``) that follows the test of the watermark; empty where there are none,
    and the statements are then as they were (an ``= ANY`` of an empty array turned an index scan
    into a bitmap scan). ``below``: entries found in gaps that are not read as new, but count in
    the trial balance (``late_t``), as they count in a full audit's."""
    def when(values: Sequence[int], text: str, column: str) -> sql.Composable:
        return (sql.SQL(text).format(filled[column], ids(values)) if values else sql.SQL(""))

    return {"late_e": when(entries, " OR e.{} = ANY({})", "entries_seq"),
            "late_t": when([*entries, *below], " OR e.{} = ANY({})", "entries_seq"),
            "late_ej": when(journals, " OR e.{} = ANY({})", "entries_journal"),
            "late_j": when(journals, " OR j.{} = ANY({})", "journals_id"),
            "late_jid": when(journals, " OR {} = ANY({})", "journals_id"),
            "late_id": sql.SQL(" OR id = ANY({})").format(ids(journals)) if journals else sql.SQL(""),
            "not_late_j": when(journals, " AND j.{} <> ALL({})", "journals_id")}


def incremental(filled: dict[str, sql.Composable], proven_entries: int, proven_journals: int,
                trial: dict[str | None, Decimal], layout: Layout,
                last: Mapping[str, LastEntry], named: list[str] | None = None, unproven: bool = False,
                gaps: dict[str, list[int]] | None = None, below: list[int] | None = None
                ) -> dict[str, sql.Composable]:
    """``filled`` plus the watermarks, the proven entries' trial balance and accounts' last proven
    entries, for ``INCREMENTAL``. ``last``: account id (as text) -> (seq, balance after as text,
    the account's currency and type when its first entries were proven, and whether it existed then:
    an orphan's were proven too), from the state file: all of them, or all but those of the accounts
    as they were when their entries were proven (``verifier.ledger.proven.shipped``), ``named`` by id
    (as text), or, with ``unproven``, as every account but those ``named`` (the accounts without
    proven entries), whichever list is shorter. ``gaps``: per history table, the ids of the rows
    found in gaps of proven history, read as new (``late``); ``below``: the entries found there
    that are not, counted in the trial balance."""
    rows = [sql.SQL("({}::text, {}::numeric)").format(sql.Literal(c), sql.Literal(t))
            for c, t in trial.items()]
    carried = (sql.SQL("(VALUES {}) c(currency, total)").format(sql.SQL(", ").join(rows)) if rows
               else sql.SQL("(SELECT NULL::text, NULL::numeric WHERE false) c(currency, total)"))
    out = {**filled, "w": sql.Literal(proven_entries), "jw": sql.Literal(proven_journals), "carried": carried,
           **late(filled, (gaps or {}).get("entries", []), (gaps or {}).get("journals", []), below or ())}
    keys = [layout.column("entries", c) for c in ("account", "seq", "after")]
    found = json.dumps([{**dict(zip(keys, (a, seq, after), strict=True)), "verifier_currency": currency,
                         "verifier_type": kind, "verifier_existed": existed}
                        for a, (seq, after, currency, kind, existed) in last.items()])
    out["proven_last"] = compose(PROVEN_LAST_STATE, {**out, "proven_last_json": sql.Literal(found)})
    out["proven_unchanged"] = (sql.SQL("unnest({}::text[])").format(sql.Literal(named)) if named
                               else sql.SQL("(SELECT NULL::text WHERE false)"))
    out["proven_has"] = (sql.SQL("(k.id IS NULL AND a.{} IS NOT NULL)").format(filled["accounts_id"])
                         if unproven else sql.SQL("k.id IS NOT NULL"))
    return out


def compose(text: str, filled: dict[str, sql.Composable]) -> sql.Composed:
    # Constant SQL text of this module; every name in it is a placeholder.
    return sql.SQL(text).format(**filled)  # noqa: S608


def summary_query(p: Pass, filled: dict[str, sql.Composable]) -> sql.Composed:
    """One read of ``x``: the totals, then per rule its weighted count and cents impact.

    A finding's impact is the sum of its rows' absolute impacts: a break of
    +50 cents and one of -50 are 100 cents wrong, not 0.
    """
    columns = [t for _, t in p.totals]
    for i, r in enumerate(p.rules):
        columns += [f"coalesce(sum({r.weight}) FILTER (WHERE x.verifier_hit_{i}), 0)",
                    f"coalesce(sum(abs({r.impact})) FILTER (WHERE x.verifier_hit_{i}), 0)"]
    # Each rule's test is computed once per row (OFFSET 0 keeps PostgreSQL from
    # inlining it into both aggregates).
    hits = ", ".join(f"coalesce({r.when}, false) AS verifier_hit_{i}" for i, r in enumerate(p.rules))
    return compose(f"SELECT {', '.join(columns)} FROM (SELECT x.*{', ' if hits else ''}{hits} "  # noqa: S608
                   f"FROM ({p.source}) x OFFSET 0) x {p.group_by}", filled)


def offenders_query(p: Pass, filled: dict[str, sql.Composable]) -> sql.Composed:
    """Every (row, rule) of ``x`` that breaks a rule: rule, id, impact, weight, detail, scope key, group."""
    values = ", ".join(
        f"({i}, coalesce({r.when}, false), ({r.id})::text, ({r.impact})::numeric, ({r.weight})::bigint, "
        f"({r.detail})::text, ({r.scope[1] if r.scope else 'NULL'})::bigint, ({r.group})::text)"
        for i, r in enumerate(p.rules))
    any_rule = " OR ".join(f"coalesce({r.when}, false)" for r in p.rules)
    return compose(
        f"SELECT v.rule, v.id, v.impact, v.weight, v.detail, v.scope, v.grp FROM ({p.source}) x "  # noqa: S608
        f"CROSS JOIN LATERAL (VALUES {values}) v(rule, hit, id, impact, weight, detail, scope, grp) "
        f"WHERE ({any_rule}) AND v.hit", filled)
