#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then runs
# unit, property, integration (real sockets, real processes) and browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n== %s\n' "$*"; }

# --- tools the suite needs -------------------------------------------------
need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} (Debian)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ -f tests/browser/package.json ] && [ ! -d tests/browser/node_modules ]; then
  log "installing browser test dependencies (npm)"
  (cd tests/browser && npm ci --no-audit --no-fund --silent || npm install --no-audit --no-fund --silent)
fi

# --- brokers: NATS JetStream and a Kafka-protocol broker (tansu) ------------
# Exports TIDEGATE_TEST_NATS_URL, TIDEGATE_TEST_KAFKA_BROKERS and
# TIDEGATE_TEST_BROKERS=required, so broker tests fail instead of skipping.
log "brokers (scripts/brokers.sh)"
# shellcheck source=brokers.sh
. scripts/brokers.sh

# --- Rust: lints, then every test of the workspace -------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "cargo test (workspace)"
cargo build --workspace --all-targets --quiet
cargo build -p tidegate --release --quiet
TIDEGATE_BIN="$root/target/release/tidegate" cargo test --workspace --quiet -- --test-threads "${TEST_THREADS:-2}"

# --- browser: EventSource and WebSocket pages in headless Chromium ---------
if [ -f tests/browser/run.mjs ]; then
  log "browser tests (headless Chromium)"
  TIDEGATE_BIN="$root/target/release/tidegate" node tests/browser/run.mjs
fi

log "benchmark smoke (bench/run.sh --smoke)"; bench/run.sh --smoke
log "Durable Streams conformance suite"; [ -d tests/conformance/node_modules ] || (cd tests/conformance && npm ci --no-audit --no-fund --silent); TIDEGATE_BIN="$root/target/release/tidegate" node tests/conformance/run.mjs --reporter=dot
log "all tests passed"
