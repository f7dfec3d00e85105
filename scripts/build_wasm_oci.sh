#!/usr/bin/env bash
# Build the filter (scripts/build_filter.sh) and write it as a Wasm OCI image layout
# (packaging/wasm_oci.py), ready to push with oras/skopeo/crane: no Docker engine needed.
# With --pin, every shipped attachment under k8s/ is then pinned to this build's digests
# (packaging/pin_filter.py): push exactly this layout, and commit the pinned manifests.
# Usage: scripts/build_wasm_oci.sh [--pin] [OUT_DIR (default target/kvroute-filter-oci)] [TAG (default: the workspace version)] [compat|oci]
set -euo pipefail
cd "$(dirname "$0")/.."
pin=false
if [ "${1:-}" = "--pin" ]; then pin=true; shift; fi
out=${1:-target/kvroute-filter-oci}
# The tag defaults to the workspace version: the one the pinned manifests name.
tag=${2:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
variant=${3:-compat}
wasm=$(bash scripts/build_filter.sh --print-path)
python=python3
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
rm -rf "$out"
"$python" packaging/wasm_oci.py --wasm "$wasm" --out "$out" --tag "$tag" --variant "$variant"
if $pin; then
  "$python" packaging/pin_filter.py --layout "$out" --wasm "$wasm" --version "$tag"
fi
echo "push with: oras cp --from-oci-layout $out:$tag REGISTRY/kvroute-filter:$tag"
echo "       or: skopeo copy oci:$out:$tag docker://REGISTRY/kvroute-filter:$tag"
