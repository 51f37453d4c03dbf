#!/usr/bin/env bash
# The dashboard's cost: W2 (configs/bench/w2-tumbling.yaml, with an `api:` section added) on
# generated bids, run alternately with nobody watching, with the dashboard open in headless
# Chromium polling every second (as a person would have it), and polling every 200 ms. Prints
# events per second and the processor's CPU seconds for each run. Also prints the embedded
# assets' size. Needs scripts/ui-test-deps.sh --browser (run here).
#
#   scripts/ui-bench.sh               # 20M bids, 3 rounds
#   EVENTS=5000000 ROUNDS=5 scripts/ui-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-20000000}
ROUNDS=${ROUNDS:-3}
TOKEN=ui-bench-token
DIR=target/bench/ui
mkdir -p "$DIR"

bash scripts/ui-test-deps.sh --browser
echo "building (release)..." >&2
cargo build --release --quiet -p dataflow-processor
PROCESSOR=${CARGO_TARGET_DIR:-target}/release/processor
INPUT=target/bench/bids-$EVENTS.jsonl
if [ ! -s "$INPUT" ]; then
  echo "generating $EVENTS bids..." >&2
  "$PROCESSOR" generate --profile bids --count "$EVENTS" -o "$INPUT"
fi

# W2 as in configs/bench, reading $INPUT, with the API on a free port.
sed -e "s|path: ../../target/bench/bids.jsonl|path: ../bids-$EVENTS.jsonl|" \
    -e "s|path: ../../target/bench/out/|path: out/|" \
    configs/bench/w2-tumbling.yaml > "$DIR/w2-api.yaml"
printf 'api: { listen: "127.0.0.1:0", token_env: DATAFLOW_UI_BENCH_TOKEN }\n' >> "$DIR/w2-api.yaml"
mkdir -p "$DIR/out"

# One run; $1: none, or the dashboard's poll period in ms. Prints "events/s cpu_s".
run() {
  local poll=$1 address="$DIR/address" log="$DIR/run.log" cpu="$DIR/cpu" viewer=
  rm -f "$address" "$DIR"/out/*
  sync
  { TIMEFORMAT='%U %S'; time {
      DATAFLOW_UI_BENCH_TOKEN=$TOKEN DATAFLOW_API_ADDRESS_FILE=$address \
        "$PROCESSOR" run --no-progress --config "$DIR/w2-api.yaml" >/dev/null 2>"$log" &
      local pid=$!
      if [ "$poll" != none ]; then
        while [ ! -s "$address" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.01; done
        if [ -s "$address" ]; then
          node ui/e2e/open.mjs --url "http://$(cat "$address")" --token "$TOKEN" --poll "$poll" 2>/dev/null &
          viewer=$!
        fi
      fi
      wait "$pid"
    }; } 2>"$cpu"
  [ -n "$viewer" ] && kill "$viewer" 2>/dev/null && wait "$viewer" 2>/dev/null || true
  local rate
  rate=$(grep -o '([0-9]* events/s)' "$log" | tr -dc '0-9')
  # `time` here counts the processor's CPU (the viewer runs in the background, not waited for).
  awk -v r="$rate" -v c="$(tail -n 1 "$cpu")" 'BEGIN { split(c, t, " "); printf "%d %.2f\n", r, t[1] + t[2] }'
}

printf 'machine: %s cores, %s; shared with other builds: figures vary by about 10%%\n' \
  "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
printf '| round | nobody watching: events/s | CPU s | dashboard, 1 s polls: events/s | CPU s | dashboard, 200 ms polls: events/s | CPU s |\n|---:|---:|---:|---:|---:|---:|---:|\n'
for round in $(seq "$ROUNDS"); do
  read -r a ac <<<"$(run none)"
  read -r b bc <<<"$(run 1000)"
  read -r c cc <<<"$(run 200)"
  printf '| %d | %s | %s | %s | %s | %s | %s |\n' "$round" "$a" "$ac" "$b" "$bc" "$c" "$cc"
done
printf 'embedded dashboard (ui/dist): %s bytes, %s gzipped\n' \
  "$(cat ui/dist/* | wc -c)" "$(cat ui/dist/index.html | gzip -9n | wc -c) + $(gzip -9n < ui/dist/app.js | wc -c) + $(gzip -9n < ui/dist/app.css | wc -c)"
