#!/usr/bin/env bash
# The macro benchmark: vbs-proxy cache hits against nginx proxy_cache and a bytes-from-memory
# ceiling, the price of aggregation on a miss, coalescing, memory. Loopback only, bounded runs.
#   bash bench/run.sh            (BENCH_SECONDS=5 ROUNDS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
exec python3 bench/run.py "$@"
