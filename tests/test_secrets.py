"""Secrets never leave, and hostile files cannot reach outside the scratch database.

A password given in the connection string, in PGPASSWORD, in a .pgpass
file or in a service file never appears in anything a run writes or
prints: stdout, stderr, summary.json, junit.xml, report.html, offenders.csv,
the reports index and the ledger state file are all searched for it, for
runs that pass, runs that fail to connect and rehearsals (whose restore
tools get the password too). A plain dump's psql backslash commands, which
could run programs or write files on this machine, are refused before they
run; a truncated plain dump and a migration file with a NUL character are
refused before anything is applied.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import psycopg
import pytest

from .conftest import new_of_ours, run_cli, run_summary, scratch_databases

SECRET = "Pw-" + secrets.token_hex(8)


def _channels(dsn: str, tmp_path: Path, label: str) -> dict[str, tuple[str, dict[str, str]]]:
    """The same server and database reached with the password in each of libpq's four places.

    The service file (one for all labels, as PGSERVICEFILE is one) gains a service ``label``.
    """
    params = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(dsn).items() if v is not None}
    params.pop("password", None)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:*:{SECRET}\n")
    passfile.chmod(0o600)
    service = tmp_path / "pg_service.conf"
    with service.open("a") as fh:
        fh.write(f"[{label}]\n" + "".join(f"{k}={v}\n" for k, v in params.items()) + f"password={SECRET}\n")
    plain = psycopg.conninfo.make_conninfo("", **params)
    return {
        "conninfo": (psycopg.conninfo.make_conninfo(plain, password=SECRET), {}),
        "PGPASSWORD": (plain, {"PGPASSWORD": SECRET}),
        "pgpass": (plain, {"PGPASSFILE": str(passfile)}),
        "service file": (f"service={label}", {"PGSERVICEFILE": str(service)}),
    }


def _written(*roots: Path) -> bytes:
    return b"".join(p.read_bytes() for root in roots for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("channel", ["conninfo", "PGPASSWORD", "pgpass", "service file"])
def test_passwords_never_appear_in_any_output(targets: dict[str, str], server_dsn: str, small_dump: Path,
                                              tmp_path: Path, channel: str) -> None:
    (tmp_path / "auth").mkdir()
    outputs = tmp_path / "out"
    printed = ""
    cents, env = _channels(targets["verify-cents"], tmp_path / "auth", "cents")[channel]
    books, _ = _channels(targets["verify-ledger"], tmp_path / "auth", "books")[channel]
    scratch, _ = _channels(server_dsn, tmp_path / "auth", "scratch")[channel]
    missing = psycopg.conninfo.make_conninfo(cents, dbname="no_such_db")
    runs = [
        (["verify-cents", "--db", cents], (0,)),
        (["verify-ledger", "--db", books, "--state", str(outputs / "ledger.state")], (0,)),
        (["verify-ledger", "--db", books, "--state", str(outputs / "ledger.state")], (0,)),  # incremental
        (["verify-cents", "--db", missing], (2,)),
        (["verify-cents", "--snapshot", str(small_dump), "--scratch", scratch], (0,)),
    ]
    for args, codes in runs:
        result = run_cli(*args, "--report-dir", str(outputs / "reports"), env=env)
        assert result.code in codes, (args, result)
        printed += result.stdout + result.stderr
    assert "does not exist" in printed  # the failing run said why
    assert len([p for p in (outputs / "reports").iterdir() if p.is_dir()]) == len(runs)
    everything = printed.encode() + _written(outputs)
    assert (outputs / "ledger.state").is_file()
    assert all((run / "summary.json").is_file() for run in (outputs / "reports").iterdir() if run.is_dir())
    assert SECRET.encode() not in everything


@pytest.mark.parametrize("line", [
    b"\\! touch {marker}\n",
    b"SELECT 1; \\! touch {marker}\n",
    b"\\o {marker}\n",
    b"\\copy (SELECT 1) TO '{marker}'\n",
    b"\\w {marker}\n",
    b"\\setenv PGPASSWORD x\n",
])
def test_plain_dump_backslash_commands_never_run(dumps: dict[str, Path], server_dsn: str, tmp_path: Path,
                                                 leftovers: None, line: bytes) -> None:
    marker = tmp_path / "marker"
    text = dumps["plain"].read_bytes()
    at = text.index(b"\nSET ") + 1  # early in the dump, as an attacker would put it
    hostile = tmp_path / "hostile.sql"
    hostile.write_bytes(text[:at] + line.replace(b"{marker}", str(marker).encode()) + text[at:])
    result = run_cli("verify-cents", "--snapshot", str(hostile), "--scratch", server_dsn,
                     "--report-dir", str(tmp_path / "r"))
    assert result.code == 2, result
    assert "contains a psql backslash command" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
    assert run_summary(tmp_path / "r")["status"] == "error"


def test_truncated_plain_dump_is_refused(dumps: dict[str, Path], server_dsn: str, tmp_path: Path,
                                         leftovers: None) -> None:
    text = dumps["plain"].read_bytes()
    cut = tmp_path / "cut.sql"
    cut.write_bytes(text[:text.index(b"\nCOPY ", len(text) // 2)])  # at a statement's end: psql is happy
    result = run_cli("verify-cents", "--snapshot", str(cut), "--scratch", server_dsn,
                     "--report-dir", str(tmp_path / "r"))
    assert result.code == 2 and "is truncated" in result.stderr, result


def test_migration_with_a_nul_character_is_refused_before_anything_runs(
        small_dump: Path, server_dsn: str, tmp_path: Path, leftovers: None) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "300_ok.sql").write_text("ALTER TABLE tips ADD COLUMN IF NOT EXISTS amount_cents BIGINT;\n")
    # PostgreSQL would stop reading at the NUL and update every row.
    (migrations / "301_nul.sql").write_bytes(b"UPDATE tips SET amount = 0\x00 WHERE id = 5;\n")
    before = scratch_databases(server_dsn)
    result = run_cli("verify-cents", "--snapshot", str(small_dump), "--scratch", server_dsn,
                     "--migrations", str(migrations), "--report-dir", str(tmp_path / "r"))
    assert result.code == 2 and "301_nul.sql holds a NUL character (line 1)" in result.stderr, result
    data = run_summary(tmp_path / "r")
    assert data["stages"][-1]["name"] == "plan"  # before any server or database was touched
    assert new_of_ours(scratch_databases(server_dsn), before) == set()
