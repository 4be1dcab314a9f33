# The two commands of the README:
#   make main   – set up .venv, run every experiment notebook with the quick profile (CPU), build the book
#   make test   – set up .venv with the test tools, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick

.PHONY: main test book setup clean-book

$(VENV)/.conelib-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $@

setup: $(VENV)/.conelib-installed

main: setup
	$(PY) -m conelib all --profile $(PROFILE)

book: setup
	$(PY) -m conelib book

test: setup
	$(PY) -m pytest -q

clean-book:
	rm -rf _build
