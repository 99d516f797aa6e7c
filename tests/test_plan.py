"""Pure logic of migrations, no database: ordering, headers, splitting, lines.

Ordering must not depend on the file system; duplicate numbers and suffixes
(the seed's 004 twins and 127a) are allowed and reported; statement lines
must point at the right line of the file, in the up SQL and in the down
block; the classification decides what may run inside a transaction.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.errors import UsageError
from verifier.migrate import plan
from verifier.migrate.sqltext import SqlSyntaxError, split_statements, up_and_down
from verifier.paths import project_migrations_dir

TEMPLATE = """-- Migration: {stem}
-- Description: test file
--   over two lines
-- Dependencies: {deps}

BEGIN;

-- Up Migration
CREATE TABLE IF NOT EXISTS {table} (id INT);

COMMIT;

-- Down Migration (for reference)
-- BEGIN;
-- DROP TABLE IF EXISTS {table};
-- COMMIT;
"""


def _write(directory: Path, stem: str, deps: str = "none") -> Path:
    path = directory / f"{stem}.sql"
    path.write_text(TEMPLATE.format(stem=stem, deps=deps, table="t_" + stem.replace("-", "_")))
    return path


def test_order_suffixes_and_duplicates(tmp_path: Path) -> None:
    for stem in ("128_update_rates", "127a_add_pricing", "004_supabase_auth", "127_session_invites",
                 "004_call_requests", "010_payouts"):
        _write(tmp_path, stem)
    (tmp_path / "add_indexes.sql").write_text("SELECT 1;")
    found = plan.discover(tmp_path)
    assert [f.path.stem for f in found.files] == [
        "004_call_requests", "004_supabase_auth", "010_payouts", "127_session_invites",
        "127a_add_pricing", "128_update_rates"]
    assert found.duplicates == {"004": ("004_call_requests.sql", "004_supabase_auth.sql")}
    assert [p.name for p in found.unnumbered] == ["add_indexes.sql"]
    versions = [f.version for f in found.files]
    assert versions == ["004_call_requests", "004_supabase_auth", "010", "127", "127a", "128"]


def test_pending_honours_text_integer_and_stem_versions(tmp_path: Path) -> None:
    for stem in ("004_a", "004_b", "010_c", "127a_d", "200_e"):
        _write(tmp_path, stem)
    files = plan.discover(tmp_path).files
    # integers as text ('10'), padded ('200'), suffixed ('127a'), a twin by its stem.
    applied = {"10", "127a", "004_a", "200"}
    assert [f.path.stem for f in plan.pending(files, applied)] == ["004_b"]
    assert [f.path.stem for f in plan.pending(files, set())] == [f.path.stem for f in files]


def test_a_shared_number_recorded_once_counts_for_every_twin_and_is_named(tmp_path: Path) -> None:
    for stem in ("004_a", "004_b", "010_c"):
        _write(tmp_path, stem)
    files = plan.discover(tmp_path).files
    for recorded in ({"4"}, {"004"}):  # an integer version, as text or padded
        # The team's tool takes a recorded number for every file that has it: neither is applied again.
        assert [f.path.stem for f in plan.pending(files, recorded)] == ["010_c"]
        assert plan.ambiguous(files, recorded) == {"4": ("004_a.sql", "004_b.sql")}
    # Recorded by their own names, the twins are told apart, and nothing is ambiguous.
    assert [f.path.stem for f in plan.pending(files, {"004_a"})] == ["004_b", "010_c"]
    assert plan.ambiguous(files, {"004_a", "004_b", "4"}) == {}
    assert plan.ambiguous(files, {"4", "004_a"}) == {"4": ("004_b.sql",)}
    # A file-name tracker never reads numbers: 4 names no file.
    assert [f.path.stem for f in plan.pending(files, {"4"}, "file_name")] == ["004_a", "004_b", "010_c"]
    assert plan.ambiguous(files, {"4"}, "file_name") == {}


def test_file_name_trackers_match_the_name_or_the_stem(tmp_path: Path) -> None:
    for stem in ("300_add", "301_fill", "302_check"):
        _write(tmp_path, stem)
    files = plan.discover(tmp_path).files
    for records in ("file_name", "file_stem"):
        # node-pg-migrate and knex write the stem, Sequelize the file name: either counts.
        assert [f.path.name for f in plan.pending(files, {"300_add.sql", "301_fill"}, records)] == [
            "302_check.sql"]
        # A version does not name a file.
        assert len(plan.pending(files, {"300", "301"}, records)) == 3
    assert [f.record_value("file_name") for f in files] == ["300_add.sql", "301_fill.sql", "302_check.sql"]
    assert [f.record_value("file_stem") for f in files] == ["300_add", "301_fill", "302_check"]
    assert [f.record_value("version") for f in files] == ["300", "301", "302"]


def test_plain_file_name_order_takes_every_file_as_named(tmp_path: Path) -> None:
    for stem in ("9_payouts", "10_tips", "add_indexes", "ADD_TOKEN_VERSION", "127a_x", "127_y"):
        _write(tmp_path, stem)
    (tmp_path / "10_tips_DOWN.sql").write_text("DROP TABLE t;")
    by_number = plan.discover(tmp_path)
    assert [f.path.stem for f in by_number.files] == ["9_payouts", "10_tips", "127_y", "127a_x"]
    assert sorted(p.name for p in by_number.unnumbered) == ["ADD_TOKEN_VERSION.sql", "add_indexes.sql"]
    by_name = plan.discover(tmp_path, "name")
    # Code-point order of the file names, as `LC_ALL=C ls` lists them: upper case before lower.
    assert [f.path.stem for f in by_name.files] == [
        "10_tips", "127_y", "127a_x", "9_payouts", "ADD_TOKEN_VERSION", "add_indexes"]
    assert by_name.unnumbered == () and [p.name for p in by_name.down_files] == ["10_tips_DOWN.sql"]
    # A file without a number is recorded, and found, by its stem.
    unnumbered = next(f for f in by_name.files if f.path.stem == "add_indexes")
    assert unnumbered.number is None and unnumbered.version == "add_indexes"
    assert [f.path.stem for f in plan.pending(by_name.files, {"add_indexes", "10", "127"})] == [
        "127a_x", "9_payouts", "ADD_TOKEN_VERSION"]


def test_down_files_are_not_up_migrations(tmp_path: Path) -> None:
    for stem in ("300_add", "301_fill"):
        _write(tmp_path, stem)
    (tmp_path / "300_add_DOWN.sql").write_text("DROP TABLE t;")
    (tmp_path / "301_fill.down.sql").write_text("DROP TABLE t;")
    found = plan.discover(tmp_path)
    assert [f.path.name for f in found.files] == ["300_add.sql", "301_fill.sql"]
    assert [p.name for p in found.down_files] == ["300_add_DOWN.sql", "301_fill.down.sql"]


@pytest.mark.parametrize("kind", ["symlink_out", "fifo", "directory", "too_big"])
def test_only_regular_files_inside_the_directory_are_read(tmp_path: Path, kind: str) -> None:
    import os

    migrations = tmp_path / "m"
    migrations.mkdir()
    _write(migrations, "300_ok")
    bad = migrations / "301_bad.sql"
    if kind == "symlink_out":
        (tmp_path / "secret.sql").write_text("SELECT 1;")
        bad.symlink_to(tmp_path / "secret.sql")
        expected = "is a symbolic link to"
    elif kind == "fifo":
        os.mkfifo(bad)
        expected = "is a FIFO, not a regular file"
    elif kind == "directory":
        bad.mkdir()
        expected = "is a directory, not a regular file"
    else:
        with bad.open("wb") as fh:
            fh.truncate(plan.FILE_BYTES_MAX + 1)  # sparse: no disk used
        expected = "more than the"
    with pytest.raises(UsageError) as caught:
        plan.discover(migrations)  # a FIFO would block a reader for ever: it must not be opened
    assert str(bad) in str(caught.value) and expected in str(caught.value)
    # A link to a regular file inside the directory is fine.
    if kind == "symlink_out":
        bad.unlink()
        bad.symlink_to(migrations / "300_ok.sql")
        assert len(plan.discover(migrations).files) == 2


def test_header_and_dependencies(tmp_path: Path) -> None:
    _write(tmp_path, "001_base")
    _write(tmp_path, "300_cents", deps="001")
    _write(tmp_path, "301_backfill", deps="300_cents, 299")
    files = plan.discover(tmp_path).files
    assert files[0].text.header["description"] == "test file over two lines"
    assert files[2].dependencies == ["300", "299"]
    missing = plan.missing_dependencies(files)
    assert [(f.path.stem, dep) for f, dep in missing] == [("301_backfill", "299")]


def test_project_migrations_are_ordered_and_complete() -> None:
    found = plan.discover(project_migrations_dir())
    assert [f.version for f in found.files] == ["001", "300", "301", "302", "303", "400"]
    assert not found.duplicates and not found.unnumbered
    assert plan.missing_dependencies(found.files) == []
    for f in found.files:
        assert f.text.header["migration"] == f.path.stem
        assert f.text.down is not None, f.path.name
        split_statements(f.text.up)
        split_statements(f.text.down, first_line=f.text.down_first_line)


def test_statement_lines_and_classes() -> None:
    text = (
        "-- header\n"                          # 1
        "BEGIN;\n"                             # 2
        "CREATE TABLE a (x int);\n"            # 3
        "\n"                                   # 4
        "/* note */ INSERT INTO a\n"           # 5
        "  VALUES (1);\n"                      # 6
        "COMMIT;\n"                            # 7
        "CREATE INDEX CONCURRENTLY i ON a (x);\n"  # 8
        "VACUUM a;\n"                          # 9
        "CALL p();\n"                          # 10
        "DO $$ BEGIN PERFORM 1; END $$;\n"     # 11
        "SELECT ';' AS semicolon;\n"           # 12
    )
    stmts = split_statements(text)
    assert [s.line for s in stmts] == [2, 3, 5, 7, 8, 9, 10, 11, 12]
    assert [s.opens_transaction for s in stmts][:1] == [True]
    assert stmts[3].closes_transaction
    assert [s.no_transaction for s in stmts] == [False, False, False, False, True, True, True, False, False]
    assert stmts[2].sql.startswith("INSERT INTO a")


def test_syntax_error_names_the_file_line() -> None:
    with pytest.raises(SqlSyntaxError) as err:
        split_statements("SELECT 1;\n\nCREATE TABLE broken (;\n", first_line=10)
    assert err.value.line == 12 and "syntax error" in err.value.message


def test_down_block_lines_point_into_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "001_x")
    text = up_and_down(path.read_text())
    assert text.down is not None
    down = split_statements(text.down, first_line=text.down_first_line)
    lines = path.read_text().splitlines()
    for stmt in down:
        assert lines[stmt.line - 1].startswith("-- " + stmt.sql.split()[0])
    assert "DROP TABLE" not in text.up


@pytest.mark.parametrize("kind", ["symlink_out", "fifo", "too_big"])
def test_only_regular_suite_files_inside_the_expectations_directory_are_read(
        tmp_path: Path, kind: str) -> None:
    """The same rule for ``--expectations DIR``: a suite linked from outside (its text would reach the
    report), a FIFO (never opened) or a file over the limit is a UsageError naming it."""
    import os

    from verifier.judge.suites import SUITE_BYTES_MAX, suite_files

    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "a.json").write_text('{"expectations": []}')
    bad = suites / "b.json"
    if kind == "symlink_out":
        (tmp_path / "credentials.json").write_text('{"password": "x"}')
        bad.symlink_to(tmp_path / "credentials.json")
        expected = "is a symbolic link to"
    elif kind == "fifo":
        os.mkfifo(bad)
        expected = "is a FIFO, not a regular file"
    else:
        with bad.open("wb") as fh:
            fh.truncate(SUITE_BYTES_MAX + 1)
        expected = "more than the"
    with pytest.raises(UsageError) as caught:
        suite_files(suites)
    assert str(bad) in str(caught.value) and expected in str(caught.value)
    bad.unlink()
    assert suite_files(suites) == [suites / "a.json"]
