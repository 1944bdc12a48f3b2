#!/usr/bin/env bash
# One command for the whole benchmark report.
#   bench/run.sh           full run (~15 min): every scenario, Tidegate + Pushpin + Nchan,
#                          rewrites BENCHMARKS.md and bench/plots/*.png
#   bench/run.sh --smoke   seconds, small numbers, Tidegate only: keeps the harness working in CI
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
smoke=""
[ "${1:-}" = "--smoke" ] && smoke="--smoke"
log() { echo "[bench] $*"; }

if [ -z "$smoke" ]; then
  need=()
  command -v pushpin >/dev/null || need+=(pushpin)
  command -v zurl >/dev/null || need+=(zurl)
  command -v nginx >/dev/null || need+=(nginx)
  [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || need+=(libnginx-mod-nchan)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} (Debian)"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib
fi

log "building (release)"
cargo build --release -p tidegate -p tidegate-bench --quiet
log "running scenarios"
timeout 2400 python3 bench/run.py $smoke
python3 bench/report.py $smoke
