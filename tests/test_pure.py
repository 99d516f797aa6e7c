"""Pure logic, no database: sizes, dump recognition, redaction, the plain-dump filter.

These prove the parts whose mistakes would be silent: a password that leaks
into a message, a role statement that slips through, a COPY row mistaken
for SQL, a size plan that does not add up.
"""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from verifier import signals
from verifier.demo import generate
from verifier.errors import SnapshotError, UsageError
from verifier.findings import whole_cents
from verifier.ledger import state as ledger_state
from verifier.ledger.history import without
from verifier.ledger.state import same_balance as _same
from verifier.pg import conninfo
from verifier.scratch import restore
from verifier.source import dump


def test_plan_counts_add_up_and_scale() -> None:
    for rows in (1_000, 20_000, 1_000_000, 10_000_000):
        p = generate.plan(rows)
        # Every table gets rows; the total is the request give or take the
        # derived tables (tiers, rates, gift catalogue) and rounding.
        assert all(n >= 1 for n in p.counts.values())
        assert abs(p.money_rows - rows) <= 0.05 * rows + 100, (rows, p.money_rows)
        assert p.creators * 10 <= p.users
    with pytest.raises(UsageError):
        generate.plan(999)
    with pytest.raises(UsageError):
        generate.plan(10_000_001)


def test_generator_statements_cover_every_planned_table() -> None:
    names = [n for n, _ in generate.statements() if not n.startswith("helpers")]
    assert sorted(names) == sorted(generate.plan(1_000).counts)
    # psycopg would read a lone percent sign as a placeholder.
    for _, body in generate.statements():
        assert "%" not in body.replace("%%", "").replace("%(", "")


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"PGDMP\x01\x10\x00rest", "custom"),
        (b"--\n-- PostgreSQL database dump\n--\nSET x = 1;\n", "plain"),
        (b"CREATE TABLE t (id int);\n", "plain"),
        (b"\0" * 257 + b"ustar" + b"\0" * 300, "tar"),
    ],
)
def test_detect_format(tmp_path: Path, content: bytes, expected: str) -> None:
    f = tmp_path / "x"
    f.write_bytes(content)
    assert dump.detect_format(f) == expected


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "not a pg_dump"),
        (b"hello, world\n", "not a pg_dump"),
        (b"\x1f\x8b\x08\0\0\0", "gzip"),
    ],
)
def test_detect_format_refuses(tmp_path: Path, content: bytes, words: str) -> None:
    f = tmp_path / "x"
    f.write_bytes(content)
    with pytest.raises(SnapshotError) as err:
        dump.detect_format(f)
    assert words in str(err.value) and str(f) in str(err.value)


def test_detect_format_directory_and_missing(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="no toc.dat"):
        dump.detect_format(tmp_path)
    with pytest.raises(SnapshotError, match="does not exist"):
        dump.detect_format(tmp_path / "nope.dump")
    (tmp_path / "toc.dat").write_bytes(b"PGDMP")
    assert dump.detect_format(tmp_path) == "directory"


def test_plain_filter_drops_role_statements_but_not_copy_rows(tmp_path: Path) -> None:
    text = (
        b"CREATE TABLE t (x text);\n"
        b"ALTER TABLE public.t OWNER TO prod_owner;\n"
        b"GRANT SELECT ON TABLE public.t TO analyst;\n"
        b"COPY public.t (x) FROM stdin;\n"
        b"GRANT ALL TO everyone\n"
        b"ALTER TABLE x OWNER TO y;\n"
        b"\\.\n"
        b"REVOKE ALL ON SCHEMA public FROM PUBLIC;\n"
    )
    out = b"".join(restore._filtered_lines(io.BytesIO(text), tmp_path / "d.sql"))
    assert out == (
        b"CREATE TABLE t (x text);\n"
        b"COPY public.t (x) FROM stdin;\n"
        b"GRANT ALL TO everyone\n"
        b"ALTER TABLE x OWNER TO y;\n"
        b"\\.\n"
    )


@pytest.mark.parametrize("line", [b"\\connect other\n", b"CREATE DATABASE prod;\n", b"CREATE ROLE x;\n"])
def test_plain_filter_refuses_to_leave_the_database(tmp_path: Path, line: bytes) -> None:
    with pytest.raises(SnapshotError, match="line 2 would leave the scratch database"):
        list(restore._filtered_lines(io.BytesIO(b"SELECT 1;\n" + line), tmp_path / "d.sql"))


password_chars = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                                exclude_characters="@/:?#%'\\ "), min_size=4)


@given(password=password_chars)
def test_redact_hides_url_passwords(password: str) -> None:
    url = f"postgresql://alice:{password}@db.internal:5432/pay"
    assume(password not in url.replace(f":{password}@", ":@"))  # e.g. "post" in "postgresql"
    assert password not in conninfo.redact(url)
    assert password not in conninfo.describe(url)
    assert password not in conninfo.scrub(f"failed for {url} with {password}", url)


def test_redact_hides_keyword_passwords() -> None:
    dsn = "host=db user=alice password=s3cr3t-pw dbname=pay"
    assert "s3cr3t-pw" not in conninfo.redact(dsn)
    assert conninfo.describe(dsn) == "alice@db:5432/pay"
    assert "'q p'" not in conninfo.redact("host=db password='q p' dbname=x")


def test_text_for_the_terminal_shows_controls_and_bidi_overrides_as_escapes() -> None:
    """An escape sequence or a right-to-left override in a file or table name is shown, not obeyed."""
    from verifier.errors import printable

    assert printable("300_\x1b[2J\x07pay\u202emoc.sql") == "300_\\u001b[2J\\u0007pay\\u202emoc.sql"
    assert printable("line one\n\tline two é 💸") == "line one\n\tline two é 💸"
    assert printable("\x9b31m") == "\\u009b31m"



def test_a_balance_equals_its_last_proven_entry_as_a_number_not_as_text() -> None:
    # Found by a break-it run: numeric(14, 2) balances read "10000.00" where the state keeps "10000",
    # so every account was sent every night as changed.
    assert _same("10000", "10000.00") and _same("-5", "-5") and _same(None, None)
    assert not _same("10000", "10000.01") and not _same(None, "0") and not _same("0", None)
    assert not _same("NaN", "NaN ") and not _same("1", "one")


_IDS = st.text(alphabet="a1é😀", max_size=2)  # (UTF-8 byte order is not every order: é, 😀)
_ACCOUNT = st.tuples(st.sampled_from(["0", "10", "10.00", "-5", "7", None]),
                     st.sampled_from(["USD", "EUR", None]), st.sampled_from(["user", "platform", None]))


@given(st.data(), st.integers(1, 6))
def test_accounts_held_to_the_state_files_last_entries_in_order_as_one_by_one(data: Any, chunk: int) -> None:
    """``StoredLast.compare`` (a merge of the accounts, in the order of their ids' UTF-8 bytes, with the
    file's rows, batch by batch) against the comparison it replaced: each account looked up in a dict
    of every last entry. Accounts deleted, twice, without entries, with fresh entries, balances of
    another scale, and accounts that did not exist when their entries were proven."""
    import tempfile

    existed = st.sampled_from([True, True, True, False])
    last = data.draw(st.dictionaries(_IDS, st.tuples(st.integers(1, 9), _ACCOUNT, existed), max_size=25))
    now = []
    for a, (_, account, _) in last.items():
        fate = data.draw(st.sampled_from(["as proven"] * 4 + ["changed", "twice", "deleted"]))
        now += {"as proven": [(a, account)], "changed": [(a, data.draw(_ACCOUNT))],
                "twice": [(a, account)] * 2, "deleted": []}[fate]
    now += data.draw(st.lists(st.tuples(_IDS, _ACCOUNT), max_size=8))
    fresh = data.draw(st.sets(st.sampled_from(sorted(last) or [""]), max_size=3) | st.sets(_IDS, max_size=2))
    entries = {a: (seq, after, currency, kind, existed)
               for a, (seq, (after, currency, kind), existed) in last.items()}
    rows = sorted(((a, *account) for a, account in now), key=lambda r: r[0].encode())
    needed, unchanged, unproven, seen, twice = {}, [], [], set(), set()
    for account, balance, currency, kind in rows:  # (the comparison as it was, account by account)
        if account in seen:
            twice.add(account)
            continue
        seen.add(account)
        proven = entries.get(account)
        if proven is None:
            unproven.append(account)
        elif (proven[4] and _same(proven[1], balance) and proven[2] == currency and proven[3] == kind
              and account not in fresh):
            unchanged.append(account)
        else:
            needed[account] = proven
    needed.update((a, e) for a, e in entries.items() if a not in seen or a in fresh or a in twice)
    unchanged = [a for a in unchanged if a not in twice]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.state"
        state = ledger_state.new({"ledger": "test"})
        state.last = entries
        ledger_state.save(path, state)
        loaded = ledger_state.load(path)
        assert loaded is not None and isinstance(loaded.last, ledger_state.StoredLast)
        as_read = {a: (e[0], None if e[1] is None else str(int(Decimal(e[1]))), *e[2:])  # (as integers)
                   for a, e in entries.items()}
        assert dict(loaded.last) == as_read and len(loaded.last) == len(entries)
        got, named, by_unproven, count = loaded.last.compare(
            ledger_state.whole_ids([rows[i:i + chunk] for i in range(0, len(rows), chunk)]), fresh)
        assert got == {a: as_read[a] for a in needed} and count == len(unchanged)
        assert by_unproven == (len(unproven) < len(unchanged))
        assert sorted(named) == sorted(unproven if by_unproven else unchanged)
        assert [p.name for p in Path(tmp).iterdir()] == ["ledger.state"]  # (read in place)


@given(st.lists(st.integers(0, 60), max_size=30), st.lists(st.integers(-5, 70), max_size=15))
def test_gaps_less_the_rows_found_in_them_are_the_ids_no_row_holds(ids: list[int], taken: list[int]) -> None:
    """``without`` (the gaps a state keeps, less the rows an audit proved in them) against a set."""
    present = set(ids)
    holes, start = [], None
    for i in range(0, 61):  # the gaps among 0..60 as ranges, as the state keeps them
        if i not in present and start is None:
            start = i
        if i in present and start is not None:
            holes.append((start, i - 1))
            start = None
    if start is not None:
        holes.append((start, 60))
    out = without(holes, taken)
    assert {i for lo, hi in out for i in range(lo, hi + 1)} == set(range(61)) - present - set(taken)
    assert all(lo <= hi for lo, hi in out) and out == sorted(out)
    assert all(a[1] < b[0] for a, b in zip(out, out[1:], strict=False))


def test_a_signal_inside_the_import_systems_own_code_is_sent_again_not_dropped() -> None:
    """Found by the signal test in CI: raised in a module lock's weakref callback, the interrupt was
    printed as "Exception ignored" and dropped, and the run went on to its verdict. There the handler
    sends the signal again a moment later; elsewhere it raises KeyboardInterrupt."""
    import signal
    import time
    from types import SimpleNamespace

    def frame(filename: str) -> Any:
        return SimpleNamespace(f_code=SimpleNamespace(co_filename=filename))

    got: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, _: got.append(signum))
    try:
        signals.interrupt(signal.SIGUSR1, frame("<frozen importlib._bootstrap>"))  # no raise
        for _ in range(100):
            if got:
                break
            time.sleep(signals.DEFERRED_S)
        assert got == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, old)
    with pytest.raises(KeyboardInterrupt):
        signals.interrupt(signal.SIGTERM, frame(__file__))


@pytest.mark.parametrize(("impact", "cents"), [
    ("0.5", 1), ("-0.5", -1), ("0.0001", 1), ("2", 2), ("2.000", 2), ("-3.2", -4), ("0", 0),
    ("NaN", 0), ("Infinity", 0), ("-Infinity", 0)])
def test_a_cents_impact_of_a_fraction_is_never_reported_as_none(impact: str, cents: int) -> None:
    """Found by a break-it run: a drift of half a cent (a numeric balance column) said 0 cents."""
    assert whole_cents(Decimal(impact)) == cents
