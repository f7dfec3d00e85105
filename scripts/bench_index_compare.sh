#!/usr/bin/env bash
# kvroute's block index beside NVIDIA Dynamo's radix tree (dynamo-kv-router 1.6.1) on the
# seed's fleet: same events, same queries, answers checked, medians of runs, one process
# each. Kept out of the workspace and CI (bench/index-compare has its own lock file).
# Any flag goes to the binary: --engines 8,64,256,1024 --runs 3.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet --manifest-path bench/index-compare/Cargo.toml -- "$@"
