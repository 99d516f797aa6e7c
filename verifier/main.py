"""The console scripts (``verify-cents``, ``verify-ledger``, ``verifier``): signals first.

Ctrl-C and SIGTERM are held back from this module's first statement (they
are delivered, not lost) until each entry point has made SIGTERM behave as
Ctrl-C, before anything else is imported (click and the library take a few
hundred milliseconds); it then runs its command from ``verifier.cli``. An
interrupt that reaches this level, from that first statement on, ends the
process with exit 2 and one line on stderr, never click's "Aborted!" (exit 1,
the code for findings) or a traceback, also where the code it landed in
wrapped it in another exception (``verifier.signals.within``):

- before a run folder exists: nothing was verified, and the line says so;
- inside a run: the run has already recorded itself as NOT VERIFIED
  (``verifier.jobs.lifecycle.recorded``) and said so;
- after the run wrote its outputs: the verdict stands, the line says which,
  and the process exits with the run's own code (``verifier.signals.ended``;
  from a ``--state`` file's save until the console has said the verdict,
  signals are held back: ``verifier.signals.hold``).

(Before this module runs, the interpreter is starting: a signal then ends it
as the signal's default does, and no run folder exists.)
"""

from __future__ import annotations

import signal

_SIGNALS = {signal.SIGINT, signal.SIGTERM}
signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # (until ``_main`` can take them)

import sys  # noqa: E402 (after the signals are held)
from typing import NoReturn  # noqa: E402


def _ignore_signals() -> None:
    """From here on the outcome is decided: a late Ctrl-C or SIGTERM changes nothing."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _run(command_name: str, prog: str) -> int:
    """Run the command; its exit code. KeyboardInterrupt propagates."""
    import click

    from verifier import cli

    command = getattr(cli, command_name)
    try:
        result = command.main(prog_name=prog, standalone_mode=False)
    except click.exceptions.Abort:  # click's own wrapping of KeyboardInterrupt
        raise KeyboardInterrupt from None
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


def _main(command_name: str, prog: str) -> NoReturn:
    from verifier.signals import handle_termination, outcome, within  # (signal, os and threading only)

    try:
        handle_termination()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)  # (one held back is delivered here)
        code = _run(command_name, prog)
    except BaseException as exc:  # (KeyboardInterrupt, or one wrapped: in an import, a class made)
        if not within(exc):
            raise
        _ignore_signals()
        ended = outcome()
        if ended is None:
            print(f"{prog}: Interrupted (Ctrl-C or SIGTERM): nothing was verified.", file=sys.stderr)
        else:
            print(f"{prog}: Interrupted (Ctrl-C or SIGTERM) after the run's report was written; it stands: "
                  f"{ended[1]}.", file=sys.stderr)
        code = 2 if ended is None else ended[0]
    _ignore_signals()
    sys.exit(code)


def verify_cents() -> NoReturn:
    """``verify-cents``."""
    _main("verify_cents", "verify-cents")


def verify_ledger() -> NoReturn:
    """``verify-ledger``."""
    _main("verify_ledger", "verify-ledger")


def verifier() -> NoReturn:
    """``verifier`` (the utilities: migrations, snapshots, the reports index)."""
    _main("verifier", "verifier")
