#!/usr/bin/env bash
# The seed's shared-prefix benchmark (issue 5, docs/benchmarks.md): every routing policy
# through the real Envoy to simulated vLLM engines, with the schedule's hit-ratio bound
# and the fleet model at full scale. Release binaries: the engines and the indexer must keep up
# with the time-scaled clock, or their own CPU time would show up as latency.
#
#   bash scripts/bench.sh            # full run, real time (~1.5 h for all six policies): docs/benchmarks/
#   bash scripts/bench.sh --quick    # smoke run (< 3 min): target/bench-quick/
#   bash scripts/bench.sh --policies precise,random --qps 3,30   # any kvroute-bench flag
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .bin/envoy ] || [ ! -d testdata/tokenizers/qwen3 ]; then
  bash scripts/setup.sh
fi
export PATH="$PWD/.bin:$PATH"
export KVROUTE_TOKENIZERS="$PWD/testdata/tokenizers"
cargo build -q --release -p kvroute -p kvroute-engine-sim -p kvroute-bench
export KVROUTE_BIN="$PWD/target/release/kvroute"
export KVROUTE_ENGINE_SIM_BIN="$PWD/target/release/kvroute-engine-sim"
exec target/release/kvroute-bench "$@"
