#!/usr/bin/env python3
"""Regenerates tests/vectors/hashes.json with the real Python implementations vLLM uses.

vLLM hashes a block as H((parent, tuple(tokens), extra_keys_or_None)) with
H = sha256 / xxh3_128 over cbor2's canonical encoding (`*_cbor`) or over
`pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL)` (`sha256`, vLLM's default, and
`xxhash`), NONE_HASH = H(seed). This script computes exactly that with cbor2, pickle, hashlib
and xxhash, so the Rust hasher is checked against the reference libraries rather than
against itself. When `import vllm` works, or vLLM's source is given, vLLM's own hash
functions cross-check the vectors too.

Usage: .venv/bin/python scripts/gen_hash_vectors.py [VLLM_SOURCE_DIR ...]
(writes tests/vectors/hashes.json). Each VLLM_SOURCE_DIR holds a `vllm/` package: an
unpacked vLLM sdist or wheel (`pip download vllm==0.32.0 --no-deps`), or a site-packages
where vLLM is installed; e.g. one with sha256_cbor_64bit (0.10.0-0.10.1) and a current one
(sha256, sha256_cbor, xxhash, xxhash_cbor).
"""
import hashlib
import json
import os
import pickle
import sys

import cbor2
import xxhash

DEFAULT_SEED = "vllm-none-hash"


def sha256_cbor(x):
    return hashlib.sha256(cbor2.dumps(x, canonical=True)).digest()


def sha256_cbor_64bit(x):
    # vLLM 0.10.0-0.10.1 (vllm/utils/__init__.py): the whole digest as a big-endian int,
    # masked to its low 64 bits, chained as that int.
    return int.from_bytes(sha256_cbor(x), byteorder="big") & ((1 << 64) - 1)


def xxhash_cbor(x):
    return xxhash.xxh3_128_digest(cbor2.dumps(x, canonical=True))


def sha256(x):
    # vLLM's default: pickle at the highest protocol (5 in every Python vLLM supports).
    return hashlib.sha256(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def xxhash_pickle(x):
    return xxhash.xxh3_128_digest(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL))


SCHEMES = {
    "sha256_cbor": sha256_cbor,
    "sha256_cbor_64bit": sha256_cbor_64bit,
    "xxhash_cbor": xxhash_cbor,
    "sha256": sha256,
    "xxhash": xxhash_pickle,
}
PICKLED = {"sha256", "xxhash"}


def serialize(scheme, x):
    if scheme in PICKLED:
        return pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL)
    return cbor2.dumps(x, canonical=True)


def event_value(digest):
    # vLLM's maybe_convert_block_hash: int.from_bytes(digest, "big") & ((1 << 64) - 1).
    if isinstance(digest, int):
        return digest
    return int.from_bytes(digest, byteorder="big") & ((1 << 64) - 1)


def hex_of(digest):
    return format(digest, "016x") if isinstance(digest, int) else digest.hex()


def extra_keys(extras, block_index, style):
    keys = []
    if extras.get("lora_int_id") is not None:
        # vLLM 0.10-0.11 hashed the adapter's integer id, bare.
        keys.append(extras["lora_int_id"])
    elif extras.get("lora_name"):
        if style == "tagged":
            # vLLM 0.32+: ("lora", name, path). Without a known path the router keeps a
            # ("lora", name) key: it matches no engine but never collides with the base model.
            tagged = ("lora", extras["lora_name"])
            if extras.get("lora_path"):
                tagged += (extras["lora_path"],)
            keys.append(tagged)
        else:
            keys.append(extras["lora_name"])
    if block_index == 0 and extras.get("cache_salt"):
        keys.append(("cache_salt", extras["cache_salt"]) if style == "tagged" else extras["cache_salt"])
    return tuple(keys) if keys else None


def chain(h, seed, tokens, block_size, extras, style):
    parent = h(seed if seed is not None else DEFAULT_SEED)
    out = []
    for i in range(len(tokens) // block_size):
        block = tuple(tokens[i * block_size:(i + 1) * block_size])
        parent = h((parent, block, extra_keys(extras, i, style)))
        out.append(parent)
    return out


def token_sets():
    # Widths that exercise every CBOR integer head: <24, u8, u16, u32.
    edge = [0, 1, 23, 24, 255, 256, 65535, 65536, 151643, 151645, 4294967295]
    return {
        "empty": [],
        "short_of_a_block": [7, 8, 9],
        "one_block_small": list(range(16)),
        "edges": (edge * 12)[:128],
        "partial_tail": list(range(1000, 1000 + 16 * 3 + 5)),
        "qwen_like_many_blocks": [(i * 7919 + 13) % 151936 for i in range(64 * 6)],
    }


def big_token_sets():
    # Blocks whose pickle passes pickle's 64 KiB frame size (frames split at object
    # boundaries), for the pickled schemes only.
    return {"frame_split": [70000 + (i * 7919) % 100000 for i in range(14000)]}


def case(scheme, h, seed, tok_name, tokens, block_size, extras, style):
    digests = chain(h, seed, tokens, block_size, extras, style)
    none = h(seed if seed is not None else DEFAULT_SEED)
    first_bytes = None
    if len(tokens) >= block_size:
        first = (none, tuple(tokens[:block_size]), extra_keys(extras, 0, style))
        first_bytes = serialize(scheme, first).hex()
    return {
        "scheme": scheme,
        "seed": seed,
        "block_size": block_size,
        "tokens": tok_name,
        "extras": extras,
        "style": style,
        "none_hash": hex_of(none),
        "first_block_bytes": first_bytes,
        "digests": [hex_of(d) for d in digests],
        "event_values": [event_value(d) for d in digests],
    }


def main():
    cases = []
    extras_variants = {
        "none": {},
        "cache_salt": {"cache_salt": "tenant-a"},
        "lora": {"lora_name": "sql-adapter"},
        "lora_path": {"lora_name": "sql-adapter", "lora_path": "/adapters/sql-adapter"},
        "lora_path_and_salt": {"lora_name": "sql-adapter", "lora_path": "/adapters/sql", "cache_salt": "s\u00e9l"},
        "lora_int_id_and_salt": {"lora_int_id": 300, "cache_salt": "tenant-a"},
    }
    for scheme, h in SCHEMES.items():
        for seed in [None, "42", "0"]:
            for tok_name, tokens in token_sets().items():
                for block_size in [16, 64]:
                    for ex_name, extras in extras_variants.items():
                        for style in ["tagged", "bare"]:
                            if ex_name == "none" and style == "bare":
                                continue
                            if "lora_int_id" in extras and style == "tagged":
                                continue
                            cases.append(case(scheme, h, seed, tok_name, tokens,
                                              block_size, extras, style))
    for scheme in sorted(PICKLED):
        for tok_name, tokens in big_token_sets().items():
            cases.append(case(scheme, SCHEMES[scheme], "42", tok_name, tokens, 14000, {},
                              "tagged"))
        # A salt of 64 KiB or more is written outside pickle's frames.
        cases.append(case(scheme, SCHEMES[scheme], "42", "one_block_small",
                          token_sets()["one_block_small"], 16,
                          {"cache_salt": "x" * 66000}, "tagged"))
    cross_checked = cross_check_with_vllm(cases, sys.argv[1:])
    doc = {
        "generator": "scripts/gen_hash_vectors.py",
        "libraries": {"cbor2": cbor2.__version__ if hasattr(cbor2, "__version__") else "?",
                      "xxhash": xxhash.VERSION},
        "cross_checked_with_vllm": cross_checked,
        "token_sets": {**token_sets(), **big_token_sets()},
        "cases": cases,
    }
    out = os.path.join(os.path.dirname(__file__), "..", "tests", "vectors", "hashes.json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(out)} (vLLM cross-check: {cross_checked})")


def vllm_functions_from_import():
    """vLLM's hash functions from an importable `vllm` package, if any."""
    try:
        import vllm  # type: ignore  # noqa: F401
    except Exception:
        return {}
    found = {}
    for module in ("vllm.utils.hashing", "vllm.utils"):
        try:
            mod = __import__(module, fromlist=["*"])
        except Exception:
            continue
        for name in SCHEMES:
            if name not in found and hasattr(mod, name):
                found[name] = (getattr(mod, name), f"vllm {getattr(vllm, '__version__', '?')}")
    return found


def vllm_functions_from_source(src_dir):
    """vLLM's hash functions taken from an unpacked vLLM source tree (`pip download
    --no-binary :all: vllm==X` and unpack). Importing vllm needs torch; its hash functions
    do not, so their definitions are executed alone with cbor2/hashlib/xxhash."""
    import ast

    version = "?"
    pkg_info = os.path.join(src_dir, "PKG-INFO")
    version_py = os.path.join(src_dir, "vllm", "_version.py")
    if os.path.exists(pkg_info):
        for line in open(pkg_info, encoding="utf-8"):
            if line.startswith("Version:"):
                version = line.split(":", 1)[1].strip()
                break
    elif os.path.exists(version_py):
        for line in open(version_py, encoding="utf-8"):
            if line.startswith("__version__ ="):
                version = line.split("=")[-1].strip().strip("'\"")
                break
    found = {}
    for rel in ("vllm/utils/hashing.py", "vllm/utils/__init__.py"):
        path = os.path.join(src_dir, rel)
        if not os.path.exists(path):
            continue
        tree = ast.parse(open(path, encoding="utf-8").read())
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)
                and (n.name in SCHEMES or n.name == "_xxhash_digest")]
        namespace = {"cbor2": cbor2, "hashlib": hashlib, "pickle": pickle, "_xxhash": xxhash,
                     "Any": object}
        exec(compile(ast.Module(body=defs, type_ignores=[]), path, "exec"), namespace)
        for name in SCHEMES:
            if name not in found and name in namespace:
                found[name] = (namespace[name], f"vllm {version} source")
    return found


def cross_check_with_vllm(cases, src_dirs):
    """Recomputes the extra-key-free cases with vLLM's own hash functions: from an
    importable vllm, or from source trees given on the command line."""
    theirs = vllm_functions_from_import()
    for src in src_dirs:
        for name, fn in vllm_functions_from_source(src).items():
            theirs.setdefault(name, fn)
    checked = []
    for name, (fn, origin) in sorted(theirs.items()):
        n = 0
        for c in cases:
            if c["scheme"] != name:
                continue
            if c["extras"]:
                # Extra keys go through the same function: the whole triple is hashed.
                got = chain(fn, c["seed"], token_sets()[c["tokens"]], c["block_size"],
                            c["extras"], c["style"])
                if [hex_of(d) for d in got] != c["digests"]:
                    sys.exit(f"{origin} disagrees on {name}/{c['tokens']}/{c['extras']}")
                n += 1
                continue
            tokens = {**token_sets(), **big_token_sets()}[c["tokens"]]
            got = chain(fn, c["seed"], tokens, c["block_size"], {}, "tagged")
            if [hex_of(d) for d in got] != c["digests"]:
                sys.exit(f"{origin} disagrees on {name}/{c['tokens']}/{c['seed']}")
            n += 1
        checked.append(f"{name}: {n} cases agree with {origin}")
    return checked


if __name__ == "__main__":
    main()
