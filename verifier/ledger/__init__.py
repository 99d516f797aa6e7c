"""The ledger audit: the double-entry ledger's invariants, checked in one snapshot.

- ``layout``: the configured tables and columns, held against the catalog
  (the layout itself is ``verifier.config.ledger``).
- ``convention``: the sign convention, configured or detected.
- ``invariants``: the SQL that proves each rule, as passes of rules.
- ``history``: digests of proven history, for ``history_tampered``.
- ``state``: the state file of scheduled audits.
- ``proven``: what scheduled audits have proven, and when history settles.
- ``gaps``: rows found in the gaps among proven ids, read as new or
  history_tampered.
- ``audit``: the audit's stages: the passes in parallel on one exported
  snapshot, the offenders, the findings, the new state.
- ``probe``: the rehearsal's enforcement probe: test journals posted in the
  scratch database and rolled back; what the database accepts and rejects.
"""
