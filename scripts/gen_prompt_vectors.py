#!/usr/bin/env python3
"""Regenerates tests/vectors/prompts.json: for every conversation of tests/corpus/ and
every real tokenizer under testdata/tokenizers/, the prompt text and token ids that
Hugging Face transformers produces, as vLLM uses it.

vLLM renders chat requests with transformers' apply_chat_template(tokenize=False) and
tokenizes the result with add_special_tokens=False; completions prompts are tokenized
with add_special_tokens=True. Before rendering it joins text parts with newlines and
parses tool-call arguments into objects; that normalization is reproduced here.
Conversations a template itself rejects (raise_exception) are recorded as such.

Usage: .venv/bin/python scripts/gen_prompt_vectors.py   (run scripts/setup.sh first)
"""
import copy
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from transformers import AutoTokenizer  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
TOKENIZERS = os.environ.get("KVROUTE_TOKENIZERS", os.path.join(ROOT, "testdata", "tokenizers"))
MODELS = ["qwen3", "llama3", "deepseek_v3", "gemma3"]

COMPLETIONS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "日本語のテキストと English mixed 🚀",
    "  leading whitespace and <|endoftext|> special",
]


def vllm_messages(messages):
    out = []
    for m in copy.deepcopy(messages):
        if isinstance(m.get("content"), list):
            m["content"] = "\n".join(p["text"] if isinstance(p, dict) else p for p in m["content"])
        for call in m.get("tool_calls") or []:
            fn = call.get("function", {})
            if isinstance(fn.get("arguments"), str):
                fn["arguments"] = json.loads(fn["arguments"])
        out.append(m)
    return out


def main():
    corpus = json.load(open(os.path.join(ROOT, "tests", "corpus", "conversations.json")))
    fixed = corpus["fixed_template_kwargs"]
    out = {"generator": "scripts/gen_prompt_vectors.py", "models": {}}
    for model in MODELS:
        tok = AutoTokenizer.from_pretrained(os.path.join(TOKENIZERS, model))
        cases = []
        for conv in corpus["conversations"]:
            body = conv["body"]
            kwargs = dict(fixed)
            kwargs.update(body.get("chat_template_kwargs") or {})
            cont = bool(body.get("continue_final_message", False))
            try:
                text = tok.apply_chat_template(
                    vllm_messages(body["messages"]),
                    tools=body.get("tools"),
                    add_generation_prompt=body.get("add_generation_prompt", True) and not cont,
                    continue_final_message=cont,
                    tokenize=False,
                    **kwargs,
                )
            except Exception as e:  # the template itself refuses this conversation
                cases.append({"name": conv["name"], "error": f"{type(e).__name__}: {e}"})
                continue
            ids = tok.encode(text, add_special_tokens=False)
            cases.append({"name": conv["name"], "text": text, "ids": ids})
        completions = [
            {"prompt": p, "ids": tok.encode(p, add_special_tokens=True)} for p in COMPLETIONS
        ]
        ok = sum(1 for c in cases if "ids" in c)
        print(f"{model}: {ok}/{len(cases)} conversations rendered", file=sys.stderr)
        out["models"][model] = {"conversations": cases, "completions": completions}
    path = os.path.join(ROOT, "tests", "vectors", "prompts.json")
    with open(path, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
