# One command sets up and runs the demo; one sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lode-installed
OUT ?= demo_out

.PHONY: venv sysdeps demo lint test test-all bench bench-readme clean

# Headless Chromium renders report.html in the report test (Debian package).
sysdeps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (Debian) for the report test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VENV)/bin/lode demo --out $(OUT)

# Guard rails, run before the tests and failing the run: ruff (rules and line length in
# pyproject.toml), mypy on engine/ and schemas/, and the layering rules (tests/house/layering.py).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy engine schemas
	$(PY) -m tests.house.layering

test: venv sysdeps lint
	$(PY) -m pytest -q -m "not slow" --durations=15

test-all: venv sysdeps lint
	$(PY) -m pytest -q --durations=25

bench: venv
	$(VENV)/bin/lode bench --out bench_out

# Quick benchmark run; rewrites the generated table in README.md
bench-readme: venv
	$(VENV)/bin/lode bench --quick --out bench_out --readme README.md

clean:
	rm -rf $(VENV) $(OUT) bench_out .pytest_cache .mypy_cache .ruff_cache
