"""Financial migration verifier: proves that money survived a migration.

The package is laid out by stage, in the order data flows through a run:

    source/ -> scratch/ -> migrate/ -> cents/, ledger/ -> findings.py -> judge/ -> report/ -> cli.py
    (-> main.py, the console scripts)

    source/    where a run's data comes from: a pg_dump snapshot, a live database (--db URL)
    scratch/   where a rehearsal may write: embedded, URL or container servers; a snapshot restored
    migrate/   the migration plan, the traced runner, the team's rules, the one apply loop
    demo/      the generated source (--demo): the demo platform and ledger, built with migrate/
    cents/     every decimal/cents pair of every table checked in one pass per table
    ledger/    the double-entry ledger's invariants, in one snapshot, incremental with a state file
    judge/     Great Expectations suites, on the results and on live tables (on request)
    report/    what a run writes: summary.json, report.html, junit.xml, the reports index
    jobs/      one module per command: each composes the stages above (the library's surface)
    cli.py     the thin command-line shell (with main.py, the only modules importing click)
    main.py    the console scripts' entry points: Ctrl-C and SIGTERM handled before any import

Shared by the stages, from the bottom up: ``errors.py`` (operating errors,
exit 2), ``signals.py`` (Ctrl-C and SIGTERM), ``paths.py`` (the project's
own folders), ``findings.py`` (findings and the one rule registry),
``config/`` (verifier.toml, ``[tool.verifier]``), ``run.py`` (the record of
a run), ``terminal.py`` (what a run shows while it works, and its summary:
rich's live lines on a terminal, one line per stage elsewhere), ``files.py``
(run-folder files, whole or not at all) and ``pg/`` (connections,
snapshots, client tools). A module imports only from its own
package, from the shared modules below it and from the packages above it
in this list; no two modules import each other, even through others
(``tests/test_structure.py``).
"""

from __future__ import annotations

__version__ = "0.1.0"
