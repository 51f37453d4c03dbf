#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ for a bounded time each and reports, per target, the
# executions, executions per second, coverage and any crash. Exits 1 if any target crashed.
# See docs/fuzzing.md.
#
#   scripts/fuzz.sh                        # every target, 60 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh       # 5 minutes each
#   scripts/fuzz.sh checkpoint api_router  # only these targets
#   FUZZ_CMIN=1 scripts/fuzz.sh            # then merge what was found into the committed corpus
#
# Inputs are read from fuzz/seeds/<target> (hand-made seeds) and fuzz/corpus/<target> (the
# committed, minimized corpus); new inputs go to fuzz/target/corpus/<target> (not committed), and
# FUZZ_CMIN=1 merges all three into fuzz/corpus/<target>. A crash's input is written to
# fuzz/artifacts/<target>/.
#
# cargo-fuzz needs nightly compiler flags (-Zsanitizer, coverage instrumentation);
# RUSTC_BOOTSTRAP=1 makes the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-60}
ALL_TARGETS="json_lines json_lines_schema config checkpoint api_router"
TARGETS=${*:-$ALL_TARGETS}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz..." >&2
  cargo install cargo-fuzz --locked
fi

# The longest input each target is given, and the most one allocation may take (in MB): the
# checkpoint decoder must never allocate much more than the bytes it is given.
max_len_of() {
  case "$1" in
    config) echo 16384 ;;
    checkpoint) echo 8192 ;;
    *) echo 4096 ;;
  esac
}
malloc_limit_of() {
  case "$1" in
    checkpoint) echo 64 ;;
    *) echo 1024 ;;
  esac
}

cd fuzz
echo "building the fuzz targets..." >&2
cargo fuzz build

LOGS=target/fuzz-logs
mkdir -p "$LOGS"
crashed=0
summary=()
for target in $TARGETS; do
  mkdir -p "target/corpus/$target" "corpus/$target" "seeds/$target"
  log=$LOGS/$target.log
  echo "fuzzing $target for ${SECONDS_EACH}s (log: fuzz/$log)..." >&2
  status=0
  cargo fuzz run "$target" "target/corpus/$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$SECONDS_EACH" \
    -max_len="$(max_len_of "$target")" \
    -rss_limit_mb=2048 \
    -malloc_limit_mb="$(malloc_limit_of "$target")" \
    -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  features=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  corpus=$(grep -o 'corp: [0-9]*/[0-9a-zA-Z]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  # A crash before the first stats line leaves some of these empty.
  line="$target: ${runs:-?} executions, ${speed:-?} exec/s, cov ${cov:-?}, ft ${features:-?}, corpus ${corpus:-?}, peak RSS ${rss:-?} MB"
  if [ "$status" -ne 0 ]; then
    crashed=1
    artifact=$(grep -o 'artifacts/[^ ]*' "$log" | tail -1 || true)
    reason=$(grep -m1 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)|out-of-memory|malloc\(' "$log" || true)
    line="$line, CRASH (exit $status): ${reason:-see the log}; input fuzz/${artifact:-artifacts/$target}"
    # The panic message, if any, says what went wrong.
    grep -A3 -m1 'panicked at' "$log" >&2 || true
  fi
  echo "$line" >&2
  summary+=("$line")
done

if [ "${FUZZ_CMIN:-0}" = "1" ]; then
  HOST=$(rustc -vV | sed -n 's/^host: //p')
  for target in $TARGETS; do
    echo "minimizing the corpus of $target into fuzz/corpus/$target..." >&2
    merged=target/cmin/$target
    rm -rf "$merged"
    mkdir -p "$merged"
    # libFuzzer's merge: keeps the smallest set of inputs that covers what all of them cover.
    "target/$HOST/release/$target" -merge=1 "$merged" "target/corpus/$target" "corpus/$target" \
      "seeds/$target" -max_len="$(max_len_of "$target")" -malloc_limit_mb="$(malloc_limit_of "$target")" \
      >"$LOGS/$target.cmin.log" 2>&1
    rm -rf "corpus/$target"
    mv "$merged" "corpus/$target"
  done
fi

echo
echo "fuzzing summary (${SECONDS_EACH}s each):"
printf '  %s\n' "${summary[@]}"
exit "$crashed"
