#!/usr/bin/env bash
# Core speed table, measured side by side in one run: the Rust `prompt` and `hashing`
# criterion benches (7,200-token Qwen3 chat request: render + tokenize + hash, cold and warm;
# 112 blocks hashed per scheme) and Python `tokenizers` on the very same rendered prompt.
# Prints a markdown table (docs/performance.md holds the last one).
set -euo pipefail
cd "$(dirname "$0")/.."
TOK="${KVROUTE_TOKENIZERS:-$PWD/testdata/tokenizers}"
PY="${PYTHON:-$PWD/.venv/bin/python}"
PROMPT="$PWD/target/bench_prompt.txt"
mkdir -p target

# --table-only: print the table of the last run again without measuring.
if [ "${1:-}" != "--table-only" ]; then
  KVROUTE_TOKENIZERS="$TOK" KVROUTE_BENCH_PROMPT="$PROMPT" \
    cargo bench -q -p kvroute-blockhash --bench prompt --bench hashing >target/bench_core.log 2>&1 \
    || { tail -30 target/bench_core.log; exit 1; }
  "$PY" scripts/bench_tokenize_py.py "$PROMPT" "$TOK/qwen3" >target/bench_py.json
fi

"$PY" - "$PWD/target/criterion" target/bench_py.json <<'PYEOF'
import json, sys
from pathlib import Path
crit, py = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())

def us(group, name):
    est = json.loads((crit / group / name / "new" / "estimates.json").read_text())
    return est["median"]["point_estimate"] / 1000.0

cold = us("prompt_7200_tokens", "cold")
warm = us("prompt_7200_tokens", "warm_new_question")
rep = us("prompt_7200_tokens", "warm_repeat")
tok = us("prompt_7200_tokens", "tokenize_uncached")
pyt = py["tokenizers_encode_us"]
rows = [
    ("Rust: render + tokenize + hash, cold", cold, "1.00 x cold"),
    ("Rust: warm, same context + new 1,200-token question", warm, f"{warm / cold:.2f} x cold"),
    ("Rust: warm, repeated request", rep, f"{rep / cold:.3f} x cold"),
    ("Rust: tokenize only, uncached", tok, f"{tok / pyt:.2f} x Python tokenizers"),
    ("Python tokenizers: encode (same text)", pyt, f"cold = {cold / pyt:.2f} x this"),
]
if "transformers_encode_us" in py:
    rows.append(("Python transformers: encode (same text)", py["transformers_encode_us"], ""))
for scheme in ("sha256_cbor", "sha256_cbor_64bit", "xxhash_cbor"):
    # The hashing bench names its inputs (real Qwen3 ids); older runs named the scheme only.
    for name in (f"{scheme}_real_qwen3_ids", scheme):
        try:
            rows.append((f"Rust: hash 112 blocks, {scheme}", us("hash_112_blocks", name), "target <= 50 us"))
            break
        except FileNotFoundError:
            pass
print(f"Prompt: {py['prompt_tokens']} tokens (Qwen3), medians.\n")
print("| measurement | time (us) | ratio |")
print("|---|---:|---|")
for name, t, ratio in rows:
    print(f"| {name} | {t:,.1f} | {ratio} |")
PYEOF
