#!/usr/bin/env bash
# Run the chaos test (actors/tests/chaos.rs: maintd daemon killed with SIGKILL at random
# instants while a simulated cluster evacuates, repairs, fails and cancels) once per seed
# and print each run's summary line and wall time.
#
#   bench/chaos.sh [SEED ...]          # default: one run with the test's own seed
#   MAINTD_CHAOS_KILLS=500 bench/chaos.sh 1 2 3
#
# Any failing run stops the script with the test's output.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --quiet --package maintd-actors --test chaos --no-run
run() {
  local out start status=0
  out=$(mktemp)
  start=$(date +%s)
  cargo test --quiet --package maintd-actors --test chaos sigkill -- --nocapture >"$out" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    cat "$out"
    rm -f "$out"
    exit "$status"
  fi
  echo "$(grep '^chaos: kills=' "$out") wall=$(($(date +%s) - start))s"
  rm -f "$out"
}

if [ $# -eq 0 ]; then
  run
fi
for seed in "$@"; do
  MAINTD_CHAOS_SEED="$seed" run
done
