#!/usr/bin/env python3
"""Turn CustomResourceDefinition YAML into the JSON schemas k8s manifests are checked against.

Why: the CRD schemas of Envoy Gateway, Gateway API and Istio are not on a package registry in a
form a test can use offline, so the openAPIV3Schema of the few kinds kvroute applies is extracted
once from the projects' released CRD files and checked in under k8s/schemas/ (sources in
k8s/schemas/SOURCES.md). Usage: extract_crd_schemas.py OUT_DIR KIND[,KIND...] CRD_FILE...
"""
import json
import pathlib
import sys

import yaml


def main() -> int:
    out = pathlib.Path(sys.argv[1])
    kinds = set(sys.argv[2].split(","))
    written = 0
    for path in sys.argv[3:]:
        for doc in yaml.safe_load_all(pathlib.Path(path).read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            kind = spec["names"]["kind"]
            if kind not in kinds:
                continue
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                schema = version["schema"]["openAPIV3Schema"]
                target = out / spec["group"] / f"{kind.lower()}-{version['name']}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
                written += 1
    print(f"wrote {written} schemas", file=sys.stderr)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
