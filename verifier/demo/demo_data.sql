-- The demo generator's statements, one per table, in insertion order.
-- Each proves nothing; each builds rows of one table with set-based SQL from
-- generate_series, so 10^7 rows cost one pass per table and no round trips.
-- Randomness is pg_temp.r(seed, stream, i): a hash of the row number, so the
-- data depends only on the seed and the sizes (deterministic, plan-proof).
-- Money is built from integer cents (or 1/10000 dollars) and divided in
-- numeric: no float touches a money value, except the legacy float column.
-- Parameters: %(seed)s and the row counts %(users)s, %(creators)s, %(n)s.
-- Literal percent signs are not used (psycopg placeholders); mod() is.

-- name: helpers
CREATE FUNCTION pg_temp.r(s bigint, k int, i bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashint8extended(i, s * 1009 + k) & 9223372036854775807 $$;

-- name: helpers_ts
-- A timestamp in the 600 days from 2024-01-01, per row.
CREATE FUNCTION pg_temp.ts(s bigint, k int, i bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT timestamptz '2024-01-01 00:00:00+00'
             + make_interval(secs => mod(pg_temp.r(s, k, i), 51840000)::int) $$;

-- name: helpers_tip
-- Tip-like cents: many small amounts, a long tail of large ones; a third of
-- the small ones are whole dollars, as people tip. A single expression (no
-- FROM) so that PostgreSQL inlines it instead of calling it per row.
CREATE FUNCTION pg_temp.tip_cents(s bigint, k int, i bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE
         WHEN mod(pg_temp.r(s, k, i), 1000) < 600 AND mod(pg_temp.r(s, k + 2, i), 3) = 0
           THEN 100 * (1 + mod(pg_temp.r(s, k + 1, i), 5))
         WHEN mod(pg_temp.r(s, k, i), 1000) < 600 THEN 100 + mod(pg_temp.r(s, k + 1, i), 400)
         WHEN mod(pg_temp.r(s, k, i), 1000) < 900 THEN 500 + mod(pg_temp.r(s, k + 1, i), 1500)
         WHEN mod(pg_temp.r(s, k, i), 1000) < 990 THEN 2000 + mod(pg_temp.r(s, k + 1, i), 18000)
         ELSE 20000 + mod(pg_temp.r(s, k + 1, i), 480000) END $$;

-- name: users
INSERT INTO users (id, username, email, is_creator, balance, total_earnings, created_at)
SELECT i, 'user_' || i, 'user_' || i || '@example.test', mod(i, 10) = 0,
       CASE WHEN mod(pg_temp.r(%(seed)s, 1, i), 10) < 3 THEN 0
            ELSE mod(pg_temp.r(%(seed)s, 2, i), 50000)::numeric / 100 END,
       CASE WHEN mod(i, 10) = 0 THEN mod(pg_temp.r(%(seed)s, 3, i), 5000000)::numeric / 100 END,
       pg_temp.ts(%(seed)s, 4, i)
FROM generate_series(1, %(users)s) AS i;

-- name: token_balances
-- Token value at 5.25 cents a token: every even count lands on a half cent.
INSERT INTO token_balances (user_id, tokens, balance_usd, updated_at)
SELECT i, t, t * 0.0525, pg_temp.ts(%(seed)s, 11, i)
FROM generate_series(1, %(users)s) AS i,
     LATERAL (SELECT mod(pg_temp.r(%(seed)s, 10, i), 20000) AS t) x;

-- name: token_transactions
-- Token packages and per-message spends at three historical rates: sub-cent
-- dollar values and exact half-cent ties are common, as in production.
INSERT INTO token_transactions (id, user_id, type, tokens, amount_usd, created_at)
SELECT i, 1 + mod(pg_temp.r(%(seed)s, 20, i), %(users)s),
       (ARRAY['purchase', 'tip', 'gift', 'refund', 'bonus'])[1 + mod(k, 5)],
       t,
       t * (ARRAY[0.0525, 0.0499, 0.0450])[1 + mod(pg_temp.r(%(seed)s, 22, i), 3)],
       pg_temp.ts(%(seed)s, 23, i)
FROM generate_series(1, %(n)s) AS i,
     LATERAL (SELECT pg_temp.r(%(seed)s, 21, i) AS k) x,
     LATERAL (SELECT CASE WHEN mod(k, 5) = 0
                          THEN (ARRAY[50, 100, 250, 500, 1000, 2500])[1 + mod(k / 5, 6)]
                          ELSE 1 + mod(k / 7, 300) END AS t) y;

-- name: tips
INSERT INTO tips (id, tipper_id, creator_id, amount, message, created_at)
SELECT i, 1 + mod(pg_temp.r(%(seed)s, 30, i), %(users)s),
       10 * (1 + mod(pg_temp.r(%(seed)s, 31, i), %(creators)s)),
       pg_temp.tip_cents(%(seed)s, 32, i)::numeric / 100,
       CASE WHEN mod(pg_temp.r(%(seed)s, 35, i), 10) < 3 THEN 'thanks for the stream!' END,
       pg_temp.ts(%(seed)s, 36, i)
FROM generate_series(1, %(n)s) AS i;

-- name: payments
-- Card payments: fee = 2.9 percent + 30 cents rounded half away from zero, net =
-- amount - fee (the platform's identity); fee and net are NULL while the
-- processor has not reported (pending). The last row sits at the column limit.
INSERT INTO payments (id, user_id, amount, fee, net_amount, currency, status, created_at)
SELECT i, 1 + mod(pg_temp.r(%(seed)s, 40, i), %(users)s), a,
       CASE WHEN pending THEN NULL ELSE f END,
       CASE WHEN pending THEN NULL ELSE a - f END,
       'USD', CASE WHEN pending THEN 'pending' ELSE 'succeeded' END,
       pg_temp.ts(%(seed)s, 43, i)
FROM generate_series(1, %(n)s) AS i,
     LATERAL (SELECT CASE WHEN i = %(n)s THEN 9999999999.99
                          WHEN mod(pg_temp.r(%(seed)s, 41, i), 4) = 0
                          THEN (ARRAY[4.99, 9.99, 19.99, 49.99, 99.99])[1 + mod(pg_temp.r(%(seed)s, 44, i), 5)]
                          ELSE pg_temp.tip_cents(%(seed)s, 45, i)::numeric / 100 END AS a,
                     mod(pg_temp.r(%(seed)s, 42, i), 50) = 0 AND i <> %(n)s AS pending) x,
     LATERAL (SELECT CASE WHEN i = %(n)s THEN 0 ELSE round(a * 0.029 + 0.30, 2) END AS f) y;

-- name: creator_earnings
INSERT INTO creator_earnings (id, creator_id, source, gross_amount, platform_fee, net_amount, created_at)
SELECT i, 10 * (1 + mod(pg_temp.r(%(seed)s, 50, i), %(creators)s)),
       (ARRAY['tip', 'subscription', 'ppv', 'gift', 'show', 'shop'])[1 + mod(pg_temp.r(%(seed)s, 51, i), 6)],
       g, round(g * 0.20, 2), g - round(g * 0.20, 2), pg_temp.ts(%(seed)s, 53, i)
FROM generate_series(1, %(n)s) AS i,
     LATERAL (SELECT pg_temp.tip_cents(%(seed)s, 52, i)::numeric / 100 AS g) x;

-- name: creator_payouts
-- Few, large payouts.
INSERT INTO creator_payouts (id, creator_id, amount, status, period_start, created_at)
SELECT i, 10 * (1 + mod(pg_temp.r(%(seed)s, 60, i), %(creators)s)),
       (10000 + mod(pg_temp.r(%(seed)s, 61, i), 2500000))::numeric / 100,
       (ARRAY['paid', 'paid', 'paid', 'processing', 'failed'])[1 + mod(pg_temp.r(%(seed)s, 62, i), 5)],
       date '2024-01-01' + 14 * mod(pg_temp.r(%(seed)s, 63, i), 43)::int,
       pg_temp.ts(%(seed)s, 64, i)
FROM generate_series(1, %(n)s) AS i;

-- name: withdrawals
INSERT INTO withdrawals (id, creator_id, amount, fee, status, created_at)
SELECT i, 10 * (1 + mod(pg_temp.r(%(seed)s, 70, i), %(creators)s)),
       (2000 + mod(pg_temp.r(%(seed)s, 71, i), 500000))::numeric / 100,
       CASE WHEN mod(pg_temp.r(%(seed)s, 72, i), 10) < 3 THEN NULL
            ELSE (25 + mod(pg_temp.r(%(seed)s, 73, i), 500))::numeric / 100 END,
       (ARRAY['completed', 'completed', 'pending', 'rejected'])[1 + mod(pg_temp.r(%(seed)s, 74, i), 4)],
       pg_temp.ts(%(seed)s, 75, i)
FROM generate_series(1, %(n)s) AS i;

-- name: subscription_tiers
-- Three tiers per creator at the standard price points.
INSERT INTO subscription_tiers (id, creator_id, name, price)
SELECT 3 * (c - 1) + t, 10 * c, (ARRAY['Fan', 'Super Fan', 'VIP'])[t],
       (ARRAY[4.99, 9.99, 24.99])[t] + CASE WHEN mod(pg_temp.r(%(seed)s, 80, c), 4) = 0 THEN 5 ELSE 0 END
FROM generate_series(1, %(creators)s) AS c, generate_series(1, 3) AS t;

-- name: subscriptions
INSERT INTO subscriptions (id, fan_id, creator_id, tier_id, price, status, started_at)
SELECT i, 1 + mod(pg_temp.r(%(seed)s, 90, i), %(users)s), st.creator_id, st.id, st.price,
       (ARRAY['active', 'active', 'active', 'cancelled', 'expired'])[1 + mod(pg_temp.r(%(seed)s, 92, i), 5)],
       pg_temp.ts(%(seed)s, 93, i)
FROM generate_series(1, %(n)s) AS i
JOIN subscription_tiers st ON st.id = 1 + mod(pg_temp.r(%(seed)s, 91, i), 3 * %(creators)s);

-- name: creator_offers
INSERT INTO creator_offers (id, creator_id, title, price)
SELECT i, 10 * (1 + mod(pg_temp.r(%(seed)s, 100, i), %(creators)s)), 'Offer ' || i,
       (500 + mod(pg_temp.r(%(seed)s, 101, i), 49500))::numeric / 100
FROM generate_series(1, %(n)s) AS i;

-- name: shop_items
INSERT INTO shop_items (id, creator_id, name, price, sale_price)
SELECT i, 10 * (1 + mod(pg_temp.r(%(seed)s, 110, i), %(creators)s)), 'Item ' || i, p,
       CASE WHEN mod(pg_temp.r(%(seed)s, 112, i), 5) = 0 THEN round(p * 0.8, 2) END
FROM generate_series(1, %(n)s) AS i,
     LATERAL (SELECT (199 + mod(pg_temp.r(%(seed)s, 111, i), 19800))::numeric / 100 AS p) x;

-- name: virtual_gifts
INSERT INTO virtual_gifts (id, name, price)
SELECT g, 'Gift ' || g,
       (ARRAY[0.99, 1.99, 2.99, 4.99, 9.99, 14.99, 19.99, 24.99, 49.99, 99.99,
              0.49, 0.25, 3.50, 7.77, 12.50, 29.99, 74.99, 149.99, 249.99, 499.99])[g]
FROM generate_series(1, 20) AS g;

-- name: gift_transactions
INSERT INTO gift_transactions (id, sender_id, recipient_id, gift_id, quantity, amount, created_at)
SELECT i, 1 + mod(pg_temp.r(%(seed)s, 120, i), %(users)s),
       10 * (1 + mod(pg_temp.r(%(seed)s, 121, i), %(creators)s)), vg.id, q, vg.price * q,
       pg_temp.ts(%(seed)s, 124, i)
FROM generate_series(1, %(n)s) AS i
CROSS JOIN LATERAL (SELECT CASE WHEN mod(pg_temp.r(%(seed)s, 122, i), 10) < 8 THEN 1
                                ELSE 2 + mod(pg_temp.r(%(seed)s, 125, i), 9) END AS q) x
JOIN virtual_gifts vg ON vg.id = 1 + mod(pg_temp.r(%(seed)s, 123, i), 20);

-- name: ticketed_shows
INSERT INTO ticketed_shows (id, creator_id, title, ticket_price)
SELECT i, 10 * (1 + mod(pg_temp.r(%(seed)s, 130, i), %(creators)s)), 'Show ' || i,
       (ARRAY[5.00, 9.99, 14.99, 19.99, 25.00, 49.99])[1 + mod(pg_temp.r(%(seed)s, 131, i), 6)]
FROM generate_series(1, %(n)s) AS i;

-- name: show_tickets
-- Early-bird tickets at 85 percent are rounded to the cent (numeric, half away).
INSERT INTO show_tickets (id, show_id, fan_id, price_paid)
SELECT i, ts.id, 1 + mod(pg_temp.r(%(seed)s, 141, i), %(users)s),
       CASE WHEN mod(pg_temp.r(%(seed)s, 142, i), 4) = 0 THEN round(ts.ticket_price * 0.85, 2)
            ELSE ts.ticket_price END
FROM generate_series(1, %(n)s) AS i
JOIN ticketed_shows ts ON ts.id = 1 + mod(pg_temp.r(%(seed)s, 140, i), %(shows)s);

-- name: stream_rates
-- The legacy float column holds 3-decimal rates such as 1.005, whose binary
-- value lies just below the half cent: the float trap the cents must avoid.
INSERT INTO stream_rates (creator_id, video_rate, voice_rate, legacy_rate_per_minute)
SELECT 10 * c, v,
       CASE WHEN mod(pg_temp.r(%(seed)s, 151, c), 10) < 4 THEN NULL ELSE round(v / 2, 2) END,
       CASE WHEN mod(pg_temp.r(%(seed)s, 152, c), 2) = 0 THEN NULL
            ELSE ((1000 + mod(pg_temp.r(%(seed)s, 153, c), 9000))::numeric / 1000)::double precision END
FROM generate_series(1, %(creators)s) AS c,
     LATERAL (SELECT (199 + mod(pg_temp.r(%(seed)s, 150, c), 800))::numeric / 100 AS v) x;

-- name: ppv_messages
INSERT INTO ppv_messages (id, sender_id, recipient_id, price, unlocked)
SELECT i, 10 * (1 + mod(pg_temp.r(%(seed)s, 160, i), %(creators)s)),
       1 + mod(pg_temp.r(%(seed)s, 161, i), %(users)s),
       (100 + mod(pg_temp.r(%(seed)s, 162, i), 4900))::numeric / 100,
       mod(pg_temp.r(%(seed)s, 163, i), 3) = 0
FROM generate_series(1, %(n)s) AS i;

-- name: live_shopping_orders
-- Mostly dollars; some euros, yen (no minor unit: whole amounts) and Kuwaiti dinars (three decimals).
INSERT INTO live_shopping_orders (id, buyer_id, creator_id, currency, amount, created_at)
SELECT i, 1 + mod(pg_temp.r(%(seed)s, 170, i), %(users)s),
       10 * (1 + mod(pg_temp.r(%(seed)s, 171, i), %(creators)s)),
       c.code,
       CASE c.code WHEN 'JPY' THEN (500 + mod(pg_temp.r(%(seed)s, 172, i), 30000))::numeric
                   ELSE (500 + mod(pg_temp.r(%(seed)s, 172, i), 30000))::numeric / 100 END,
       pg_temp.ts(%(seed)s, 173, i)
FROM generate_series(1, %(n)s) AS i,
     LATERAL (SELECT (ARRAY['USD', 'USD', 'USD', 'USD', 'USD', 'USD', 'USD', 'EUR', 'JPY', 'KWD'])
                     [1 + mod(pg_temp.r(%(seed)s, 174, i), 10)] AS code) AS c;

-- name: vod_purchases
INSERT INTO vod_purchases (id, user_id, creator_id, price, created_at)
SELECT i, 1 + mod(pg_temp.r(%(seed)s, 180, i), %(users)s),
       10 * (1 + mod(pg_temp.r(%(seed)s, 181, i), %(creators)s)),
       (ARRAY[2.99, 4.99, 7.99, 9.99, 14.99, 29.99])[1 + mod(pg_temp.r(%(seed)s, 182, i), 6)],
       pg_temp.ts(%(seed)s, 183, i)
FROM generate_series(1, %(n)s) AS i;
