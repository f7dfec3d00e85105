#!/usr/bin/env bash
# The test command (README, CI): installs what is missing, then checks format and lints,
# builds the shared crate and the filter for wasm32-wasip1, and runs every test,
# end-to-end ones included (real Envoy, real tokenizers, real vLLM frames).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.bin:$PATH"
export KVROUTE_TOKENIZERS="$PWD/testdata/tokenizers"
# Incremental caches are 6-7 GB for this workspace and a one-shot run never reuses them.
export CARGO_INCREMENTAL=0

echo "== fmt"; cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets -q -- -D warnings
echo "== wasm32-wasip1 build"
cargo build -q -p kvroute-blockhash --target wasm32-wasip1
cargo build -q -p kvroute-filter --target wasm32-wasip1 --release
echo "== tests"
cargo test --workspace -q 2>&1 | tee target/test.log
echo "== disk: target $(du -sh target 2>/dev/null | cut -f1), free $(df -h . | awk 'NR==2{print $4}')"
