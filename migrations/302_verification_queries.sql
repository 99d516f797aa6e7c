-- Migration: 302_verification_queries
-- Description: A gate before the decimals go: fails (and so stops the
--   series) when any cents value differs from round(decimal * 100) (times
--   its currency's minor units, for live_shopping_orders), when
--   NULL-ness differs, or when the backfill did not finish. Zero tolerance:
--   one cent is a failure, and the message names the table and the count.
--   Reads only.
-- Dependencies: 301

-- Up Migration
DO $$
DECLARE
  pair record;
  bad BIGINT;
  factor TEXT;
  failures TEXT := '';
BEGIN
  IF EXISTS (SELECT 1 FROM cents_backfill_progress WHERE NOT done) THEN
    RAISE EXCEPTION 'cents backfill has not finished for: %',
      (SELECT string_agg(table_name, ', ') FROM cents_backfill_progress WHERE NOT done);
  END IF;
  -- Every (decimal, cents) pair of the public schema, from the catalog.
  FOR pair IN
    SELECT c.relname AS table_name, a.attname AS source, b.attname AS target
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid AND c.relkind = 'r'
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
    JOIN pg_attribute b ON b.attrelid = a.attrelid AND b.attname = a.attname || '_cents'
                       AND b.atttypid = 'bigint'::regtype AND NOT b.attisdropped
    WHERE a.atttypid IN ('numeric'::regtype, 'double precision'::regtype, 'real'::regtype)
      AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY 1, 2
  LOOP
    -- A table whose rows carry their currency converts each into its own minor units.
    factor := CASE WHEN EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = format('%I', pair.table_name)::regclass
                                AND attname = 'currency' AND NOT attisdropped)
                   THEN 'CASE upper(currency) WHEN ''JPY'' THEN 1 WHEN ''KWD'' THEN 1000 ELSE 100 END'
                   ELSE '100' END;
    EXECUTE format('SELECT count(*) FROM %I WHERE %I IS DISTINCT FROM round(%I::numeric * (%s))::bigint',
                   pair.table_name, pair.target, pair.source, factor)
      INTO bad;
    IF bad > 0 THEN
      failures := failures || format(' %s.%s: %s rows;', pair.table_name, pair.target, bad);
    END IF;
  END LOOP;
  IF failures <> '' THEN
    RAISE EXCEPTION 'cents differ from their decimal originals:%', failures
      USING HINT = 'Run the verifier for the offending rows and their classes.';
  END IF;
END $$;

-- Down Migration
-- -- Nothing to undo: this migration only reads.
