"""Financial migration verifier: proves that money survived a migration.

The package is laid out by stage of the pipeline:

    source/   where the data comes from (a dump file, a generated demo)
    scratch/  where a rehearsal runs (embedded server, a URL, a container)
    rehearsal the flow that ties the stages together
    report/   what a run writes (summary.json, report.html)
    cli       the thin command-line shell (the only module importing click)
"""

from __future__ import annotations

__version__ = "0.1.0"
