"""Fault injection for the tests' subprocesses; on ``PYTHONPATH`` only when a test puts it there.

With ``VERIFIER_FAULT_STAGE=<stage>`` and ``VERIFIER_FAULT_SIGNAL=SIGINT|SIGTERM``
the verifier sends itself that signal as the named stage of its run begins
(with ``VERIFIER_FAULT_WHEN=ends``, as it ends, and goes on), so that Ctrl-C
and SIGTERM can be tested at every stage without racing the clock. The
signal goes through the verifier's own handlers; nothing else changes.
With ``VERIFIER_FAULT_SIGNAL=TERMINATE`` it instead ends, as an
administrator would (``pg_terminate_backend``, connecting to
``VERIFIER_FAULT_ADMIN_DSN``), every session of this verifier process on
that server (by its connections' backend pids: not another run's) as the
stage begins, and goes on. Python imports this module at start-up
(``site``).
"""

from __future__ import annotations

import os

_STAGE = os.environ.get("VERIFIER_FAULT_STAGE")

if _STAGE:
    import contextlib
    import signal
    import time
    from collections.abc import Iterator
    from typing import Any

    from verifier import run as _run

    _original = _run.Run.stage

    def _own_backends() -> list[int]:
        """The server pids of this process's open connections (every thread's): not another run's
        sessions on the same server, over TCP or a Unix socket (whose client_port is -1)."""
        import gc

        import psycopg

        return sorted({c.info.backend_pid for c in gc.get_objects()
                       if isinstance(c, psycopg.Connection) and not c.closed})

    @contextlib.contextmanager
    def _stage_with_fault(self: _run.Run, name: str) -> Iterator[dict[str, Any]]:
        with _original(self, name) as detail:
            if name == _STAGE and os.environ["VERIFIER_FAULT_SIGNAL"] == "TERMINATE":
                import psycopg

                from verifier.pg.conninfo import APPLICATION_NAME

                pids = _own_backends()  # (not another run's sessions on the same server)
                with psycopg.connect(os.environ["VERIFIER_FAULT_ADMIN_DSN"], autocommit=True) as admin:
                    ended = admin.execute(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = %s AND pid <> pg_backend_pid() AND pid = ANY(%s)",
                        (APPLICATION_NAME, pids)).fetchone()
                    assert ended and ended[0], f"no session of this process to end ({pids})"
            elif name == _STAGE and os.environ.get("VERIFIER_FAULT_WHEN") != "ends":
                os.kill(os.getpid(), signal.Signals[os.environ["VERIFIER_FAULT_SIGNAL"]])
                time.sleep(60)  # the handler raises KeyboardInterrupt at once; this never ends
                raise AssertionError("the signal was not delivered")
            yield detail
        if name == _STAGE and os.environ.get("VERIFIER_FAULT_WHEN") == "ends":
            # (as the stage ends: delivered at once, or when the verifier no longer holds it back)
            os.kill(os.getpid(), signal.Signals[os.environ["VERIFIER_FAULT_SIGNAL"]])

    _run.Run.stage = _stage_with_fault  # type: ignore[method-assign]
