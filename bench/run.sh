#!/usr/bin/env bash
# maintd's benchmark suite: one command, release build, a markdown report on stdout
# (progress on stderr). Not a test: it measures, and a regression shows as a worse row.
#
#   bench/run.sh [--quick]
#
# 1. Polling (bench/poll.py): maintd daemon against `maintd sim --cluster-only` at 1,000
#    and 5,000 nodes: CPU, RSS, failed polls, detection latency, API latency, and one
#    sweep of every node's report by maintd's pollers against a sequential baseline.
# 2. Responsiveness while planning (bench/responsive.py): 1,000 nodes / 20,000 instances
#    with balancing on: /1/status latency, rounds, SIGTERM, incident to first job.
# 3. Planning against Ganeti's htools (bench/plan.py): hbal per-step and full-balance
#    times, hail node evacuations.
#
# Needs python3, /usr/bin/time (package `time`) and Ganeti's htools (package
# ganeti-htools-3.0) for the third part. Everything talks to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

# --quick: shorter measurements (20 s per polling size and for responsiveness) and
# plan.sh's smaller hbal runs.
quick=()
seconds=()
if [ "${1:-}" = "--quick" ]; then
  quick=(--quick)
  seconds=(--seconds 20)
fi
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet --package maintd-actors --bin maintd
cargo build --release --quiet --package maintd --example gen_cluster
maintd="$target/release/maintd"

echo "# maintd benchmarks"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), load before: $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "## Polling"
echo
python3 bench/poll.py --maintd "$maintd" "${seconds[@]}"
echo
echo "## Responsiveness while planning"
echo
python3 bench/responsive.py --maintd "$maintd" --no-build "${seconds[@]}"
echo
echo "## Planning against hbal and hail"
echo
bench/plan.sh "${quick[@]}"
