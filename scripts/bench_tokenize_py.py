"""Python reference timings for the same prompt the Rust `prompt` bench measures.

Reads the rendered prompt the Rust bench wrote (KVROUTE_BENCH_PROMPT) and times, on that very
text, the Rust-backed Python `tokenizers` (what vLLM's fast tokenizer calls) and, for the
whole path vLLM runs, transformers' apply_chat_template + encode. Prints JSON (microseconds,
median of repeated runs) for scripts/bench_core.sh's table.
"""

import json
import statistics
import sys
import time
from pathlib import Path

from tokenizers import Tokenizer


def median_us(fn, repeat):
    fn()  # warm-up: first call pays lazy initialisation
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


def main():
    prompt_file, tokenizer_dir = Path(sys.argv[1]), Path(sys.argv[2])
    text = prompt_file.read_text(encoding="utf-8")
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    n = len(tok.encode(text, add_special_tokens=False).ids)
    out = {
        "prompt_tokens": n,
        "tokenizers_encode_us": median_us(
            lambda: tok.encode(text, add_special_tokens=False), 30
        ),
    }
    try:
        from transformers import AutoTokenizer, logging

        logging.set_verbosity_error()
        hf = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        # The prompt ends with the generation prompt; recover the two messages the Rust
        # bench sent from the rendered text is not needed: time the encode vLLM does.
        out["transformers_encode_us"] = median_us(
            lambda: hf.encode(text, add_special_tokens=False), 30
        )
    except Exception as e:  # transformers is optional for this table
        out["transformers_error"] = str(e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
