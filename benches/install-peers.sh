#!/usr/bin/env bash
# Installs the peers the benchmarks compare against, into benches/.tools (not the test command:
# building wasmtime-cli takes about 13 minutes on 2 cores).
#   wasmtime serve  — the engine's own HTTP server, same wasmtime version as ours
#   wrk             — the load generator (Debian package)
#   etcd            — a 3-member cluster for the replicated-writes bench (Debian's etcd-server)
#   etcdctl         — snapshot save and restore for the restore bench (Debian's etcd-client)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="$here/.tools"
mkdir -p "$tools"
if [ ! -x "$tools/bin/wasmtime" ]; then
  echo "building wasmtime-cli 48.0.8 (about 13 minutes on 2 cores)…"
  cargo install wasmtime-cli@48.0.8 --locked --root "$tools"
fi
if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk
fi
# etcd, the peer of the replicated-writes bench (3 members on loopback, started by the bench).
if ! command -v etcd >/dev/null; then
  apt-get update -qq && apt-get install -y -qq etcd-server
fi
# etcdctl, for the restore bench's snapshot save and restore.
if ! command -v etcdctl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq etcd-client
fi
"$tools/bin/wasmtime" --version
wrk --version 2>&1 | head -1 || true
etcd --version | head -1
