"""Where a run's data comes from.

- ``dump``: a pg_dump snapshot (``--snapshot FILE``), recognised and
  fingerprinted; ``verifier.scratch.restore`` restores it.
- ``live``: a live database (``--db URL``), read in one snapshot.

The generated source (``--demo``) is ``verifier.demo``.
"""
