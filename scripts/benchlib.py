"""What the benchmark scripts share: their options, and timing a call or a command (with its peak memory)."""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections.abc import Callable


def arguments(description: str, size: str, default: int,
              extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The options every benchmark takes: its size (``size``, e.g. ``--rows``), --rounds and --server;
    ``extra`` adds a benchmark's own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(size, type=int, default=default)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server", help="URL of a server where we may CREATE DATABASE")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_measured(argv: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, int, str]:
    """Run ``argv``; return its wall seconds, peak resident memory (KiB) and stderr.

    An exit code outside ``ok`` ends the benchmark (1, findings, is the point of some runs).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in ok:
        raise SystemExit(f"{os.path.basename(argv[0])} exited {code}:\n{err}")
    return wall, usage.ru_maxrss, err
