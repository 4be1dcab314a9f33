# The two commands of the README:
#   make main   – set up .venv, execute every experiment notebook (the stored results of the mnist
#                 profile are loaded, not recomputed), build the book
#   make test   – set up .venv with the test tools, run the test suite
# and the others:
#   make reproduce – rerun every experiment the book shows into a scratch folder, compare, on Dask with
#                    WORKERS local workers (projected on a 2-core CPU: ~2 h with 2 workers; resumable)
#   make reproduce-quick – one run per figure, compared with the stored one (minutes)
#   make lab       – JupyterLab on the notebooks (MyST sources open as notebooks; charts draw offline)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= mnist
WORKERS ?= 2

.PHONY: main test book setup lab reproduce reproduce-quick clean-book

$(VENV)/.conelib-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev,lab]'
	touch $@

setup: $(VENV)/.conelib-installed

main: setup
	$(PY) -m conelib all --profile $(PROFILE)

book: setup
	$(PY) -m conelib book

test: setup
	$(PY) -m conelib fetch mnist
	$(PY) -m pytest -q

reproduce: setup
	$(PY) -m conelib fetch mnist
	$(PY) -m conelib reproduce --profile $(PROFILE) --workers $(WORKERS)

reproduce-quick: setup
	$(PY) -m conelib fetch mnist
	$(PY) -m conelib reproduce --profile $(PROFILE) --workers $(WORKERS) --quick

# JupyterLab with the notebooks' MyST sources opening as notebooks (jupytext) and no network needed
lab: setup
	$(PY) -m conelib lab

clean-book:
	rm -rf _build
