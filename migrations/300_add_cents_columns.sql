-- Migration: 300_add_cents_columns
-- Description: Add a BIGINT *_cents column beside every DECIMAL (and the one
--   double precision) money column, and the constraints the cents must meet,
--   as NOT VALID: adding a nullable column without a default and a NOT VALID
--   constraint only touches the catalog, so each table is locked for
--   milliseconds, not for a scan. 303 validates them after the backfill.
-- Dependencies: 001

BEGIN;

-- Up Migration
-- Give up instead of queueing behind a long transaction (and blocking every
-- query that queues behind us).
SET LOCAL lock_timeout = '5s';

ALTER TABLE users
  ADD COLUMN IF NOT EXISTS balance_cents BIGINT,
  ADD COLUMN IF NOT EXISTS total_earnings_cents BIGINT;
ALTER TABLE token_balances ADD COLUMN IF NOT EXISTS balance_usd_cents BIGINT;
ALTER TABLE token_transactions ADD COLUMN IF NOT EXISTS amount_usd_cents BIGINT;
ALTER TABLE tips ADD COLUMN IF NOT EXISTS amount_cents BIGINT;
ALTER TABLE payments
  ADD COLUMN IF NOT EXISTS amount_cents BIGINT,
  ADD COLUMN IF NOT EXISTS fee_cents BIGINT,
  ADD COLUMN IF NOT EXISTS net_amount_cents BIGINT;
ALTER TABLE creator_earnings
  ADD COLUMN IF NOT EXISTS gross_amount_cents BIGINT,
  ADD COLUMN IF NOT EXISTS platform_fee_cents BIGINT,
  ADD COLUMN IF NOT EXISTS net_amount_cents BIGINT;
ALTER TABLE creator_payouts ADD COLUMN IF NOT EXISTS amount_cents BIGINT;
ALTER TABLE withdrawals
  ADD COLUMN IF NOT EXISTS amount_cents BIGINT,
  ADD COLUMN IF NOT EXISTS fee_cents BIGINT;
ALTER TABLE subscription_tiers ADD COLUMN IF NOT EXISTS price_cents BIGINT;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS price_cents BIGINT;
ALTER TABLE creator_offers ADD COLUMN IF NOT EXISTS price_cents BIGINT;
ALTER TABLE shop_items
  ADD COLUMN IF NOT EXISTS price_cents BIGINT,
  ADD COLUMN IF NOT EXISTS sale_price_cents BIGINT;
ALTER TABLE virtual_gifts ADD COLUMN IF NOT EXISTS price_cents BIGINT;
ALTER TABLE gift_transactions ADD COLUMN IF NOT EXISTS amount_cents BIGINT;
ALTER TABLE ticketed_shows ADD COLUMN IF NOT EXISTS ticket_price_cents BIGINT;
ALTER TABLE show_tickets ADD COLUMN IF NOT EXISTS price_paid_cents BIGINT;
ALTER TABLE stream_rates
  ADD COLUMN IF NOT EXISTS video_rate_cents BIGINT,
  ADD COLUMN IF NOT EXISTS voice_rate_cents BIGINT,
  ADD COLUMN IF NOT EXISTS legacy_rate_per_minute_cents BIGINT;
ALTER TABLE ppv_messages ADD COLUMN IF NOT EXISTS price_cents BIGINT;
ALTER TABLE live_shopping_orders ADD COLUMN IF NOT EXISTS amount_cents BIGINT;
ALTER TABLE vod_purchases ADD COLUMN IF NOT EXISTS price_cents BIGINT;

-- Constraints, NOT VALID (new rows are checked at once, old ones by 303).
-- ADD CONSTRAINT has no IF NOT EXISTS: each is guarded by the catalog.
DO $$
DECLARE
  c record;
BEGIN
  FOR c IN
    SELECT * FROM (VALUES
      ('payments', 'payments_amount_cents_nonnegative', 'amount_cents >= 0'),
      ('payments', 'payments_fee_cents_nonnegative', 'fee_cents >= 0'),
      ('payments', 'payments_cents_identity',
       'fee_cents IS NULL OR amount_cents = fee_cents + net_amount_cents'),
      ('creator_earnings', 'creator_earnings_cents_identity',
       'gross_amount_cents = platform_fee_cents + net_amount_cents'),
      ('tips', 'tips_amount_cents_positive', 'amount_cents > 0'),
      ('creator_payouts', 'creator_payouts_amount_cents_positive', 'amount_cents > 0'),
      ('withdrawals', 'withdrawals_amount_cents_positive', 'amount_cents > 0'),
      ('token_transactions', 'token_transactions_amount_usd_cents_nonnegative',
       'amount_usd_cents >= 0'),
      ('users', 'users_balance_cents_nonnegative', 'balance_cents >= 0')
    ) AS v(table_name, constraint_name, expression)
  LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = c.table_name::regclass AND conname = c.constraint_name) THEN
      EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (%s) NOT VALID',
                     c.table_name, c.constraint_name, c.expression);
    END IF;
  END LOOP;
END $$;

COMMIT;

-- Down Migration
-- BEGIN;
-- ALTER TABLE users DROP CONSTRAINT IF EXISTS users_balance_cents_nonnegative,
--   DROP COLUMN IF EXISTS balance_cents, DROP COLUMN IF EXISTS total_earnings_cents;
-- ALTER TABLE token_balances DROP COLUMN IF EXISTS balance_usd_cents;
-- ALTER TABLE token_transactions
--   DROP CONSTRAINT IF EXISTS token_transactions_amount_usd_cents_nonnegative,
--   DROP COLUMN IF EXISTS amount_usd_cents;
-- ALTER TABLE tips DROP CONSTRAINT IF EXISTS tips_amount_cents_positive,
--   DROP COLUMN IF EXISTS amount_cents;
-- ALTER TABLE payments DROP CONSTRAINT IF EXISTS payments_amount_cents_nonnegative,
--   DROP CONSTRAINT IF EXISTS payments_fee_cents_nonnegative,
--   DROP CONSTRAINT IF EXISTS payments_cents_identity,
--   DROP COLUMN IF EXISTS amount_cents, DROP COLUMN IF EXISTS fee_cents,
--   DROP COLUMN IF EXISTS net_amount_cents;
-- ALTER TABLE creator_earnings DROP CONSTRAINT IF EXISTS creator_earnings_cents_identity,
--   DROP COLUMN IF EXISTS gross_amount_cents, DROP COLUMN IF EXISTS platform_fee_cents,
--   DROP COLUMN IF EXISTS net_amount_cents;
-- ALTER TABLE creator_payouts DROP CONSTRAINT IF EXISTS creator_payouts_amount_cents_positive,
--   DROP COLUMN IF EXISTS amount_cents;
-- ALTER TABLE withdrawals DROP CONSTRAINT IF EXISTS withdrawals_amount_cents_positive,
--   DROP COLUMN IF EXISTS amount_cents, DROP COLUMN IF EXISTS fee_cents;
-- ALTER TABLE subscription_tiers DROP COLUMN IF EXISTS price_cents;
-- ALTER TABLE subscriptions DROP COLUMN IF EXISTS price_cents;
-- ALTER TABLE creator_offers DROP COLUMN IF EXISTS price_cents;
-- ALTER TABLE shop_items DROP COLUMN IF EXISTS price_cents, DROP COLUMN IF EXISTS sale_price_cents;
-- ALTER TABLE virtual_gifts DROP COLUMN IF EXISTS price_cents;
-- ALTER TABLE gift_transactions DROP COLUMN IF EXISTS amount_cents;
-- ALTER TABLE ticketed_shows DROP COLUMN IF EXISTS ticket_price_cents;
-- ALTER TABLE show_tickets DROP COLUMN IF EXISTS price_paid_cents;
-- ALTER TABLE stream_rates DROP COLUMN IF EXISTS video_rate_cents,
--   DROP COLUMN IF EXISTS voice_rate_cents, DROP COLUMN IF EXISTS legacy_rate_per_minute_cents;
-- ALTER TABLE ppv_messages DROP COLUMN IF EXISTS price_cents;
-- ALTER TABLE live_shopping_orders DROP COLUMN IF EXISTS amount_cents;
-- ALTER TABLE vod_purchases DROP COLUMN IF EXISTS price_cents;
-- COMMIT;
