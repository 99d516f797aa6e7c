-- Migration: 400_create_double_entry_ledger
-- Description: The double-entry ledger, in the platform's own layout (its
--   tables, columns, types, indexes and row level security switches), with
--   the balance rule made correct.
--   Sign convention (the platform's): a positive amount_cents is a debit, a
--   negative one a credit, and every entry carries its account's balance
--   before and after it: balance_after_cents = balance_before_cents -
--   amount_cents, on every account (a wallet grows with credits).
--   Balances never go below zero, on any account, so money enters the
--   ledger only as an account's opening balance (balance_cents set when the
--   account is created); journals move it.
--   The balance rule holds when a transaction COMMITS: a journal's entries
--   must sum to zero, be at least two and lie in accounts of one currency
--   (a deferred constraint trigger, which sees the whole journal; a row
--   trigger that fires per entry would reject the first leg of every
--   balanced journal). transfer_tokens() posts a transfer, reverse_journal()
--   a refund, which marks the original journal (reversed_by, is_reversed).
--   Re-runnable: every statement is guarded.
-- Dependencies: 303

BEGIN;

-- Up Migration
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'account_type'
                 AND typnamespace = 'public'::regnamespace) THEN
    CREATE TYPE account_type AS ENUM ('user', 'platform', 'treasury', 'escrow', 'fees', 'payouts');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'transaction_type'
                 AND typnamespace = 'public'::regnamespace) THEN
    CREATE TYPE transaction_type AS ENUM (
      'token_purchase', 'token_transfer', 'tip', 'session_payment', 'withdrawal', 'refund',
      'platform_fee', 'creator_payout', 'subscription_payment', 'content_purchase', 'gift_purchase',
      'adjustment');
  END IF;
END $$;

CREATE TABLE IF NOT EXISTS accounts (
  id BIGSERIAL PRIMARY KEY,
  owner_id UUID NOT NULL,
  type account_type NOT NULL,
  currency VARCHAR(3) NOT NULL DEFAULT 'USD',
  balance_cents BIGINT NOT NULL DEFAULT 0 CHECK (balance_cents >= 0),
  available_balance_cents BIGINT NOT NULL DEFAULT 0 CHECK (available_balance_cents >= 0),
  pending_balance_cents BIGINT NOT NULL DEFAULT 0 CHECK (pending_balance_cents >= 0),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  metadata JSONB DEFAULT '{}',
  is_active BOOLEAN NOT NULL DEFAULT true,
  UNIQUE (owner_id, type, currency)
);

CREATE TABLE IF NOT EXISTS journals (
  id BIGSERIAL PRIMARY KEY,
  ref_type transaction_type NOT NULL,
  ref_id UUID NOT NULL,
  description TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  created_by UUID,
  idempotency_key TEXT UNIQUE,
  metadata JSONB,
  reversed_by BIGINT REFERENCES journals(id),
  is_reversed BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS entries (
  id BIGSERIAL PRIMARY KEY,
  journal_id BIGINT NOT NULL REFERENCES journals(id) ON DELETE RESTRICT,
  account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE RESTRICT,
  amount_cents BIGINT NOT NULL,
  balance_before_cents BIGINT NOT NULL,
  balance_after_cents BIGINT NOT NULL,
  entry_type VARCHAR(10) NOT NULL CHECK (entry_type IN ('debit', 'credit')),
  description TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  metadata JSONB,
  CONSTRAINT entries_sign_matches_type CHECK ((entry_type = 'debit' AND amount_cents > 0)
                                              OR (entry_type = 'credit' AND amount_cents < 0))
);

CREATE TABLE IF NOT EXISTS financial_audit_log (
  id BIGSERIAL PRIMARY KEY,
  action VARCHAR(50) NOT NULL,
  actor_id UUID,
  target_account_id BIGINT REFERENCES accounts(id),
  journal_id BIGINT REFERENCES journals(id),
  amount_cents BIGINT,
  before_state JSONB,
  after_state JSONB,
  ip_address INET,
  user_agent TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  metadata JSONB
);

CREATE TABLE IF NOT EXISTS ledger_snapshots (
  id BIGSERIAL PRIMARY KEY,
  account_id BIGINT NOT NULL REFERENCES accounts(id),
  balance_cents BIGINT NOT NULL,
  entry_count INTEGER NOT NULL,
  last_entry_id BIGINT REFERENCES entries(id),
  snapshot_date DATE NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (account_id, snapshot_date)
);

CREATE TABLE IF NOT EXISTS pending_transactions (
  id BIGSERIAL PRIMARY KEY,
  idempotency_key TEXT NOT NULL UNIQUE,
  transaction_type transaction_type NOT NULL,
  amount_cents BIGINT NOT NULL,
  from_account_id BIGINT REFERENCES accounts(id),
  to_account_id BIGINT REFERENCES accounts(id),
  status VARCHAR(20) NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'expired')),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  expires_at TIMESTAMPTZ NOT NULL,
  completed_at TIMESTAMPTZ,
  journal_id BIGINT REFERENCES journals(id),
  metadata JSONB
);

-- The platform's indexes (there is none on entries (account_id, id)).
CREATE INDEX IF NOT EXISTS idx_entries_journal_id ON entries (journal_id);
CREATE INDEX IF NOT EXISTS idx_entries_account_id ON entries (account_id);
CREATE INDEX IF NOT EXISTS idx_entries_created_at ON entries (created_at DESC);
CREATE INDEX IF NOT EXISTS idx_entries_amount ON entries (amount_cents);
CREATE INDEX IF NOT EXISTS idx_journals_ref ON journals (ref_type, ref_id);
CREATE INDEX IF NOT EXISTS idx_journals_created_at ON journals (created_at DESC);
CREATE INDEX IF NOT EXISTS idx_journals_idempotency ON journals (idempotency_key);
CREATE INDEX IF NOT EXISTS idx_journals_is_reversed ON journals (is_reversed);
CREATE INDEX IF NOT EXISTS idx_journals_metadata ON journals USING GIN (metadata);
CREATE INDEX IF NOT EXISTS idx_accounts_owner ON accounts (owner_id);
CREATE INDEX IF NOT EXISTS idx_accounts_type ON accounts (type);
CREATE INDEX IF NOT EXISTS idx_accounts_active ON accounts (is_active);
CREATE INDEX IF NOT EXISTS idx_accounts_balance ON accounts (balance_cents);
CREATE INDEX IF NOT EXISTS idx_snapshots_account ON ledger_snapshots (account_id);
CREATE INDEX IF NOT EXISTS idx_snapshots_date ON ledger_snapshots (snapshot_date DESC);
CREATE INDEX IF NOT EXISTS idx_pending_status ON pending_transactions (status);
CREATE INDEX IF NOT EXISTS idx_pending_expires ON pending_transactions (expires_at);

-- Row level security is switched on, as on the platform; no policies are
-- created here (the tables' owner, and roles with BYPASSRLS, see every row).
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE journals ENABLE ROW LEVEL SECURITY;
ALTER TABLE entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE financial_audit_log ENABLE ROW LEVEL SECURITY;

-- The five system accounts (owner ids ...0000 to ...0004), USD, balance 0.
INSERT INTO accounts (owner_id, type, currency)
VALUES ('00000000-0000-0000-0000-000000000000', 'platform', 'USD'),
       ('00000000-0000-0000-0000-000000000001', 'treasury', 'USD'),
       ('00000000-0000-0000-0000-000000000002', 'fees', 'USD'),
       ('00000000-0000-0000-0000-000000000003', 'escrow', 'USD'),
       ('00000000-0000-0000-0000-000000000004', 'payouts', 'USD')
ON CONFLICT (owner_id, type, currency) DO NOTHING;

-- The balance rule, checked when the transaction commits (deferred): it
-- sees every entry of the journal, whatever order they were inserted in.
-- An entry's currency is its account's.
CREATE OR REPLACE FUNCTION ledger_check_journal() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
  j BIGINT;
  total NUMERIC;
  n BIGINT;
  currencies BIGINT;
BEGIN
  FOREACH j IN ARRAY ARRAY[CASE WHEN TG_OP <> 'DELETE' THEN NEW.journal_id END,
                           CASE WHEN TG_OP <> 'INSERT' THEN OLD.journal_id END] LOOP
    CONTINUE WHEN j IS NULL;
    SELECT coalesce(sum(e.amount_cents), 0), count(*), count(DISTINCT a.currency)
      INTO total, n, currencies
      FROM entries e JOIN accounts a ON a.id = e.account_id WHERE e.journal_id = j;
    IF n > 0 AND (total <> 0 OR n < 2 OR currencies > 1) THEN
      RAISE EXCEPTION 'journal % is unbalanced: % entries summing to % cents in % currencies',
        j, n, total, currencies USING ERRCODE = 'check_violation';
    END IF;
  END LOOP;
  RETURN NULL;
END $$;

-- Each entry moves its account: the balance becomes the entry's balance
-- after, and the change is logged.
CREATE OR REPLACE FUNCTION ledger_apply_entry() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  UPDATE accounts SET balance_cents = NEW.balance_after_cents, updated_at = now()
    WHERE id = NEW.account_id;
  INSERT INTO financial_audit_log (action, target_account_id, journal_id, amount_cents,
                                   before_state, after_state)
    VALUES ('balance_update', NEW.account_id, NEW.journal_id, NEW.amount_cents,
            jsonb_build_object('balance_cents', NEW.balance_before_cents),
            jsonb_build_object('balance_cents', NEW.balance_after_cents));
  RETURN NULL;
END $$;

-- CREATE CONSTRAINT TRIGGER has neither IF NOT EXISTS nor OR REPLACE.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_trigger
                 WHERE tgrelid = 'entries'::regclass AND tgname = 'entries_journal_balanced') THEN
    CREATE CONSTRAINT TRIGGER entries_journal_balanced
      AFTER INSERT OR UPDATE OR DELETE ON entries
      DEFERRABLE INITIALLY DEFERRED
      FOR EACH ROW EXECUTE FUNCTION ledger_check_journal();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_trigger
                 WHERE tgrelid = 'entries'::regclass AND tgname = 'entries_apply_balance') THEN
    CREATE TRIGGER entries_apply_balance AFTER INSERT ON entries
      FOR EACH ROW EXECUTE FUNCTION ledger_apply_entry();
  END IF;
END $$;

-- One entry of a journal on an account that is locked: its balance before
-- and after follow from the account's balance now.
CREATE OR REPLACE FUNCTION ledger_add_entry(p_journal BIGINT, p_account BIGINT, p_amount BIGINT,
                                            p_description TEXT DEFAULT NULL)
RETURNS BIGINT
LANGUAGE plpgsql
AS $$
DECLARE
  before_cents BIGINT;
  entry BIGINT;
BEGIN
  SELECT balance_cents INTO before_cents FROM accounts WHERE id = p_account;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'account % does not exist', p_account USING ERRCODE = 'foreign_key_violation';
  END IF;
  IF before_cents - p_amount < 0 THEN
    RAISE EXCEPTION 'account % would be overdrawn: balance %, debit %', p_account, before_cents, p_amount
      USING ERRCODE = 'check_violation';
  END IF;
  INSERT INTO entries (journal_id, account_id, amount_cents, balance_before_cents, balance_after_cents,
                       entry_type, description)
    VALUES (p_journal, p_account, p_amount, before_cents, before_cents - p_amount,
            CASE WHEN p_amount > 0 THEN 'debit' ELSE 'credit' END, p_description)
    RETURNING id INTO entry;
  RETURN entry;
END $$;

-- Move p_amount_cents from one account to another; returns the journal id.
-- A known idempotency key returns its journal without posting again. Both
-- accounts are locked in id order, so concurrent transfers queue instead of
-- deadlocking; the source may not be overdrawn.
CREATE OR REPLACE FUNCTION transfer_tokens(
  p_from_account BIGINT, p_to_account BIGINT, p_amount_cents BIGINT, p_transaction_type transaction_type,
  p_ref_id UUID, p_description TEXT DEFAULT NULL, p_idempotency_key TEXT DEFAULT NULL
) RETURNS BIGINT
LANGUAGE plpgsql
AS $$
DECLARE
  journal BIGINT;
BEGIN
  IF p_amount_cents IS NULL OR p_amount_cents <= 0 THEN
    RAISE EXCEPTION 'a transfer moves a positive amount (got %)', p_amount_cents
      USING ERRCODE = 'check_violation';
  END IF;
  IF p_from_account = p_to_account THEN
    RAISE EXCEPTION 'a transfer needs two accounts (got % twice)', p_from_account
      USING ERRCODE = 'check_violation';
  END IF;
  IF p_idempotency_key IS NOT NULL THEN
    SELECT id INTO journal FROM journals WHERE idempotency_key = p_idempotency_key;
    IF FOUND THEN
      RETURN journal;
    END IF;
  END IF;
  PERFORM 1 FROM accounts WHERE id IN (p_from_account, p_to_account) ORDER BY id FOR UPDATE;
  INSERT INTO journals (ref_type, ref_id, description, idempotency_key)
    VALUES (p_transaction_type, p_ref_id, p_description, p_idempotency_key)
    RETURNING id INTO journal;
  PERFORM ledger_add_entry(journal, p_from_account, p_amount_cents, p_description);
  PERFORM ledger_add_entry(journal, p_to_account, -p_amount_cents, p_description);
  RETURN journal;
END $$;

-- Refund a journal: a new journal whose entries negate the original's, and
-- the original marked reversed (reversed_by, is_reversed). Returns the new
-- journal's id; a journal already reversed is refused.
CREATE OR REPLACE FUNCTION reverse_journal(p_journal BIGINT, p_idempotency_key TEXT DEFAULT NULL)
RETURNS BIGINT
LANGUAGE plpgsql
AS $$
DECLARE
  original RECORD;
  line RECORD;
  journal BIGINT;
BEGIN
  IF p_idempotency_key IS NOT NULL THEN
    SELECT id INTO journal FROM journals WHERE idempotency_key = p_idempotency_key;
    IF FOUND THEN
      RETURN journal;
    END IF;
  END IF;
  SELECT * INTO original FROM journals WHERE id = p_journal FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'journal % does not exist', p_journal USING ERRCODE = 'foreign_key_violation';
  END IF;
  IF original.is_reversed OR original.reversed_by IS NOT NULL THEN
    RAISE EXCEPTION 'journal % is already reversed', p_journal USING ERRCODE = 'check_violation';
  END IF;
  PERFORM 1 FROM accounts WHERE id IN (SELECT account_id FROM entries WHERE journal_id = p_journal)
    ORDER BY id FOR UPDATE;
  INSERT INTO journals (ref_type, ref_id, description, idempotency_key)
    VALUES ('refund', original.ref_id, 'refund of journal ' || p_journal, p_idempotency_key)
    RETURNING id INTO journal;
  FOR line IN SELECT account_id, amount_cents FROM entries WHERE journal_id = p_journal
              ORDER BY amount_cents < 0, id LOOP
    PERFORM ledger_add_entry(journal, line.account_id, -line.amount_cents, 'refund');
  END LOOP;
  UPDATE journals SET reversed_by = journal, is_reversed = true WHERE id = p_journal;
  RETURN journal;
END $$;

COMMIT;

-- Down Migration
-- BEGIN;
-- DROP FUNCTION IF EXISTS reverse_journal(BIGINT, TEXT);
-- DROP FUNCTION IF EXISTS transfer_tokens(BIGINT, BIGINT, BIGINT, transaction_type, UUID, TEXT, TEXT);
-- DROP FUNCTION IF EXISTS ledger_add_entry(BIGINT, BIGINT, BIGINT, TEXT);
-- DROP TABLE IF EXISTS pending_transactions, ledger_snapshots, financial_audit_log, entries,
--   journals, accounts;
-- DROP FUNCTION IF EXISTS ledger_apply_entry();
-- DROP FUNCTION IF EXISTS ledger_check_journal();
-- DROP TYPE IF EXISTS transaction_type;
-- DROP TYPE IF EXISTS account_type;
-- COMMIT;
