"""How every stage talks to PostgreSQL.

- ``conninfo``: connection strings (parse, redact, describe) and ``connect``.
- ``snapshot``: session settings (timeouts, read only), one ``REPEATABLE
  READ, READ ONLY`` snapshot, exported to and imported by parallel workers.
- ``tools``: the client tools (pg_dump, pg_restore, psql): find and run them.
"""
