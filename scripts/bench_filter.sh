#!/usr/bin/env bash
# Measures what the kvroute filter adds to a request through the real Envoy, side by side
# with the same Envoy without the filter: p50/p99 added latency for a ~7,200-token chat
# request, cold and warm, and Envoy's resident memory with the Qwen3 tokenizer loaded at
# --concurrency 1 and 2. Prints markdown tables (recorded in docs/filter.md).
#
#   scripts/bench_filter.sh                      # 40 requests per phase, tokenize in the VM
#   scripts/bench_filter.sh --requests 100
#   scripts/bench_filter.sh --tokenize-in indexer --indexer-addr 127.0.0.1:8081   # needs kvroute serve
set -euo pipefail
cd "$(dirname "$0")/.."
export KVROUTE_TOKENIZERS="${KVROUTE_TOKENIZERS:-$PWD/testdata/tokenizers}"
export KVROUTE_ENVOY_LOG_LEVEL="${KVROUTE_ENVOY_LOG_LEVEL:-warning}"
bash scripts/build_filter.sh
cargo build -q --release -p kvroute-harness --bin kvroute-filter-bench
echo "Machine: $(nproc) cores, $(uname -m), Envoy $(.bin/envoy --version 2>/dev/null | grep -o '1\.[0-9]*\.[0-9]*' | head -1), filter $(stat -c %s target/kvroute_filter.wasm) bytes"
echo
target/release/kvroute-filter-bench "$@"
