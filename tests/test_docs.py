"""Docs that cannot drift: every command and option is in the README.

A new option without a line in the README fails here, as does a README
that still documents an option the commands no longer have.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from verifier import cli

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


def test_every_command_and_option_is_documented() -> None:
    for name, command in _commands().items():
        assert name in README, f"command {name} is missing from README.md"
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help":
                    assert opt in README, f"{name} {opt} is missing from README.md"


def test_readme_documents_no_option_that_does_not_exist() -> None:
    known = {opt for c in _commands().values() for p in c.params for opt in getattr(p, "opts", [])}
    table_options = set(re.findall(r"^\| `(--[a-z-]+)", README, re.MULTILINE))
    assert table_options and table_options <= known


def test_setup_is_two_commands_and_ci_runs_the_readme_test_command() -> None:
    assert "make demo" in README and "make test" in README
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-2].strip() == "make test"


def test_every_finding_rule_is_documented() -> None:
    from verifier.findings import RULES

    for rule in RULES:
        assert f"| `{rule}` |" in README, f"finding rule {rule} is missing from README.md"
