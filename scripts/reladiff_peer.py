"""reladiff (the maintained fork of datafold's data-diff) as a peer of ``verify-cents``, for bench_cents.py.

Never installed into the project's environment: ``install`` puts it, with its
PostgreSQL driver, into a virtual environment of its own under the user's cache
(``~/.cache/verifier-bench/reladiff-<version>-venv``), and every diff runs its
command line there as a subprocess.

reladiff diffs two tables by key, column by column; it cannot compare a column
with an expression of another. So each database gets two views over the same
``payments`` table: ``reladiff_expected`` (id, each decimal times 100, or its
currency's minor unit with ``--currency``) and ``reladiff_actual`` (id, each
``*_cents`` column), both cast to ``numeric(24,4)``: one type on both sides,
since reladiff compares numbers at the smaller scale of the two, and wide
enough that no sub-cent is rounded away. A probe first diffs planted
differences (a cent too many, a cent too few, a hundredth of a cent) on a few
rows, through both algorithms: a reladiff that does not find all three is
skipped, never timed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

VERSION = "0.6.0"
PACKAGES = (f"reladiff=={VERSION}", "psycopg2-binary")  # its PostgreSQL driver (sqeleton imports psycopg2)
VENV = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "verifier-bench" / f"reladiff-{VERSION}-venv")
ALGORITHMS = ("hashdiff", "joindiff")
EXPECTED, ACTUAL = "reladiff_expected", "reladiff_actual"
# (Only the constant names and multipliers below go into this SQL, never input.)
VIEW_SQL = """
CREATE VIEW {name} AS SELECT id, {columns} FROM payments
"""
TYPE = "numeric(24,4)"
MINOR = "CASE currency WHEN 'JPY' THEN 1 WHEN 'KWD' THEN 1000 ELSE 100 END"
# The probe's plants, on ids 1..3: what reladiff must report as 3 updated rows.
PLANTS = {"actual": {"amount": "+ (id = 1)::int", "net": "- (id = 2)::int"},
          "expected": {"tax": "+ CASE WHEN id = 3 THEN 0.0001 ELSE 0 END"}}
PROBE_ROWS = 100


def views_sql(pairs: tuple[str, ...], currency: bool) -> str:
    """The views each database gets: expected and actual, and their planted copies for the probe."""
    factor = MINOR if currency else "100"
    statements = []
    for suffix, plants in (("", {"actual": {}, "expected": {}}), ("_planted", PLANTS)):
        expected = ", ".join(f"(({c} {plants['expected'].get(c, '')}) * {factor})::{TYPE} AS {c}"
                             for c in pairs)
        actual = ", ".join(f"({c}_cents {plants['actual'].get(c, '')})::{TYPE} AS {c}" for c in pairs)
        statements.append(VIEW_SQL.format(name=EXPECTED + suffix, columns=expected))
        statements.append(VIEW_SQL.format(name=ACTUAL + suffix, columns=actual))
    return ";".join(statements)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip() and "is ignored" not in line]
    return lines[-1].strip() if lines else "no output"


def install(venv: Path = VENV) -> str | None:
    """The reladiff command of its own environment, installed there on first use; None (said in one
    line) when it cannot be installed."""
    command = venv / "bin" / "reladiff"
    if command.exists() and subprocess.run([command, "--version"], capture_output=True).returncode == 0:
        return str(command)
    shutil.rmtree(venv, ignore_errors=True)
    python = shutil.which("python3.11") or sys.executable
    try:
        subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *PACKAGES],
                       check=True, capture_output=True, text=True, timeout=900)
        subprocess.run([command, "--version"], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        reason = _last_line(exc.stderr or exc.stdout or "")
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = str(exc)
    else:
        return str(command)
    shutil.rmtree(venv, ignore_errors=True)
    print(f"reladiff: could not install {' '.join(PACKAGES)} into {venv} ({reason}); "
          "its hashdiff and joindiff figures are skipped")
    return None


def url_and_env(dsn: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string or URL as reladiff's URL (host may be a socket directory) and the
    environment its libpq reads the rest from (the password never on its command line)."""
    params = conninfo_to_dict(dsn)
    host = quote(str(params.get("host") or ""), safe="")
    port = f":{params['port']}" if params.get("port") else ""
    user = quote(str(params.get("user") or ""), safe="")
    dbname = quote(str(params.get("dbname") or ""), safe="")
    url = f"postgresql://{user + '@' if user else ''}{host}{port}/{dbname}"
    env = dict(os.environ, COLUMNS="100000")  # rich wraps its JSON at the terminal's width otherwise
    for key, var in (("password", "PGPASSWORD"), ("sslmode", "PGSSLMODE"), ("passfile", "PGPASSFILE"),
                     ("sslrootcert", "PGSSLROOTCERT")):
        if params.get(key):
            env[var] = str(params[key])
    return url, env


class Reladiff:
    """Timed runs of one installed reladiff between the two views of each database."""

    def __init__(self, command: str, pairs: tuple[str, ...]) -> None:
        self.command = command
        self.pairs = pairs
        self.version = subprocess.run([command, "--version"], capture_output=True, text=True,
                                      check=True).stdout.strip()

    def argv(self, url: str, algorithm: str, *extra: str, planted: bool = False) -> list[str]:
        suffix = "_planted" if planted else ""
        columns = [arg for c in self.pairs for arg in ("-c", c)]
        return [self.command, url, EXPECTED + suffix, ACTUAL + suffix, "-k", "id", *columns,
                "-a", algorithm, "-s", "--json", *extra]

    def run(self, dsn: str, algorithm: str, *extra: str, planted: bool = False) -> tuple[float, dict]:
        """Wall seconds of one reladiff command (whole: start-up included) and its stats."""
        url, env = url_and_env(dsn)
        argv = self.argv(url, algorithm, *extra, planted=planted)
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} exited {done.returncode}: {_last_line(done.stderr)}")
        try:
            stats = json.loads(done.stdout)
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"{shlex.join(argv)} printed no JSON stats: {done.stdout[:200]!r}") from exc
        return wall, stats

    def probe(self, dsn: str) -> str | None:
        """None when both algorithms find exactly the planted differences; else why not."""
        for algorithm in ALGORITHMS:
            # A small bisection, so that hashdiff checksums segments as on the full table.
            try:
                _, stats = self.run(dsn, algorithm, "-w", f"id <= {PROBE_ROWS}", "--bisection-factor", "4",
                                    "--bisection-threshold", "8", planted=True)
            except RuntimeError as exc:
                return str(exc)
            found = tuple(stats.get(k) for k in ("rows_A", "updated", "exclusive_A", "exclusive_B"))
            if found != (PROBE_ROWS, 3, 0, 0):
                return (f"{algorithm} on {PROBE_ROWS} rows with 3 planted differences found "
                        f"(rows, updated, exclusive a, exclusive b) = {found}")
        return None

    def timed(self, dsn: str, algorithm: str, rows: int) -> float:
        """Wall seconds of one diff of the clean views, which must find ``rows`` rows and no difference."""
        extra = ("--allow-empty-tables",) if rows == 0 else ()
        try:
            wall, stats = self.run(dsn, algorithm, *extra)
        except RuntimeError as exc:
            raise SystemExit(f"reladiff {algorithm}: {exc}") from exc
        found = (stats.get("rows_A"), stats.get("rows_B"), stats.get("total"))
        if found != (rows, rows, 0):
            raise SystemExit(f"reladiff {algorithm} on clean data: (rows a, rows b, differences) = {found}, "
                             f"not ({rows}, {rows}, 0)")
        return wall
