#!/usr/bin/env bash
# The HTTP API's floods and connection storms (issue 10), too long for the suite: starts
# `kvroute serve` (release build; PROFILE=debug to skip it) with the Qwen3 tokenizer and two
# known engines, runs scripts/attack_http.py against it and prints the table that
# docs/security.md records. Extra arguments go to the Python script (e.g. --hold 15,
# --connections 5000, --only slowloris; KVROUTE_BIN=path runs that binary, unbuilt). Needs
# the loopback range 127.0.0.0/8 (Linux).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
bin="${KVROUTE_BIN:-}"
if [ -z "$bin" ]; then
  if [ "$profile" = release ]; then
    cargo build -q --release -p kvroute
  else
    cargo build -q -p kvroute
  fi
  bin="target/$profile/kvroute"
fi
tokenizers="${KVROUTE_TOKENIZERS:-testdata/tokenizers}"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The server's descriptors are bounded by --max-connections; the attacker needs its own.
ulimit -n "$(ulimit -Hn)" || true
"$bin" serve --listen "127.0.0.1:$port" --model "Qwen3-32B=$tokenizers/qwen3" \
  --engine 127.0.0.1:1=9 --engine 127.0.0.1:2=10 --scrape-interval-ms 60000 \
  --health-interval-ms 0 \
  >/dev/null 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.1
done
python3 scripts/attack_http.py --addr "127.0.0.1:$port" --pid "$pid" --model Qwen3-32B "$@"
