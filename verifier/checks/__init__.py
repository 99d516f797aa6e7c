"""Checks that run inside PostgreSQL and return summaries, never whole tables."""
