#!/usr/bin/env bash
# End-to-end benchmark: W1–W4 through `processor` beside a plain single-threaded loop
# (crates/pipeline/examples/baseline.rs) on generated bids. Prints events per second and peak
# RSS and CPU seconds (user + system) for each, beside the same loop parsing with sonic-rs, and
# checks that all three produced the same results byte for byte.
#
#   scripts/bench.sh                 # 1M and 10M events
#   SIZES="1000000" scripts/bench.sh # 1M only
#   WORKLOADS="w2 w3" scripts/bench.sh
#   MAIN=0 CHECKPOINTS=0 scripts/bench.sh  # only 1 vs 2 workers (and W5 against W2)
#   MAIN=0 PARALLEL=0 CHECKPOINTS=0 INGEST=0 PARQUET=1 scripts/bench.sh  # only the parquet sink
#   SINKS=1 MAIN=0 PARALLEL=0 CHECKPOINTS=0 INGEST=0 LATENCY=0 SIZES=1000000 scripts/bench.sh  # store sinks only
#   KAFKA=1 MAIN=0 SLIDING=0 PARALLEL=0 CHECKPOINTS=0 INGEST=0 LATENCY=0 scripts/bench.sh  # Kafka in and out only
#   KAFKA_SCALE=1 MAIN=0 SLIDING=0 PARALLEL=0 CHECKPOINTS=0 INGEST=0 LATENCY=0 SIZES=4000000 scripts/bench.sh  # 3 scale-out processors
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES-"1000000 10000000"}
if [ -z "${SIZES// /}" ]; then
  echo "SIZES is set but empty: name at least one number of events (SIZES=1000000)" >&2
  exit 2
fi
WORKLOADS=${WORKLOADS:-"w1 w2 w3 w4"}
DIR=target/bench
mkdir -p "$DIR/out"

echo "building (release)..." >&2
cargo build --release --quiet -p dataflow-processor
[ "${MAIN:-1}" = "1" ] && cargo build --release --quiet -p dataflow-pipeline --example baseline
TARGET=${CARGO_TARGET_DIR:-target}
PROCESSOR=$TARGET/release/processor
BASELINE=$TARGET/release/examples/baseline

config_of() {
  case "$1" in
    w1) echo configs/bench/w1-filter-map.yaml ;;
    w2) echo configs/bench/w2-tumbling.yaml ;;
    w3) echo configs/bench/w3-sliding.yaml ;;
    w4) echo configs/bench/w4-session.yaml ;;
  esac
}

# Runs a command, prints "seconds peak_rss_kib cpu_seconds" (the command reports its own peak
# RSS on stderr as "peak RSS N KiB"; CPU seconds are user + system, from bash's `time`).
measure() {
  local log="$DIR/out/last.log" cpu="$DIR/out/last.cpu"
  local start end
  # Start every run with no dirty pages from the previous one's output, so that neither side
  # pays for the other's writeback.
  sync
  start=$(date +%s.%N)
  { TIMEFORMAT='%U %S'; time "$@" 2>"$log" >/dev/null; } 2>"$cpu"
  end=$(date +%s.%N)
  local rss
  rss=$(grep -o 'peak RSS [0-9]*' "$log" | awk '{print $3}' | tail -n 1)
  awk -v s="$start" -v e="$end" -v r="${rss:-0}" -v c="$(tail -n 1 "$cpu")" 'BEGIN {
    split(c, t, " "); printf "%.3f %d %.3f\n", e - s, r, t[1] + t[2]
  }'
}

printf '%s\n' "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
# "baseline" parses with serde_json, "sonic loop" is the same loop parsing with sonic-rs.
printf '| events | workload | processor events/s | processor peak RSS | processor CPU s | baseline events/s | baseline peak RSS | baseline CPU s | processor / baseline | CPU per event, processor / baseline | sonic loop events/s | sonic loop CPU s | processor / sonic loop | CPU per event, processor / sonic loop | same results |\n'
printf '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n'
for n in $SIZES; do
  input="$DIR/bids-$n.jsonl"
  if [ ! -s "$input" ]; then
    echo "generating $n bids..." >&2
    "$PROCESSOR" generate --profile bids --count "$n" --seed 42 --out "$input"
  fi
  ln -sf "bids-$n.jsonl" "$DIR/bids.jsonl"
  # Both sides read the input from the page cache: the first run must not pay for the disk.
  cat "$input" > /dev/null
  # MAIN=0 skips the comparison with the plain loop (to run only the sections below).
  [ "${MAIN:-1}" = "1" ] || continue
  for w in $WORKLOADS; do
    read -r p_secs p_rss p_cpu < <(measure "$PROCESSOR" run --no-progress --config "$(config_of "$w")")
    read -r b_secs b_rss b_cpu < <(measure "$BASELINE" "$w" "$input" "$DIR/out/$w-baseline.jsonl")
    read -r s_secs _ s_cpu < <(measure "$BASELINE" "$w" "$input" "$DIR/out/$w-sonic.jsonl" sonic)
    if cmp -s "$DIR/out/$w.jsonl" "$DIR/out/$w-baseline.jsonl" && cmp -s "$DIR/out/$w.jsonl" "$DIR/out/$w-sonic.jsonl"; then same=yes; else same=NO; fi
    awk -v n="$n" -v w="$w" -v ps="$p_secs" -v pr="$p_rss" -v pc="$p_cpu" -v bs="$b_secs" -v br="$b_rss" -v bc="$b_cpu" -v ss="$s_secs" -v sc="$s_cpu" -v same="$same" 'BEGIN {
      printf "| %d | %s | %.0f | %.1f MiB | %.2f | %.0f | %.1f MiB | %.2f | %.0f%% | %.2fx | %.0f | %.2f | %.0f%% | %.2fx | %s |\n", n, w, n/ps, pr/1024, pc, n/bs, br/1024, bc, 100*bs/ps, (bc > 0 ? pc/bc : 0), n/ss, sc, 100*ss/ps, (sc > 0 ? pc/sc : 0), same
    }'
  done
done

# Long sliding windows (SLIDING=0 skips): W5, 60 s by 1 s (60 panes a window), against W2 per
# output row, on the largest input, one worker: the time per row should not grow with the
# number of panes (the goal: within 2x of W2's), nor the peak RSS with the output.
if [ "${SLIDING:-1}" = "1" ]; then
  n=$(echo "$SIZES" | tr ' ' '\n' | tail -n 1)
  ln -sf "bids-$n.jsonl" "$DIR/bids.jsonl"
  printf '\n| events | workload | events/s | output rows | ns per output row | peak RSS | CPU s |\n|---:|---|---:|---:|---:|---:|---:|\n'
  for w in w2 w5; do
    config=configs/bench/w2-tumbling.yaml
    [ "$w" = "w5" ] && config=configs/bench/w5-sliding-long.yaml
    read -r secs rss cpu < <(measure "$PROCESSOR" run --no-progress --config "$config")
    rows=$(wc -l < "$DIR/out/$w.jsonl")
    awk -v n="$n" -v w="$w" -v s="$secs" -v r="$rows" -v m="$rss" -v c="$cpu" 'BEGIN {
      printf "| %d | %s | %.0f | %d | %.0f | %.1f MiB | %.2f |\n", n, w, n/s, r, 1e9*s/r, m/1024, c
    }'
  done
fi

# Parallel workers (PARALLEL=0 skips): each workload with `parallelism: 1` and `parallelism: 2`
# on the largest input; the outputs must be equal as multisets (workers interleave their lines).
if [ "${PARALLEL:-1}" = "1" ]; then
  n=$(echo "$SIZES" | tr ' ' '\n' | tail -n 1)
  ln -sf "bids-$n.jsonl" "$DIR/bids.jsonl"
  mkdir -p "$DIR/configs"
  printf '\n| events | workload | 1 worker events/s | 2 workers events/s | speed-up | same results |\n|---:|---|---:|---:|---:|---|\n'
  for w in $WORKLOADS; do
    base=$(config_of "$w")
    copy="$DIR/configs/$(basename "$base" .yaml)-p2.yaml"
    sed -e 's|\.\./\.\./target/bench/|../|g' -e "s|out/$w|out/$w-p2|g" "$base" > "$copy"
    printf 'parallelism: 2\n' >> "$copy"
    read -r one_secs _ < <(measure "$PROCESSOR" run --no-progress --config "$base")
    sort "$DIR/out/$w.jsonl" > "$DIR/out/$w.sorted"
    read -r two_secs _ < <(measure "$PROCESSOR" run --no-progress --config "$copy")
    out2=$(sed -n 's|.*path: *\(\.\./out/[^ ,}]*\).*|\1|p' "$copy" | head -n 1)
    sort "$DIR/configs/$out2" > "$DIR/out/$w-p2.sorted"
    if cmp -s "$DIR/out/$w.sorted" "$DIR/out/$w-p2.sorted"; then same=yes; else same=NO; fi
    awk -v n="$n" -v w="$w" -v a="$one_secs" -v b="$two_secs" -v same="$same" 'BEGIN {
      printf "| %d | %s | %.0f | %.0f | %.2fx | %s |\n", n, w, n/a, n/b, a/b, same
    }'
  done
fi

# Checkpoints (CHECKPOINTS=0 skips), for each state backend (BACKENDS, default "memory sled"):
# W2 and W4 with a checkpoint every second against none, on the largest input; then checkpoint
# size, duration and restore time with 100k and 1M keys.
if [ "${CHECKPOINTS:-1}" = "1" ]; then
  n=$(echo "$SIZES" | tr ' ' '\n' | tail -n 1)
  ln -sf "bids-$n.jsonl" "$DIR/bids.jsonl"
  mkdir -p "$DIR/configs"
  # The state section of a config for backend $1, its sled directory named after $2.
  state_of() {
    case "$1" in
      memory) echo "state: { backend: memory }" ;;
      sled) echo "state: { backend: sled, dir: ../out/$2-state }" ;;
    esac
  }
  printf '\n| events | workload | state backend | no checkpoints events/s | checkpoint every 1 s events/s | slowdown | checkpoints taken |\n|---:|---|---|---:|---:|---:|---:|\n'
  for backend in ${BACKENDS:-memory sled}; do
    for w in w2 w4; do
      base=$(config_of "$w")
      plain="$DIR/configs/$w-$backend.yaml"
      copy="$DIR/configs/$w-$backend-checkpointed.yaml"
      sed -e 's|\.\./\.\./target/bench/|../|g' "$base" > "$plain"
      state_of "$backend" "$w" >> "$plain"
      cp "$plain" "$copy"
      printf 'checkpoint: { dir: ../out/%s-checkpoints, interval: 1s, retain: 2 }\n' "$w" >> "$copy"
      rm -rf "$DIR/out/$w-checkpoints"
      read -r plain_secs _ < <(measure "$PROCESSOR" run --no-progress --config "$plain")
      sync
      start=$(date +%s.%N)
      "$PROCESSOR" run --no-progress --fresh --config "$copy" >/dev/null 2>"$DIR/out/$w-checkpointed.log"
      end=$(date +%s.%N)
      taken=$(grep -c 'checkpoint completed' "$DIR/out/$w-checkpointed.log" || true)
      awk -v n="$n" -v w="$w" -v b="$backend" -v ps="$plain_secs" -v s="$start" -v e="$end" -v t="$taken" 'BEGIN {
        cs = e - s; printf "| %d | %s | %s | %.0f | %.0f | %.1f%% | %d |\n", n, w, b, n/ps, n/cs, 100*(cs-ps)/ps, t
      }'
    done
  done
  printf '\n| keys | state backend | checkpoint size | operator pause to snapshot (largest) | checkpoint write (largest) | restore time |\n|---:|---|---:|---:|---:|---:|\n'
  for backend in ${BACKENDS:-memory sled}; do
    for keys in 100000 1000000; do
      cfg="$DIR/configs/keys-$keys-$backend.yaml"
      cat > "$cfg" <<YAML
name: keys-$keys
sources:
  - name: bids
    type: generator
    count: $((keys * 3))
    bidders: $keys
    rate: $keys
    events_per_second: 100000
    watermark: { out_of_orderness: 2s }
steps:
  - key_by: bidder
  - window: { type: tumbling, size: 1h, aggregates: { n: count, total: sum(price) } }
sinks:
  - { type: file, path: ../out/keys-$keys.jsonl }
dead_letters: { type: file, path: ../out/keys-$keys-dead.jsonl }
checkpoint: { dir: ../out/keys-$keys-checkpoints, interval: 500ms, retain: 2 }
runtime: { on_stop: keep }
$(state_of "$backend" "keys-$keys")
YAML
      rm -rf "$DIR/out/keys-$keys-checkpoints"
      "$PROCESSOR" run --no-progress --fresh --config "$cfg" >/dev/null 2>"$DIR/out/keys-$keys.log"
      "$PROCESSOR" run --no-progress --config "$cfg" >/dev/null 2>"$DIR/out/keys-$keys-restore.log"
      size=$(sed -n 's/.*checkpoint completed.*bytes=\([0-9]*\).*/\1/p' "$DIR/out/keys-$keys.log" | sort -n | tail -n 1)
      duration=$(sed -n 's/.*checkpoint completed.* millis=\([0-9]*\).*/\1/p' "$DIR/out/keys-$keys.log" | sort -n | tail -n 1)
      pause=$(sed -n 's/.*checkpoint completed.*snapshot_millis=\([0-9]*\).*/\1/p' "$DIR/out/keys-$keys.log" | sort -n | tail -n 1)
      restore=$(sed -n 's/.*restored checkpoint.*millis=\([0-9]*\).*/\1/p' "$DIR/out/keys-$keys-restore.log" | tail -n 1)
      awk -v k="$keys" -v b="$backend" -v s="${size:-0}" -v p="${pause:-0}" -v d="${duration:-0}" -v r="${restore:-0}" 'BEGIN {
        printf "| %d | %s | %.1f MiB | %d ms | %d ms | %d ms |\n", k, b, s/1048576, p, d, r
      }'
    done
  done
fi

# Parquet (PARQUET=1 runs it): W2's results into a parquet sink (partitioned by the hour of
# window_start, snappy) against the same results into the file sink, on the largest input,
# without checkpoints (the files are published at the end); results per second, the slowdown,
# and the bytes written.
if [ "${PARQUET:-0}" = "1" ]; then
  n=$(echo "$SIZES" | tr ' ' '\n' | tail -n 1)
  ln -sf "bids-$n.jsonl" "$DIR/bids.jsonl"
  mkdir -p "$DIR/configs"
  plain="$DIR/configs/w2-file.yaml"
  lake="$DIR/configs/w2-parquet.yaml"
  sed -e 's|\.\./\.\./target/bench/|../|g' configs/bench/w2-tumbling.yaml > "$plain"
  sed -e 's|\.\./\.\./target/bench/|../|g' \
      -e 's|^  - type: file$|  - type: parquet|' \
      -e 's|    path: \.\./out/w2\.jsonl|    path: ../out/w2-lake\n    partition_time: window_start|' \
      configs/bench/w2-tumbling.yaml > "$lake"
  read -r file_secs _ file_cpu < <(measure "$PROCESSOR" run --no-progress --config "$plain")
  rows=$(wc -l < "$DIR/out/w2.jsonl")
  file_bytes=$(stat -c %s "$DIR/out/w2.jsonl")
  read -r lake_secs lake_rss lake_cpu < <(measure "$PROCESSOR" run --no-progress --config "$lake")
  lake_bytes=$(find "$DIR/out/w2-lake" -name 'part-*.parquet' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  files=$(find "$DIR/out/w2-lake" -name 'part-*.parquet' | wc -l)
  printf '\n| events | results | file sink results/s | parquet sink results/s | slowdown | file sink CPU s | parquet sink CPU s | parquet peak RSS | JSON Lines bytes | Parquet bytes (files) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
  awk -v n="$n" -v r="$rows" -v fs="$file_secs" -v ls="$lake_secs" -v fc="$file_cpu" -v lc="$lake_cpu" -v rss="$lake_rss" -v fb="$file_bytes" -v lb="$lake_bytes" -v f="$files" 'BEGIN {
    printf "| %d | %d | %.0f | %.0f | %.1f%% | %.2f | %.2f | %.1f MiB | %.1f MiB | %.1f MiB (%d) |\n", n, r, r/fs, r/ls, 100*(ls-fs)/fs, fc, lc, rss/1024, fb/1048576, lb/1048576, f
  }'
fi

# HTTP ingest (INGEST=0 skips): wrk posts bodies of LINES JSON lines to POST /ingest from
# loopback. First as fast as it can (the maximum rate: events accepted per second, from the
# processor's own counter), then paced at half of that rate, where wrk's request latency is the
# time from sending a body to its 202 (accepted into the source's queue).
if [ "${INGEST:-1}" = "1" ]; then
  if ! command -v wrk >/dev/null; then
    echo "installing wrk..." >&2
    apt-get install -y wrk >/dev/null
  fi
  LINES=${LINES:-100}
  SECONDS_RUN=${INGEST_SECONDS:-10}
  CONNECTIONS=${CONNECTIONS:-8}
  address_file="$DIR/out/ingest.address"
  rm -f "$address_file"
  DATAFLOW_API_ADDRESS_FILE="$address_file" "$PROCESSOR" run --config configs/bench/ingest.yaml --no-progress 2>"$DIR/out/ingest.log" &
  pid=$!
  for _ in $(seq 100); do [ -s "$address_file" ] && break; sleep 0.1; done
  url="http://$(cat "$address_file")"
  accepted() { curl -s "$url/metrics" | awk '/^dataflow_ingest_accepted_events_total/ {print $2}'; }
  refused() { curl -s "$url/metrics" | awk '/^dataflow_ingest_refused_total.*overloaded/ {print $2}'; }
  run_wrk() { LINES=$LINES DELAY_MS=$1 wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_RUN}s" -s scripts/ingest.lua "$url/ingest"; }
  before=$(accepted); refused_before=$(refused)
  out=$(run_wrk 0)
  after=$(accepted); refused_after=$(refused)
  max_rate=$(awk -v a="$before" -v b="$after" -v s="$SECONDS_RUN" 'BEGIN { printf "%.0f", (b - a) / s }')
  p50=$(echo "$out" | awk '/latency_p50_ms/ {print $2}'); p99=$(echo "$out" | awk '/latency_p99_ms/ {print $2}')
  # Half of the maximum: each connection waits so that CONNECTIONS x LINES events per
  # (delay + round trip) is half the maximum rate.
  delay=$(awk -v c="$CONNECTIONS" -v l="$LINES" -v r="$max_rate" 'BEGIN { d = c * l * 1000 / (r / 2); printf "%d", (d < 1 ? 1 : d) }')
  before=$(accepted)
  half=$(run_wrk "$delay")
  after=$(accepted)
  half_rate=$(awk -v a="$before" -v b="$after" -v s="$SECONDS_RUN" 'BEGIN { printf "%.0f", (b - a) / s }')
  hp50=$(echo "$half" | awk '/latency_p50_ms/ {print $2}'); hp99=$(echo "$half" | awk '/latency_p99_ms/ {print $2}')
  kill -TERM "$pid"; wait "$pid" || true
  printf '\n| ingest over HTTP (wrk, %s connections, %s lines per body) | events/s accepted | 202 latency p50 | p99 | 429 answers |\n|---|---:|---:|---:|---:|\n' "$CONNECTIONS" "$LINES"
  printf '| as fast as possible | %s | %s ms | %s ms | %s |\n' "$max_rate" "$p50" "$p99" "$(awk -v a="$refused_before" -v b="$refused_after" 'BEGIN { print b - a }')"
  printf '| paced at half (delay %s ms) | %s | %s ms | %s ms | |\n' "$delay" "$half_rate" "$hp50" "$hp99"
  echo "sink lines: $(wc -l < target/bench/out/ingest.jsonl)" >&2
  rm -f target/bench/out/ingest.jsonl
fi

# End-to-end latency (LATENCY=0 skips): W1 over the largest input, first as fast as it goes,
# then rate-limited to half of that rate. Latency is the time from the source reading an event
# to the first sink writing its result (the run's summary: p50 and p99 in milliseconds; batches
# of 1,024 events fill at the source's rate, so at half rate a batch's first event waits for the
# rest).
if [ "${LATENCY:-1}" = "1" ]; then
  n=$(echo "$SIZES" | tr ' ' '\n' | tail -n 1)
  input="$DIR/bids-$n.jsonl"
  [ -s "$input" ] || "$PROCESSOR" generate --profile bids --count "$n" --seed 42 --out "$input"
  ln -sf "bids-$n.jsonl" "$DIR/bids.jsonl"
  mkdir -p "$DIR/configs"
  base="$DIR/configs/w1-latency.yaml"
  sed -e 's|\.\./\.\./target/bench/|../|g' configs/bench/w1-filter-map.yaml > "$base"
  "$PROCESSOR" run --no-progress --config "$base" >/dev/null 2>"$DIR/out/latency-max.log"
  max_rate=$(sed -n 's/.*(\([0-9]*\) events\/s).*/\1/p' "$DIR/out/latency-max.log" | tail -n 1)
  half="$DIR/configs/w1-latency-half.yaml"
  awk -v rate="$((max_rate / 2))" '{ print } /^    type: file$/ { printf "    rate_limit: { events_per_second: %d }\n", rate }' "$base" > "$half"
  "$PROCESSOR" run --no-progress --config "$half" >/dev/null 2>"$DIR/out/latency-half.log"
  printf '\n| events | workload | rate | events/s | latency p50 | latency p99 |\n|---:|---|---|---:|---:|---:|\n'
  for run in max half; do
    line=$(grep 'latency p50' "$DIR/out/latency-$run.log" | tail -n 1)
    rate=$(echo "$line" | sed -n 's/.*(\([0-9]*\) events\/s).*/\1/p')
    p50=$(echo "$line" | sed -n 's/.*latency p50 \([0-9]*\) ms.*/\1/p')
    p99=$(echo "$line" | sed -n 's/.*p99 \([0-9]*\) ms.*/\1/p')
    printf '| %d | w1 | %s | %s | %s ms | %s ms |\n' "$n" "$run" "$rate" "$p50" "$p99"
  done
fi

# CEP (CEP=1 runs it; off by default): the card-fraud pattern over CEP_EVENTS (10M) generated
# card charges on 100k cards, one worker: events per second and peak RSS, with the number of
# matches and timed-out partial matches. CEP_STATE=sled keeps the pattern's state in sled
# (under target/bench/cep-state) instead of memory.
if [ "${CEP:-0}" = "1" ]; then
  n=${CEP_EVENTS:-10000000}
  mkdir -p "$DIR/configs"
  config="$DIR/configs/cep-fraud.yaml"
  sed -e "s|count: 10000000|count: $n|" -e 's|\.\./\.\./target/bench/|../|g' configs/bench/cep-fraud.yaml > "$config"
  if [ "${CEP_STATE:-memory}" = "sled" ]; then
    echo "state: { backend: sled, dir: ../cep-state }" >> "$config"
  fi
  read -r c_secs c_rss c_cpu < <(measure "$PROCESSOR" run --no-progress --config "$config")
  matches=$(wc -l < "$DIR/out/cep-fraud.jsonl")
  timeouts=$(wc -l < "$DIR/out/cep-fraud-timed-out.jsonl")
  printf '\n| events | workload | events/s | peak RSS | CPU s | matches | timed out |\n|---:|---|---:|---:|---:|---:|---:|\n'
  awk -v n="$n" -v st="${CEP_STATE:-memory}" -v s="$c_secs" -v r="$c_rss" -v c="$c_cpu" -v m="$matches" -v t="$timeouts" 'BEGIN {
    printf "| %d | cep-fraud (%s state) | %.0f | %.1f MiB | %.2f | %d | %d |\n", n, st, n/s, r/1024, c, m, t
  }'
fi

# Store sinks (off by default; SINKS=1 runs it): W2's results on the largest input into a file
# (the reference), into PostgreSQL (insert; at least once without checkpoints, and exactly once
# with a checkpoint every second, against the file sink with the same checkpoints) and into Redis
# (SET), against private instances that scripts/services.sh starts (and installs if absent).
# Rows per second are results written per second of the whole run.
if [ "${SINKS:-0}" = "1" ]; then
  n=$(echo "$SIZES" | tr ' ' '\n' | tail -n 1)
  input="$DIR/bids-$n.jsonl"
  [ -s "$input" ] || "$PROCESSOR" generate --profile bids --count "$n" --seed 42 --out "$input"
  ln -sf "bids-$n.jsonl" "$DIR/bids.jsonl"
  mkdir -p "$DIR/configs"
  pg_port=$(scripts/services.sh start postgres "$DIR/services/postgres")
  redis_port=$(scripts/services.sh start redis "$DIR/services/redis")
  trap 'scripts/services.sh stop postgres "$DIR/services/postgres"; scripts/services.sh stop redis "$DIR/services/redis"' EXIT
  base="$DIR/configs/w2-sinks-file.yaml"
  sed -e 's|\.\./\.\./target/bench/|../|g' configs/bench/w2-tumbling.yaml > "$base"
  # W2 with its sink replaced by $2 (a flow mapping), and checkpoints when $3 is "yes".
  sink_config() {
    local out="$DIR/configs/w2-sinks-$1.yaml"
    awk -v sink="$2" '/^sinks:/ { print; print "  - " sink; skip = 1; next } skip && /^  - |^    / { next } { skip = 0; print }' "$base" > "$out"
    if [ "$3" = yes ]; then
      rm -rf "$DIR/out/w2-sinks-$1-checkpoints"
      printf 'checkpoint: { dir: ../out/w2-sinks-%s-checkpoints, interval: 1s, retain: 2 }\n' "$1" >> "$out"
    fi
    echo "$out"
  }
  pg_url="postgres://postgres@127.0.0.1:$pg_port/test"
  printf '\n| events | workload | sink | delivery | events/s | rows/s | slowdown against the file sink |\n|---:|---|---|---|---:|---:|---:|\n'
  for variant in "file|at least once|{ type: file, path: ../out/w2-sinks.jsonl }|no" \
    "file|(checkpoints 1 s)|{ type: file, path: ../out/w2-sinks.jsonl }|yes" \
    "postgres|at least once|{ type: postgres, url: \"$pg_url\", table: w2_plain, create_table: true }|no" \
    "postgres|exactly once (checkpoints 1 s)|{ type: postgres, url: \"$pg_url\", table: w2_exact, create_table: true }|yes" \
    "redis|idempotent|{ type: redis, url: \"redis://127.0.0.1:$redis_port/0\", key: \"string(key) + '@' + string(window_start)\" }|no"; do
    IFS='|' read -r kind delivery sink checkpoints <<<"$variant"
    scripts/services.sh psql "$DIR/services/postgres" -c 'SET client_min_messages = warning' -c 'DROP TABLE IF EXISTS w2_plain, w2_exact, w2_exact_dataflow_staging, dataflow_sink_progress' >/dev/null
    scripts/services.sh redis-cli "$DIR/services/redis" FLUSHALL >/dev/null
    cfg=$(sink_config "$kind-$checkpoints" "$sink" "$checkpoints")
    read -r secs _ < <(measure "$PROCESSOR" run --no-progress --config "$cfg")
    rows=$(sed -n 's/.*emitted \([0-9]*\),.*/\1/p' "$DIR/out/last.log" | tail -n 1)
    if [ "$kind" = file ]; then
      [ "$checkpoints" = yes ] && file_secs_cp=$secs || file_secs=$secs
    fi
    reference=$file_secs
    [ "$checkpoints" = yes ] && reference=${file_secs_cp:-$file_secs}
    awk -v n="$n" -v k="$kind" -v d="$delivery" -v s="$secs" -v r="${rows:-0}" -v f="$reference" 'BEGIN {
      printf "| %d | w2 | %s | %s | %.0f | %.0f | %.2fx |\n", n, k, d, n/s, r/s, s/f
    }'
  done
fi

# Kafka (KAFKA=1 runs it; off by default): W1 and W2 reading the largest input from a local topic
# of KAFKA_PARTITIONS (4) partitions on the broker of scripts/kafka.sh (tansu, memory storage) and
# writing their results to a topic, one processor, at least once and exactly once (a transaction
# per checkpoint, every second). A Kafka source never ends, so events/s is the input divided by the
# time from the start until the processor's /metrics count every record read; then the run is
# stopped (SIGTERM) and its summary gives the peak RSS. Each is run again rate-limited to half of
# the at-least-once rate, for the latency p50/p99 of the summary (source read to sink write; with
# exactly once, a result is visible to read_committed readers only at its checkpoint's commit).
# Loads bids-$n.jsonl into the topic $topic of the broker $brokers, keyed by auction, through a
# pass-through pipeline named $1; sets load_secs.
kafka_load() {
  local load="$DIR/configs/$1.yaml"
  cat > "$load" <<YAML
name: $1
sources:
  - { name: bids, type: file, path: ../bids-$n.jsonl, format: { schema: { auction: int, bidder: int, price: int, channel: string, url: string } } }
sinks:
  - { type: kafka, brokers: "$brokers", topic: $topic, key: "string(auction)" }
YAML
  read -r load_secs _ < <(measure "$PROCESSOR" run --no-progress --config "$load")
}

if [ "${KAFKA:-0}" = "1" ]; then
  n=$(echo "$SIZES" | tr ' ' '\n' | tail -n 1)
  input="$DIR/bids-$n.jsonl"
  [ -s "$input" ] || "$PROCESSOR" generate --profile bids --count "$n" --seed 42 --out "$input"
  parts=${KAFKA_PARTITIONS:-4}
  brokers=$(bash scripts/kafka.sh start | tail -n 1)
  run_id="$(date +%s)-$$"
  topic="bench-bids-$run_id"
  bash scripts/kafka.sh topic "$topic" "$parts" >/dev/null
  mkdir -p "$DIR/configs"
  # Load the topic: the bids file through a pass-through pipeline into the topic, keyed by auction.
  kafka_load kafka-load
  # Runs config $1 in the background until its source has read $n records; prints
  # "seconds peak_rss_kib p50_ms p99_ms" once it has stopped.
  kafka_run() {
    local cfg=$1 log="$DIR/out/kafka-run.log" start end pid address read
    start=$(date +%s.%N)
    "$PROCESSOR" run --no-progress --fresh --config "$cfg" >/dev/null 2>"$log" &
    pid=$!
    address=""
    while [ -z "$address" ] && kill -0 "$pid" 2>/dev/null; do
      address=$(sed -n 's/.*API listening address=\([0-9.:]*\).*/\1/p' "$log" | head -n 1)
      [ -n "$address" ] || sleep 0.1
    done
    read=0
    while [ "$read" -lt "$n" ] && kill -0 "$pid" 2>/dev/null; do
      sleep 0.2
      read=$(curl -s "http://$address/metrics" | awk '/^dataflow_source_events_read_total/ { s += $NF } END { printf "%d", s }')
    done
    end=$(date +%s.%N)
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || true
    local rss p50 p99
    rss=$(grep -o 'peak RSS [0-9]*' "$log" | awk '{print $3}' | tail -n 1)
    p50=$(sed -n 's/.*latency p50 \([0-9]*\) ms.*/\1/p' "$log" | tail -n 1)
    p99=$(sed -n 's/.*p99 \([0-9]*\) ms.*/\1/p' "$log" | tail -n 1)
    awk -v s="$start" -v e="$end" -v r="${rss:-0}" -v a="${p50:--}" -v b="${p99:--}" 'BEGIN { printf "%.3f %d %s %s\n", e - s, r, a, b }'
  }
  # The config of workload $1 in mode $2 (alo|eo), rate-limited to $3 events/s when not empty.
  kafka_config() {
    local w=$1 mode=$2 rate=$3 cfg="$DIR/configs/kafka-$1-$2${3:+-half}.yaml" schema
    case "$w" in
      w1) schema='{ auction: int, bidder: int, price: int, channel: string }' ;;
      w2) schema='{ auction: int, price: int }' ;;
    esac
    {
      printf 'name: kafka-%s-%s\n' "$w" "$mode"
      printf 'sources:\n  - name: bids\n    type: kafka\n    brokers: "%s"\n    topics: [%s]\n' "$brokers" "$topic"
      printf '    group: bench-%s-%s-%s%s\n    start: earliest\n' "$w" "$mode" "$run_id" "${rate:+-half}"
      printf '    format: { schema: %s }\n    watermark: { out_of_orderness: 2s, idle_timeout: 5s }\n' "$schema"
      [ -n "$rate" ] && printf '    rate_limit: { events_per_second: %d }\n' "$rate"
      sed -n '/^steps:/,/^sinks:/p' "$(config_of "$w")" | sed '$d'
      printf 'sinks:\n  - { type: kafka, brokers: "%s", topic: %s-out-%s-%s%s' "$brokers" "$topic" "$w" "$mode" "${rate:+-half}"
      if [ "$mode" = eo ]; then
        printf ', exactly_once: true, transactional_id: bench-%s-%s-%s%s }\n' "$w" "$run_id" "$mode" "${rate:+-half}"
        printf 'checkpoint: { dir: ../out/kafka-%s-%s-checkpoints, interval: 1s, retain: 2 }\n' "$w" "$mode"
      else
        printf ' }\n'
      fi
      printf 'dead_letters: { type: file, path: ../out/kafka-%s-dead.jsonl }\n' "$w"
      printf 'api: { listen: "127.0.0.1:0" }\n'
    } > "$cfg"
    rm -rf "$DIR/out/kafka-$w-$mode-checkpoints"
    echo "$cfg"
  }
  printf '\n%s: %d bids loaded into %s (%d partitions) in %.1f s\n' "$brokers" "$n" "$topic" "$parts" "$load_secs"
  printf '\n| events | workload | delivery | events/s in | peak RSS | exactly once / at least once | events/s at half rate | latency p50 | latency p99 |\n|---:|---|---|---:|---:|---:|---:|---:|---:|\n'
  for w in ${KAFKA_WORKLOADS:-w1 w2}; do
    alo_secs=""
    for mode in alo eo; do
      bash scripts/kafka.sh topic "$topic-out-$w-$mode" "$parts" >/dev/null
      read -r secs rss _ _ < <(kafka_run "$(kafka_config "$w" "$mode" "")")
      [ "$mode" = alo ] && { alo_secs=$secs; half_rate=$(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%d", n / s / 2 }'); }
      bash scripts/kafka.sh topic "$topic-out-$w-$mode-half" "$parts" >/dev/null
      read -r _ _ p50 p99 < <(kafka_run "$(kafka_config "$w" "$mode" "$half_rate")")
      awk -v n="$n" -v w="$w" -v m="$mode" -v s="$secs" -v r="$rss" -v a="$alo_secs" -v h="$half_rate" -v p="$p50" -v q="$p99" 'BEGIN {
        printf "| %d | %s | %s | %.0f | %.1f MiB | %.2fx | %d | %s ms | %s ms |\n", n, w, (m == "eo" ? "exactly once" : "at least once"), n/s, r/1024, a/s, h, p, q
      }'
    done
  done
fi

# Kafka scale-out (KAFKA_SCALE=1 runs it; off by default): W2 with `scale_out: true` on
# KAFKA_SCALE_PROCESSES (3) processors of one consumer group, all on this machine with the broker,
# reading the largest input from a topic of KAFKA_SCALE_PARTITIONS (12) partitions (loaded keyed
# by auction, so co-partitioned for W2's key) and writing to a topic, at least once, checkpoints
# every 2 s (scale-out needs them; one directory per task). The processors start together; the
# measured window runs from when the group has settled (their `/api/v1/status` tasks own every
# partition once, each processor some) until their `/metrics` together count every record read.
# For the window: total and per-processor events/s, CPU seconds of each processor and of the
# broker (/proc/PID/stat); each processor's peak RSS (VmHWM) is the whole run's.
if [ "${KAFKA_SCALE:-0}" = "1" ]; then
  n=$(echo "$SIZES" | tr ' ' '\n' | tail -n 1)
  input="$DIR/bids-$n.jsonl"
  [ -s "$input" ] || "$PROCESSOR" generate --profile bids --count "$n" --seed 42 --out "$input"
  procs=${KAFKA_SCALE_PROCESSES:-3}
  parts=${KAFKA_SCALE_PARTITIONS:-12}
  brokers=$(bash scripts/kafka.sh start | tail -n 1)
  broker_pid=$(cat "target/kafka/run-${brokers##*:}/pid")
  tck=$(getconf CLK_TCK)
  cpu_of() { awk -v t="$tck" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
  run_id="$(date +%s)-$$"
  topic="bench-scale-$run_id"
  bash scripts/kafka.sh topic "$topic" "$parts" >/dev/null
  bash scripts/kafka.sh topic "$topic-out" "$parts" >/dev/null
  mkdir -p "$DIR/configs"
  kafka_load kafka-scale-load
  cfg="$DIR/configs/kafka-scale-w2.yaml"
  rm -rf "$DIR/out/kafka-scale-checkpoints"
  {
    printf 'name: kafka-scale-w2\n'
    printf 'sources:\n  - name: bids\n    type: kafka\n    brokers: "%s"\n    topics: [%s]\n' "$brokers" "$topic"
    printf '    group: bench-scale-%s\n    start: earliest\n    scale_out: true\n' "$run_id"
    printf '    format: { schema: { auction: int, price: int } }\n    watermark: { out_of_orderness: 2s, idle_timeout: 5s }\n'
    sed -n '/^steps:/,/^sinks:/p' "$(config_of w2)" | sed '$d'
    printf 'sinks:\n  - { type: kafka, brokers: "%s", topic: %s-out }\n' "$brokers" "$topic"
    printf 'checkpoint: { dir: ../out/kafka-scale-checkpoints, interval: 2s, retain: 2 }\n'
    printf 'dead_letters: { type: file, path: ../out/kafka-scale-dead.jsonl }\n'
    printf 'api: { listen: "127.0.0.1:0" }\n'
  } > "$cfg"
  pids=() addrs=()
  start=$(date +%s.%N)
  broker_cpu_start=$(cpu_of "$broker_pid")
  for i in $(seq 1 "$procs"); do
    "$PROCESSOR" run --no-progress --config "$cfg" >/dev/null 2>"$DIR/out/kafka-scale-$i.log" &
    pids+=($!)
  done
  for i in $(seq 1 "$procs"); do
    address=""
    while [ -z "$address" ] && kill -0 "${pids[$((i - 1))]}" 2>/dev/null; do
      address=$(sed -n 's/.*API listening address=\([0-9.:]*\).*/\1/p' "$DIR/out/kafka-scale-$i.log" | head -n 1)
      [ -n "$address" ] || sleep 0.1
    done
    addrs+=("$address")
  done
  reads_of() { { curl -s "http://$1/metrics" || true; } | awk '/^dataflow_source_events_read_total/ { s += $NF } END { printf "%d", s }'; }
  owned_of() { curl -s "http://$1/api/v1/status" | jq '.tasks // [] | length' 2>/dev/null || echo 0; }
  settled="" total=0
  declare -a read0 cpu0 owned
  while [ "$total" -lt "$n" ]; do
    total=0 owned_sum=0 each=1
    declare -a now_reads now_owned
    for i in $(seq 0 $((procs - 1))); do
      kill -0 "${pids[$i]}" 2>/dev/null || { echo "processor $((i + 1)) ended: $(tail -n 3 "$DIR/out/kafka-scale-$((i + 1)).log")" >&2; exit 1; }
      now_reads[$i]=$(reads_of "${addrs[$i]}")
      now_owned[$i]=$(owned_of "${addrs[$i]}")
      total=$((total + now_reads[$i]))
      owned_sum=$((owned_sum + now_owned[$i]))
      [ "${now_owned[$i]}" -gt 0 ] || each=0
    done
    if [ -z "$settled" ] && [ "$owned_sum" -eq "$parts" ] && [ "$each" = 1 ]; then
      settled=$(date +%s.%N)
      broker_cpu0=$(cpu_of "$broker_pid")
      for i in $(seq 0 $((procs - 1))); do
        read0[$i]=${now_reads[$i]} cpu0[$i]=$(cpu_of "${pids[$i]}") owned[$i]=${now_owned[$i]}
      done
    fi
    [ "$total" -ge "$n" ] || sleep 0.2
  done
  end=$(date +%s.%N)
  if [ -z "$settled" ]; then
    echo "every record was read before the group settled: use a larger SIZES" >&2
    settled=$start broker_cpu0=$broker_cpu_start
    for i in $(seq 0 $((procs - 1))); do read0[$i]=0 cpu0[$i]=0 owned[$i]=$(owned_of "${addrs[$i]}"); done
  fi
  broker_cpu1=$(cpu_of "$broker_pid")
  declare -a read1 cpu1 hwm
  for i in $(seq 0 $((procs - 1))); do
    read1[$i]=$(reads_of "${addrs[$i]}")
    cpu1[$i]=$(cpu_of "${pids[$i]}")
    hwm[$i]=$(awk '/VmHWM/ { print $2 }' "/proc/${pids[$i]}/status")
  done
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" || true; done
  window=$(awk -v a="$settled" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
  printf '\n%s: %d bids loaded into %s (%d partitions) in %.1f s; %d processors, W2, scale_out, at least once\n' "$brokers" "$n" "$topic" "$parts" "$load_secs" "$procs"
  awk -v a="$start" -v s="$settled" -v e="$end" -v n="$n" -v w="$window" -v r="$(( ${read1[*]/%/+} 0 ))" -v r0="$(( ${read0[*]/%/+} 0 ))" 'BEGIN {
    printf "group settled %.1f s after the start; all read %.1f s after the start; window %.1f s: %d records, %.0f events/s in total (%.0f events/s over the whole run)\n", s - a, e - a, w, r - r0, (r - r0) / w, n / (e - a)
  }'
  printf '\n| process | partitions | records in window | events/s | CPU s in window | CPU / window | CPU s whole run | peak RSS |\n|---|---:|---:|---:|---:|---:|---:|---:|\n'
  for i in $(seq 0 $((procs - 1))); do
    awk -v p="$((i + 1))" -v o="${owned[$i]}" -v r="$(( read1[$i] - read0[$i] ))" -v w="$window" -v c0="${cpu0[$i]}" -v c1="${cpu1[$i]}" -v h="${hwm[$i]:-0}" 'BEGIN {
      printf "| processor %d | %d | %d | %.0f | %.1f | %.2f | %.1f | %.1f MiB |\n", p, o, r, r / w, c1 - c0, (c1 - c0) / w, c1, h / 1024
    }'
  done
  awk -v w="$window" -v c0="$broker_cpu0" -v c1="$broker_cpu1" -v cs="$broker_cpu_start" 'BEGIN {
    printf "| broker (tansu) | - | - | - | %.1f | %.2f | %.1f (since the processors started) | - |\n", c1 - c0, (c1 - c0) / w, c1 - cs
  }'
fi
