-- The creator platform's database just before the 300-series, as its hosted PostgreSQL holds it
-- (written here from ../shared/seed/migrations-README.md and ../shared/platform-400.md, not copied):
-- the extensions in their own schema, uuid keys that default to uuid_generate_v4(), money as
-- DECIMAL dollars, row level security on the money tables, and schema_migrations recording each
-- applied number once (004, 005, ... are shared by several files; "all migrations have been applied").
-- tests/test_platform_rehearsal.py dumps it and rehearses the files beside it.
CREATE SCHEMA IF NOT EXISTS extensions;
CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA extensions;
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA extensions;

CREATE TABLE users (
  id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
  email text NOT NULL UNIQUE,
  is_creator boolean NOT NULL DEFAULT false,
  balance numeric(10,2) NOT NULL DEFAULT 0.00,
  total_earnings numeric(10,2) DEFAULT 0.00,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE token_balances (
  user_id uuid PRIMARY KEY REFERENCES users (id),
  balance integer NOT NULL DEFAULT 0,                -- tokens, not money
  balance_usd numeric(12,2) NOT NULL DEFAULT 0.00
);
CREATE TABLE tips (
  id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
  fan_id uuid NOT NULL REFERENCES users (id),
  creator_id uuid NOT NULL REFERENCES users (id),
  amount numeric(10,2) NOT NULL,
  message text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE creator_payouts (
  id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
  creator_id uuid NOT NULL REFERENCES users (id),
  amount numeric(10,2) NOT NULL,
  status text NOT NULL DEFAULT 'pending',
  stripe_transfer_id text DEFAULT encode(extensions.gen_random_bytes(12), 'hex')
);
CREATE TABLE subscriptions (
  id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
  fan_id uuid NOT NULL REFERENCES users (id),
  creator_id uuid NOT NULL REFERENCES users (id),
  price numeric(10,2) NOT NULL,
  status text NOT NULL DEFAULT 'active'
);
CREATE TABLE shop_orders (
  id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
  buyer_id uuid NOT NULL REFERENCES users (id),
  amount numeric(10,2) NOT NULL,
  platform_fee numeric(10,2) NOT NULL,
  receipt_digest text
);
CREATE TABLE schema_migrations (
  version integer PRIMARY KEY,
  applied_at timestamptz NOT NULL DEFAULT now()
);

-- 1,000 users; every seventh has a balance of exactly 0.00 (the real 301 spins on those).
INSERT INTO users (id, email, is_creator, balance, total_earnings)
SELECT extensions.uuid_generate_v5(extensions.uuid_ns_url(), 'user-' || g), 'user' || g || '@example.com',
       g % 5 = 0,
       CASE WHEN g % 7 = 0 THEN 0.00 ELSE ((g * 7919) % 100000) / 100.0 END,
       CASE WHEN g % 5 = 0 THEN ((g * 104729) % 1000000) / 100.0 WHEN g % 11 = 0 THEN NULL ELSE 0.00 END
FROM generate_series(1, 1000) g;
INSERT INTO token_balances (user_id, balance, balance_usd)
SELECT id, (balance * 20)::int, balance FROM users;
INSERT INTO tips (fan_id, creator_id, amount, message)
SELECT f.id, c.id, ((g * 31) % 5000) / 100.0 + 1, 'thanks #' || g
FROM generate_series(1, 3000) g
JOIN users f ON f.email = 'user' || (1 + g % 1000) || '@example.com'
JOIN users c ON c.email = 'user' || (5 * (1 + g % 200)) || '@example.com';
INSERT INTO creator_payouts (creator_id, amount, status)
SELECT id, total_earnings, 'paid' FROM users WHERE is_creator AND total_earnings > 0;
INSERT INTO subscriptions (fan_id, creator_id, price)
SELECT f.id, c.id, (ARRAY[4.99, 9.99, 19.99, 49.99])[1 + g % 4]
FROM generate_series(1, 800) g
JOIN users f ON f.email = 'user' || (1 + (g * 13) % 1000) || '@example.com'
JOIN users c ON c.email = 'user' || (5 * (1 + g % 200)) || '@example.com';
INSERT INTO shop_orders (buyer_id, amount, platform_fee, receipt_digest)
SELECT u.id, ((g * 97) % 20000) / 100.0 + 0.50, round((((g * 97) % 20000) / 100.0 + 0.50) * 0.2, 2),
       encode(extensions.digest('order-' || g, 'sha256'), 'hex')
FROM generate_series(1, 1500) g
JOIN users u ON u.email = 'user' || (1 + (g * 7) % 1000) || '@example.com';

-- The seed's numbered migrations, each number recorded once.
INSERT INTO schema_migrations (version)
SELECT unnest(ARRAY[1, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
                    30, 31, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 111, 112, 113, 114, 115,
                    116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132,
                    133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 200, 201,
                    202]);

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE tips ENABLE ROW LEVEL SECURITY;
CREATE POLICY tips_own ON tips USING (fan_id::text = current_setting('app.user_id', true)
                                      OR creator_id::text = current_setting('app.user_id', true));
