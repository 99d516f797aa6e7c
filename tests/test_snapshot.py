"""Snapshots: every pg_dump format restores exactly; bad files are refused clearly.

A restore is proven by comparing row counts and an order-independent digest
of every table with the source database. Bad input (empty, truncated,
corrupt, foreign, too new, leaving the database) must give one clear
SnapshotError naming the file, and leave no scratch database behind.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from verifier.errors import SnapshotError
from verifier.scratch import provision
from verifier.scratch.restore import check_restorable, restore
from verifier.source import dump

from .conftest import table_digests


@pytest.mark.parametrize("fmt", ["custom", "directory", "tar", "plain"])
def test_every_format_restores_exactly(
    fmt: str, dumps: dict[str, Path], demo_source: str, server_dsn: str, leftovers: None
) -> None:
    info = dump.inspect(dumps[fmt])
    assert info.format == fmt
    assert info.dumped_by is not None
    assert info.dumped_from is not None
    if fmt != "directory":
        assert info.sha256 == hashlib.sha256(dumps[fmt].read_bytes()).hexdigest()
        assert info.size_bytes == dumps[fmt].stat().st_size
    with provision(server_dsn) as server, server.database() as db:
        result = restore(info, db)
        assert result.jobs == (1 if fmt in ("tar", "plain") else result.jobs)
        restored = table_digests(db.dsn)
    source = table_digests(demo_source)
    assert restored == source
    assert sum(n for n, _ in source.values()) > 2_000


def test_directory_digest_changes_with_any_file(dumps: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy.dir"
    shutil.copytree(dumps["directory"], copy)
    before = dump.sha256_of(copy)[0]
    assert before == dump.sha256_of(dumps["directory"])[0]
    victim = sorted(p for p in copy.iterdir() if p.name != "toc.dat")[0]
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert dump.sha256_of(copy)[0] != before


def _restore_into_scratch(path: Path, server_dsn: str) -> None:
    info = dump.inspect(path)
    with provision(server_dsn) as server, server.database() as db:
        restore(info, db)


def test_truncated_custom_dump(dumps: dict[str, Path], tmp_path: Path, server_dsn: str,
                               leftovers: None) -> None:
    data = dumps["custom"].read_bytes()
    cut = tmp_path / "cut.dump"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SnapshotError) as err:
        _restore_into_scratch(cut, server_dsn)
    assert "truncated or corrupt" in str(err.value) and str(cut) in str(err.value)


def test_tar_cut_inside_its_last_member_is_refused(dumps: dict[str, Path], tmp_path: Path) -> None:
    """pg_restore never reads the tar's last member (restore.sql): cut there, it would restore."""
    import tarfile

    with tarfile.open(dumps["tar"]) as tar:
        last = tar.getmembers()[-1]
    assert last.name == "restore.sql"
    cut = tmp_path / "cut.tar"
    cut.write_bytes(dumps["tar"].read_bytes()[: last.offset_data + last.size // 2])
    with pytest.raises(SnapshotError) as err:
        dump.inspect(cut)
    assert "truncated" in str(err.value) and str(cut) in str(err.value)


def test_truncated_header(dumps: dict[str, Path], tmp_path: Path, server_dsn: str) -> None:
    cut = tmp_path / "head.dump"
    cut.write_bytes(dumps["custom"].read_bytes()[:40])
    with pytest.raises(SnapshotError) as err:
        _restore_into_scratch(cut, server_dsn)
    assert str(cut) in str(err.value)


def test_corrupt_custom_dump(dumps: dict[str, Path], tmp_path: Path, server_dsn: str,
                             leftovers: None) -> None:
    data = bytearray(dumps["custom"].read_bytes())
    # Overwrite the middle (compressed table data) with garbage.
    middle = len(data) // 2
    data[middle: middle + 4096] = bytes(range(256)) * 16
    bad = tmp_path / "corrupt.dump"
    bad.write_bytes(bytes(data))
    with pytest.raises(SnapshotError) as err:
        _restore_into_scratch(bad, server_dsn)
    assert str(bad) in str(err.value)


def test_dump_from_a_newer_archive_version(dumps: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(dumps["custom"].read_bytes())
    data[6] = 99  # archive format 1.99: what a far newer pg_dump might write
    newer = tmp_path / "newer.dump"
    newer.write_bytes(bytes(data))
    with pytest.raises(SnapshotError) as err:
        dump.inspect(newer)
    assert "cannot read" in str(err.value) and "newer pg_dump" in str(err.value)


def test_plain_dump_from_a_newer_major_version(dumps: dict[str, Path], tmp_path: Path) -> None:
    text = dumps["plain"].read_text()
    newer = tmp_path / "newer.sql"
    newer.write_text(re.sub(r"Dumped by pg_dump version \d+", "Dumped by pg_dump version 99", text, count=1))
    with pytest.raises(SnapshotError) as err:
        dump.inspect(newer)
    assert "pg_dump 99" in str(err.value) and str(newer) in str(err.value)


def test_plain_dump_with_an_error_names_the_line(tmp_path: Path, server_dsn: str, leftovers: None) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE ok (id int);\nINSERT INTO ok VALUES (1);\nCREATE TABLE oops (;\n")
    with pytest.raises(SnapshotError) as err:
        _restore_into_scratch(bad, server_dsn)
    assert "bad.sql" in str(err.value) and ":3:" in str(err.value) and "syntax error" in str(err.value)


def test_plain_dump_that_connects_elsewhere_is_refused(tmp_path: Path, server_dsn: str,
                                                       leftovers: None) -> None:
    bad = tmp_path / "create.sql"
    bad.write_text("CREATE TABLE a (id int);\n\\connect postgres\nCREATE TABLE b (id int);\n")
    with pytest.raises(SnapshotError, match="line 2 would leave the scratch database"):
        _restore_into_scratch(bad, server_dsn)


def test_dump_newer_than_the_scratch_server_is_refused(tmp_path: Path) -> None:
    info = dump.DumpInfo(tmp_path / "prod.dump", "custom", "0" * 64, 1, "18.1", "18.1")
    check_restorable(info, 18)
    with pytest.raises(SnapshotError) as err:
        check_restorable(info, 15)
    assert "pg_dump 18.1" in str(err.value) and "PostgreSQL 15" in str(err.value)
    assert "--scratch embedded" in str(err.value)
