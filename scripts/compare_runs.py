"""Compare the outputs of two run folders, apart from what differs from run to run by nature.

For a change meant to leave behaviour as it is (a refactoring): run the same
command (``verify-cents --demo``, ``verify-ledger --demo``) before and after
it, then

    python scripts/compare_runs.py BEFORE_RUN_DIR AFTER_RUN_DIR

compares summary.json (as data), junit.xml and offenders.csv (as text) and
planted.json, once run ids, times, durations, snapshot ids, WAL positions,
scratch database names, temporary paths, where the project's own folders
are, and the demo dump's own checksum and size are replaced by
placeholders. It prints each difference and exits
1 if there is any, 0 if the two runs are the same.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

# Values that differ between two runs of one command on one input by nature.
VOLATILE_KEYS = {
    "run_id", "started_at", "duration_s", "generate_s", "rows_per_s", "build_s", "restore_s", "held_s",
    "snapshot", "exported_snapshot", "wal_lsn", "database", "target", "snapshot_path", "path",
    "snapshot_sha256", "found_by", "time", "timestamp",
    "size_bytes",  # the demo dump's: a few bytes more or less from run to run of the same version
    "locks",  # a migration's locks, sampled from pg_locks while it runs: which samples land is timing
}
VOLATILE_TEXT = (
    (re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}"), "<run-id>"),
    (re.compile(r"verifier_scratch_\w+?_\d{14}_[0-9a-f]{8}"), "<scratch-db>"),
    # The project's own folders, wherever the checkout (or the installation) is.
    (re.compile(r"(?:/[\w.-]+)+/(migrations|expectations)\b"), r"<project>/\1"),
    (re.compile(r"/tmp/[\w./-]+"), "<tmp-path>"),
    (re.compile(r'(time|timestamp)="[^"]*"'), r'\1="<time>"'),
    (re.compile(r"\d+\.\d+ s\b"), "<seconds> s"),
)
FILES = ("summary.json", "junit.xml", "offenders.csv", "planted.json")


def _text(value: str) -> str:
    for pattern, placeholder in VOLATILE_TEXT:
        value = pattern.sub(placeholder, value)
    return value


def normalized(value: Any) -> Any:
    """``value`` (parsed JSON) with every volatile value replaced by a placeholder."""
    if isinstance(value, dict):
        return {k: "<volatile>" if k in VOLATILE_KEYS else normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, str):
        return _text(value)
    return value


def compare(before: Path, after: Path) -> list[str]:
    """The differences between two run folders, as unified diffs (empty: the same)."""
    problems = []
    for name in FILES:
        a, b = before / name, after / name
        if not a.exists() and not b.exists():
            continue
        if a.exists() != b.exists():
            problems.append(f"{name}: only in {'before' if a.exists() else 'after'}")
            continue
        if name.endswith(".json"):
            left = json.dumps(normalized(json.loads(a.read_text())), indent=1, sort_keys=True).splitlines()
            right = json.dumps(normalized(json.loads(b.read_text())), indent=1, sort_keys=True).splitlines()
        else:
            left, right = _text(a.read_text()).splitlines(), _text(b.read_text()).splitlines()
        diff = list(difflib.unified_diff(left, right, f"before/{name}", f"after/{name}", lineterm=""))
        if diff:
            problems.append("\n".join(diff))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    problems = compare(args.before, args.after)
    for problem in problems:
        print(problem)
    compared = [n for n in FILES if (args.before / n).exists() or (args.after / n).exists()]
    differing = [n for n in compared if any(p.startswith((f"{n}:", f"--- before/{n}")) for p in problems)]
    verdict = f"DIFFERENT in {', '.join(differing)}" if problems else "same"
    print(f"{verdict}: compared {', '.join(compared)} of {args.before} and {args.after}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
