#!/usr/bin/env bash
# One command for the whole benchmark report.
#   bench/run.sh           full run (~15 min): every scenario, Tidegate + Pushpin + Nchan,
#                          rewrites BENCHMARKS.md and bench/plots/*.png
#   bench/run.sh --smoke   seconds, small numbers, Tidegate only: keeps the harness working in CI
#   bench/run.sh [--smoke] --only jitter[,slow,…]
#                          only those scenarios, merged into the existing results file
#                          (the other scenarios' numbers are kept); then the report is rebuilt
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
smoke=""
only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke="--smoke" ;;
    --only) only=(--only "${2:?--only needs a comma list of scenarios}"); shift ;;
    --only=*) only=(--only "${1#--only=}") ;;
    *) echo "usage: bench/run.sh [--smoke] [--only density,fanout,ingest,durable,slow,jitter]" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "[bench] $*"; }

peers_needed=1
if [ ${#only[@]} -gt 0 ] && ! [[ ",${only[1]}," =~ ,(density|fanout), ]]; then peers_needed=""; fi
if [ -z "$smoke" ] && [ -n "$peers_needed" ]; then
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
fi
if [ -z "$smoke" ]; then
  python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib
fi

log "building (release)"
cargo build --release -p tidegate -p tidegate-bench --quiet
log "running scenarios"
timeout 2400 python3 bench/run.py $smoke "${only[@]}"
python3 bench/report.py $smoke
