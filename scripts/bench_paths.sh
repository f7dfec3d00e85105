#!/usr/bin/env bash
# The latency and CPU each routing path adds, side by side in one run through the same
# Envoy build: no routing, the wasm filter, and the endpoint picker (ext_proc), on
# ~7,200-token chat requests, cold and warm, p50/p99, Envoy's and the indexer's CPU per
# request. Prints the markdown table recorded in docs/filter.md ("Which path").
#
#   scripts/bench_paths.sh                 # 30 requests per phase
#   scripts/bench_paths.sh --requests 60
set -euo pipefail
cd "$(dirname "$0")/.."
export KVROUTE_TOKENIZERS="${KVROUTE_TOKENIZERS:-$PWD/testdata/tokenizers}"
export KVROUTE_ENVOY_LOG_LEVEL="${KVROUTE_ENVOY_LOG_LEVEL:-warning}"
bash scripts/build_filter.sh
cargo build -q --release -p kvroute -p kvroute-harness --bin kvroute --bin kvroute-paths-bench
echo "Machine: $(nproc) cores, $(uname -m), Envoy $(.bin/envoy --version 2>/dev/null | grep -o '1\.[0-9]*\.[0-9]*' | head -1), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
KVROUTE_BIN="$PWD/target/release/kvroute" target/release/kvroute-paths-bench "$@"
