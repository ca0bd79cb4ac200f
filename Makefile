# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000

.PHONY: run test browser clean

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

## The shop on http://127.0.0.1:$(PORT), with the built-in Adyen simulator unless .env says otherwise.
run: $(BIN)/.installed
	PORT=$(PORT) $(BIN)/flask --app wsgi run --host 127.0.0.1 --port $(PORT) --with-threads

## Every test, the browser tests included.
test: $(BIN)/.installed browser
	$(BIN)/python -m pytest

## A Chromium for the browser tests: Debian's when installed, otherwise Playwright's own.
browser: $(BIN)/.installed
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || $(BIN)/python -m playwright install chromium

clean:
	rm -rf $(VENV) .pytest_cache
