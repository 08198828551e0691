#!/usr/bin/env bash
# What mutual TLS costs replicated writes: this checkout against the last commit before it
# (plain HTTP between hosts, the same write path), alternated in one sitting so that the
# machine's mood falls on both. Each side runs its own `replicated` bench with its own binary
# (DOPPEL_BIN); etcd runs in plain HTTP in both, so that its rate is the same yardstick.
#
#   benches/tls-ab.sh [PLAIN_COMMIT] [PAIRS]      (defaults: 48eb899, 2)
#
# REPLICATED_CLIENTS (default 1,256) is passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
plain=${1:-48eb899}
pairs=${2:-2}
root=$PWD
tree=$root/target/tls-ab/$plain
export CARGO_TARGET_DIR=$root/target
export REPLICATED_CLIENTS=${REPLICATED_CLIENTS:-1,256}
export REPLICATED_ETCD_TLS=0

[ -d "$tree" ] || git worktree add --detach "$tree" "$plain"
# The old tree gets its own target directory: cargo names a workspace's artifacts by their
# path inside the workspace, so two checkouts sharing one target would overwrite each other.
old_target=$root/target/tls-ab/target-$plain
echo "building both binaries (release)"
(cd "$tree" && CARGO_TARGET_DIR=$old_target cargo build --release -p doppel) &&
  cp "$old_target/release/doppel" target/tls-ab/doppel-plain
cargo build --release -p doppel && cp target/release/doppel target/tls-ab/doppel-tls

for pair in $(seq "$pairs"); do
  echo "== pair $pair: mutual TLS ($(git rev-parse --short HEAD))"
  DOPPEL_BIN=$root/target/tls-ab/doppel-tls cargo bench -p doppel --bench replicated
  echo "== pair $pair: plain HTTP ($plain)"
  (cd "$tree" && CARGO_TARGET_DIR=$old_target DOPPEL_BIN=$root/target/tls-ab/doppel-plain \
    cargo bench -p doppel --bench replicated)
done
