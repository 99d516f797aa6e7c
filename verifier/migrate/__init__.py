"""Migrations: the plan, and its traced run (alembic's ``script/`` and ``runtime/``).

- ``sqltext``: statements split with PostgreSQL's own parser and
  classified; a file's up SQL and its ``-- Down Migration`` block.
- ``plan``: which files exist, in which order, which are pending, what
  they depend on (pure; ``plan_of`` builds one from names and texts).
- ``lint``: ``verifier migrations validate``'s static checks, and the
  new-file template.
- ``runner``: applies a file to one database the way psql would, tracing
  each statement's duration and locks.
- ``rule_checks``: the team's rules on copies of a scratch database
  (``not_idempotent``, ``down_mismatch``, ``down_missing``).
- ``series``: the one loop that applies files in order, and the
  rehearsal's "migrate" stage.
"""
