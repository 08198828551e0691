#!/usr/bin/env bash
# Portability: the same hello and counter components that doppel runs also answer under
# `wasmtime serve` (the engine's own server) with its key-value and config support switched on.
# Needs benches/install-peers.sh (wasmtime-cli 48.0.8, ~13 min to build); not part of the test
# command for that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
wasmtime="benches/.tools/bin/wasmtime"
[ -x "$wasmtime" ] || { echo "run benches/install-peers.sh first" >&2; exit 2; }
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
  cargo build --release --locked --target wasm32-wasip2 -p hello -p counter -q
out=target/wasm32-wasip2/release
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
serve() { # component, port
  "$wasmtime" serve -S cli -S config -S config-var=greeting=Servus -S keyvalue --addr "127.0.0.1:$2" "$1" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$2/" && return 0; sleep 0.05; done
  echo "wasmtime serve did not start for $1" >&2; exit 1
}
fail=0
check() { # name, got, want
  if [ "$2" = "$3" ]; then echo "ok    $1: $2"; else echo "FAIL  $1: got '$2', want '$3'"; fail=1; fi
}
serve "$out/hello.wasm" "$port"
check "hello GET /" "$(curl -s "http://127.0.0.1:$port/")" "Servus, world!"
check "hello GET /Kiel" "$(curl -s "http://127.0.0.1:$port/Kiel")" "Servus, Kiel!"
check "hello POST / is 405" "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/")" "405"
port2=$((port + 1))
serve "$out/counter.wasm" "$port2"
# wasmtime serve gives every request a fresh in-memory key-value store, so a count never passes
# 1 there; what this shows is that the component links and its increment and get work.
check "counter POST /visits" "$(curl -s -X POST "http://127.0.0.1:$port2/visits")" '{"name":"visits","value":1}'
check "counter GET /visits" "$(curl -s "http://127.0.0.1:$port2/visits")" '{"name":"visits","value":0}'
exit $fail
