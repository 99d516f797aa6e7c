"""Ctrl-C and SIGTERM end a run the same way: unwinding, with cleanup.

``handle_termination()`` turns SIGTERM into ``KeyboardInterrupt`` so that
every ``with`` block (scratch servers, databases, containers, temporary
directories) runs its exit code. ``shielded()`` holds both signals back
while such cleanup runs, so a second Ctrl-C cannot leave half a cleanup.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def handle_termination() -> None:
    """Make SIGTERM behave like Ctrl-C (main thread only)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Defer SIGINT and SIGTERM until the block ends (they are then delivered)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
