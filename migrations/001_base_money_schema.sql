-- Migration: 001_base_money_schema
-- Description: The creator platform's money tables as they stand before the
--   cents conversion: every amount is DECIMAL dollars (token values carry 4
--   decimals) and one legacy rate is double precision.
-- Dependencies: none

BEGIN;

-- Up Migration
CREATE TABLE IF NOT EXISTS users (
  id BIGINT PRIMARY KEY,
  username TEXT NOT NULL UNIQUE,
  email TEXT NOT NULL,
  is_creator BOOLEAN NOT NULL DEFAULT false,
  balance DECIMAL(12,2) NOT NULL DEFAULT 0,          -- wallet, dollars
  total_earnings DECIMAL(12,2),                      -- creators only
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS token_balances (
  user_id BIGINT PRIMARY KEY REFERENCES users(id),
  tokens BIGINT NOT NULL DEFAULT 0,
  balance_usd DECIMAL(14,4) NOT NULL DEFAULT 0,      -- tokens at the token rate
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS token_transactions (
  id BIGINT PRIMARY KEY,
  user_id BIGINT NOT NULL REFERENCES users(id),
  type TEXT NOT NULL CHECK (type IN ('purchase', 'tip', 'gift', 'refund', 'bonus')),
  tokens BIGINT NOT NULL,
  amount_usd DECIMAL(14,4) NOT NULL,                 -- sub-cent values are real
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tips (
  id BIGINT PRIMARY KEY,
  tipper_id BIGINT NOT NULL REFERENCES users(id),
  creator_id BIGINT NOT NULL REFERENCES users(id),
  amount DECIMAL(10,2) NOT NULL,
  message TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS payments (
  id BIGINT PRIMARY KEY,
  user_id BIGINT NOT NULL REFERENCES users(id),
  amount DECIMAL(12,2) NOT NULL,
  fee DECIMAL(10,2),                                 -- NULL until the processor reports it
  net_amount DECIMAL(12,2),
  currency CHAR(3) NOT NULL DEFAULT 'USD',
  status TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS creator_earnings (
  id BIGINT PRIMARY KEY,
  creator_id BIGINT NOT NULL REFERENCES users(id),
  source TEXT NOT NULL,
  gross_amount DECIMAL(12,2) NOT NULL,
  platform_fee DECIMAL(12,2) NOT NULL,
  net_amount DECIMAL(12,2) NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS creator_payouts (
  id BIGINT PRIMARY KEY,
  creator_id BIGINT NOT NULL REFERENCES users(id),
  amount DECIMAL(12,2) NOT NULL,
  status TEXT NOT NULL,
  period_start DATE NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS withdrawals (
  id BIGINT PRIMARY KEY,
  creator_id BIGINT NOT NULL REFERENCES users(id),
  amount DECIMAL(12,2) NOT NULL,
  fee DECIMAL(10,2),
  status TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS subscription_tiers (
  id BIGINT PRIMARY KEY,
  creator_id BIGINT NOT NULL REFERENCES users(id),
  name TEXT NOT NULL,
  price DECIMAL(8,2) NOT NULL
);

CREATE TABLE IF NOT EXISTS subscriptions (
  id BIGINT PRIMARY KEY,
  fan_id BIGINT NOT NULL REFERENCES users(id),
  creator_id BIGINT NOT NULL REFERENCES users(id),
  tier_id BIGINT REFERENCES subscription_tiers(id),
  price DECIMAL(8,2) NOT NULL,
  status TEXT NOT NULL,
  started_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS creator_offers (
  id BIGINT PRIMARY KEY,
  creator_id BIGINT NOT NULL REFERENCES users(id),
  title TEXT NOT NULL,
  price DECIMAL(10,2) NOT NULL
);

CREATE TABLE IF NOT EXISTS shop_items (
  id BIGINT PRIMARY KEY,
  creator_id BIGINT NOT NULL REFERENCES users(id),
  name TEXT NOT NULL,
  price DECIMAL(10,2) NOT NULL,
  sale_price DECIMAL(10,2)                           -- NULL when not on sale
);

CREATE TABLE IF NOT EXISTS virtual_gifts (
  id BIGINT PRIMARY KEY,
  name TEXT NOT NULL,
  price DECIMAL(8,2) NOT NULL
);

CREATE TABLE IF NOT EXISTS gift_transactions (
  id BIGINT PRIMARY KEY,
  sender_id BIGINT NOT NULL REFERENCES users(id),
  recipient_id BIGINT NOT NULL REFERENCES users(id),
  gift_id BIGINT NOT NULL REFERENCES virtual_gifts(id),
  quantity INT NOT NULL,
  amount DECIMAL(10,2) NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ticketed_shows (
  id BIGINT PRIMARY KEY,
  creator_id BIGINT NOT NULL REFERENCES users(id),
  title TEXT NOT NULL,
  ticket_price DECIMAL(8,2) NOT NULL
);

CREATE TABLE IF NOT EXISTS show_tickets (
  id BIGINT PRIMARY KEY,
  show_id BIGINT NOT NULL REFERENCES ticketed_shows(id),
  fan_id BIGINT NOT NULL REFERENCES users(id),
  price_paid DECIMAL(8,2) NOT NULL
);

CREATE TABLE IF NOT EXISTS stream_rates (
  creator_id BIGINT PRIMARY KEY REFERENCES users(id),
  video_rate DECIMAL(8,2),
  voice_rate DECIMAL(8,2),
  -- Legacy: written by the first mobile client as a float, never migrated.
  legacy_rate_per_minute DOUBLE PRECISION
);

CREATE TABLE IF NOT EXISTS ppv_messages (
  id BIGINT PRIMARY KEY,
  sender_id BIGINT NOT NULL REFERENCES users(id),
  recipient_id BIGINT NOT NULL REFERENCES users(id),
  price DECIMAL(8,2) NOT NULL,
  unlocked BOOLEAN NOT NULL DEFAULT false
);

-- Sold worldwide: each order in its buyer's currency (ISO 4217 code).
CREATE TABLE IF NOT EXISTS live_shopping_orders (
  id BIGINT PRIMARY KEY,
  buyer_id BIGINT NOT NULL REFERENCES users(id),
  creator_id BIGINT NOT NULL REFERENCES users(id),
  currency CHAR(3) NOT NULL DEFAULT 'USD',
  amount DECIMAL(10,2) NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS vod_purchases (
  id BIGINT PRIMARY KEY,
  user_id BIGINT NOT NULL REFERENCES users(id),
  creator_id BIGINT NOT NULL REFERENCES users(id),
  price DECIMAL(8,2) NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);


COMMIT;

-- Down Migration
-- BEGIN;
-- DROP TABLE IF EXISTS vod_purchases, live_shopping_orders, ppv_messages, stream_rates,
--   show_tickets, ticketed_shows, gift_transactions, virtual_gifts, shop_items,
--   creator_offers, subscriptions, subscription_tiers, withdrawals, creator_payouts,
--   creator_earnings, payments, tips, token_transactions, token_balances, users;
-- COMMIT;
