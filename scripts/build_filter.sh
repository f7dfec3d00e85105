#!/usr/bin/env bash
# Builds the Envoy filter for wasm32-wasip1 in release mode and shrinks it with binaryen's
# wasm-opt. Output: target/kvroute_filter.wasm (the file envoy/local.yaml loads), and its
# size before and after on stderr. Usage: scripts/build_filter.sh [--print-path]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p kvroute-filter --target wasm32-wasip1 --release
raw=target/wasm32-wasip1/release/kvroute_filter.wasm
out=target/kvroute_filter.wasm
if [ -f "$out" ] && [ "$out" -nt "$raw" ]; then
  : # already shrunk from this build (wasm-opt -Oz takes half a minute; skip it)
elif command -v wasm-opt >/dev/null 2>&1; then
  # The feature flags are those rustc's wasm32-wasip1 output already uses; wasm-opt must
  # be told, or it refuses the module. -Oz: size first, the hot loops stay fast in v8.
  wasm-opt -Oz --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
    --strip-debug --strip-producers "$raw" -o "$out.tmp"
  mv "$out.tmp" "$out"
else
  echo "[build_filter] wasm-opt not found: copying the unshrunk module" >&2
  cp "$raw" "$out"
fi
printf '[build_filter] %s: %d bytes (cargo release: %d bytes)\n' "$out" "$(stat -c %s "$out")" "$(stat -c %s "$raw")" >&2
if [ "${1:-}" = "--print-path" ]; then echo "$PWD/$out"; fi
