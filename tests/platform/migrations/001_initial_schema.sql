-- Migration: 001_initial_schema
-- Description: Base tables (already applied in the snapshot: schema_migrations records 1).
-- Dependencies: none
BEGIN;
CREATE TABLE IF NOT EXISTS users (id uuid PRIMARY KEY, email text NOT NULL UNIQUE);
COMMIT;
