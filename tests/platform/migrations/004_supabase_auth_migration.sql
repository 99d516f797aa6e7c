-- Migration: 004_supabase_auth_migration
-- Description: Supabase authentication (applied: schema_migrations records 4, which its twin shares).
-- Dependencies: 001
BEGIN;
ALTER TABLE users ADD COLUMN IF NOT EXISTS supabase_id uuid;
COMMIT;
