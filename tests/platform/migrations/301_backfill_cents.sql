-- Migration: 301_backfill_cents
-- Description: Backfill the cents in batches of 1,000, the way the platform's own file does: each
--   batch picks rows whose cents are still 0 and stops when a batch changes none. A balance of
--   exactly 0.00 keeps its cents at 0, so that row is picked again by every batch: the loop never
--   ends on real data (every seventh user of the snapshot has 0.00).
-- Dependencies: 300
DO $$
DECLARE changed INT;
BEGIN
  LOOP
    UPDATE users SET balance_cents = ROUND(balance * 100),
                     total_earnings_cents = ROUND(total_earnings * 100)
    WHERE id IN (SELECT id FROM users WHERE balance_cents = 0 LIMIT 1000);
    GET DIAGNOSTICS changed = ROW_COUNT;
    EXIT WHEN changed = 0;
  END LOOP;
END $$;
UPDATE token_balances SET balance_usd_cents = ROUND(balance_usd * 100);
UPDATE tips SET amount_cents = ROUND(amount * 100);
UPDATE creator_payouts SET amount_cents = ROUND(amount * 100);
UPDATE subscriptions SET price_cents = ROUND(price * 100);
UPDATE shop_orders SET amount_cents = ROUND(amount * 100), platform_fee_cents = ROUND(platform_fee * 100);
