"""The cents checks: every decimal/cents pair of every table, in SQL, one pass per table.

- ``catalog``: what a database holds (columns, keys, money tables), read
  from its catalog.
- ``originals``: a rehearsal's record of every money value before the
  migrations run.
- ``pairs``: the money inventory (every column's verdict) and which (source,
  minor units) pairs each table has, from the catalog and the configuration.
- ``currency``: each row's minor unit from ISO 4217, where a table says which
  currency a row is in.
- ``sql``: the two statements per table (the one-pass summary, the
  classification of offending rows) and the differences' histogram.
- ``engine``: runs them in the run's snapshot, streams the offenders,
  turns the results into findings (the "pairs" and "verify" stages).
"""
