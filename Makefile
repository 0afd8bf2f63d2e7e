# One command sets up and runs the demo; one sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lode-installed
OUT ?= demo_out

.PHONY: venv bytecode sysdeps viewer demo lint test test-all ashlar bench docs clean

# Headless Chromium renders report.html in the report test (Debian package).
sysdeps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (Debian) for the report test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# uv installs the pinned lock (about 7 GB with torch's CUDA wheels) in parallel: ~30 s against ~175 s for pip.
# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on this workplace's machines),
# every process, each Ray worker included, would otherwise compile every module it imports, each time.
UV_VERSION := 0.13.8
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# The project's own modules, compiled once per change rather than in every process that imports them.
bytecode: venv
	@$(PY) -m compileall -q -j 2 engine jobs schemas benchmarks tests

# The `lode view` page: npm packages from the lockfile, bundled by esbuild into engine/view/web/dist/.
VIEWER := engine/view/web
$(VIEWER)/node_modules/.package-lock.json: $(VIEWER)/package-lock.json $(VIEWER)/package.json
	cd $(VIEWER) && npm ci --no-audit --no-fund --loglevel=error

$(VIEWER)/dist/viewer.js: $(VIEWER)/node_modules/.package-lock.json $(VIEWER)/src/main.js
	cd $(VIEWER) && npm run --silent build

viewer: $(VIEWER)/dist/viewer.js

demo: venv bytecode viewer
	$(VENV)/bin/lode demo --out $(OUT)

# Guard rails, run before the tests and failing the run: ruff (rules and line length in
# pyproject.toml), mypy on engine/ and schemas/, and the layering rules (tests/house/layering.py).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/mypy engine schemas
	$(PY) -m tests.house.layering

PYTEST := $(PY) -m pytest -q

test: venv bytecode sysdeps viewer lint
	$(PYTEST) -m "not slow" --durations=15

test-all: venv bytecode sysdeps viewer lint
	$(PYTEST) --durations=25

# ASHLAR, the peer of benchmarks.stitch_real, in a venv of its own (its pins differ from Lode's).
ASHLAR_STAMP := .venv-ashlar/.installed
$(ASHLAR_STAMP): requirements-ashlar.lock
	test -x .venv-ashlar/bin/python || $(PYTHON) -m venv .venv-ashlar
	.venv-ashlar/bin/python -m pip install -q -r requirements-ashlar.lock
	touch $(ASHLAR_STAMP)

ashlar: $(ASHLAR_STAMP)

bench: venv ashlar
	$(VENV)/bin/lode bench --out bench_out

# The documentation site (mkdocs-material), built offline into site/; fails on any warning.
DOCS_STAMP := $(VENV)/.lode-docs-installed
$(DOCS_STAMP): requirements-docs.lock requirements.lock | $(STAMP)
	$(VENV)/bin/uv pip install -q --python $(PY) -r requirements-docs.lock -c requirements.lock
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	@echo "site/index.html"

clean:
	rm -rf $(VENV) .venv-ashlar $(OUT) bench_out site .pytest_cache .mypy_cache .ruff_cache $(VIEWER)/node_modules $(VIEWER)/dist
