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

.PHONY: demo test test-all example-report
# The demo's data has defects planted on purpose: finding them is exit 1, the
# expected outcome, so make succeeds then; exit 0 or 2 would mean it did not.
demo: $(VENV)/.installed
	$(VENV)/bin/verify-cents --demo; code=$$?; \
	if [ $$code -eq 1 ]; then echo "demo: the planted defects were found (exit 1), as expected"; \
	else echo "demo: unexpected exit $$code" >&2; exit 1; fi

# The README's test command: the whole suite in CI (CI=true), else the tests not marked slow
# (tests/slow.txt: measured over 2.5 s each), a few minutes. test-all: everything, locally.
test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest $(if $(filter true,$(CI)),,-m "not slow")

test-all: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest

# docs/example-report: both demos' reports as this version writes them (the snapshot dump and the
# ledger state left out), and their index. Exit 1 of each demo is its planted defects, found.
example-report: $(VENV)/.installed
	rm -rf docs/example-report
	$(VENV)/bin/verify-cents --demo --quiet --report-dir docs/example-report; test $$? -eq 1
	$(VENV)/bin/verify-ledger --demo --quiet --report-dir docs/example-report; test $$? -eq 1
	find docs/example-report \( -name '*.dump' -o -name 'ledger.state*' -o -name '*.lock' \) -delete
	cd docs && ../$(VENV)/bin/python -c "from pathlib import Path; from verifier.report.index import \
	render_index; Path('example-report/index.html').write_text(render_index(Path('example-report')))"
