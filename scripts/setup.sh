#!/usr/bin/env bash
# Set up everything `make run` / `make test` need on a fresh Debian machine:
# the real peers from apt (only when missing, and only as root), then .venv with core,
# every plugin under plugins/ (editable) and the dev tools.
# UGATE_INSTALL=wheels (CI: `UGATE_INSTALL=wheels make test`): then core and the plugins are
# replaced by their wheels, built from a clean copy (scripts/dists.py build) and installed as
# users install them, not editable; a later run without it goes back to editable.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(curl socat haproxy openssh-client openssh-server nghttp2-client nghttp2-server iperf3 openssl
              knot unbound bind9-dnsutils mosquitto mosquitto-clients iproute2 wrk gcc procps
              chromium ngtcp2-client firefox-esr)

want=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || want+=("$p")
done
if ((${#want[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${want[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${want[@]}" >/dev/null
  else
    echo "setup: missing apt packages (tests that need them will skip): ${want[*]}" >&2
  fi
fi

# Node test peers (tests/js: playwright-core driving Debian's chromium, ws, mqtt.js,
# node-datachannel), from the npm registry by the lock file; again when the lock changes
if command -v npm >/dev/null; then
  lockhash=$(sha256sum tests/js/package-lock.json | cut -c1-16)
  if [ ! -d tests/js/node_modules ] || [ "$(cat tests/js/node_modules/.ugate-lock 2>/dev/null)" != "$lockhash" ]; then
    echo "setup: npm ci in tests/js (log: tests/js/npm.log)"
    (cd tests/js && npm ci --no-audit --no-fund > npm.log 2>&1) || { tail -20 tests/js/npm.log >&2; exit 1; }
    echo "$lockhash" > tests/js/node_modules/.ugate-lock
  fi
else
  echo "setup: no npm: the browser and Node peer tests will skip (apt-get install nodejs npm)" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.ugate-setup
inputs=$(cat requirements-dev.txt ugate_core/pyproject.toml plugins/*/pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$inputs" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1
  # compat mode: a plain path entry, so the ugate_core/ distribution folder in the repo root
  # cannot shadow the package as an empty namespace package under `python -m pytest`
  args=(--config-settings editable_mode=compat -e "./ugate_core[fast]")
  for d in plugins/*/; do
    [ -f "$d/pyproject.toml" ] && args+=(-e "$d")
  done
  echo "setup: pip install core, plugins and dev tools into .venv (log: .venv/setup.log)"
  if ! .venv/bin/pip install -r requirements-dev.txt "${args[@]}" > .venv/setup.log 2>&1; then
    tail -40 .venv/setup.log >&2
    exit 1
  fi
  echo "$inputs" > "$stamp"
  rm -f .venv/.ugate-install
fi
mode=${UGATE_INSTALL:-editable}
current=$(cat .venv/.ugate-install 2>/dev/null || echo editable)
if [ "$mode" = wheels ]; then
  # every time: the sources may have changed since the last build
  echo "setup: build the wheels (dist/) and install them into .venv, not editable"
  .venv/bin/python scripts/dists.py build > .venv/dists.log 2>&1 || { tail -40 .venv/dists.log >&2; exit 1; }
  .venv/bin/pip install -q --no-deps --force-reinstall dist/ugate_*.whl >> .venv/setup.log 2>&1
  echo wheels > .venv/.ugate-install
elif [ "$mode" = editable ]; then
  if [ "$current" != editable ]; then
    echo "setup: back to editable installs of core and the plugins"
    args=(--config-settings editable_mode=compat -e ./ugate_core)
    for d in plugins/*/; do
      [ -f "$d/pyproject.toml" ] && args+=(-e "$d")
    done
    .venv/bin/pip install -q --no-deps "${args[@]}" >> .venv/setup.log 2>&1
    echo editable > .venv/.ugate-install
  fi
else
  echo "setup: UGATE_INSTALL=$mode: expected editable or wheels" >&2
  exit 1
fi
