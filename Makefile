# `make run` and `make test` do all set-up themselves on a fresh Debian machine.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test lint bench bench-quick docs clean

setup:
	@scripts/setup.sh

run: setup
	@echo "ugate: shared port 127.0.0.1:15008 (every installed protocol), admin http://127.0.0.1:15000/metrics"
	$(VENV)/bin/ugate run

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check ugate_core plugins tests bench docs/examples
	$(VENV)/bin/mypy --strict ugate_core/ugate_core $(patsubst %/__init__.py,%,$(wildcard plugins/*/ugate_*/__init__.py))

# the relay table, then each protocol plugin's rows against its real peer (SSH: OpenSSH,
# HTTP: HAProxy, HBONE: Envoy); ~20 min on 2 CPUs
bench: setup
	$(PY) bench/run.py
	$(PY) plugins/ugate_ssh/bench_ssh.py
	$(PY) plugins/ugate_http/bench/bench_http.py
	$(PY) plugins/ugate_hbone/bench_hbone.py

bench-quick: setup
	$(PY) bench/run.py --quick

docs: setup
	$(PY) docs/gen_hooks.py > docs/hooks.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
