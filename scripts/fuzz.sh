#!/usr/bin/env bash
# The longer fuzzing run (the suite runs the same properties with a few hundred cases in
# seconds): the KV-event decoder's, the request parser's (chat, completions, messages:
# parsed, templated and tokenized) and the HTTP API bodies' byte-level and structured
# properties with many more cases, release-built so each case is cheap. Usage: scripts/fuzz.sh [CASES] (default
# 200000). Stable Rust, no nightly toolchain: proptest.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-200000}"
echo "== kvevents decoder: $cases cases per property"
KVROUTE_FUZZ_CASES="$cases" cargo test -q --release -p kvroute-kvevents --test fuzz
KVROUTE_FUZZ_CASES="$cases" cargo test -q --release -p kvroute-kvevents --test hostile
cases_slow=$(( cases / 50 > 100 ? cases / 50 : 100 ))
echo "== request parser + template + tokenizer: $cases_slow cases per property"
KVROUTE_FUZZ_CASES="$cases_slow" cargo test -q --release -p kvroute-blockhash --test request_fuzz
echo "== HTTP API bodies: $cases_slow cases per property"
KVROUTE_FUZZ_CASES="$cases_slow" cargo test -q --release -p kvroute-indexer --test http_fuzz
