#!/usr/bin/env bash
# Regenerates zeromq.patch: this copy's src/ against the crate as published on crates.io
# (apply upstream with `patch -p1` in the crate's root).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
curl -sSfL https://static.crates.io/crates/zeromq/zeromq-0.7.0.crate | tar -xz -C "$work"
mkdir -p "$work/a" "$work/b"
mv "$work/zeromq-0.7.0/src" "$work/a/src"
cp -r "$here/src" "$work/b/src"
cd "$work"
status=0
diff -ruN a/src b/src >raw.patch || status=$?
[ "$status" -le 1 ] || exit "$status"
# No timestamps: the file changes only when the code does.
sed -E 's/^(---|\+\+\+) ([^\t]+)\t.*/\1 \2/' raw.patch >"$here/zeromq.patch"
echo "wrote $here/zeromq.patch"
