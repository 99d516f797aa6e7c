-- The demo ledger's statements, in order: a clean double-entry ledger over the
-- demo platform's users, built with set-based SQL (no posting per journal).
-- Every invariant of the ledger audit holds in what these build:
--   * accounts: 1 platform_cash, 2 platform_revenue, 3 processor_fees,
--     4 escrow; a user account 100 + u per user u, a creator account
--     100 + users + u per creator u (every tenth user);
--   * journals: one deposit per user with money (platform_cash -> user),
--     then tips (user -> creator 80%, platform_revenue 20%), then fee
--     adjustments (platform_revenue -> processor_fees), every fourth of
--     them reversed by a later journal; each deposit is the user's legacy
--     balance plus every tip the user gives, so the user's account ends at
--     users.balance_cents and never goes negative on the way;
--   * entries: running balances from a window over (account, id), with the
--     platform's convention: a positive amount is a debit and
--     balance_after = balance_before - amount;
--   * ledger_snapshots for every tenth account, pending_transactions and
--     an audit log for every hundredth tip.
-- Parameters: %(seed)s, %(users)s, %(creators)s, %(tips)s, %(adjustments)s.
-- Randomness is a hash of the row number (pg_temp.r), as in demo_data.sql.

-- name: helpers
CREATE FUNCTION pg_temp.r(s bigint, k int, i bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashint8extended(i, s * 1009 + k) & 9223372036854775807 $$;

-- name: accounts
INSERT INTO accounts (id, account_type, owner_user_id, currency, balance_cents, allow_negative)
SELECT id, t, NULL, 'USD', 0, t <> 'escrow'
FROM (VALUES (1, 'platform_cash'), (2, 'platform_revenue'), (3, 'processor_fees'), (4, 'escrow')) v(id, t)
UNION ALL
SELECT 100 + u.id, 'user', u.id, 'USD', 0, false FROM users u WHERE u.id <= %(users)s
UNION ALL
SELECT 100 + %(users)s + u.id, 'creator', u.id, 'USD', 0, false
FROM users u WHERE u.id <= %(users)s AND mod(u.id, 10) = 0;

-- name: tips
CREATE TEMP TABLE ledger_tips ON COMMIT DROP AS
SELECT k, 1 + mod(pg_temp.r(%(seed)s, 101, k), %(users)s) AS user_id,
       10 * (1 + mod(pg_temp.r(%(seed)s, 102, k), %(creators)s)) AS creator_id,
       100 + mod(pg_temp.r(%(seed)s, 103, k), 4900) AS amount
FROM generate_series(1, %(tips)s) AS k;

-- name: journals
-- Journal ids: deposits 1..users (only users with money), tips users + k,
-- adjustments users + tips + m, reversals after them.
CREATE TEMP TABLE ledger_journals ON COMMIT DROP AS
SELECT u.id AS id, 'deposit' AS kind, (coalesce(u.balance_cents, 0) + coalesce(t.total, 0))::bigint AS amount,
       u.id AS user_id, NULL::bigint AS creator_id, NULL::bigint AS reverses
FROM users u LEFT JOIN (SELECT user_id, sum(amount)::bigint AS total FROM ledger_tips GROUP BY 1) t
  ON t.user_id = u.id
WHERE u.id <= %(users)s AND coalesce(u.balance_cents, 0) + coalesce(t.total, 0) > 0
UNION ALL
SELECT %(users)s + k, 'tip', amount, user_id, creator_id, NULL FROM ledger_tips
UNION ALL
SELECT %(users)s + %(tips)s + m, 'fee_adjustment', 1 + mod(pg_temp.r(%(seed)s, 104, m), 500), NULL, NULL, NULL
FROM generate_series(1, %(adjustments)s) AS m
UNION ALL
SELECT %(users)s + %(tips)s + %(adjustments)s + q, 'reversal',
       1 + mod(pg_temp.r(%(seed)s, 104, 4 * q), 500), NULL, NULL, %(users)s + %(tips)s + 4 * q
FROM generate_series(1, %(adjustments)s / 4) AS q;

-- name: journal_rows
INSERT INTO journals (id, journal_type, description, idempotency_key, reverses_journal_id, currency, posted_at)
SELECT id, kind, kind || ' ' || id, 'demo-' || id, reverses, 'USD',
       timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => id)
FROM ledger_journals;

-- name: entry_rows
-- Lines per journal (positive = debit), numbered in journal order; the
-- window then gives every account its running balance.
INSERT INTO entries (id, journal_id, account_id, entry_type, amount_cents, currency,
                     balance_before_cents, balance_after_cents, created_at)
SELECT id, journal_id, account_id, CASE WHEN amount > 0 THEN 'debit' ELSE 'credit' END, amount, 'USD',
       after + amount, after, timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => journal_id)
FROM (SELECT row_number() OVER (ORDER BY journal_id, line) AS id, journal_id, account_id, amount,
             -sum(amount) OVER (PARTITION BY account_id ORDER BY journal_id, line) AS after
      FROM (SELECT j.id AS journal_id, l.line, l.account_id, l.amount
            FROM ledger_journals j
            CROSS JOIN LATERAL (VALUES
              (1, CASE j.kind WHEN 'deposit' THEN 1 WHEN 'tip' THEN 100 + j.user_id
                              WHEN 'fee_adjustment' THEN 2 ELSE 2 END,
                  CASE j.kind WHEN 'reversal' THEN -j.amount ELSE j.amount END),
              (2, CASE j.kind WHEN 'deposit' THEN 100 + j.user_id WHEN 'tip' THEN 100 + %(users)s + j.creator_id
                              ELSE 3 END,
                  CASE j.kind WHEN 'tip' THEN -(j.amount - j.amount / 5)
                              WHEN 'reversal' THEN j.amount ELSE -j.amount END),
              (3, 2, CASE j.kind WHEN 'tip' THEN -(j.amount / 5) END)) l(line, account_id, amount)
            WHERE l.amount IS NOT NULL) lines) e;

-- name: balances
UPDATE accounts a SET balance_cents = last.after
FROM (SELECT DISTINCT ON (account_id) account_id, balance_after_cents AS after
      FROM entries ORDER BY account_id, id DESC) last
WHERE a.id = last.account_id;

-- name: snapshots
INSERT INTO ledger_snapshots (account_id, last_entry_id, balance_cents, taken_at)
SELECT account_id, id, balance_after_cents, created_at
FROM (SELECT account_id, id, balance_after_cents, created_at,
             row_number() OVER (PARTITION BY account_id ORDER BY id) AS nth,
             count(*) OVER (PARTITION BY account_id) AS n
      FROM entries WHERE mod(account_id, 10) = 0) e
WHERE nth = (n + 1) / 2;

-- name: pending
-- Every hundredth tip went through a pending transaction that completed;
-- as many are still pending (expiring in 2100) or failed.
INSERT INTO pending_transactions (idempotency_key, kind, amount_cents, status, journal_id, expires_at, created_at)
SELECT 'demo-' || j.id, 'tip', j.amount, 'completed', j.id, timestamptz '2100-01-01 00:00:00+00',
       timestamptz '2025-01-01 00:00:00+00'
FROM ledger_journals j WHERE j.kind = 'tip' AND mod(j.id, 100) = 0
UNION ALL
SELECT 'demo-open-' || j.id, 'tip', j.amount, CASE WHEN mod(j.id, 200) = 1 THEN 'failed' ELSE 'pending' END,
       NULL, timestamptz '2100-01-01 00:00:00+00', timestamptz '2025-01-01 00:00:00+00'
FROM ledger_journals j WHERE j.kind = 'tip' AND mod(j.id, 100) = 1;

-- name: audit_log
INSERT INTO financial_audit_log (occurred_at, actor, action, journal_id, details)
SELECT timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => j.id), 'demo', 'post', j.id,
       jsonb_build_object('kind', j.kind, 'amount_cents', j.amount)
FROM ledger_journals j WHERE mod(j.id, 100) = 0;

-- name: sequences
SELECT setval(pg_get_serial_sequence(t, 'id'), greatest(1, (SELECT max(id) FROM accounts)))
FROM (VALUES ('accounts')) v(t)
UNION ALL SELECT setval(pg_get_serial_sequence('journals', 'id'), (SELECT max(id) FROM journals))
UNION ALL SELECT setval(pg_get_serial_sequence('entries', 'id'), (SELECT max(id) FROM entries))
UNION ALL SELECT setval(pg_get_serial_sequence('ledger_snapshots', 'id'),
                        greatest(1, (SELECT max(id) FROM ledger_snapshots)))
UNION ALL SELECT setval(pg_get_serial_sequence('pending_transactions', 'id'),
                        greatest(1, (SELECT max(id) FROM pending_transactions)))
UNION ALL SELECT setval(pg_get_serial_sequence('financial_audit_log', 'id'),
                        greatest(1, (SELECT max(id) FROM financial_audit_log)));
