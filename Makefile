# reverbpy: two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8080
CONSOLE_VENDOR := reverbpy/console/static/vendor/.installed

.PHONY: run serve test test-oldest check install lock node-deps browser-deps bench fuzz soak clean

# uv installs the development environment from uv.lock, exactly; nothing resolves "latest" on the
# way. uv itself is pinned too, in a small bootstrap venv, so a fresh machine needs only python3.
UV_VERSION := 0.13.8
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# The package in editable mode with every extra, plus the `dev` group (tests, linters, types).
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --all-extras --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

# Real pusher-js and laravel-echo from npm, used by the compatibility tests.
tests/js/node_modules/.installed: tests/js/package.json
	cd tests/js && npm install --no-audit --no-fund --loglevel=error
	touch $@

node-deps: tests/js/node_modules/.installed

# Headless Chromium from Debian for the browser tests (Playwright drives the system build).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: sudo apt-get install chromium" >&2; exit 1; fi; }

# reverbpy alone, started as `make run` starts it: the booking demo's app id/key/secret unless the
# environment or ./.env sets REVERB_APP_*, so a `make run` dashboard reconnects to it.
serve: install $(CONSOLE_VENDOR)
	$(PY) -m examples.booking_app.reverb --port $(PORT)

run: install examples/booking_app/static/vendor/.installed $(CONSOLE_VENDOR)
	$(PY) -m examples.booking_app.run

examples/booking_app/static/vendor/.installed: examples/booking_app/package.json
	cd examples/booking_app && npm install --no-audit --no-fund --loglevel=error && node vendor.mjs
	touch $@

# The operator console's browser libraries (uPlot, pusher-js), served by reverbpy itself from
# reverbpy/console/static/vendor (docs/console.md); a wheel built after this target carries them.
$(CONSOLE_VENDOR): reverbpy/console/package.json reverbpy/console/vendor.mjs
	cd reverbpy/console && npm ci --no-audit --no-fund --loglevel=error && node vendor.mjs
	touch $@

check: install
	$(VENV)/bin/ruff check reverbpy tests
	$(VENV)/bin/ruff format --check reverbpy
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile

test: install node-deps browser-deps examples/booking_app/static/vendor/.installed $(CONSOLE_VENDOR) check
	$(PY) -m pytest -q

# Benchmarks against soketi 1.6.1 (bench/RESULTS.md). BENCH_ARGS="--quick" for a short run.
# Needs gcc and libssl-dev (the C load generator), Node/npm (soketi) and matplotlib (the chart).
bench: install
	@command -v gcc >/dev/null && [ -f /usr/include/openssl/hmac.h ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libssl-dev >/dev/null; \
	  else echo "need gcc and libssl-dev: sudo apt-get install gcc libssl-dev" >&2; exit 1; fi; }
	$(UV) sync --locked --all-extras --group bench --python $(PYTHON)
	$(PY) -m bench.run $(BENCH_ARGS)

# The long fuzzing campaign (docs/reliability.md): 1 M cases per target, the seed printed;
# SEED=n to replay one, FUZZ_ARGS="--target http1 --cases 100000" to narrow it. ~10 min here.
# A failing input is saved under tests/fuzz/corpus/<target>/ and replayed by `make test`.
fuzz: install
	$(UV) sync --locked --all-extras --group fuzz --python $(PYTHON)
	$(PY) -m tests.fuzz.campaign $(if $(SEED),--seed $(SEED)) $(FUZZ_ARGS)

# Soak, slow clients, floods and faults at full size (docs/reliability.md), ~3 min here; the
# short versions run in `make test`. Figures in build/soak.json. Starts its own Redis.
soak: install
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "need redis-server: sudo apt-get install redis-server" >&2; exit 1; fi; }
	$(PY) -m tests.soak --out build/soak.json $(SOAK_ARGS)

# Refresh every pin in uv.lock on purpose (then run `make test` and commit the lock).
lock: | $(UV)
	$(UV) lock --upgrade --python $(PYTHON)
	rm -f $(VENV)/.installed

# The lowest runtime versions pyproject.toml declares (aiohttp, orjson, pydantic-settings, redis,
# prometheus-client, uvloop), with the test tools from the lock, in a venv of their own.
OLDEST := .venv-oldest
test-oldest: node-deps browser-deps examples/booking_app/static/vendor/.installed $(CONSOLE_VENDOR) | $(UV)
	bash scripts/test-oldest.sh $(UV) $(PYTHON) $(OLDEST)

clean:
	rm -rf $(VENV) $(OLDEST) .tools tests/js/node_modules examples/booking_app/node_modules \
	  reverbpy/console/node_modules reverbpy/console/static/vendor
