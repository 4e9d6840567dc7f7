#!/usr/bin/env bash
# Installs what `make bench` drives, when it is missing: wrk (the load generator), nginx (two of the
# compared targets; Debian's build has the auth_request module) and taskset (util-linux, to pin the
# load generator and the servers to different cores). Safe to run again; silent when all is there.
set -euo pipefail

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing+=(nginx)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench-deps: missing ${missing[*]}; install them (as root: apt-get install -y ${missing[*]}) and run \`make bench\` again" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "bench-deps: missing ${missing[*]} and no apt-get here; install them with your package manager and run \`make bench\` again" >&2
    exit 1
  fi
  echo "bench-deps: installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  # Where services may start, Debian's nginx package also starts a system nginx; the bench never uses it.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
if ! "$nginx_bin" -V 2>&1 | grep -q -- --with-http_auth_request_module; then
  echo "bench-deps: $nginx_bin lacks the auth_request module; install Debian's nginx (apt-get install -y nginx)" >&2
  exit 1
fi
