#!/usr/bin/env bash
# Installs what the test suite drives for real, when it is missing: Debian's Chromium (for the
# page tests, through Playwright), PostgreSQL 15 (the tests start a throwaway cluster of their own),
# Debian's prometheus (for `promtool`, which checks deploy/prometheus's alert rules), libnss3-tools
# (`certutil`/`pk12util`, which the enrollment client's Linux key-store tests run for real), and the pinned npm
# oidc-provider under tests/oidc. Safe to run again; does nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-liberation)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v pk12util >/dev/null 2>&1 || missing+=(libnss3-tools)

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing ${missing[*]}; install them (as root: apt-get install -y ${missing[*]}) and run again" >&2
    exit 1
  fi
  echo "system-deps: installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >/dev/null
fi

if [ -f tests/oidc/package-lock.json ]; then
  if [ ! -d tests/oidc/node_modules ] || [ tests/oidc/package-lock.json -nt tests/oidc/node_modules ]; then
    npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
    touch tests/oidc/node_modules
  fi
fi
