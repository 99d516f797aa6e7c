"""The jobs: what each command does, one public function each (alembic's ``command.py``).

Each composes the stages, records them in a run and returns the ended
``Run`` (or raises ``VerifierError`` after writing the run's report):

- ``rehearsal``: ``verify-cents --snapshot FILE``;
- ``in_place``: ``verify-cents --db URL``;
- ``ledger_audit``: ``verify-ledger --db URL``;
- ``demo``: ``verify-cents --demo``, ``verify-ledger --demo``,
  ``verifier make-snapshot``;
- ``migrations``: ``verifier migrations status|up|down|create|validate``;
- ``baseline``: ``verifier accept`` (accepted findings) and, at every
  run's end, the baseline applied and the difference from the previous run;
- ``lifecycle``: how every job begins and ends (run folder,
  configuration, verdict, outputs).
"""
