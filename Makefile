# The two commands of the README: `make run` (the demo) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test install lint format test-python test-embedded test-redis test-js bench bench-quick clean

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

install: $(BIN)/.installed

clients/js/node_modules/.installed: clients/js/package-lock.json
	npm ci --prefix clients/js --no-audit --no-fund --loglevel=error
	touch $@

# The demo on http://127.0.0.1:$(PORT): SQLite and the embedded backend, nothing else to install.
# The only place DEBUG is on (tracebacks on error pages and in server_error messages): a local,
# development server. Everything else runs with the project's default, DEBUG off.
run: install
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py seed_demo
	DJANGO_DEBUG=1 $(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The Python suite runs twice, once per backend; PYTEST_ARGS adds options (e.g. PYTEST_ARGS="-x -k race").
PYTEST_ARGS ?=

# Embedded backend: SQLite and the in-process log, whatever the shell's REDIS_URL/DATABASE_URL.
test-embedded: install
	env -u REDIS_URL -u DATABASE_URL $(BIN)/pytest -m "not redis_only" $(PYTEST_ARGS)

# Redis backend: Redis + Postgres from REDIS_URL/DATABASE_URL, else private servers on free
# loopback ports (redis-server and Debian's postgresql, see harness/services.py).
test-redis: install
	$(BIN)/python -m harness.services run -- $(BIN)/pytest -m "not embedded_only" $(PYTEST_ARGS)

test-python: test-embedded test-redis

test-js: install clients/js/node_modules/.installed
	cd clients/js && npm test

# The two Python passes run at once (most of their time is spent waiting on servers, sockets and
# browsers): each one's output is printed whole when it ends; the JavaScript tests follow the first.
test: lint
	@echo "make test: the embedded and Redis passes run at once; each prints its output when it ends."
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-embedded test-redis test-js

# Every scenario against the baselines, in one run (about 25 minutes on 2 cores): BENCHMARKS.md,
# bench/results/<date>.json and the plots. bench-quick: tiny counts, under two minutes (CI), written
# under bench/results/quick/; both exit non-zero only when something is broken, never on a timing.
bench: install
	$(BIN)/python -m bench

bench-quick: install
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) clients/js/node_modules db.sqlite3 db.sqlite3-* .test-db.sqlite3*
