#!/usr/bin/env bash
# The README's main job. The local stack (indexer, simulated vLLM engines, Envoy with the
# filter) is assembled by later work; until it lands this runs the core example: the seed's
# "Verifying Deployment" requests round1 and round2 through `kvroute keys`, showing that
# round2 shares round1's first blocks, i.e. what a precise router sends to the same pod.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
bash scripts/setup.sh >target/demo_setup.log 2>&1 || { tail -20 target/demo_setup.log; exit 1; }
cargo build -q -p kvroute
KV=target/debug/kvroute
TOK=testdata/tokenizers/qwen3
PY=.venv/bin/python
for name in round1 round2; do
  "$PY" -c 'import json,sys; d=json.load(open("testdata/vllm-0.32/requests.json"))
print(json.dumps(next(r["request"] for r in d["requests"] if r["name"]==sys.argv[1])))' "$name" \
    >"target/demo_$name.json"
  "$KV" keys --tokenizer "$TOK" --hash-seed 42 <"target/demo_$name.json" >"target/demo_$name.keys.json"
done
"$PY" - <<'PYEOF'
import json
a = json.load(open("target/demo_round1.keys.json"))
b = json.load(open("target/demo_round2.keys.json"))
shared = 0
for x, y in zip(a["block_hashes"], b["block_hashes"]):
    if x != y:
        break
    shared += 1
for n, k in (("round1", a), ("round2", b)):
    print(f"{n}: {k['prompt_tokens']} prompt tokens, block hashes {k['block_hashes']}")
print(f"round2 shares round1's first {shared} blocks ({shared * 64} tokens): "
      "a precise router sends it to the pod that served round1")
PYEOF
