#!/usr/bin/env bash
# Installs the servers the integration tests start themselves:
#   s3s-fs     — an S3-compatible object store serving a directory (the backup tests' S3 target),
#                into tests/.tools. 0.14.1 is the newest that builds with our rustc; about
#                5 minutes on 2 cores.
#   prometheus — Debian's package (the metrics test scrapes a host with it).
#   chromium   — Debian's package (the console test loads the web console in it, headless).
#
#   tests/install-servers.sh            installs every one
#   tests/install-servers.sh s3         installs s3s-fs if missing; prints its path
#   tests/install-servers.sh prometheus installs Prometheus if missing; prints its path
#   tests/install-servers.sh chromium   installs Chromium if missing; prints its path
# The tests run this script themselves when a server is missing; CI runs it first, so that its
# time shows as its own step.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="$here/.tools"
want=${1:-all}

install_s3() {
  mkdir -p "$tools"
  if [ ! -x "$tools/bin/s3s-fs" ]; then
    echo "building s3s-fs 0.14.1 (an S3-compatible server; about 5 minutes on 2 cores)…" >&2
    cargo install s3s-fs@0.14.1 --features binary --locked --root "$tools" >&2
  fi
  echo "$tools/bin/s3s-fs"
}

install_prometheus() {
  if ! type -P prometheus >/dev/null; then
    echo "installing Debian's prometheus package…" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >&2
    # The package starts its own service where systemd runs; the tests start their own server.
    { systemctl stop prometheus 2>/dev/null || true; } >&2
  fi
  type -P prometheus
}

install_chromium() {
  if ! type -P chromium >/dev/null; then
    echo "installing Debian's chromium package…" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >&2
  fi
  type -P chromium
}

case "$want" in
  s3) install_s3 ;;
  prometheus) install_prometheus ;;
  chromium) install_chromium ;;
  all) install_s3 >/dev/null && install_prometheus >/dev/null && install_chromium >/dev/null ;;
  *) echo "unknown server $want (s3, prometheus, chromium)" >&2; exit 2 ;;
esac
