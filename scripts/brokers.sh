# Test brokers for the suite: NATS with JetStream and tansu (a Kafka-protocol broker).
# Meant to be sourced (`. scripts/brokers.sh`) from the repository root by
# scripts/test.sh; also works on its own (`bash scripts/brokers.sh`, prints the
# exports). Idempotent: brokers already answering are reused, nothing is started twice.
#
#   NATS:  127.0.0.1:4222 if something answers there (never started by us), else our
#          own `nats-server -js -p 4223` with its store in target/brokers/nats.
#   tansu: 127.0.0.1:9092 if something answers there, else our own tansu 0.6.0 with
#          sqlite storage in target/brokers/tansu (its memory engine can lose records
#          when a fetch starts mid-batch). Installed with cargo if missing.
#
# Exports TIDEGATE_TEST_NATS_URL, TIDEGATE_TEST_KAFKA_BROKERS and
# TIDEGATE_TEST_BROKERS=required (broker tests fail instead of skipping).

_brokers_root=$(pwd)
_brokers_dir="$_brokers_root/target/brokers"
_tansu_version=0.6.0
_tansu_bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"

_brokers_log() { printf '== brokers: %s\n' "$*" >&2; }

# True when a TCP connection to 127.0.0.1:$1 succeeds.
_brokers_answers() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits up to $2 seconds for port $1; on timeout prints the tail of log $3 and fails.
_brokers_wait() {
  local port=$1 secs=$2 log=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    _brokers_answers "$port" && return 0
    sleep 0.1
  done
  _brokers_log "nothing answers on 127.0.0.1:$port after ${secs}s; last lines of $log:"
  tail -n 20 "$log" >&2 2>/dev/null || true
  return 1
}

_brokers_sudo() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

_brokers_nats() {
  if _brokers_answers 4222; then
    TIDEGATE_TEST_NATS_URL=nats://127.0.0.1:4222
    return 0
  fi
  TIDEGATE_TEST_NATS_URL=nats://127.0.0.1:4223
  if _brokers_answers 4223; then
    return 0
  fi
  if ! command -v nats-server >/dev/null 2>&1; then
    _brokers_log "installing nats-server (Debian)"
    _brokers_sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive _brokers_sudo apt-get install -y -qq nats-server >/dev/null
  fi
  mkdir -p "$_brokers_dir/nats"
  _brokers_log "starting nats-server -js on 127.0.0.1:4223 (log: target/brokers/nats/nats.log)"
  setsid nohup nats-server -js -a 127.0.0.1 -p 4223 -sd "$_brokers_dir/nats" \
    >"$_brokers_dir/nats/nats.log" 2>&1 </dev/null &
  echo $! >"$_brokers_dir/nats/pid"
  disown 2>/dev/null || true
  _brokers_wait 4223 30 "$_brokers_dir/nats/nats.log"
}

_brokers_tansu() {
  TIDEGATE_TEST_KAFKA_BROKERS=127.0.0.1:9092
  local pidfile="$_brokers_dir/tansu/pid" logfile="$_brokers_dir/tansu/tansu.log"
  # Our own tansu whose storage task panicked still listens but fails every request:
  # replace it (with fresh storage) instead of reusing it.
  if [ -f "$pidfile" ] && grep -q "panicked" "$logfile" 2>/dev/null \
      && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    _brokers_log "our tansu on 9092 had a storage panic (see $logfile); restarting it"
    kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 50); do _brokers_answers 9092 || break; sleep 0.1; done
    mv -f "$logfile" "$logfile.panicked" 2>/dev/null || true
    rm -f "$_brokers_dir"/tansu/tansu.db*
  fi
  if _brokers_answers 9092; then
    return 0
  fi
  local have=""
  if [ -x "$_tansu_bin" ]; then
    have=$("$_tansu_bin" --version 2>/dev/null | awk '{print $2}')
  fi
  if [ "$have" != "$_tansu_version" ]; then
    _brokers_log "installing tansu $_tansu_version with cargo (takes a while the first time)"
    cargo install tansu --version "$_tansu_version" --locked --features dynostore,libsql
  fi
  mkdir -p "$_brokers_dir/tansu"
  _brokers_log "starting tansu on 127.0.0.1:9092, sqlite storage (log: target/brokers/tansu/tansu.log)"
  (
    cd "$_brokers_dir/tansu" || exit 1
    setsid nohup "$_tansu_bin" broker \
      --listener-url tcp://127.0.0.1:9092 \
      --advertised-listener-url tcp://127.0.0.1:9092 \
      --storage-engine sqlite://tansu.db \
      >tansu.log 2>&1 </dev/null &
    echo $! >pid
  )
  _brokers_wait 9092 60 "$_brokers_dir/tansu/tansu.log"
}

_brokers_nats || { _brokers_log "could not start NATS"; return 1 2>/dev/null || exit 1; }
_brokers_tansu || { _brokers_log "could not start tansu"; return 1 2>/dev/null || exit 1; }
export TIDEGATE_TEST_NATS_URL TIDEGATE_TEST_KAFKA_BROKERS
export TIDEGATE_TEST_BROKERS=required
_brokers_log "NATS at $TIDEGATE_TEST_NATS_URL, Kafka protocol at $TIDEGATE_TEST_KAFKA_BROKERS"
# Run directly (not sourced): show what a caller would get.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  printf 'export TIDEGATE_TEST_NATS_URL=%s TIDEGATE_TEST_KAFKA_BROKERS=%s TIDEGATE_TEST_BROKERS=required\n' \
    "$TIDEGATE_TEST_NATS_URL" "$TIDEGATE_TEST_KAFKA_BROKERS"
fi
