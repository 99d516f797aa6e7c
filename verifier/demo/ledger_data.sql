-- The demo ledger's statements, in order: a clean double-entry ledger in the
-- platform's 400 layout over the demo platform's users, built with set-based
-- SQL (no posting per journal). Every invariant of the ledger audit holds in
-- what these build:
--   * accounts: the five system accounts of migration 400 (ids 1 to 5:
--     platform, treasury, fees, escrow, payouts) and one 'user' account,
--     id 100 + u, per user u, owned by the user's uuid (demo_owner(u));
--   * opening balances: money enters only so (every balance stays >= 0): a
--     user's account opens with the user's legacy balance plus every tip the
--     user gives, so it never goes negative on the way;
--   * journals: tips (the user -> the creator 80%, the platform 20%), then
--     platform fees (platform -> fees), every fourth of them refunded by a
--     later journal that the original names (reversed_by, is_reversed);
--   * entries: running balances from a window over (account, id), with the
--     platform's convention: a positive amount is a debit and
--     balance_after = balance_before - amount;
--   * ledger_snapshots for every tenth account, pending_transactions and
--     an audit log for every hundredth tip;
--   * legacy_wallets: the balance each user's wallet had before the ledger
--     (the account's balance), to reconcile against.
-- Parameters: %(seed)s, %(users)s, %(creators)s, %(tips)s, %(adjustments)s.
-- Randomness is a hash of the row number (pg_temp.r), as in demo_data.sql.

-- name: helpers
CREATE FUNCTION pg_temp.r(s bigint, k int, i bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashint8extended(i, s * 1009 + k) & 9223372036854775807 $$;
-- The uuid that owns user u's account (the platform's owners are uuids; the demo's users have bigint ids).
CREATE FUNCTION pg_temp.demo_owner(u bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(u), 12, '0'))::uuid $$;

-- name: tips
CREATE TEMP TABLE ledger_tips ON COMMIT DROP AS
SELECT k, 1 + mod(pg_temp.r(%(seed)s, 101, k), %(users)s) AS user_id,
       10 * (1 + mod(pg_temp.r(%(seed)s, 102, k), %(creators)s)) AS creator_id,
       100 + mod(pg_temp.r(%(seed)s, 103, k), 4900) AS amount
FROM generate_series(1, %(tips)s) AS k;

-- name: accounts
INSERT INTO accounts (id, owner_id, type, currency, balance_cents, created_at, updated_at)
SELECT 100 + u.id, pg_temp.demo_owner(u.id), 'user', 'USD',
       (coalesce(u.balance_cents, 0) + coalesce(t.total, 0))::bigint,
       timestamptz '2024-12-31 00:00:00+00', timestamptz '2024-12-31 00:00:00+00'
FROM users u LEFT JOIN (SELECT user_id, sum(amount)::bigint AS total FROM ledger_tips GROUP BY 1) t
  ON t.user_id = u.id
WHERE u.id <= %(users)s;

-- name: journals
-- Journal ids: tips k, fees tips + m, refunds after them.
CREATE TEMP TABLE ledger_journals ON COMMIT DROP AS
SELECT k AS id, 'tip'::transaction_type AS kind, amount::bigint AS amount, user_id, creator_id,
       NULL::bigint AS refunds
FROM ledger_tips
UNION ALL
SELECT %(tips)s + m, 'platform_fee', 1 + mod(pg_temp.r(%(seed)s, 104, m), 500), NULL, NULL, NULL
FROM generate_series(1, %(adjustments)s) AS m
UNION ALL
SELECT %(tips)s + %(adjustments)s + q, 'refund', 1 + mod(pg_temp.r(%(seed)s, 104, 4 * q), 500), NULL, NULL,
       %(tips)s + 4 * q
FROM generate_series(1, %(adjustments)s / 4) AS q;

-- name: journal_rows
INSERT INTO journals (id, ref_type, ref_id, description, created_at, idempotency_key, reversed_by, is_reversed)
SELECT j.id, j.kind, pg_temp.demo_owner(1000000000 + j.id), j.kind || ' ' || j.id,
       timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => j.id), 'demo-' || j.id,
       r.id, r.id IS NOT NULL
FROM ledger_journals j LEFT JOIN ledger_journals r ON r.refunds = j.id;

-- name: opening
CREATE TEMP TABLE ledger_opening ON COMMIT DROP AS
SELECT id AS account_id, balance_cents AS opening FROM accounts;

-- name: entry_rows
-- Lines per journal (positive = debit), numbered in journal order; the
-- window then gives every account its running balance from its opening one.
INSERT INTO entries (id, journal_id, account_id, amount_cents, balance_before_cents, balance_after_cents,
                     entry_type, description, created_at)
SELECT e.id, e.journal_id, e.account_id, e.amount, e.after + e.amount, e.after,
       CASE WHEN e.amount > 0 THEN 'debit' ELSE 'credit' END, NULL,
       timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => e.journal_id)
FROM (SELECT row_number() OVER (ORDER BY journal_id, line) AS id, journal_id, l.account_id, amount,
             o.opening - sum(amount) OVER (PARTITION BY l.account_id ORDER BY journal_id, line) AS after
      FROM (SELECT j.id AS journal_id, l.line, l.account_id, l.amount
            FROM ledger_journals j
            CROSS JOIN LATERAL (VALUES
              (1, CASE j.kind WHEN 'tip' THEN 100 + j.user_id WHEN 'platform_fee' THEN 1 ELSE 3 END,
                  j.amount),
              (2, CASE j.kind WHEN 'tip' THEN 100 + j.creator_id WHEN 'platform_fee' THEN 3 ELSE 1 END,
                  CASE j.kind WHEN 'tip' THEN -(j.amount - j.amount / 5) ELSE -j.amount END),
              (3, 1, CASE j.kind WHEN 'tip' THEN -(j.amount / 5) END)) l(line, account_id, amount)
            WHERE l.amount IS NOT NULL) l
      JOIN ledger_opening o ON o.account_id = l.account_id) e;

-- name: balances
UPDATE accounts a SET balance_cents = last.after, available_balance_cents = last.after
FROM (SELECT DISTINCT ON (account_id) account_id, balance_after_cents AS after
      FROM entries ORDER BY account_id, id DESC) last
WHERE a.id = last.account_id;

-- name: snapshots
INSERT INTO ledger_snapshots (account_id, balance_cents, entry_count, last_entry_id, snapshot_date, created_at)
SELECT account_id, balance_after_cents, nth, id, date '2025-01-01', created_at
FROM (SELECT account_id, id, balance_after_cents, created_at,
             row_number() OVER (PARTITION BY account_id ORDER BY id) AS nth,
             count(*) OVER (PARTITION BY account_id) AS n
      FROM entries WHERE mod(account_id, 10) = 0) e
WHERE nth = (n + 1) / 2;

-- name: pending
-- Every hundredth tip went through a pending transaction that completed;
-- as many are still pending (expiring in 2100) or failed.
INSERT INTO pending_transactions (idempotency_key, transaction_type, amount_cents, from_account_id,
                                  to_account_id, status, journal_id, expires_at, created_at, completed_at)
SELECT 'demo-' || j.id, 'tip'::transaction_type, j.amount, 100 + j.user_id, 100 + j.creator_id, 'completed', j.id,
       timestamptz '2100-01-01 00:00:00+00', timestamptz '2025-01-01 00:00:00+00',
       timestamptz '2025-01-01 00:00:00+00'
FROM ledger_journals j WHERE j.kind = 'tip' AND mod(j.id, 100) = 0
UNION ALL
SELECT 'demo-open-' || j.id, 'tip', j.amount, 100 + j.user_id, 100 + j.creator_id,
       CASE WHEN mod(j.id, 200) = 1 THEN 'failed' ELSE 'pending' END, NULL,
       timestamptz '2100-01-01 00:00:00+00', timestamptz '2025-01-01 00:00:00+00', NULL
FROM ledger_journals j WHERE j.kind = 'tip' AND mod(j.id, 100) = 1;

-- name: audit_log
INSERT INTO financial_audit_log (action, journal_id, amount_cents, created_at, metadata)
SELECT 'post', j.id, j.amount, timestamptz '2025-01-01 00:00:00+00' + make_interval(secs => j.id),
       jsonb_build_object('kind', j.kind)
FROM ledger_journals j WHERE mod(j.id, 100) = 0;

-- name: legacy_wallets
CREATE TABLE legacy_wallets (owner_id uuid PRIMARY KEY, balance_cents bigint NOT NULL);

-- name: legacy_wallet_rows
INSERT INTO legacy_wallets SELECT owner_id, balance_cents FROM accounts WHERE type = 'user';

-- name: sequences
SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT max(id) FROM accounts))
UNION ALL SELECT setval(pg_get_serial_sequence('journals', 'id'), (SELECT max(id) FROM journals))
UNION ALL SELECT setval(pg_get_serial_sequence('entries', 'id'), (SELECT max(id) FROM entries))
UNION ALL SELECT setval(pg_get_serial_sequence('ledger_snapshots', 'id'),
                        greatest(1, (SELECT max(id) FROM ledger_snapshots)))
UNION ALL SELECT setval(pg_get_serial_sequence('pending_transactions', 'id'),
                        greatest(1, (SELECT max(id) FROM pending_transactions)))
UNION ALL SELECT setval(pg_get_serial_sequence('financial_audit_log', 'id'),
                        greatest(1, (SELECT max(id) FROM financial_audit_log)));
