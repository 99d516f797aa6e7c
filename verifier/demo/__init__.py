"""The demo platform: a generated source, built with the project's own migrations.

- ``generate``: the creator platform's money tables just before the cents
  migration (``demo_data.sql``, set-based), and its pg_dump snapshot.
- ``plant``: 300 and 301 applied, then one defect of every cents rule
  planted at known rows.
- ``ledger``: the platform migrated through 400 with a clean ledger
  (``ledger_data.sql``), and one defect of every ledger rule planted.
- ``load``: writers posting through the ledger while it is audited.
- ``manifest``: planted.json, what was planted where.

Written only to databases the caller created (scratch or test databases).
"""
