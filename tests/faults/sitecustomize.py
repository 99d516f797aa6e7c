"""Fault injection for the tests' subprocesses; on ``PYTHONPATH`` only when a test puts it there.

With ``VERIFIER_FAULT_STAGE=<stage>`` and ``VERIFIER_FAULT_SIGNAL=SIGINT|SIGTERM``
the verifier sends itself that signal as the named stage of its run begins,
so that Ctrl-C and SIGTERM can be tested at every stage without racing the
clock. The signal goes through the verifier's own handlers; nothing else
changes. With ``VERIFIER_FAULT_SIGNAL=TERMINATE`` it instead ends, as an
administrator would (``pg_terminate_backend``, connecting to
``VERIFIER_FAULT_ADMIN_DSN``), every session of this verifier process on
that server (by its sockets' ports: not another run's) as the stage begins,
and goes on. Python imports this module at start-up
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

    def _own_ports() -> set[int]:
        """The local TCP ports of this process's sockets (Linux /proc): its sessions' client_port."""
        inodes = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/self/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
        ports = set()
        for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
            with contextlib.suppress(OSError), open(table) as fh:
                for line in list(fh)[1:]:
                    fields = line.split()
                    if fields[9] in inodes:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports

    @contextlib.contextmanager
    def _stage_with_fault(self: _run.Run, name: str) -> Iterator[dict[str, Any]]:
        with _original(self, name) as detail:
            if name == _STAGE and os.environ["VERIFIER_FAULT_SIGNAL"] == "TERMINATE":
                import psycopg

                from verifier.pg.conninfo import APPLICATION_NAME

                ports = _own_ports()  # (not another run's sessions on the same server)
                with psycopg.connect(os.environ["VERIFIER_FAULT_ADMIN_DSN"], autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE application_name = %s AND pid <> pg_backend_pid() "
                                  "AND client_port = ANY(%s)", (APPLICATION_NAME, sorted(ports)))
            elif name == _STAGE:
                os.kill(os.getpid(), signal.Signals[os.environ["VERIFIER_FAULT_SIGNAL"]])
                time.sleep(60)  # the handler raises KeyboardInterrupt at once; this never ends
                raise AssertionError("the signal was not delivered")
            yield detail

    _run.Run.stage = _stage_with_fault  # type: ignore[method-assign]
