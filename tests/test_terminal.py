"""What a run shows on the terminal: progress per stage, the summary, --quiet, --format json,
--version, and the target given by DATABASE_URL or libpq's PG* variables (real server, real CLI)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from .conftest import BIN_DIR, run_cli, run_summary

TIPS = """CREATE TABLE tips (id int PRIMARY KEY, amount numeric(12,2), amount_cents bigint);
          INSERT INTO tips SELECT g, g, g * 100 FROM generate_series(1, 1000) g;
          INSERT INTO tips VALUES (1001, 12.34, 1234), (1002, 5.00, 50);"""


@pytest.fixture
def tips_db(fresh_db: str) -> str:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(TIPS)
    return fresh_db


@pytest.mark.parametrize("command", ["verify-cents", "verify-ledger", "verifier", "verifier accept",
                                     "verifier make-snapshot", "verifier migrations status"])
def test_every_command_says_its_version(command: str) -> None:
    from verifier import __version__

    result = run_cli(*command.split(), "--version")
    assert result.code == 0 and result.stdout.strip() == f"{command.split()[0]} {__version__}", result


def test_the_summary_counts_rules_rows_and_money_and_each_stage_has_a_line(
        tips_db: str, tmp_path: Path) -> None:
    """Not a terminal (as under cron): one line per stage with its duration, then the summary: the
    verdict, each rule with its findings and rows (errors first), rows checked, the cents impact in
    cents and in money, the report; the verdict line alone on stdout."""
    result = run_cli("verify-cents", "--db", tips_db, "--report-dir", str(tmp_path))
    assert result.code == 1, result.stderr
    err = result.stderr
    assert re.search(r"^connect: done in \d+\.\d s$", err, re.MULTILINE), err
    assert re.search(r"^verify: done in \d+\.\d s$", err, re.MULTILINE), err
    assert re.search(r"^FAIL in \d+\.\d s$", err, re.MULTILINE), err
    assert re.search(r"^  errors:\n    scale_error +1 finding\(s\), 1 row\(s\)$", err, re.MULTILINE), err
    assert "  rows checked: 1,002" in err
    # 5.00 recorded as 50 cents: 450 cents short.
    assert "  cents impact: 450 cent(s) (4.50) absolute, -450 cent(s) (-4.50) net" in err
    [run] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert f"  report: {run / 'report.html'}" in err
    assert result.stdout == f"FAIL: report {run / 'report.html'}\n"


def test_quiet_shows_the_verdict_line_only_and_json_goes_to_stdout(tips_db: str, tmp_path: Path) -> None:
    quiet = run_cli("verify-cents", "--db", tips_db, "--report-dir", str(tmp_path / "q"), "--quiet")
    assert quiet.code == 1 and quiet.stderr == "" and quiet.stdout.startswith("FAIL: report "), quiet
    as_json = run_cli("verify-cents", "--db", tips_db, "--report-dir", str(tmp_path / "j"), "-q",
                      "--format", "json")
    assert as_json.code == 1
    data = json.loads(as_json.stdout)
    assert data == run_summary(tmp_path / "j") and data["status"] == "fail"
    assert as_json.stderr.startswith("FAIL: report ")
    both = run_cli("verify-cents", "--db", tips_db, "--quiet", "--verbose")
    assert both.code == 2 and "not both" in both.stderr


def test_database_url_and_libpq_variables_name_the_target(tips_db: str, tmp_path: Path) -> None:
    """DATABASE_URL stands in for --db; with neither, libpq's PG* variables do; --db wins over
    DATABASE_URL; --snapshot or --demo with DATABASE_URL set is not a conflict."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    url = psycopg.conninfo.conninfo_to_dict(tips_db)

    def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN_DIR / "verify-cents"), *args, "--report-dir", str(tmp_path), "-q"],
                              capture_output=True, text=True, env={**clean, **env}, timeout=300)

    assert cli(DATABASE_URL=tips_db).returncode == 1
    tmp_path = tmp_path / "libpq"
    libpq = {"PGHOST": str(url.get("host", "")), "PGPORT": str(url.get("port", "5432")),
             "PGUSER": str(url.get("user", "")), "PGDATABASE": str(url["dbname"])}
    done = cli(**libpq)
    assert done.returncode == 1, done.stderr
    assert run_summary(tmp_path)["provenance"]["target_database"] == url["dbname"]
    nothing = cli()
    assert nothing.returncode == 2 and "exactly one of --db" in nothing.stderr
    missing = tmp_path / "missing.dump"
    done = cli("--snapshot", str(missing), DATABASE_URL=tips_db)
    assert done.returncode == 2 and "exactly one of" not in done.stderr and str(missing) in done.stderr


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) from util-linux for a pty")
def test_on_a_terminal_each_stage_is_a_live_line_that_ends_as_a_tick(tips_db: str, tmp_path: Path) -> None:
    """Under a pseudo-terminal: rich draws the live line (a progress bar of tables checked) and each
    stage ends as a ticked line with its duration; the cursor is shown again at the end."""
    log = tmp_path / "typescript"
    command = f"{BIN_DIR / 'verify-cents'} --db '{tips_db}' --report-dir {tmp_path / 'r'}"
    done = subprocess.run(["script", "-qec", command, str(log)], capture_output=True, timeout=300,
                          env={**os.environ, "COLUMNS": "120", "TERM": "xterm-256color"})
    assert done.returncode == 1, done
    screen = log.read_text(errors="replace")
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert re.search(r"✓ verify +\d+\.\d s", plain), plain
    assert re.search(r"[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] (verify|connect|pairs)", plain), plain  # a live line was drawn
    assert "\x1b[?25h" in screen  # the cursor is shown again
    assert "FAIL in " in plain and "FAIL: report " in plain


@pytest.mark.parametrize(("args", "config", "words"), [
    (("--db", "postgresq://user@localhost/app"), None, "starts with postgresql:// or postgres://"),
    (("--db", "host=localhost dbname"), None, "key=value pairs"),
    (("--db", "host=localhost"), "missing.toml", "does not exist"),
    (("--db", "host=localhost"), "[tool.verifer]\nrounding = \"half_even\"\n",
     "did you mean [tool.verifier]"),
    (("--snapshot", "missing.dump"), None, "does not exist"),
])
def test_a_usage_error_before_the_run_writes_no_run_folder(
        args: tuple[str, ...], config: str | None, words: str, tmp_path: Path) -> None:
    """Exit 2, one paragraph saying what to do, and no NOT VERIFIED folder crowding the index."""
    extra: list[str] = []
    if config == "missing.toml":
        extra = ["--config", str(tmp_path / "missing.toml")]
    elif config is not None:
        (tmp_path / "pyproject.toml").write_text(config)
        extra = ["--config", str(tmp_path / "pyproject.toml")]
    argv = [a if a != "missing.dump" else str(tmp_path / a) for a in args]
    result = run_cli("verify-cents", *argv, *extra, "--report-dir", str(tmp_path / "r"))
    assert result.code == 2 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "incomplete report" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_an_unreachable_target_still_leaves_a_run_folder(tmp_path: Path) -> None:
    result = run_cli("verify-ledger", "--db", "host=127.0.0.1 port=1 dbname=x connect_timeout=2",
                     "--report-dir", str(tmp_path))
    assert result.code == 2 and "Could not connect" in result.stderr
    assert run_summary(tmp_path)["status"] == "error"


def test_the_configuration_is_found_in_a_parent_directory(tips_db: str, tmp_path: Path) -> None:
    """Run from a subdirectory of the project: its pyproject.toml's [tool.verifier] applies (here an
    exclusion of the table with the wrong row, so the run passes), as git finds its repository."""
    (tmp_path / "pyproject.toml").write_text('[tool.verifier]\nexclude = ["public.tips"]\n')
    (tmp_path / "ci" / "jobs").mkdir(parents=True)
    result = run_cli("verify-cents", "--db", tips_db, "--report-dir", str(tmp_path / "r"), "-q",
                     cwd=tmp_path / "ci" / "jobs")
    assert run_summary(tmp_path / "r")["provenance"]["config"] == str(tmp_path / "pyproject.toml")
    assert result.code == 0, result.stderr  # the table with the wrong row is excluded by name


def test_json_goes_to_stdout_for_a_run_that_did_not_verify_too(tmp_path: Path) -> None:
    result = run_cli("verify-ledger", "--db", "host=127.0.0.1 port=1 dbname=x connect_timeout=2",
                     "--report-dir", str(tmp_path), "--format", "json")
    assert result.code == 2 and json.loads(result.stdout)["status"] == "error"
    assert "NOT VERIFIED: report " in result.stderr


def test_libpq_variables_are_named_as_reached_and_a_blank_database_url_is_refused(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    done = subprocess.run([str(BIN_DIR / "verify-cents"), "--report-dir", str(tmp_path), "-q"],
                          capture_output=True, text=True, timeout=120,
                          env={**clean, "PGHOST": "127.0.0.1", "PGPORT": "1", "PGDATABASE": "shop",
                               "PGUSER": "audit", "PGCONNECT_TIMEOUT": "2"})
    assert done.returncode == 2 and "audit@127.0.0.1:1/shop" in done.stderr, done.stderr
    blank = subprocess.run([str(BIN_DIR / "verify-cents"), "--report-dir", str(tmp_path / "b")],
                           capture_output=True, text=True, timeout=120, env={**clean, "DATABASE_URL": "   "})
    assert blank.returncode == 2 and "DATABASE_URL is set but empty" in blank.stderr
    assert not (tmp_path / "b").exists()


def test_the_search_passes_over_another_projects_pyproject(tmp_path: Path) -> None:
    from verifier.config import find

    (tmp_path / "verifier.toml").write_text('rounding = "half_even"\n')
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "b" / "pyproject.toml").write_text("[tool.black]\nline-length = 100\n")
    assert find(tmp_path / "b" / "c") == tmp_path / "verifier.toml"
    (tmp_path / "b" / "pyproject.toml").write_text("[tool.verifier]\nrounding = \"truncate\"\n")
    assert find(tmp_path / "b" / "c") == tmp_path / "b" / "pyproject.toml"


def test_a_name_that_looks_like_markup_is_drawn_as_text() -> None:
    """A table "pay[/]ments": rich would read "[/]" as a closing tag and its refresh thread would die
    with a MarkupError over the progress line; the name is escaped, and drawn as written."""
    import io

    from verifier.terminal import Terminal

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Tty()
    term = Terminal(stream=screen)
    try:
        term.started("verify")
        term.advanced("verify", 1, 3, "tables", now="public.pay[/]ments [bold]x")
        term._progress.refresh()  # raises rich.errors.MarkupError on unescaped markup
    finally:
        term.close()
    assert "public.pay[/]ments [bold]x" in screen.getvalue()


def test_verbose_prints_each_migration_statement_as_it_ends_not_when_its_file_ends(
        tmp_path: Path, small_dump: Path, server_dsn: str) -> None:
    """A file's first statement is on the terminal while its second (a three-second sleep) still
    runs: a long migration shows where it is."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "500_slow.sql").write_text("SELECT 1 AS first_statement;\nSELECT pg_sleep(3);\n")
    (migrations / "501_fails.sql").write_text("SELECT 1 / 0 AS divided;\n")
    proc = subprocess.Popen([str(BIN_DIR / "verify-cents"), "--snapshot", str(small_dump), "--scratch",
                             server_dsn, "--migrations", str(migrations), "--report-dir", str(tmp_path / "r"),
                             "--skip-rule-checks", "--verbose"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "500_slow.sql:1 " in line:
            # Printed as the first statement ended: the sleep is still running, the file not done.
            assert proc.poll() is None
            with psycopg.connect(server_dsn, autocommit=True) as conn:
                sleeping = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                        "AND query LIKE 'SELECT pg!_sleep(3)%' ESCAPE '!' "
                                        "AND pid <> pg_backend_pid()").fetchone()
            assert sleeping is not None and sleeping[0] == 1, "the file's second statement is running"
            break
    else:
        raise AssertionError("".join(lines))
    rest = proc.stdout.read()
    assert proc.wait() in (0, 1), rest
    assert "500_slow.sql:2 " in rest and "first_statement" in "".join(lines)
    # The statement that failed is shown too, with its SQLSTATE and message.
    assert "501_fails.sql:1 failed  SELECT 1 / 0 AS divided  [22012] division by zero" in rest, rest
