#!/usr/bin/env bash
# Starts one real vLLM 0.32.0 OpenAI server on CPU (installed by scripts/vllm/install.sh):
# the tiny random-weight Qwen3 served as model "Qwen3-32B", block size 64, prefix caching,
# prompt-token details in usage (cached_tokens), ZeroMQ KV events. Takes 1-3 minutes to start
# and ~2-3 GB of memory. Extra arguments are passed to `vllm serve`.
#
#   ROOT         where install.sh put things (default $HOME/.cache/kvroute-vllm)
#   HOST, PORT   the OpenAI server (default 127.0.0.1:8000)
#   HASH_ALGO    --prefix-caching-hash-algo ("" = vLLM's default, sha256: pickle + sha256)
#   HASHSEED     PYTHONHASHSEED ("" = unset, vLLM's default: a random NONE_HASH per process)
#   KV_ENDPOINT  KV-event endpoint (default tcp://*:5557). With '*' (or '::', ipc://) vLLM's
#                PUB binds (the indexer dials it, `kvroute serve --engine`); any other makes
#                it connect to a SUB that binds there (`kvroute serve --zmq-bind`).
#   TOPIC        event topic (default kv@$HOST@Qwen3-32B)
#   REPLAY       replay ROUTER endpoint, optional (e.g. tcp://*:5558)
#   NUM_BLOCKS   --num-gpu-blocks-override (default 160 blocks x 64 tokens: evictions happen)
set -euo pipefail
ROOT=${ROOT:-$HOME/.cache/kvroute-vllm}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
HASH_ALGO=${HASH_ALGO-}
HASHSEED=${HASHSEED-}
KV_ENDPOINT=${KV_ENDPOINT:-tcp://*:5557}
TOPIC=${TOPIC:-kv@$HOST@Qwen3-32B}
NUM_BLOCKS=${NUM_BLOCKS:-160}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export VLLM_TARGET_DEVICE=cpu          # with the +cpu version shim: vLLM's CPU platform
export VLLM_SERVER_DEV_MODE=1          # exposes POST /reset_prefix_cache
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}   # GiB
export VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-nobind}
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export VLLM_HOST_IP=$HOST
if [[ -n "$HASHSEED" ]]; then export PYTHONHASHSEED="$HASHSEED"; else unset PYTHONHASHSEED; fi

algo_args=()
[[ -n "$HASH_ALGO" ]] && algo_args=(--prefix-caching-hash-algo "$HASH_ALGO")
kv_config="{\"enable_kv_cache_events\":true,\"publisher\":\"zmq\",\"endpoint\":\"$KV_ENDPOINT\",\"topic\":\"$TOPIC\""
[[ -n "${REPLAY:-}" ]] && kv_config+=",\"replay_endpoint\":\"$REPLAY\""
kv_config+="}"

exec "$ROOT/venv/bin/vllm" serve "$ROOT/tiny-qwen3" \
  --served-model-name Qwen3-32B --host "$HOST" --port "$PORT" \
  --max-model-len 8192 --block-size 64 --enable-prefix-caching "${algo_args[@]}" \
  --load-format dummy --dtype bfloat16 --num-gpu-blocks-override "$NUM_BLOCKS" --max-num-seqs 4 \
  --enable-prompt-tokens-details \
  --kv-events-config "$kv_config" \
  "$@"
