#!/usr/bin/env bash
# Benchmark `maintd plan --balance` against Debian's hbal on generated clusters and print
# a markdown table. Builds the release binary and the cluster generator first. Options are those
# of bench/plan.py (--quick, --sizes 10/200,50/1000/3, --hbal-max-nodes N, --seed S).
# Needs: python3, /usr/bin/time (package `time`), hbal (package ganeti-htools-3.0).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends time >&2
  else
    echo "/usr/bin/time is missing: apt-get install time" >&2
    exit 1
  fi
fi

cargo build --release --quiet --package maintd-actors --bin maintd
cargo build --release --quiet --package maintd --example gen_cluster
exec python3 bench/plan.py --maintd "${CARGO_TARGET_DIR:-target}/release/maintd" "$@"
