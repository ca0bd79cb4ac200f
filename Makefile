# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000

.PHONY: run test lint browser translations clean migration db-upgrade bench screenshots

# The compiled translations (.mo), built from the committed .po files; never committed.
MO_FILES := $(patsubst %.po,%.mo,$(wildcard shop/translations/*/LC_MESSAGES/messages.po))

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

## The shop on http://127.0.0.1:$(PORT), with the built-in Adyen simulator unless .env says otherwise.
run: $(BIN)/.installed $(MO_FILES) db-upgrade
	PORT=$(PORT) $(BIN)/flask --app wsgi run --host 127.0.0.1 --port $(PORT) --with-threads

## Every test, the browser tests included, on two pytest-xdist workers (pytest.ini; `-n 0` for one process).
## On SQLite; then, when TEST_DATABASE_URL names a PostgreSQL database, all again on PostgreSQL
## (each test gets a database of its own there, built from the migrations).
test: $(BIN)/.installed browser $(MO_FILES)
	env -u TEST_DATABASE_URL $(BIN)/python -m pytest
	@if [ -n "$$TEST_DATABASE_URL" ]; then echo "== The same tests on PostgreSQL (TEST_DATABASE_URL)"; \
		$(BIN)/python -m pytest; fi

## Lint, format check and the architecture's import contracts (all in pyproject.toml);
## `.venv/bin/ruff format .` fixes the formatting. .ci/run and the pre-commit hooks run the same.
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

## Create or update the tables (DATABASE_URL, default instance/shop.sqlite3) to the newest migration.
db-upgrade: $(BIN)/.installed
	$(BIN)/flask --app wsgi init-db

## After changing the models: make migration m="what changed" writes migrations/versions/…_what_changed.py,
## generated against a scratch SQLite database brought to the newest migration. Read it, then commit it.
## The simulator's tables have migrations of their own: make migration m="…" directory=shop/simulator/migrations.
MIGRATION_DB := $(CURDIR)/instance/migration-scratch.sqlite3
migration: $(BIN)/.installed
	@test -n "$(m)" || { echo 'usage: make migration m="what changed"' >&2; exit 2; }
	@mkdir -p instance && rm -f $(MIGRATION_DB) $(MIGRATION_DB)-wal $(MIGRATION_DB)-shm
	ADYEN_ENVIRONMENT=simulator DATABASE_URL=sqlite:///$(MIGRATION_DB) $(BIN)/flask --app wsgi init-db
	ADYEN_ENVIRONMENT=simulator DATABASE_URL=sqlite:///$(MIGRATION_DB) $(BIN)/flask --app wsgi db migrate \
		-d $(or $(directory),migrations) -m "$(m)"
	@rm -f $(MIGRATION_DB) $(MIGRATION_DB)-wal $(MIGRATION_DB)-shm

## Load figures against a bare endpoint and a durable floor on the same gunicorn (bench/README.md); about 10 minutes.
## BENCH_DATABASE_URL=postgresql+psycopg://… benches on PostgreSQL instead of a SQLite file.
bench: $(BIN)/.installed $(MO_FILES)
	@command -v wrk >/dev/null 2>&1 || { echo "Installing wrk (Debian package)"; \
		apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; } \
		|| { echo "make bench needs wrk: apt-get install wrk (or your system's package)" >&2; exit 1; }; }
	$(BIN)/python bench/run.py

## PNGs of the main pages (cart, checkout, KNET page, each result, timeline, console, Arabic) in docs/screenshots/.
screenshots: $(BIN)/.installed browser $(MO_FILES)
	$(BIN)/python scripts/screenshots.py

## A Chromium for the browser tests: Debian's when installed, otherwise Playwright's own.
browser: $(BIN)/.installed
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || $(BIN)/python -m playwright install chromium

%.mo: %.po $(BIN)/.installed
	$(BIN)/pybabel compile --statistics -i $< -o $@

## After changing a shopper-facing string: extract them all again (babel.cfg), merge them into each
## language's .po (then translate the new ones: tests/test_i18n.py fails until each has a translation),
## and compile.
translations: $(BIN)/.installed
	$(BIN)/pybabel -q extract -F babel.cfg -k _l -k lazy_gettext --add-comments=Translators: \
		--add-location=file --project="KNET Demo Shop" -o shop/translations/messages.pot .
	$(BIN)/pybabel -q update --ignore-obsolete -i shop/translations/messages.pot -d shop/translations
	$(BIN)/pybabel compile --statistics -d shop/translations

clean:
	rm -rf $(VENV) .pytest_cache
	rm -f $(MO_FILES)
