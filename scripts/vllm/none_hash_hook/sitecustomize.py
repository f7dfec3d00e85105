"""Records the NONE_HASH every vLLM process derives, for scripts/vllm/capture.py.

Why: without PYTHONHASHSEED, vLLM 0.32 draws a random seed per process for the xxhash
algorithms (sha256 and sha256_cbor use the fixed "vllm-none-hash"), and no KV event carries
it, so a capture could not be re-hashed. Put this folder on the engine's PYTHONPATH and set
KVROUTE_NONE_HASH_FILE: after vllm.v1.core.kv_cache_utils.init_none_hash runs, a line
"<pid> <seed as JSON> <NONE_HASH hex>" is appended there. Nothing else is changed.
"""
import importlib.abc
import importlib.util
import json
import os
import sys

_TARGET = "vllm.v1.core.kv_cache_utils"


class _RecordNoneHash(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            init = module.init_none_hash

            def init_none_hash(hash_fn):
                init(hash_fn)
                with open(os.environ["KVROUTE_NONE_HASH_FILE"], "a") as f:
                    f.write(f"{os.getpid()} {json.dumps(module._NONE_HASH_SEED)} "
                            f"{bytes(module.NONE_HASH).hex()}\n")

            module.init_none_hash = init_none_hash

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("KVROUTE_NONE_HASH_FILE"):
    sys.meta_path.insert(0, _RecordNoneHash())
