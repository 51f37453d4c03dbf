#!/usr/bin/env bash
# Nexmark: runs every query of configs/nexmark/ on N events of the generator's nexmark profile,
# one worker, release build, and prints events per second and peak RSS per query, with the
# machine it ran on and its load. The events are generated inside the run (the generator source
# of each config), as Nexmark's own data generator does, so generation counts in the time.
# Results go to /dev/null (a blackhole sink, as in Nexmark's Flink runs) unless KEEP_OUTPUT=1,
# which writes them to target/nexmark/out/.
#
#   scripts/nexmark.sh                          # 10M events per query
#   NEXMARK_EVENTS=1000000 scripts/nexmark.sh   # 1M
#   QUERIES="q5 q7" scripts/nexmark.sh
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${NEXMARK_EVENTS:-10000000}
DIR=target/nexmark
mkdir -p "$DIR/configs" "$DIR/out"

echo "building (release)..." >&2
cargo build --release --quiet -p dataflow-processor
PROCESSOR=${CARGO_TARGET_DIR:-target}/release/processor

if [ -n "${QUERIES:-}" ]; then
  queries=$QUERIES
else
  # q0, q1, ..., q11 in numeric order.
  queries=$(ls configs/nexmark/q*.yaml | xargs -n1 basename | sed 's/\.yaml$//' | sort -t q -k 2 -n)
fi

printf 'machine: %s cores (nproc), %s, %s\n' "$(nproc)" \
  "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
printf 'load average before: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'events per query: %s, parallelism 1\n\n' "$EVENTS"
printf '| query | events | results | seconds | events/s | peak RSS |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
for q in $queries; do
  config="$DIR/configs/$q.yaml"
  # The shipped config with its count set and its paths moved under target/nexmark/.
  sed -e "s|^    count: .*|    count: $EVENTS|" -e 's|\.\./\.\./target/nexmark/|../|g' \
    "configs/nexmark/$q.yaml" > "$config"
  if [ "${KEEP_OUTPUT:-0}" != "1" ]; then
    sed -i "s|^    path: \.\./out/$q\.jsonl$|    path: /dev/null|" "$config"
  fi
  log="$DIR/out/$q.log"
  start=$(date +%s.%N)
  "$PROCESSOR" run --no-progress --config "$config" 2>"$log" >/dev/null
  end=$(date +%s.%N)
  # The summary line: "NAME: read N events, emitted M, ... peak RSS K KiB".
  summary=$(grep -E ': read [0-9]+ events, emitted' "$log" | tail -n 1)
  results=$(sed -n 's/.*emitted \([0-9]*\).*/\1/p' <<<"$summary")
  rss=$(sed -n 's/.*peak RSS \([0-9]*\) KiB.*/\1/p' <<<"$summary")
  awk -v q="$q" -v n="$EVENTS" -v m="${results:-0}" -v s="$start" -v e="$end" -v r="${rss:-0}" 'BEGIN {
    printf "| %s | %d | %d | %.2f | %.0f | %.1f MiB |\n", q, n, m, e - s, n / (e - s), r / 1024
  }'
done
printf '\nload average after: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
