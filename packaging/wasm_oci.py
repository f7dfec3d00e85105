#!/usr/bin/env python3
"""Write the kvroute filter as a Wasm OCI image layout, with no Docker engine.

Why: Istio's WasmPlugin (url: oci://...) and Envoy Gateway's EnvoyExtensionPolicy
(code.type: Image) pull wasm modules from OCI registries. Both accept the "compat" variant
of the Wasm image spec (a Docker/OCI image whose single layer is a tar holding plugin.wasm),
and both also accept the OCI Wasm artifact variant (media type
application/vnd.module.wasm.content.layer.v1+wasm, the module itself as the layer). This
writes an OCI image layout directory (oci-layout, index.json, blobs/sha256/...) that any
OCI client pushes as is: `oras cp --from-oci-layout DIR:TAG REG/IMG:TAG`,
`skopeo copy oci:DIR:TAG docker://REG/IMG:TAG`, or `crane push DIR REG/IMG:TAG`.

Usage: wasm_oci.py --wasm MODULE --out DIR [--tag TAG] [--variant compat|oci]
"""
import argparse
import gzip
import hashlib
import io
import json
import pathlib
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
EPOCH = 0  # fixed timestamps: the same module always gives the same digests


def write_blob(out: pathlib.Path, data: bytes, media_type: str, annotations=None) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    path = out / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    desc = {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}
    if annotations:
        desc["annotations"] = annotations
    return desc


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def compat_layer(module: bytes) -> tuple[bytes, str]:
    """tar+gzip with plugin.wasm at the root; returns (gzip bytes, diff id of the tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(module), 0o444, EPOCH
        tar.addfile(info, io.BytesIO(module))
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=EPOCH) as f:
        f.write(tar_bytes)
    return gz.getvalue(), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def build(module: bytes, out: pathlib.Path, tag: str, variant: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    if variant == "compat":
        layer_bytes, diff_id = compat_layer(module)
        layer = write_blob(out, layer_bytes, OCI_LAYER_GZIP)
        config = {"architecture": "wasm", "os": "wasip1",
                  "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                  "config": {}, "history": [{"created_by": "kvroute packaging/wasm_oci.py"}]}
        config_desc = write_blob(out, canonical(config), OCI_CONFIG)
    else:
        layer = write_blob(out, module, WASM_LAYER,
                           {"org.opencontainers.image.title": "plugin.wasm"})
        config_desc = write_blob(out, canonical({}), WASM_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": config_desc, "layers": [layer],
                "annotations": {"org.opencontainers.image.title": "kvroute-filter"}}
    manifest_desc = write_blob(out, canonical(manifest), OCI_MANIFEST,
                               {"org.opencontainers.image.ref.name": tag})
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [manifest_desc]}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return manifest_desc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wasm", required=True, type=pathlib.Path)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--tag", default="latest")
    ap.add_argument("--variant", choices=["compat", "oci"], default="compat")
    args = ap.parse_args()
    module = args.wasm.read_bytes()
    if module[:4] != b"\0asm":
        print(f"{args.wasm}: not a wasm module", file=sys.stderr)
        return 1
    desc = build(module, args.out, args.tag, args.variant)
    print(f"module sha256:{hashlib.sha256(module).hexdigest()} ({len(module)} bytes)")
    print(f"manifest {desc['digest']} -> {args.out} (tag {args.tag}, {args.variant})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
