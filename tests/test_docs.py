"""Docs that cannot drift: every command, option, configuration key and finding rule is in the README.

A new option without a line in the README fails here, as does a README
that still documents an option the commands no longer have. The README's
rule tables list exactly the rules of the registry (``verifier.findings``),
in its order (for the per-row rules, the order of precedence), with its
severities and meanings. Each missing or drifted item is a failure of its own.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from verifier import cli
from verifier.config import KEYS
from verifier.config.ledger import KEYS as LEDGER_KEYS
from verifier.findings import REGISTRY, rules_of

README = (Path(__file__).parent.parent / "README.md").read_text()


def _commands() -> dict[str, click.Command]:
    commands: dict[str, click.Command] = {"verify-cents": cli.verify_cents,
                                          "verify-ledger": cli.verify_ledger}
    for name, sub in cli.verifier.commands.items():
        if isinstance(sub, click.Group):
            for subname, subsub in sub.commands.items():
                commands[f"verifier {name} {subname}"] = subsub
        else:
            commands[f"verifier {name}"] = sub
    return commands


def _options() -> list[tuple[str, str]]:
    return [(name, opt) for name, command in _commands().items() for param in command.params
            for opt in getattr(param, "opts", []) if opt.startswith("--") and opt != "--help"]


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_is_documented(name: str) -> None:
    assert name in README, f"command {name} is missing from README.md"


@pytest.mark.parametrize(("name", "opt"), _options())
def test_every_option_is_documented(name: str, opt: str) -> None:
    assert opt in README, f"{name} {opt} is missing from README.md"


def test_readme_documents_no_option_that_does_not_exist() -> None:
    known = {opt for c in _commands().values() for p in c.params for opt in getattr(p, "opts", [])}
    table_options = set(re.findall(r"^\| `(--[a-z-]+)", README, re.MULTILINE))
    assert table_options and table_options <= known


def test_setup_is_two_commands_and_ci_runs_the_readme_test_command() -> None:
    assert "make demo" in README and "make test" in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-2].strip() == "make test"


@pytest.mark.parametrize("key", [*KEYS, *(f"ledger.{k}" for k in LEDGER_KEYS)])
def test_every_configuration_key_is_documented(key: str) -> None:
    table, _, name = key.rpartition(".")
    section = "tool.verifier." + table if table else "tool.verifier"
    spelled = (f"{name} =", f"[[{name}]]", f"[{section}.{name}]", f"[[{section}.{name}]]")
    assert any(s in README for s in spelled), f"configuration key {key} is missing from README.md"


def _rule_tables() -> list[tuple[str, str, str]]:
    """(rule, severity, meaning) of every row of the README's rule tables, in order.

    The ledger's table has no severity column: its rules are all errors, as
    the text above it says. Code spans are read as their text.
    """
    section = README[README.index("## Findings (`rule`)"):]
    section = section[:section.index("\n## ", 1)]
    rows = []
    for table in re.findall(r"^\| rule \|.*?(?=^$)", section, re.MULTILINE | re.DOTALL):
        header, _, *body = table.strip().splitlines()
        columns = [c.strip() for c in header.strip("|").split("|")]
        for line in body:
            cells = dict(zip(columns, (c.strip().replace("`", "") for c in line.strip("|").split("|")),
                             strict=True))
            rows.append((cells["rule"], cells.get("severity", "error"), cells["meaning"]))
    assert "Ledger (`verify-ledger`)" in section
    return rows


def test_readme_lists_the_registry_in_order() -> None:
    assert [name for name, _, _ in _rule_tables()] == [r.name for r in REGISTRY]


@pytest.mark.parametrize("rule", REGISTRY, ids=lambda r: r.name)
def test_readme_states_each_rule_as_the_registry_does(rule) -> None:  # type: ignore[no-untyped-def]
    documented = {name: (severity, meaning) for name, severity, meaning in _rule_tables()}
    assert rule.name in documented, f"finding rule {rule.name} is missing from README.md"
    assert documented[rule.name] == (" / ".join(rule.severities), rule.meaning), rule.name


def test_per_row_rules_are_documented_in_order_of_precedence() -> None:
    section = README[README.index("Per row of a pair, the first class that fits"):]
    rows = section[:section.index("Per table and run")]
    first_table = re.findall(r"^\| `([a-z_]+)` \|", rows, re.MULTILINE)
    assert tuple(first_table) == rules_of("row")


def test_every_test_the_guarantees_name_exists() -> None:
    """Each line of "What is guaranteed" names its tests (``file.py::name``, or ``::name`` for the file
    named last); every one must exist, so that a guarantee never outlives its proof."""
    section = README.split("## What is guaranteed", 1)[1].split("\n## ", 1)[0]
    tests = Path(__file__).parent
    named = 0
    current = None
    for file, name in re.findall(r"`(test_\w+\.py)?::(test_\w+)`", section):
        current = file or current
        assert current is not None, name
        assert re.search(rf"^def {name}\(", (tests / current).read_text(), re.MULTILINE), f"{current}::{name}"
        named += 1
    assert named >= 30


def test_every_test_the_slow_list_names_exists() -> None:
    """tests/slow.txt is what make test leaves out locally: a name there that matches no test would
    silently leave its slow test in, and a typo would hide nothing; each must be a real function."""
    tests = Path(__file__).parent
    listed = [line.strip() for line in (tests / "slow.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert listed
    for nodeid in listed:
        path, name = nodeid.split("::")
        assert re.search(rf"^def {name}\(", (tests.parent / path).read_text(), re.MULTILINE), nodeid
