"""planted.json: what a demo planted, and where, for the tests and the reader of a report.

One file format for both demos: ``{"planted": [ {field: value, ...}, ... ]}``,
one object per planted defect (the fields of ``verifier.demo.plant.Planted``
or ``verifier.demo.ledger.LedgerPlanted``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from verifier.files import write_atomic

T = TypeVar("T")


def write_manifest(planted: Sequence[Any], path: Path) -> None:
    """Write the planted defects (dataclass instances) to ``path``, as every file of a run folder
    is written (0600, atomically)."""
    write_atomic(path, json.dumps({"planted": [asdict(p) for p in planted]}, indent=2) + "\n")


def read_manifest(path: Path, kind: type[T]) -> list[T]:
    """The planted defects of the manifest at ``path``, as ``kind`` instances."""
    return [kind(**p) for p in json.loads(path.read_text())["planted"]]
