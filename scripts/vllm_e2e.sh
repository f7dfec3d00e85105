#!/usr/bin/env bash
# kvroute against REAL vLLM 0.32 engines on this machine (opt-in, not in CI: the first run
# downloads ~3 GB and installs a CPU vLLM in $ROOT, default $HOME/.cache/kvroute-vllm).
# Builds kvroute, local-stack and the filter, starts ENGINES real engines (scripts/vllm/),
# `kvroute serve` and Envoy with the filter, then runs the scenarios of scripts/vllm/e2e.py:
# routing follows the cache; an engine SIGKILLed (or SIGTERMed) and restarted under steady
# load; an engine starting long after the indexer and Envoy; an engine listed that never
# exists; the indexer SIGKILLed and restarted under load. Results: target/vllm_e2e/results.md.
#
#   bash scripts/vllm_e2e.sh                          # 2 engines, engines bind, vLLM's default hashing
#   bash scripts/vllm_e2e.sh --engines 3 --wiring bind --hash-algo sha256_cbor --hash-seed 42
#   bash scripts/vllm_e2e.sh --scenarios follow,kill,term,late,ghost,indexer --rate 8
#   bash scripts/vllm_e2e.sh --help                   # e2e.py's options
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-$HOME/.cache/kvroute-vllm}
export ROOT
if [ ! -x "$ROOT/venv/bin/vllm" ]; then
  echo "[vllm-e2e] installing the CPU vLLM 0.32 in $ROOT (~3 GB, ~5 min)" >&2
  bash scripts/vllm/install.sh
fi
echo "[vllm-e2e] building kvroute, local-stack and the filter" >&2
cargo build -q -p kvroute --bin kvroute
cargo build -q -p kvroute-harness --bin local-stack
wasm=$(bash scripts/build_filter.sh --print-path)
python=python3
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
exec "$python" scripts/vllm/e2e.py --vllm-root "$ROOT" --filter "$wasm" "$@"
