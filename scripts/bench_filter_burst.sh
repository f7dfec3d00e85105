#!/usr/bin/env bash
# Why requests fail open on the filter's 50 ms call timeout under CPU pressure: a burst of
# concurrent chat requests (default 200, each its own ~1,000-token prompt) through the real
# Envoy and filter, one run per variant (default, a quarter of the burst, a 250 ms timeout,
# one Envoy worker). Prints the markdown table recorded in docs/filter.md.
#
#   scripts/bench_filter_burst.sh          # 200 concurrent requests
#   scripts/bench_filter_burst.sh 100
set -euo pipefail
cd "$(dirname "$0")/.."
export KVROUTE_TOKENIZERS="${KVROUTE_TOKENIZERS:-$PWD/testdata/tokenizers}"
export KVROUTE_ENVOY_LOG_LEVEL="${KVROUTE_ENVOY_LOG_LEVEL:-warning}"
bash scripts/build_filter.sh
cargo build -q --release -p kvroute-harness --bin kvroute-filter-burst
echo "Machine: $(nproc) cores, $(uname -m), Envoy $(.bin/envoy --version 2>/dev/null | grep -o '1\.[0-9]*\.[0-9]*' | head -1)"
echo
target/release/kvroute-filter-burst "$@"
