-- Migration: 302_verification_queries
-- Description: Verification queries: read only; fails when any cent differs from its decimal.
-- Dependencies: 301
SELECT count(*) AS users_mismatched FROM users WHERE balance_cents IS DISTINCT FROM ROUND(balance * 100);
SELECT count(*) AS tips_mismatched FROM tips WHERE amount_cents IS DISTINCT FROM ROUND(amount * 100);
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM users WHERE balance_cents IS DISTINCT FROM ROUND(balance * 100))
     OR EXISTS (SELECT 1 FROM tips WHERE amount_cents IS DISTINCT FROM ROUND(amount * 100)) THEN
    RAISE EXCEPTION 'cents verification failed';
  END IF;
END $$;
