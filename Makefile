# Entry points for developers and CI. `make test` is what CI runs (see .ci/run).

VENV        := .venv
STAMP       := $(VENV)/.installed
DEMO_ARGS   ?=
PYTEST_ARGS ?=

# The first interpreter on PATH that really is Python >= 3.11 (pyenv shims may exist for
# versions that are not installed, so each candidate is run, not just looked up).
# Override with `make PYTHON=/path/to/python3.12 install`.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
	&& { echo "$$p"; break; }; done)

.PHONY: install demo test lint clean distclean

install: $(STAMP)

$(VENV)/bin/python:
	@if [ -z "$(PYTHON)" ]; then \
		echo "error: Python >= 3.11 not found on PATH (tried python3.13 python3.12 python3.11 python3); set PYTHON=..." >&2; \
		exit 1; \
	fi
	@"$(PYTHON)" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: $(PYTHON) is Python %d.%d; msec needs >= 3.11" % sys.version_info[:2])'
	"$(PYTHON)" -m venv $(VENV)

# Editable install: source edits need no reinstall, only dependency changes in pyproject.toml.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

demo: install
	$(VENV)/bin/msec demo $(DEMO_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench

test: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

# Build and tool caches; the virtual environment stays (see distclean).
clean:
	rm -rf build dist .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d \
		-prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
