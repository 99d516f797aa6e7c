"""Where the project's own files are, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_migrations_dir() -> Path:
    """The project's own migrations: inside the wheel, or the checkout's migrations/."""
    for candidate in (PACKAGE_DIR / "_migrations", PACKAGE_DIR.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise AssertionError("the project's migrations are missing from the installation")


def base_schema_file() -> Path:
    """The migration that creates the money tables before the cents conversion."""
    return project_migrations_dir() / "001_base_money_schema.sql"


def project_expectations_dir() -> Path:
    """The built-in Great Expectations suites: inside the wheel, or the checkout's expectations/."""
    for candidate in (PACKAGE_DIR / "_expectations", PACKAGE_DIR.parent / "expectations"):
        if candidate.is_dir():
            return candidate
    raise AssertionError("the project's expectation suites are missing from the installation")
