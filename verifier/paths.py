"""Where the project's own files are, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    """A top-level folder of the project: inside the wheel as ``_<name>``, or in the checkout."""
    for candidate in (PACKAGE_DIR / f"_{name}", PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise AssertionError(f"the project's {name}/ is missing from the installation")


def project_migrations_dir() -> Path:
    """The project's own migrations: inside the wheel, or the checkout's migrations/."""
    return _shipped("migrations")


def base_schema_file() -> Path:
    """The migration that creates the money tables before the cents conversion."""
    return project_migrations_dir() / "001_base_money_schema.sql"


def project_expectations_dir() -> Path:
    """The built-in Great Expectations suites: inside the wheel, or the checkout's expectations/."""
    return _shipped("expectations")
