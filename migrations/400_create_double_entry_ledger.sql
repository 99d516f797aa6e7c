-- Migration: 400_create_double_entry_ledger
-- Description: The double-entry ledger. Sign convention (the platform's): a
--   positive amount_cents is a debit, a negative one a credit, and every
--   entry carries its account's balance before and after it, with
--   balance_after_cents = balance_before_cents - amount_cents.
--   The balance rule really holds: a journal's entries must sum to zero, be
--   at least two and share one currency when its transaction COMMITS (a
--   deferred constraint trigger, which sees the whole journal, not a row
--   trigger that would see half of it). Posting goes through ledger_post(),
--   which locks the accounts in id order so that concurrent postings cannot
--   deadlock, and refuses to overdraw accounts that must not go negative.
-- Dependencies: 303

BEGIN;

-- Up Migration
CREATE TABLE IF NOT EXISTS accounts (
  id BIGSERIAL PRIMARY KEY,
  account_type TEXT NOT NULL CHECK (account_type IN
    ('user', 'creator', 'escrow', 'platform_revenue', 'platform_cash', 'processor_fees',
     'payout_clearing')),
  owner_user_id BIGINT REFERENCES users(id),
  currency CHAR(3) NOT NULL DEFAULT 'USD',
  balance_cents BIGINT NOT NULL DEFAULT 0,
  allow_negative BOOLEAN NOT NULL DEFAULT false,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  CONSTRAINT accounts_one_per_owner UNIQUE NULLS NOT DISTINCT (account_type, owner_user_id, currency),
  CONSTRAINT accounts_no_overdraft CHECK (allow_negative OR balance_cents >= 0)
);

CREATE TABLE IF NOT EXISTS journals (
  id BIGSERIAL PRIMARY KEY,
  journal_type TEXT NOT NULL,
  description TEXT,
  idempotency_key TEXT UNIQUE,
  reverses_journal_id BIGINT REFERENCES journals(id),
  currency CHAR(3) NOT NULL DEFAULT 'USD',
  posted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS entries (
  id BIGSERIAL PRIMARY KEY,
  journal_id BIGINT NOT NULL REFERENCES journals(id),
  account_id BIGINT NOT NULL REFERENCES accounts(id),
  entry_type TEXT NOT NULL CHECK (entry_type IN ('debit', 'credit')),
  amount_cents BIGINT NOT NULL CHECK (amount_cents <> 0),
  currency CHAR(3) NOT NULL DEFAULT 'USD',
  balance_before_cents BIGINT NOT NULL,
  balance_after_cents BIGINT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  CONSTRAINT entries_sign_matches_type CHECK ((entry_type = 'debit') = (amount_cents > 0)),
  CONSTRAINT entries_balance_arithmetic
    CHECK (balance_after_cents = balance_before_cents - amount_cents)
);
CREATE INDEX IF NOT EXISTS entries_journal_id ON entries (journal_id);
CREATE INDEX IF NOT EXISTS entries_account_id_id ON entries (account_id, id);

CREATE TABLE IF NOT EXISTS ledger_snapshots (
  id BIGSERIAL PRIMARY KEY,
  account_id BIGINT NOT NULL REFERENCES accounts(id),
  last_entry_id BIGINT NOT NULL REFERENCES entries(id),
  balance_cents BIGINT NOT NULL,
  taken_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS pending_transactions (
  id BIGSERIAL PRIMARY KEY,
  idempotency_key TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  amount_cents BIGINT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'completed', 'failed', 'expired')),
  journal_id BIGINT REFERENCES journals(id),
  expires_at TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS financial_audit_log (
  id BIGSERIAL PRIMARY KEY,
  occurred_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  journal_id BIGINT REFERENCES journals(id),
  details JSONB
);

-- The balance rule, checked when the transaction commits (deferred): it sees
-- every entry of the journal, whatever order they were inserted in.
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
    SELECT coalesce(sum(amount_cents), 0), count(*), count(DISTINCT currency)
      INTO total, n, currencies FROM entries WHERE journal_id = j;
    IF n > 0 AND (total <> 0 OR n < 2 OR currencies > 1) THEN
      RAISE EXCEPTION 'journal % is unbalanced: % entries summing to % cents in % currencies',
        j, n, total, currencies USING ERRCODE = 'check_violation';
    END IF;
  END LOOP;
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
END $$;

-- Post one journal: p_lines is a JSON array of {"account_id", "amount_cents"}
-- (positive = debit). Returns the journal id; with an idempotency key that
-- was already used, returns that journal without posting again.
CREATE OR REPLACE FUNCTION ledger_post(
  p_journal_type TEXT, p_lines JSONB, p_idempotency_key TEXT DEFAULT NULL,
  p_description TEXT DEFAULT NULL, p_reverses_journal_id BIGINT DEFAULT NULL
) RETURNS BIGINT
LANGUAGE plpgsql
AS $$
DECLARE
  journal BIGINT;
  line RECORD;
  acct RECORD;
  journal_currency CHAR(3);
BEGIN
  IF p_idempotency_key IS NOT NULL THEN
    SELECT id INTO journal FROM journals WHERE idempotency_key = p_idempotency_key;
    IF FOUND THEN
      RETURN journal;
    END IF;
  END IF;
  -- Lock every account of the journal in one fixed order (by id): two
  -- postings over the same accounts then queue instead of deadlocking.
  PERFORM 1 FROM accounts
    WHERE id IN (SELECT (l ->> 'account_id')::BIGINT FROM jsonb_array_elements(p_lines) l)
    ORDER BY id FOR UPDATE;
  SELECT min(currency) INTO journal_currency FROM accounts
    WHERE id IN (SELECT (l ->> 'account_id')::BIGINT FROM jsonb_array_elements(p_lines) l);
  INSERT INTO journals (journal_type, description, idempotency_key, reverses_journal_id, currency)
    VALUES (p_journal_type, p_description, p_idempotency_key, p_reverses_journal_id,
            coalesce(journal_currency, 'USD'))
    RETURNING id INTO journal;
  FOR line IN
    SELECT (l ->> 'account_id')::BIGINT AS account_id, (l ->> 'amount_cents')::BIGINT AS amount_cents
    FROM jsonb_array_elements(p_lines) l ORDER BY 1
  LOOP
    UPDATE accounts SET balance_cents = balance_cents - line.amount_cents
      WHERE id = line.account_id
      RETURNING balance_cents + line.amount_cents AS before_cents, balance_cents AS after_cents,
                currency
      INTO acct;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'account % does not exist', line.account_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    INSERT INTO entries (journal_id, account_id, entry_type, amount_cents, currency,
                         balance_before_cents, balance_after_cents)
      VALUES (journal, line.account_id,
              CASE WHEN line.amount_cents > 0 THEN 'debit' ELSE 'credit' END,
              line.amount_cents, acct.currency, acct.before_cents, acct.after_cents);
  END LOOP;
  RETURN journal;
END $$;

COMMIT;

-- Down Migration
-- BEGIN;
-- DROP FUNCTION IF EXISTS ledger_post(TEXT, JSONB, TEXT, TEXT, BIGINT);
-- DROP TABLE IF EXISTS financial_audit_log, pending_transactions, ledger_snapshots, entries,
--   journals, accounts;
-- DROP FUNCTION IF EXISTS ledger_check_journal();
-- COMMIT;
