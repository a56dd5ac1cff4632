#!/usr/bin/env bash
# Build maintd's fuzz targets and run each for SECONDS (default 600); exits non-zero if
# any target crashes (panics, fails an assertion, times out or runs out of memory).
#
#   fuzz/run.sh [SECONDS]
#
# Environment:
#   FUZZ_JOBS        targets run at once (default 1)
#   FUZZ_TARGETS     targets to run (default: all of them)
#   FUZZ_TARGET_DIR  cargo's target directory (default fuzz/target)
#
# Inputs that find new coverage go to fuzz/found/<target>/ (not committed); the seeds in
# fuzz/corpus/<target>/ are only read. A crashing input is written to
# fuzz/artifacts/<target>/ and each run's log to fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-600}"
jobs="${FUZZ_JOBS:-1}"
read -r -a targets <<<"${FUZZ_TARGETS:-diagnose_report signed_message htools_text luxi_answer state_file}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# `--sanitizer none`: coverage instrumentation only (stable rustc; see README.md).
cargo fuzz build --sanitizer none

mkdir -p logs
run_one() {
  local target="$1"
  mkdir -p "found/$target" "artifacts/$target"
  if cargo fuzz run --sanitizer none "$target" "found/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/" >"logs/$target.log" 2>&1; then
    echo "$target: ok, $(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "logs/$target.log" | grep -Eo '[0-9]+$') runs, $(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "logs/$target.log" | tail -n 1)"
  else
    echo "$target: FAILED (fuzz/logs/$target.log):" >&2
    grep -E -A 30 '^==[0-9]+== ERROR|panicked at|Test unit written' "logs/$target.log" | head -n 60 >&2 || tail -n 40 "logs/$target.log" >&2
    return 1
  fi
}

for target in "${targets[@]}"; do
  rm -f "logs/$target.failed"
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  (run_one "$target" || touch "logs/$target.failed") &
done
wait
failed=0
for target in "${targets[@]}"; do
  [ ! -e "logs/$target.failed" ] || failed=$((failed + 1))
done
echo "fuzz: $((${#targets[@]} - failed)) passed, $failed failed"
if [ "$failed" -ne 0 ]; then
  echo "fuzzing found a crash: reproduce with 'cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>'" >&2
  exit 1
fi
