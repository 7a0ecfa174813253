# `make run` and `make test` do all set-up themselves on a fresh Debian machine.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test dists lint bench bench-quick soak soak-quick docs clean

setup:
	@scripts/setup.sh

run: setup
	@echo "ugate: shared port 127.0.0.1:15008 (every installed protocol), admin http://127.0.0.1:15000/metrics"
	$(VENV)/bin/ugate run

# UGATE_INSTALL=wheels make test (what CI runs): the distributions as users get them — setup
# builds the wheels and installs them instead of the editable checkout; scripts/dists.py checks
# what each wheel and sdist holds, installs each alone into a fresh virtualenv and runs `ugate`
# from the installed set; then the whole suite runs against the installed wheels, from outside
# the checkout so it cannot shadow them (ugate_core.testing refuses to start if it would).
test: setup
ifeq ($(UGATE_INSTALL),wheels)
	$(PY) scripts/dists.py check alone smoke pythons
	cd "$$(mktemp -d)" && UGATE_EXPECT_INSTALLED=1 $(CURDIR)/$(PY) -m pytest \
	  -c $(CURDIR)/pyproject.toml --rootdir $(CURDIR) $(PYTEST_ARGS) \
	  $(CURDIR)/ugate_core/tests $(CURDIR)/plugins $(CURDIR)/tests
else
	$(PY) -m pytest $(PYTEST_ARGS)
endif

# build, check and smoke-test the wheels and sdists without touching .venv's install
dists: setup
	$(PY) scripts/dists.py all

lint: setup
	$(VENV)/bin/ruff check ugate_core plugins tests bench docs/examples scripts
	$(VENV)/bin/mypy --strict ugate_core/ugate_core $(patsubst %/__init__.py,%,$(wildcard plugins/*/ugate_*/__init__.py)) scripts/dists.py

# the relay table, then each protocol plugin's rows against its real peer (SSH: OpenSSH,
# HTTP: HAProxy, HBONE: Envoy, MQTT: mosquitto direct and HAProxy); ~20 min on 2 CPUs
bench: setup
	$(PY) bench/run.py
	$(PY) plugins/ugate_ssh/bench_ssh.py
	$(PY) plugins/ugate_http/bench/bench_http.py
	$(PY) plugins/ugate_hbone/bench_hbone.py
	$(PY) plugins/ugate_mqtt/bench_mqtt.py
	$(PY) plugins/ugate_ws/bench_ws.py
	$(PY) plugins/ugate_quic/bench_quic.py
	$(PY) plugins/ugate_webtransport/bench_webtransport.py
	$(PY) plugins/ugate_webrtc/bench_webrtc.py

bench-quick: setup
	$(PY) bench/run.py --quick

# 30 minutes of mixed SOCKS5 / HTTP / h2c / hbonec / SSH traffic through one gateway, with
# floods and upstream kills, RSS and fds sampled every minute (loopback only, modest rates;
# not in CI's budget): docs/soak.md. SOAK_ARGS="--minutes 5 --json out.json"
SOAK_ARGS ?=
soak: setup
	$(PY) bench/soak.py $(SOAK_ARGS)

soak-quick: setup
	$(PY) bench/soak.py --quick $(SOAK_ARGS)

docs: setup
	$(PY) docs/gen_hooks.py > docs/hooks.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
