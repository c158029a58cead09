# satrouter: every target creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit browser postgres js cashu proto bench-pg-driver bench-pg-store bench-notes bench-upstream bench-pipeline bench-privacy bench-scale bench-mcp bench-cashu eval-routing eval-privacy serve emulator clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "satrouter needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP) cashu
	$(BIN)/satrouter demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check service billing tests benchmarks
	$(BIN)/ruff format --check service billing tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) browser postgres js cashu
	$(BIN)/pytest $(PYTEST_ARGS)

# The PyPI cashu package (nutshell: a Cashu mint for the tests, and the operator's ecash wallet)
# in its own virtualenv: its pins conflict with satrouter's (tests/cashu-requirements.txt).
CASHU_VENV  := .venv-cashu
CASHU_STAMP := $(CASHU_VENV)/.installed

cashu: $(CASHU_STAMP)

$(CASHU_STAMP): tests/cashu-requirements.txt
	test -x $(CASHU_VENV)/bin/python || $(PYTHON) -m venv $(CASHU_VENV)
	$(CASHU_VENV)/bin/python -m pip install --quiet -r tests/cashu-requirements.txt
	$(CASHU_VENV)/bin/python -m pip install --quiet --no-deps cashu==0.21.0
	touch $@

# The dashboard test drives Debian's chromium (a test tool's own browser download cannot work
# offline). Installed here when missing; that needs root, as on CI.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "the dashboard test needs Debian's chromium: sudo apt-get install chromium"; exit 1; fi; }

# The PostgreSQL tests start a throwaway cluster of their own (tests/postgres.py) with Debian's
# server binaries, which live in /usr/lib/postgresql/<version>/bin, off PATH. Installed here
# when missing (as root); the cluster Debian's package creates and starts is not used.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else echo "the PostgreSQL tests need Debian's postgresql: sudo apt-get install postgresql"; exit 1; fi; }

# Alby's lightning-tools and mppx run in the L402, MPP and x402 client tests on Debian's
# Node.js, with the npm packages pinned by tests/js/package-lock.json (and tests/js/.npmrc). Node is installed here when missing (as root).
JS_STAMP := tests/js/node_modules/.package-lock.json

js: $(JS_STAMP)

$(JS_STAMP): tests/js/package.json tests/js/package-lock.json tests/js/.npmrc
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; \
	  else echo "the L402 client tests need Node.js: sudo apt-get install nodejs npm"; exit 1; fi; }
	cd tests/js && npm ci --no-audit --no-fund
	touch $@

proto: $(STAMP)
	$(BIN)/python -m billing.lightning.protogen

bench-upstream: $(STAMP)
	$(BIN)/python -m benchmarks.upstream --write docs/benchmarks.md

serve: $(STAMP)
	$(BIN)/satrouter serve

emulator: $(STAMP)
	$(BIN)/satrouter emulator

clean:
	rm -rf $(VENV) .venv-lnbits .venv-cashu .mypy_cache .ruff_cache .pytest_cache tests/js/node_modules

bench-pipeline: $(STAMP)
	$(BIN)/python -m benchmarks.pipeline --write docs/benchmarks.md

eval-routing: $(STAMP)
	$(BIN)/python -m benchmarks.routing --write docs/routing.md

eval-privacy: $(STAMP)
	$(BIN)/python -m benchmarks.privacy --write docs/routing.md

bench-pg-driver: $(STAMP) postgres
	$(BIN)/python -m benchmarks.pg_driver --write docs/dependencies.md

bench-pg-store: $(STAMP) postgres
	$(BIN)/python -m benchmarks.pg_store --write docs/benchmarks.md

bench-notes: $(STAMP) postgres
	$(BIN)/python -m benchmarks.notes --write docs/benchmarks.md

# Needs PostgreSQL's server binaries (a throwaway cluster, as for the tests): `make postgres`.
bench-scale: $(STAMP) postgres
	$(BIN)/python -m benchmarks.scale --write docs/benchmarks.md

bench-privacy: $(STAMP)
	$(BIN)/python -m benchmarks.privacy_scan --write docs/benchmarks.md

bench-mcp: $(STAMP)
	$(BIN)/python -m benchmarks.mcp --write docs/benchmarks.md

bench-cashu: $(STAMP) cashu
	$(BIN)/python -m benchmarks.cashu --write docs/benchmarks.md
