-- Migration: 301_backfill_cents
-- Description: Fill every *_cents column from its decimal original with
--   round(x * 100) in numeric arithmetic (half away from zero), in batches of
--   at most 10,000 rows per transaction so no table is locked for long.
--   Batches walk the primary key (keyset), so the loop ends on every input:
--   a batch that changes nothing (zeros, NULLs, rows already filled) still
--   advances. NULL stays NULL. Progress is kept per table, so an interrupted
--   backfill resumes where it stopped; a finished one re-runs as a no-op
--   (only rows whose cents differ are written).
-- Dependencies: 300

BEGIN;

-- Up Migration
CREATE TABLE IF NOT EXISTS cents_backfill_progress (
  table_name TEXT PRIMARY KEY,
  last_key BIGINT NOT NULL,
  done BOOLEAN NOT NULL DEFAULT false
);

CREATE OR REPLACE PROCEDURE backfill_cents(
  p_table TEXT, p_key TEXT, p_columns TEXT[], p_batch_rows INT DEFAULT 10000,
  -- Minor units per major unit, as SQL over the row (a per-currency CASE for a table whose
  -- rows carry their ISO 4217 code); 100 for cents.
  p_factor TEXT DEFAULT '100'
)
LANGUAGE plpgsql
AS $$
DECLARE
  lo BIGINT;
  hi BIGINT;
  was_done BOOLEAN;
  set_list TEXT;
  differs TEXT;
BEGIN
  SELECT string_agg(format('%I = round(%I::numeric * (%s))::bigint', c || '_cents', c, p_factor), ', '),
         string_agg(format('%I IS DISTINCT FROM round(%I::numeric * (%s))::bigint', c || '_cents', c,
                           p_factor), ' OR ')
    INTO set_list, differs
    FROM unnest(p_columns) AS c;

  SELECT last_key, done INTO lo, was_done FROM cents_backfill_progress WHERE table_name = p_table;
  IF lo IS NULL OR was_done THEN
    -- A fresh start, or a re-run after completion: walk the whole table.
    lo := -9223372036854775808;
    INSERT INTO cents_backfill_progress (table_name, last_key, done) VALUES (p_table, lo, false)
      ON CONFLICT (table_name) DO UPDATE SET last_key = EXCLUDED.last_key, done = false;
    COMMIT;
  END IF;

  LOOP
    EXECUTE format('SELECT max(k) FROM (SELECT %I AS k FROM %I WHERE %I > $1 ORDER BY %I LIMIT $2) s',
                   p_key, p_table, p_key, p_key)
      INTO hi USING lo, p_batch_rows;
    EXIT WHEN hi IS NULL;  -- no key above lo: the table is done
    EXECUTE format('UPDATE %I SET %s WHERE %I > $1 AND %I <= $2 AND (%s)',
                   p_table, set_list, p_key, p_key, differs)
      USING lo, hi;
    lo := hi;  -- strictly increasing: the loop always ends
    UPDATE cents_backfill_progress SET last_key = lo WHERE table_name = p_table;
    COMMIT;
  END LOOP;

  UPDATE cents_backfill_progress SET done = true WHERE table_name = p_table;
  COMMIT;
END $$;

COMMIT;

-- Each CALL commits per batch, so it runs outside a transaction block.
CALL backfill_cents('users', 'id', ARRAY['balance', 'total_earnings']);
CALL backfill_cents('token_balances', 'user_id', ARRAY['balance_usd']);
CALL backfill_cents('token_transactions', 'id', ARRAY['amount_usd']);
CALL backfill_cents('tips', 'id', ARRAY['amount']);
CALL backfill_cents('payments', 'id', ARRAY['amount', 'fee', 'net_amount']);
CALL backfill_cents('creator_earnings', 'id', ARRAY['gross_amount', 'platform_fee', 'net_amount']);
CALL backfill_cents('creator_payouts', 'id', ARRAY['amount']);
CALL backfill_cents('withdrawals', 'id', ARRAY['amount', 'fee']);
CALL backfill_cents('subscription_tiers', 'id', ARRAY['price']);
CALL backfill_cents('subscriptions', 'id', ARRAY['price']);
CALL backfill_cents('creator_offers', 'id', ARRAY['price']);
CALL backfill_cents('shop_items', 'id', ARRAY['price', 'sale_price']);
CALL backfill_cents('virtual_gifts', 'id', ARRAY['price']);
CALL backfill_cents('gift_transactions', 'id', ARRAY['amount']);
CALL backfill_cents('ticketed_shows', 'id', ARRAY['ticket_price']);
CALL backfill_cents('show_tickets', 'id', ARRAY['price_paid']);
CALL backfill_cents('stream_rates', 'creator_id',
                    ARRAY['video_rate', 'voice_rate', 'legacy_rate_per_minute']);
CALL backfill_cents('ppv_messages', 'id', ARRAY['price']);
-- Each order in its currency's minor units (ISO 4217: yen have none, dinars three).
CALL backfill_cents('live_shopping_orders', 'id', ARRAY['amount'], 10000,
                    'CASE upper(currency) WHEN ''JPY'' THEN 1 WHEN ''KWD'' THEN 1000 ELSE 100 END');
CALL backfill_cents('vod_purchases', 'id', ARRAY['price']);

-- Down Migration
-- BEGIN;
-- DROP PROCEDURE IF EXISTS backfill_cents(TEXT, TEXT, TEXT[], INT, TEXT);
-- DROP TABLE IF EXISTS cents_backfill_progress;
-- COMMIT;
