#!/usr/bin/env python3
"""Generate KV-event frames with vLLM's own msgspec event classes, for kvroute's decoder tests.

Why: the Rust decoder must read what vLLM writes, in both wire generations (0.10/0.11 tagged
arrays, 0.3x maps with defaults omitted) and with both hash encodings (u64 ints, 32-byte
digests). The real 0.32 captures cover one generation; these frames cover the others, written
by vLLM's real classes, not by a re-implementation.

vLLM's code is not copied into the project: at generation time this script reads
vllm/distributed/kv_events.py from a vLLM source (an sdist .tar.gz or an unpacked tree, e.g.
`pip download --no-deps --no-binary :all: vllm==0.11.0`), executes only its event class
definitions (the module itself imports torch-dependent vLLM code) and encodes with
msgspec's msgpack encoder exactly as vLLM's ZmqEventPublisher does:
`(topic, seq.to_bytes(8, "big"), msgspec.msgpack.Encoder().encode(batch))`.

Block hashes are vLLM's sha256_cbor chain (NONE_HASH = sha256(cbor(seed))) with seed "42",
so the frames are also valid input for the indexer's native-mode detection.

usage: gen_kv_frames.py --vllm-src 0.11.0=PATH --vllm-src 0.32.0=PATH [--out testdata/kv-frames]
"""

import argparse
import ast
import hashlib
import io
import json
import os
import sys
import tarfile
import typing

import cbor2
import msgspec

EVENT_CLASSES = {"EventBatch", "KVCacheEvent", "BlockStored", "BlockRemoved", "AllBlocksCleared", "KVEventBatch"}
SEED = "42"
BLOCK_SIZE = 16
TOPIC = "kv@127.0.0.1@Qwen3-32B"


def kv_events_source(path):
    rel = "vllm/distributed/kv_events.py"
    if os.path.isdir(path):
        with open(os.path.join(path, rel)) as f:
            return f.read()
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if member.name.endswith("/" + rel):
                return tar.extractfile(member).read().decode()
    raise SystemExit(f"{path}: no {rel}")


def event_classes(source):
    """Execute only the event Struct definitions of vLLM's kv_events.py."""
    tree = ast.parse(source)
    body = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in EVENT_CLASSES]
    namespace = {
        "msgspec": msgspec,
        "Any": typing.Any,
        "Optional": typing.Optional,
        "Union": typing.Union,
        # vllm.v1.core.kv_cache_utils: ExternalBlockHash = bytes | int
        "ExternalBlockHash": typing.Union[bytes, int],
    }
    exec(compile(ast.Module(body=body, type_ignores=[]), "vllm/distributed/kv_events.py", "exec"), namespace)
    return namespace


def sha256_cbor(x):
    return hashlib.sha256(cbor2.dumps(x, canonical=True)).digest()


def chain(parent, tokens, extras=None):
    out = []
    for i in range(len(tokens) // BLOCK_SIZE):
        block = tuple(tokens[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE])
        extra = extras[i] if extras else None
        parent = sha256_cbor((parent, block, extra))
        out.append(parent)
    return out


def published(digest, int_hashes):
    # vLLM's maybe_convert_block_hash: the digest's low 64 bits, big-endian.
    return int.from_bytes(digest, "big") & ((1 << 64) - 1) if int_hashes else digest


def fields_of(cls):
    return set(cls.__struct_fields__)


def scenario(ns, int_hashes):
    """Batches: a prompt, its continuation, an eviction, a CPU tier, a second DP rank, a reset."""
    stored_cls, removed_cls = ns["BlockStored"], ns["BlockRemoved"]
    stored_fields = fields_of(stored_cls)
    none_hash = sha256_cbor(SEED)
    prompt = [(i * 7919 + 13) % 151936 for i in range(BLOCK_SIZE * 3)]
    more = [(i * 104729 + 5) % 151936 for i in range(BLOCK_SIZE * 2)]
    first = chain(none_hash, prompt)
    second = chain(first[-1], more)
    other = [(i * 31 + 1) % 151936 for i in range(BLOCK_SIZE * 2)]
    other_chain = chain(none_hash, other)
    h = lambda d: published(d, int_hashes)  # noqa: E731

    def stored(hashes, parent, tokens, medium="GPU", **extra):
        kwargs = dict(block_hashes=[h(x) for x in hashes], parent_block_hash=h(parent) if parent else None,
                      token_ids=tokens, block_size=BLOCK_SIZE, lora_id=None)
        if "medium" in stored_fields:
            kwargs["medium"] = medium
        if "lora_name" in stored_fields:
            kwargs["lora_name"] = None
        for k, v in extra.items():
            if k in stored_fields:
                kwargs[k] = v
        return stored_cls(**kwargs)

    def removed(hashes, medium="GPU"):
        kwargs = dict(block_hashes=[h(x) for x in hashes])
        if "medium" in fields_of(removed_cls):
            kwargs["medium"] = medium
        return removed_cls(**kwargs)

    v3x = dict(group_idx=0, kv_cache_spec_kind="full_attention")
    return [
        (0, [stored(first, None, prompt, extra_keys=[None] * len(first), **v3x)]),
        (0, [stored(second, first[-1], more, **v3x)]),
        (0, [removed([second[-1]]), stored(other_chain, None, other, **v3x)]),
        (0, [stored(first[:1], None, prompt[:BLOCK_SIZE], medium="CPU", **v3x)]),
        (1, [stored(first[:2], None, prompt[:BLOCK_SIZE * 2], **v3x)]),
        (0, [ns["AllBlocksCleared"]()]),
    ]


def describe(event):
    out = {"type": type(event).__name__}
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if isinstance(value, bytes):
            value = {"$bytes_hex": value.hex()}
        elif isinstance(value, list):
            value = [{"$bytes_hex": v.hex()} if isinstance(v, bytes) else v for v in value]
        out[name] = value
    return out


def generate(ns, version, int_hashes, out_dir):
    run = f"vllm-{version}_{'int' if int_hashes else 'bytes'}_hashes"
    run_dir = os.path.join(out_dir, run)
    os.makedirs(os.path.join(run_dir, "frames"), exist_ok=True)
    encoder = msgspec.msgpack.Encoder()
    index = []
    for seq, (dp_rank, events) in enumerate(scenario(ns, int_hashes)):
        batch = ns["KVEventBatch"](ts=1_700_000_000.0 + seq / 8, events=events, data_parallel_rank=dp_rank)
        frames = [TOPIC.encode(), seq.to_bytes(8, "big"), encoder.encode(batch)]
        names = []
        for i, frame in enumerate(frames):
            name = f"frames/{seq:06d}.f{i}.bin"
            with open(os.path.join(run_dir, name), "wb") as f:
                f.write(frame)
            names.append(name)
        index.append({
            "index": seq, "frames": names, "topic": TOPIC, "seq": seq,
            "batch": [batch.ts, [describe(e) for e in events], dp_rank],
        })
    generation = "V03xMaps" if not getattr(ns["KVCacheEvent"], "__struct_config__").array_like else "V010Arrays"
    with open(os.path.join(run_dir, "index.json"), "w") as f:
        json.dump({"vllm_version": version, "generation": generation, "int_hashes": int_hashes,
                   "hash": "sha256_cbor", "seed": SEED, "block_size": BLOCK_SIZE,
                   "msgspec": msgspec.__version__, "messages": index}, f, indent=1)
    print(f"{run}: {len(index)} messages ({generation})", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-src", action="append", required=True, metavar="VERSION=PATH")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "testdata", "kv-frames"))
    args = parser.parse_args()
    for spec in args.vllm_src:
        version, path = spec.split("=", 1)
        source = kv_events_source(path)
        ns = event_classes(source)
        # Before ExternalBlockHash (vLLM < 0.10.2) hashes were ints only.
        for int_hashes in (True, False) if "ExternalBlockHash" in source else (True,):
            generate(ns, version, int_hashes, args.out)


if __name__ == "__main__":
    main()
