-- Migration: 301_backfill_cents
-- Description: The backfill, fixed: a batch picks the rows whose cents differ from their decimal
--   (not those that are 0), so 0.00 is done once it is 0, NULL stays NULL, and the loop ends.
-- Dependencies: 300
DO $$
DECLARE changed INT;
BEGIN
  LOOP
    UPDATE users SET balance_cents = ROUND(balance * 100),
                     total_earnings_cents = ROUND(total_earnings * 100)
    WHERE id IN (SELECT id FROM users
                 WHERE balance_cents IS DISTINCT FROM ROUND(balance * 100)
                    OR total_earnings_cents IS DISTINCT FROM ROUND(total_earnings * 100)
                 LIMIT 1000);
    GET DIAGNOSTICS changed = ROW_COUNT;
    EXIT WHEN changed = 0;
  END LOOP;
END $$;
UPDATE token_balances SET balance_usd_cents = ROUND(balance_usd * 100);
UPDATE tips SET amount_cents = ROUND(amount * 100);
UPDATE creator_payouts SET amount_cents = ROUND(amount * 100);
UPDATE subscriptions SET price_cents = ROUND(price * 100);
UPDATE shop_orders SET amount_cents = ROUND(amount * 100), platform_fee_cents = ROUND(platform_fee * 100);
