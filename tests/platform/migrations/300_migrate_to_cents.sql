-- Migration: 300_migrate_to_cents
-- Description: Add a BIGINT *_cents column beside every DECIMAL money column. As the platform's
--   own file does, each new column defaults to 0, so a row the backfill never reaches keeps 0.
-- Dependencies: 202
BEGIN;
ALTER TABLE users ADD COLUMN IF NOT EXISTS balance_cents BIGINT DEFAULT 0;
ALTER TABLE users ADD COLUMN IF NOT EXISTS total_earnings_cents BIGINT DEFAULT 0;
ALTER TABLE token_balances ADD COLUMN IF NOT EXISTS balance_usd_cents BIGINT DEFAULT 0;
ALTER TABLE tips ADD COLUMN IF NOT EXISTS amount_cents BIGINT DEFAULT 0;
ALTER TABLE creator_payouts ADD COLUMN IF NOT EXISTS amount_cents BIGINT DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS price_cents BIGINT DEFAULT 0;
ALTER TABLE shop_orders ADD COLUMN IF NOT EXISTS amount_cents BIGINT DEFAULT 0;
ALTER TABLE shop_orders ADD COLUMN IF NOT EXISTS platform_fee_cents BIGINT DEFAULT 0;
COMMIT;

-- Down Migration (for reference)
-- BEGIN;
-- ALTER TABLE users DROP COLUMN IF EXISTS balance_cents;
-- COMMIT;
