# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run check test test-fast bench bench-policy system-deps clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	@touch $(STAMP)

install: $(STAMP)

## The demo: Gatehouse on 127.0.0.1:8080, metrics on 127.0.0.1:9090, a demo upstream, a demo Fleet stand-in on 127.0.0.1:8082, store in ./var/
run: install
	$(PY) -m gateway demo run --var var

## System packages the tests drive for real (Chromium, PostgreSQL, Node's oidc-provider); installs what is missing
system-deps:
	bash scripts/system-deps.sh

## ruff (defects: E, W, F, B, PLE) and mypy --strict on gateway/, policy_engine/ and breakglass/; levels in pyproject.toml
check: install
	$(PY) -m ruff check .
	$(PY) -m mypy

## The checks, then the whole suite, on real sockets, a real PostgreSQL, a real browser and a real OpenID provider
test: check system-deps
	$(PY) -m pytest

## The checks, then only the fast, pure tests (no browser, PostgreSQL or OpenID provider)
test-fast: check
	$(PY) -m pytest -m "not browser and not postgres and not oidc"

bench-policy: install
	$(PY) -m pip install -q -e '.[bench]' --config-settings editable_mode=compat
	$(PY) bench/bench_policy.py

bench: install
	bash scripts/bench-deps.sh
	$(PY) bench/bench_proxy.py $(if $(BASELINE),--baseline $(BASELINE))

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache tests/oidc/node_modules artifacts
