# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make up    — create .venv, install, start server + API + workers
#   make test  — create .venv, install, lint + type-check, run the tests and the quick bench
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps: `make up` installs the package alone; test, lint and bench add their extras.
STAMP  := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime

.PHONY: up test bench lint clean chromium screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench,lint]'
	touch $(STAMP) $(RUNTIME)

up: $(RUNTIME)
	$(BIN)/streamjobs up

# The browser tests drive Debian's Chromium (Playwright's own browser download does not
# work on these machines): installed with apt when missing, as on a fresh CI machine.
chromium:
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium (apt) for the dashboard's browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

test: lint chromium
	$(BIN)/python -m pytest -n 2 --dist loadgroup --cov --cov-report=term
	$(BIN)/python -m bench --quick

# Retake the dashboard screenshots the README shows (docs/img/*.png).
screenshots: $(STAMP) chromium
	STREAMJOBS_SCREENSHOTS=1 $(BIN)/python -m pytest tests/test_ui_browser.py -q -p no:randomly

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check engine handlers tests bench
	@# mypy does not follow the editable install's import hook: it reads the package
	@# `streamjobs` through a link to engine/ (mypy_path in pyproject.toml).
	@mkdir -p build/typecheck && ln -sfn ../../engine build/typecheck/streamjobs
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .streamjobs build *.egg-info
