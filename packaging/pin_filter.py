#!/usr/bin/env python3
"""Pin every shipped attachment of the kvroute filter to the digests of one build.

Why: a gateway loads whatever its filter reference points to, inside every gateway pod; a tag
(`:latest`, `:0.1.0`) can be moved, so each attachment under k8s/ names the exact bytes:

  Envoy Gateway  EnvoyExtensionPolicy code.image.sha256   the OCI image's manifest digest
                 EnvoyExtensionPolicy code.http.sha256    the module's sha256
  Istio          WasmPlugin url oci://IMAGE@sha256:D and sha256: D (the manifest digest)

Envoy Gateway and Istio both check an OCI image's checksum against the image manifest's
digest (not the module's), and an HTTP source's against the module's sha256. The digests are
taken from the OCI image layout packaging/wasm_oci.py wrote for the module, so the values in
k8s/ are exactly what the packaging produced (checked by tests/tests/k8s_manifests.rs).

Usage: pin_filter.py --layout DIR --wasm MODULE [--k8s-dir k8s] [--image REPO] [--version V]
Prints what it changed; exit 1 if an attachment it knows was not found.
"""
import argparse
import hashlib
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = "ghcr.io/kvroute/kvroute-filter"
DEFAULT_RELEASE_URL = "https://github.com/kvroute/kvroute/releases/download/v{version}/kvroute_filter.wasm"

# A pin's value: 64 hex digits (PIN_ME marks one never pinned yet).
HEX = r"([0-9a-f]{64}|PIN_ME)"


def digests(layout: pathlib.Path, module: bytes):
    index = json.loads((layout / "index.json").read_text())
    manifest = index["manifests"][0]["digest"]
    if not manifest.startswith("sha256:"):
        raise SystemExit(f"{layout}: manifest digest {manifest} is not sha256")
    return manifest.removeprefix("sha256:"), hashlib.sha256(module).hexdigest()


def rewrite(path: pathlib.Path, subs, changed):
    text = path.read_text()
    new = text
    for pattern, repl in subs:
        new, n = re.subn(pattern, repl, new, flags=re.M)
        if n == 0:
            raise SystemExit(f"{path}: no {pattern!r} to pin")
    if new != text:
        path.write_text(new)
        changed.append(str(path))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layout", required=True, type=pathlib.Path, help="OCI layout (compat variant)")
    ap.add_argument("--wasm", required=True, type=pathlib.Path)
    ap.add_argument("--k8s-dir", type=pathlib.Path, default=ROOT / "k8s")
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    ap.add_argument("--version", default="0.1.0", help="the image tag and release the module ships as")
    args = ap.parse_args()
    manifest, module = digests(args.layout, args.wasm.read_bytes())
    k8s = args.k8s_dir
    url = DEFAULT_RELEASE_URL.format(version=args.version)
    changed = []
    for path in sorted(k8s.rglob("*.yaml")):
        if "schemas" in path.relative_to(k8s).parts or path.name == "kustomization.yaml":
            continue
        text = path.read_text()
        kinds = {d.get("kind") for d in yaml.safe_load_all(text) if isinstance(d, dict)}
        if "EnvoyExtensionPolicy" in kinds and "type: Image" in text:
            rewrite(path, [
                (r"^(\s+url: ).*kvroute-filter.*$", rf"\g<1>{args.image}:{args.version}"),
                (rf"^(\s+sha256: ){HEX}$", rf"\g<1>{manifest}"),
            ], changed)
        elif "EnvoyExtensionPolicy" in kinds and "type: HTTP" in text:
            rewrite(path, [
                (r"^(\s+url: )https?://.*\.wasm$", rf"\g<1>{url}"),
                (rf"^(\s+sha256: ){HEX}$", rf"\g<1>{module}"),
            ], changed)
        elif "WasmPlugin" in kinds:
            rewrite(path, [
                (r"^(\s*url: )oci://.*$", rf"\g<1>oci://{args.image}@sha256:{manifest}"),
                (rf"^(\s*sha256: ){HEX}$", rf"\g<1>{manifest}"),
            ], changed)
    print(f"image manifest sha256:{manifest}  module sha256:{module}")
    for c in changed:
        print(f"pinned {c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
