"""Ctrl-C and SIGTERM end a run the same way: unwinding, with cleanup.

``handle_termination()`` turns SIGTERM into ``KeyboardInterrupt`` so that
every ``with`` block (scratch servers, databases, containers, temporary
directories) runs its exit code (the console scripts do it first of all:
``verifier.main``). ``shielded()`` holds both signals back while such
cleanup runs, so a second Ctrl-C cannot leave half a cleanup. ``ended()``
records that a run's outputs are written, so that a later interrupt
leaves its verdict as it is; ``hold()`` and ``release()`` keep signals back
from the moment a run's outcome is decided until the console has said it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# The exit code and verdict line of the run whose outputs are written, once they are.
_outcome: list[tuple[int, str]] = []


_held: list[bool] = []  # whether ``hold`` holds the signals back
_handled: list[bool] = []  # whether ``handle_termination`` made this process's signals the verifier's


def ended(exit_code: int, verdict: str) -> None:
    """Record that a run's outputs are written with ``exit_code`` and ``verdict`` (its line: "PASS:
    report PATH"): an interrupt after this point ends the process with that code, and says that
    verdict (``verifier.main``), not as an interrupted run. The signals are held back (``hold``)
    until the console has said the verdict (``release``): delivered between, one left stdout empty,
    and the findings unlisted (found by a break-it run)."""
    _outcome[:] = [(exit_code, verdict)]
    hold()


def hold() -> None:
    """Hold SIGINT and SIGTERM back from here until ``release`` (they are then delivered), also past
    the end of a ``shielded`` block: from the moment a run's outcome is decided (its state file
    saved, its outputs written) until the console has said it. A signal between a ``--state``
    file's save and the run's outputs made the run NOT VERIFIED where the state had recorded it
    (found by a break-it run). Only where ``handle_termination`` made the signals the verifier's
    (the console scripts): a program that calls the library keeps its own, and a mask left blocked
    would pass on to every process it starts."""
    if _handled:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        _held[:] = [True]


def release() -> None:
    """End ``hold``: a signal held back is delivered now (as ``KeyboardInterrupt``)."""
    if _held:
        _held.clear()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def outcome() -> tuple[int, str] | None:
    """The exit code and verdict ``ended`` recorded, or None while no run has written its outputs."""
    return _outcome[0] if _outcome else None


# Raised in a callback that the import system runs (a module lock's weakref callback, in
# "<frozen importlib._bootstrap>"), an exception is printed as "Exception ignored in ..." with a
# traceback and dropped: the run went on to its verdict as if no signal had come (found by the
# signal test, in one CI run). There the signal is sent again this much later.
DEFERRED_S = 0.01


def interrupt(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT and SIGTERM: ``KeyboardInterrupt``, or, inside the import system's own
    code (``frame``), the same signal again ``DEFERRED_S`` later."""
    if frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        threading.Timer(DEFERRED_S, _again, (signum,)).start()
        return
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def within(exc: BaseException) -> bool:
    """Whether ``exc`` is ``KeyboardInterrupt`` or was raised because of one (its ``__cause__`` or
    ``__context__``, at any depth). Python wraps an exception raised while a class is created in
    ``RuntimeError("Error calling __set_name__ ...")`` (CPython 3.11, ``type_new_set_names``): a
    signal that lands while a module defines a dataclass arrives so wrapped (found by the signal
    test, in one CI run)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _again(signum: int) -> None:
    """Send ``signum`` to this process from a thread that does not take it (a block ``shielded``
    holds it back until the block ends, as the first one)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    os.kill(os.getpid(), signum)


def handle_termination() -> None:
    """Make SIGTERM behave like Ctrl-C, and both raise where they can be caught (``interrupt``;
    main thread only)."""
    for signum in _SIGNALS:
        signal.signal(signum, interrupt)
    _handled[:] = [True]


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Defer SIGINT and SIGTERM until the block ends (they are then delivered; not while ``hold``
    holds them)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        if not _held:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
