#!/usr/bin/env bash
# Runs each fuzz target (libFuzzer, through cargo fuzz) for SECONDS and reports per target the
# executions, the wall and CPU time spent and the crashes found. Installs what it needs: the
# pinned nightly toolchain (cargo fuzz instruments with nightly-only flags) and cargo-fuzz.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      default: 60 s for every target
#   DOPPEL_FUZZ_DEV=1 fuzz/run.sh 10       unoptimised build (CI's smoke run: builds in less
#                                          than half the time, fuzzes several times slower)
#
# A target's corpus grows in fuzz/corpus/TARGET (not committed); it starts from what
# fuzz/regressions/TARGET holds. A crash leaves its input in fuzz/artifacts/TARGET/; once fixed,
# the input goes to fuzz/regressions/TARGET/, which `cargo test --workspace` replays.
# Exit status: 0 if no target crashed.
set -euo pipefail
cd "$(dirname "$0")"

# The nightly whose rustc the targets were last built and run with (1.97.0-nightly, 2026-05-19).
NIGHTLY=${DOPPEL_FUZZ_NIGHTLY:-nightly-2026-05-20}
CARGO_FUZZ_VERSION=0.13.2
ALL=(component_upload admin_bodies keyvalue_calls peer_messages log_file)

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")

rustup toolchain list | grep -q "^$NIGHTLY" ||
  rustup toolchain install "$NIGHTLY" --profile minimal
tools=$PWD/.tools
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$tools"
fi
export PATH=$tools/bin:$PATH
# Its own target directory, whatever the caller's: the instrumented build must not replace the
# ordinary one's artifacts.
export CARGO_TARGET_DIR=$PWD/target

profile=()
# How long one input may take before libFuzzer calls it a hang. Unoptimised, compiling one
# uploaded component can take over ten seconds on a busy two-core machine (CI's smoke run found
# exactly that), so the dev build allows two minutes: there, hangs are not what is being looked for.
per_input=10
[ -z "${DOPPEL_FUZZ_DEV:-}" ] || { profile=(--dev); per_input=120; }
echo "building the fuzz targets (${profile[*]:-release}, debug assertions and coverage instrumentation on)"
cargo "+$NIGHTLY" fuzz build "${profile[@]}"

crashed=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "regressions/$t" "artifacts/$t"
  log=$(mktemp)
  # Findings only: libFuzzer also leaves slow-unit-* files, which are not failures.
  findings() { find "artifacts/$t" -maxdepth 1 -regex '.*/\(crash\|leak\|timeout\|oom\)-.*' | wc -l; }
  before=$(findings)
  # -rss_limit_mb: an input that makes the harness hold 2 GiB is a finding too.
  status=0
  TIMEFORMAT='%R %U %S'
  { time cargo "+$NIGHTLY" fuzz run "${profile[@]}" "$t" "corpus/$t" "regressions/$t" -- \
    -max_total_time="$seconds" -timeout="$per_input" -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1; } 2>"$log.time" || status=$?
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  read -r wall user sys <"$log.time" || true
  found=$(( $(findings) - before ))
  if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
    crashed=1
    tail -40 "$log"
  fi
  summary+=("$(printf '%-18s %10s execs %8ss wall %8ss cpu   crashes: %s' \
    "$t" "$runs" "$wall" "$(awk "BEGIN { print $user + $sys }")" "$found")")
  rm -f "$log" "$log.time"
done

printf '\n%s\n' "${summary[@]}"
[ "$crashed" -eq 0 ] || echo "a target crashed: its input is in fuzz/artifacts/TARGET/"
exit "$crashed"
