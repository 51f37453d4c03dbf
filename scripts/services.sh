#!/usr/bin/env bash
# Private, throwaway PostgreSQL and Redis instances for tests (and the examples), so that a fresh
# machine with only Rust can run the sinks' tests: the servers are installed with apt-get when
# their binaries are absent, and each instance lives in a directory of its own, on a free
# loopback port, never touching the machine's own services.
#
#   scripts/services.sh install                    # install postgresql / redis-server if absent
#   scripts/services.sh start  postgres|redis DIR  # start (initialising DIR first): prints the port
#   scripts/services.sh stop   postgres|redis DIR  # stop; DIR keeps the data, a start resumes it
#   scripts/services.sh status postgres|redis DIR  # "running PORT" or "stopped"
#   scripts/services.sh psql DIR ARGS...            # psql on DIR's instance, database test
#   scripts/services.sh redis-cli DIR ARGS...       # redis-cli on DIR's instance
#
# A start after a stop reuses DIR's port and data, so a test can take "the store" down and bring
# it back. PostgreSQL runs with trust authentication for the user `postgres`, database `test`;
# its server refuses to run as root, so as root it runs as the user `postgres` (created if
# absent). Redis keeps no snapshot on its own (`--save ''`, no AOF); a stop saves one
# (`SHUTDOWN SAVE`) so that the restarted instance holds what the stopped one held.
set -euo pipefail

die() {
  echo "services.sh: $*" >&2
  exit 1
}

# The directory of PostgreSQL's server binaries: initdb on the PATH, or Debian's versioned
# directory.
pg_bin() {
  local initdb
  if initdb=$(command -v initdb 2>/dev/null); then
    dirname "$(readlink -f "$initdb")"
    return
  fi
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ]; then
      echo "$dir"
      return
    fi
  done
  return 1
}

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo -n "$@"
  else
    die "cannot run \`$*\`: not root and no sudo"
  fi
}

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null || die "cannot install $*: no apt-get on this machine"
  if [ "$apt_updated" = 0 ]; then
    as_root apt-get update -qq >&2
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >&2
}

install() {
  # Several test processes may get here at once: one installs, the others wait for it. The
  # lock is held in a subshell, so that no server started later inherits it.
  (
    command -v flock >/dev/null && flock 9
    install_missing
  ) 9>"${TMPDIR:-/tmp}/dataflow-services-install.lock"
}

install_missing() {
  if ! pg_bin >/dev/null; then
    echo "installing postgresql..." >&2
    apt_install postgresql
  fi
  if ! command -v redis-server >/dev/null; then
    echo "installing redis-server..." >&2
    apt_install redis-server
  fi
}

# A loopback port nothing listens on (a connection to it is refused).
free_port() {
  local port tries=0
  while [ $tries -lt 200 ]; do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
    tries=$((tries + 1))
  done
  die "no free port found"
}

# Polls `$@` until it succeeds, for up to $1 tenths of a second.
wait_for() {
  local tenths=$1
  shift
  local i
  for ((i = 0; i < tenths; i++)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# The user PostgreSQL runs as: the caller, or `postgres` (created if absent) for root.
pg_user() {
  if [ "$(id -u)" != 0 ]; then
    id -un
    return
  fi
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres 2>/dev/null ||
      useradd -r -M postgres ||
      die "cannot create the user postgres"
  fi
  echo postgres
}

as_pg() {
  local user
  user=$(pg_user)
  if [ "$(id -u)" = 0 ]; then
    if command -v runuser >/dev/null; then
      runuser -u "$user" -- "$@"
    else
      su -s /bin/sh "$user" -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

port_of() {
  [ -s "$1/port" ] || return 1
  cat "$1/port"
}

pg_ready() {
  local bin=$1 port=$2
  if [ -x "$bin/pg_isready" ]; then
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
  fi
}

pg_start() {
  local dir=$1 bin port user
  bin=$(pg_bin) || die "postgresql is not installed (run: scripts/services.sh install)"
  user=$(pg_user)
  mkdir -p "$dir"
  if [ ! -s "$dir/data/PG_VERSION" ]; then
    mkdir -p "$dir/data"
    if [ "$(id -u)" = 0 ]; then
      chown -R "$user" "$dir"
      # A temporary directory is only its owner's: the server's user must be able to pass
      # through each of DIR's ancestors that is root's (execute only: not list them).
      local up=$dir
      while [ "$up" != / ]; do
        up=$(dirname "$up")
        if [ "$(stat -c %u "$up")" = 0 ] && ! as_pg test -x "$up"; then
          chmod o+x "$up"
        fi
      done
    fi
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
      die "initdb failed: $(tail -n 5 "$dir/initdb.log")"
  fi
  if port=$(port_of "$dir") && pg_ready "$bin" "$port"; then
    echo "$port"
    return
  fi
  port=$(port_of "$dir" || free_port)
  echo "$port" >"$dir/port"
  # Fast over safe: no fsync (a throwaway instance), sockets only on loopback TCP.
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 30 \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50" \
    start </dev/null >/dev/null 2>&1 || die "postgres did not start on port $port: $(tail -n 5 "$dir/data/server.log" 2>/dev/null)"
  wait_for 100 pg_ready "$bin" "$port" || die "postgres on port $port does not answer"
  # The database tests and examples use, as on the project's machines.
  if [ ! -e "$dir/created-test" ]; then
    "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null 2>&1 || true
    touch "$dir/created-test"
  fi
  echo "$port"
}

pg_stop() {
  local dir=$1 bin
  bin=$(pg_bin) || return 0
  [ -s "$dir/data/postmaster.pid" ] || return 0
  as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
}

pg_status() {
  local dir=$1 bin port
  bin=$(pg_bin) || { echo stopped; return; }
  if port=$(port_of "$dir") && pg_ready "$bin" "$port"; then
    echo "running $port"
  else
    echo stopped
  fi
}

redis_ping() {
  local port=$1 reply
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'PING\r\n' >&3
  read -r -t 2 reply <&3 || true
  exec 3>&-
  [[ $reply == +PONG* ]]
}

redis_start() {
  local dir=$1 port
  command -v redis-server >/dev/null || die "redis-server is not installed (run: scripts/services.sh install)"
  mkdir -p "$dir"
  if port=$(port_of "$dir") && redis_ping "$port" 2>/dev/null; then
    echo "$port"
    return
  fi
  port=$(port_of "$dir" || free_port)
  echo "$port" >"$dir/port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" </dev/null >/dev/null 2>&1 ||
    die "redis-server did not start on port $port"
  wait_for 100 redis_ping "$port" || die "redis on port $port does not answer: $(tail -n 5 "$dir/redis.log" 2>/dev/null)"
  echo "$port"
}

redis_stop() {
  local dir=$1 port pid
  port=$(port_of "$dir") || return 0
  pid=$(cat "$dir/redis.pid" 2>/dev/null || true)
  # Saves a snapshot into DIR first, which the next start loads.
  { exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'SHUTDOWN SAVE\r\n' >&3 && exec 3>&-; } 2>/dev/null || true
  if [ -n "$pid" ]; then
    wait_for 100 bash -c "! kill -0 $pid 2>/dev/null" || kill "$pid" 2>/dev/null || true
  fi
}

redis_status() {
  local dir=$1 port
  if port=$(port_of "$dir") && redis_ping "$port" 2>/dev/null; then
    echo "running $port"
  else
    echo stopped
  fi
}

usage() {
  die "usage: services.sh install | start|stop|status postgres|redis DIR | psql|redis-cli DIR ARGS..."
}

command=${1:-}
case "$command" in
  install)
    install
    ;;
  start | stop | status)
    service=${2:-}
    dir=${3:-}
    [ -n "$dir" ] || usage
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    case "$service" in
      postgres | postgresql) service=pg ;;
      redis) ;;
      *) usage ;;
    esac
    [ "$command" = start ] && install
    "${service}_${command}" "$dir"
    ;;
  psql)
    dir=${2:-}
    [ -n "$dir" ] || usage
    shift 2
    bin=$(pg_bin) || die "postgresql is not installed"
    port=$(port_of "$dir") || die "no instance in $dir"
    exec "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d test "$@"
    ;;
  redis-cli)
    dir=${2:-}
    [ -n "$dir" ] || usage
    shift 2
    port=$(port_of "$dir") || die "no instance in $dir"
    exec redis-cli -h 127.0.0.1 -p "$port" "$@"
    ;;
  *)
    usage
    ;;
esac
