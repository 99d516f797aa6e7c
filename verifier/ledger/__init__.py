"""The ledger audit: the double-entry ledger's invariants, checked in one snapshot.

``layout`` names the ledger's tables and columns, ``invariants`` holds the
SQL that proves each rule, ``audit`` runs it (one exported snapshot, a few
workers) and turns the results into findings.
"""
