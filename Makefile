# The two set-up commands of the README. Each creates .venv and installs the
# project from its own files on first use (again when pyproject.toml changes):
# the demo needs the package only, the tests also its test extra.
VENV ?= .venv
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

.PHONY: demo test
demo: $(VENV)/.installed
	$(VENV)/bin/verify-cents --demo

test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest
