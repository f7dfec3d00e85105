#!/usr/bin/env bash
# Build the filter (scripts/build_filter.sh) and write it as a Wasm OCI image layout
# (packaging/wasm_oci.py), ready to push with oras/skopeo/crane: no Docker engine needed.
# Usage: scripts/build_wasm_oci.sh [OUT_DIR (default target/kvroute-filter-oci)] [TAG] [compat|oci]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/kvroute-filter-oci}
tag=${2:-latest}
variant=${3:-compat}
wasm=$(bash scripts/build_filter.sh --print-path)
python=python3
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
rm -rf "$out"
"$python" packaging/wasm_oci.py --wasm "$wasm" --out "$out" --tag "$tag" --variant "$variant"
echo "push with: oras cp --from-oci-layout $out:$tag REGISTRY/kvroute-filter:$tag"
echo "       or: skopeo copy oci:$out:$tag docker://REGISTRY/kvroute-filter:$tag"
