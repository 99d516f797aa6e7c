-- Migration: 004_create_call_requests
-- Description: Call requests (applied: schema_migrations records 4, which its twin shares).
-- Dependencies: 001
BEGIN;
CREATE TABLE IF NOT EXISTS call_requests (id uuid PRIMARY KEY, fan_id uuid, creator_id uuid);
COMMIT;
