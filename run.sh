#!/usr/bin/env bash
# The main job in one command: build doppel and the services we ship, start a host on the
# embedded store (./doppel-data), deploy the services, and keep serving until Ctrl-C.
# Extra arguments go to `doppel host` (e.g. ./run.sh --listen 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")"
data="${DOPPEL_DATA:-./doppel-data}"
# A development identity provider (a key made here; `doppel dev-issuer` mints tokens with it):
# the services verify callers' bearer tokens against it. In production, deploy them with your
# identity provider's JWKS, issuer and audience instead (README, "Callers").
issuer="${DOPPEL_DEV_ISSUER:-./doppel-dev-issuer}"
services=(permits registry appointments hello counter)

# rustup adds the targets rust-toolchain.toml lists only when it installs the toolchain itself.
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

echo "==> building doppel and the services (the first build takes several minutes)"
cargo build --release --locked -p doppel
packages=()
for s in "${services[@]}"; do packages+=(-p "$s"); done
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
  cargo build --release --locked --target wasm32-wasip2 "${packages[@]}"

bin=target/release/doppel
# The key everything the host stores is sealed under: made once, next to the data directory
# here for the demo; on a server it comes from a secret store (README, "Encryption at rest").
key="${DOPPEL_KEY_FILE:-$data.key}"
[ -f "$key" ] || "$bin" keygen --encryption "$key"
"$bin" host --data "$data" --key-file "$key" "$@" &
host=$!
trap 'kill -TERM "$host" 2>/dev/null; wait "$host"' INT TERM
# The host writes host.json once it accepts connections.
until [ -f "$data/host.json" ]; do
  kill -0 "$host" 2>/dev/null || { echo "the host did not start" >&2; exit 1; }
  sleep 0.1
done

[ -f "$issuer/jwks.json" ] || "$bin" dev-issuer init "$issuer" >/dev/null
trust=(--config "AUTH_ISSUER=http://localhost/dev-issuer" --config "AUTH_AUDIENCE=doppel-services"
       --config "AUTH_JWKS=$(cat "$issuer/jwks.json")")

echo "==> deploying ${services[*]}"
deployed="$("$bin" ls --json --data "$data")"
for s in "${services[@]}"; do
  wasm="target/wasm32-wasip2/release/$s.wasm"
  digest="sha256:$(sha256sum "$wasm" | cut -d' ' -f1)"
  if grep -q "$digest" <<<"$deployed"; then
    echo "$s is up to date"
  else
    "$bin" deploy "$wasm" --name "$s" --data "$data" --config greeting=Moin "${trust[@]}"
  fi
done
listen="$(sed -n 's/.*"listen": "\(.*\)".*/\1/p' "$data/host.json")"
cat <<TXT

==> doppel is serving on http://$listen — try:
  curl http://$listen/hello/
  ada=\$($bin dev-issuer token $issuer --sub ada)        # a citizen
  curl -X POST http://$listen/permits/applications -H "authorization: Bearer \$ada" \\
       -d '{"applicant":{"name":"Ada Lovelace","email":"ada@example.org"},"parcel":"Mitte 12/345","work_type":"extension","description":"Winter garden"}'
  curl http://$listen/permits/applications -H "authorization: Bearer \$ada"   # her own only
  worker=\$($bin dev-issuer token $issuer --sub wanda --role case-worker)
  curl -X POST http://$listen/permits/applications/P-000001/transitions -H "authorization: Bearer \$worker" -d '{"to":"in_review"}'
  $bin ls --data $data
Ctrl-C stops the host (requests in flight finish first).
TXT
wait "$host"
