#!/usr/bin/env bash
# The README's main job: a whole kvroute deployment on this machine. After setting up
# (scripts/setup.sh), it builds kvroute, the simulated vLLM engine and the filter, then
# starts `kvroute serve`, three simulated engines (127.0.0.2-4:8000, each publishing vLLM's
# KV events over ZeroMQ) and a real Envoy with the filter on 127.0.0.1:8080; sends the seed's
# round1 and round2 through Envoy and prints which engine served each and how many prompt
# tokens came from its cache; then keeps running for your own requests until Ctrl-C.
#
#   bash scripts/demo.sh                         # simulated engines, stays up
#   bash scripts/demo.sh --exit                  # example only (status 1 if round2 missed)
#   bash scripts/demo.sh --time-scale 10         # simulated engines ten times faster
#   bash scripts/demo.sh --epp                   # through the endpoint picker (ext_proc)
#                                                #   instead of the wasm filter
#   bash scripts/demo.sh --vllm http://10.0.0.5:8000 --vllm-kv tcp://10.0.0.5:5557 \
#                        --vllm http://10.0.0.6:8000 --vllm-kv tcp://10.0.0.6:5557   # real vLLM binds
#   bash scripts/demo.sh --zmq-listen 10.0.0.1:5557 --vllm http://10.0.0.5:8000  # real vLLM connects
#   bash scripts/demo.sh --filter target/kvroute_filter.wasm   # a prebuilt filter, no rebuild
#   bash scripts/demo.sh --help                  # listener addresses, model, tokenizer, hash seed
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
echo "[demo] setting up (log: target/demo_setup.log)" >&2
bash scripts/setup.sh >target/demo_setup.log 2>&1 || { tail -20 target/demo_setup.log; exit 1; }
echo "[demo] building kvroute, kvroute-engine-sim and local-stack (the filter on start, unless --filter)" >&2
cargo build -q -p kvroute -p kvroute-engine-sim
cargo build -q -p kvroute-harness --bin local-stack
exec target/debug/local-stack "$@"
