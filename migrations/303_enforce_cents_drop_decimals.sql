-- Migration: 303_enforce_cents_drop_decimals
-- Description: Make the cents the only money columns: validate the
--   constraints 300 added (SHARE UPDATE EXCLUSIVE: reads and writes go on),
--   make the cents of NOT NULL decimals NOT NULL without a scan under an
--   exclusive lock (a validated CHECK (x IS NOT NULL) lets SET NOT NULL skip
--   it), then drop the decimal columns. Each step is its own transaction.
--   The role the team's 202_drop_decimals_enforce_cents played.
-- Dependencies: 302

-- Up Migration
-- Step 1: NOT NULL checks for the cents of NOT NULL decimals, NOT VALID.
BEGIN;
SET LOCAL lock_timeout = '5s';
DO $$
DECLARE
  col record;
BEGIN
  FOR col IN
    SELECT c.relname AS table_name, a.attname || '_cents' AS cents,
           c.relname || '_' || a.attname || '_cents_not_null' AS check_name
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid AND c.relkind = 'r'
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
    WHERE a.atttypid IN ('numeric'::regtype, 'double precision'::regtype)
      AND a.attnotnull AND a.attnum > 0 AND NOT a.attisdropped
      AND EXISTS (SELECT 1 FROM pg_attribute b WHERE b.attrelid = a.attrelid
                  AND b.attname = a.attname || '_cents' AND NOT b.attisdropped)
  LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = col.check_name) THEN
      EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (%I IS NOT NULL) NOT VALID',
                     col.table_name, col.check_name, col.cents);
    END IF;
  END LOOP;
END $$;
COMMIT;

-- Step 2: validate every NOT VALID constraint on the money tables.
BEGIN;
DO $$
DECLARE
  con record;
BEGIN
  FOR con IN
    SELECT c.conrelid::regclass AS table_name, c.conname
    FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace AND n.nspname = 'public'
    WHERE NOT c.convalidated AND c.contype = 'c'
      AND (c.conname LIKE '%\_cents\_%' OR c.conname LIKE '%\_cents')
  LOOP
    EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', con.table_name, con.conname);
  END LOOP;
END $$;
COMMIT;

-- Step 3: NOT NULL (no scan: the checks are valid), defaults, drop decimals.
BEGIN;
SET LOCAL lock_timeout = '5s';
DO $$
DECLARE
  con record;
BEGIN
  FOR con IN
    SELECT c.conrelid::regclass AS table_name, c.conname,
           substring(c.conname FROM length(r.relname) + 2 FOR length(c.conname) - length(r.relname) - 10)
             AS cents
    FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
    WHERE c.conname LIKE '%\_cents\_not\_null' AND c.convalidated
  LOOP
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL', con.table_name, con.cents);
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', con.table_name, con.conname);
  END LOOP;
END $$;
ALTER TABLE users ALTER COLUMN balance_cents SET DEFAULT 0;
ALTER TABLE token_balances ALTER COLUMN balance_usd_cents SET DEFAULT 0;

ALTER TABLE users DROP COLUMN IF EXISTS balance, DROP COLUMN IF EXISTS total_earnings;
ALTER TABLE token_balances DROP COLUMN IF EXISTS balance_usd;
ALTER TABLE token_transactions DROP COLUMN IF EXISTS amount_usd;
ALTER TABLE tips DROP COLUMN IF EXISTS amount;
ALTER TABLE payments DROP COLUMN IF EXISTS amount, DROP COLUMN IF EXISTS fee,
  DROP COLUMN IF EXISTS net_amount;
ALTER TABLE creator_earnings DROP COLUMN IF EXISTS gross_amount, DROP COLUMN IF EXISTS platform_fee,
  DROP COLUMN IF EXISTS net_amount;
ALTER TABLE creator_payouts DROP COLUMN IF EXISTS amount;
ALTER TABLE withdrawals DROP COLUMN IF EXISTS amount, DROP COLUMN IF EXISTS fee;
ALTER TABLE subscription_tiers DROP COLUMN IF EXISTS price;
ALTER TABLE subscriptions DROP COLUMN IF EXISTS price;
ALTER TABLE creator_offers DROP COLUMN IF EXISTS price;
ALTER TABLE shop_items DROP COLUMN IF EXISTS price, DROP COLUMN IF EXISTS sale_price;
ALTER TABLE virtual_gifts DROP COLUMN IF EXISTS price;
ALTER TABLE gift_transactions DROP COLUMN IF EXISTS amount;
ALTER TABLE ticketed_shows DROP COLUMN IF EXISTS ticket_price;
ALTER TABLE show_tickets DROP COLUMN IF EXISTS price_paid;
ALTER TABLE stream_rates DROP COLUMN IF EXISTS video_rate, DROP COLUMN IF EXISTS voice_rate,
  DROP COLUMN IF EXISTS legacy_rate_per_minute;
ALTER TABLE ppv_messages DROP COLUMN IF EXISTS price;
ALTER TABLE live_shopping_orders DROP COLUMN IF EXISTS amount;
ALTER TABLE vod_purchases DROP COLUMN IF EXISTS price;
COMMIT;

-- Down Migration
-- -- The decimals come back with their types, NOT NULLs and defaults, filled
-- -- from the cents (sub-cent digits are gone for good); the cents become
-- -- nullable again, as after 300.
-- BEGIN;
-- DO $$
-- DECLARE
--   col record;
-- BEGIN
--   FOR col IN
--     SELECT * FROM (VALUES
--       ('users', 'balance', 'DECIMAL(12,2)', true, '0'),
--       ('users', 'total_earnings', 'DECIMAL(12,2)', false, NULL),
--       ('token_balances', 'balance_usd', 'DECIMAL(14,4)', true, '0'),
--       ('token_transactions', 'amount_usd', 'DECIMAL(14,4)', true, NULL),
--       ('tips', 'amount', 'DECIMAL(10,2)', true, NULL),
--       ('payments', 'amount', 'DECIMAL(12,2)', true, NULL),
--       ('payments', 'fee', 'DECIMAL(10,2)', false, NULL),
--       ('payments', 'net_amount', 'DECIMAL(12,2)', false, NULL),
--       ('creator_earnings', 'gross_amount', 'DECIMAL(12,2)', true, NULL),
--       ('creator_earnings', 'platform_fee', 'DECIMAL(12,2)', true, NULL),
--       ('creator_earnings', 'net_amount', 'DECIMAL(12,2)', true, NULL),
--       ('creator_payouts', 'amount', 'DECIMAL(12,2)', true, NULL),
--       ('withdrawals', 'amount', 'DECIMAL(12,2)', true, NULL),
--       ('withdrawals', 'fee', 'DECIMAL(10,2)', false, NULL),
--       ('subscription_tiers', 'price', 'DECIMAL(8,2)', true, NULL),
--       ('subscriptions', 'price', 'DECIMAL(8,2)', true, NULL),
--       ('creator_offers', 'price', 'DECIMAL(10,2)', true, NULL),
--       ('shop_items', 'price', 'DECIMAL(10,2)', true, NULL),
--       ('shop_items', 'sale_price', 'DECIMAL(10,2)', false, NULL),
--       ('virtual_gifts', 'price', 'DECIMAL(8,2)', true, NULL),
--       ('gift_transactions', 'amount', 'DECIMAL(10,2)', true, NULL),
--       ('ticketed_shows', 'ticket_price', 'DECIMAL(8,2)', true, NULL),
--       ('show_tickets', 'price_paid', 'DECIMAL(8,2)', true, NULL),
--       ('stream_rates', 'video_rate', 'DECIMAL(8,2)', false, NULL),
--       ('stream_rates', 'voice_rate', 'DECIMAL(8,2)', false, NULL),
--       ('stream_rates', 'legacy_rate_per_minute', 'DOUBLE PRECISION', false, NULL),
--       ('ppv_messages', 'price', 'DECIMAL(8,2)', true, NULL),
--       ('live_shopping_orders', 'amount', 'DECIMAL(10,2)', true, NULL),
--       ('vod_purchases', 'price', 'DECIMAL(8,2)', true, NULL)
--     ) AS v(table_name, column_name, type_name, not_null, default_value)
--   LOOP
--     EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS %I %s', col.table_name,
--                    col.column_name, col.type_name);
--     EXECUTE format('UPDATE %I SET %I = %I / 100.0', col.table_name, col.column_name,
--                    col.column_name || '_cents');
--     IF col.default_value IS NOT NULL THEN
--       EXECUTE format('ALTER TABLE %I ALTER COLUMN %I SET DEFAULT %s', col.table_name,
--                      col.column_name, col.default_value);
--       EXECUTE format('ALTER TABLE %I ALTER COLUMN %I DROP DEFAULT', col.table_name,
--                      col.column_name || '_cents');
--     END IF;
--     IF col.not_null THEN
--       EXECUTE format('ALTER TABLE %I ALTER COLUMN %I SET NOT NULL', col.table_name,
--                      col.column_name);
--       EXECUTE format('ALTER TABLE %I ALTER COLUMN %I DROP NOT NULL', col.table_name,
--                      col.column_name || '_cents');
--     END IF;
--   END LOOP;
-- END $$;
-- COMMIT;
