#!/usr/bin/env python3
"""Offline validation of everything under k8s/, run by tests/tests/k8s_manifests.rs.

Why: manifests a user applies must be right without a cluster. Each document is checked
against a schema: Kubernetes built-in kinds with the pip package kubernetes-validate
(the upstream OpenAPI JSON schemas, strict: unknown fields are errors), and the CRD kinds
(Envoy Gateway, Gateway API, Istio) with the openAPIV3Schema of their released CRDs checked
in under k8s/schemas/ (see SOURCES.md). Kustomizations must name files that exist; the
engines-bind component's patches are applied to the base and the results validated too.
Finally, the Envoy configuration each attachment produces (the gateway's listener: wasm ->
buffer -> router, its route table and clusters, with the patches of patch-policy.yaml or
envoyfilter.yaml applied the way Envoy Gateway / Istio apply them) is written as a bootstrap
and checked by the real Envoy: `envoy --mode validate`.

Usage: validate_k8s.py [--envoy PATH] [--k8s-version 1.33] [--keep DIR]
Exit 0 when everything validates; prints one line per failure otherwise.
"""
import argparse
import copy
import json
import pathlib
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
SCHEMAS = K8S / "schemas"
NOT_MANIFESTS = {"kustomization.yaml"}


def load_docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def crd_schema(doc):
    group, _, version = doc["apiVersion"].rpartition("/")
    path = SCHEMAS / group / f"{doc['kind'].lower()}-{version}.json"
    if not group or not path.exists():
        return None
    return json.loads(path.read_text())


def validate_doc(doc, where, k8s_version, errors):
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        errors.append(f"{where}: not a Kubernetes object")
        return
    schema = crd_schema(doc)
    if schema is not None:
        validator = jsonschema.Draft7Validator(schema)
        for err in validator.iter_errors(doc):
            errors.append(f"{where}: {doc['kind']} {'/'.join(map(str, err.absolute_path))}: {err.message}")
        return
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        errors.append(f"{where}: no schema for {doc['apiVersion']} {doc['kind']}")
    except kubernetes_validate.ValidationError as err:
        errors.append(f"{where}: {doc['kind']} {'/'.join(map(str, err.path))}: {err.message}")


def pointer_parts(path):
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]] if path else []


def json_patch(doc, ops):
    """RFC 6902 add/replace/remove: the subset kustomize and EnvoyPatchPolicy use here."""
    for op in ops:
        parts = pointer_parts(op["path"])
        if not parts:
            if op["op"] != "add":
                raise ValueError(f"op {op['op']} on the whole document")
            doc = copy.deepcopy(op["value"])
            continue
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if op["op"] == "add":
                parent.insert(idx, copy.deepcopy(op["value"]))
            elif op["op"] == "replace":
                parent[idx] = copy.deepcopy(op["value"])
            elif op["op"] == "remove":
                del parent[idx]
            else:
                raise ValueError(f"unsupported op {op['op']}")
        else:
            if op["op"] in ("add", "replace"):
                if op["op"] == "replace" and last not in parent:
                    raise KeyError(op["path"])
                parent[last] = copy.deepcopy(op["value"])
            elif op["op"] == "remove":
                del parent[last]
            else:
                raise ValueError(f"unsupported op {op['op']}")
    return doc


def kustomization_docs(folder, errors):
    """The documents a kustomization folder renders (resources, components, their patches)."""
    kfile = folder / "kustomization.yaml"
    kust = yaml.safe_load(kfile.read_text())
    docs = []
    for res in kust.get("resources", []):
        target = (folder / res).resolve()
        if target.is_dir():
            docs += kustomization_docs(target, errors)
        elif target.exists():
            docs += [(d, f"{target.relative_to(ROOT)}") for d in load_docs(target)]
        else:
            errors.append(f"{kfile.relative_to(ROOT)}: resource {res} does not exist")
    for comp in kust.get("components", []):
        target = (folder / comp).resolve()
        if not (target / "kustomization.yaml").exists():
            errors.append(f"{kfile.relative_to(ROOT)}: component {comp} does not exist")
            continue
        docs = apply_patches(docs, yaml.safe_load((target / "kustomization.yaml").read_text()), target, errors)
    docs = apply_patches(docs, kust, folder, errors)
    if "namespace" in kust:
        for doc, _ in docs:
            if doc.get("kind") != "Namespace":
                doc.setdefault("metadata", {})["namespace"] = kust["namespace"]
    return docs


def apply_patches(docs, kust, folder, errors):
    out = [(copy.deepcopy(d), w) for d, w in docs]
    for patch in kust.get("patches", []):
        target = patch["target"]
        hits = [i for i, (d, _) in enumerate(out)
                if d.get("kind") == target.get("kind") and d["metadata"].get("name") == target.get("name")]
        if not hits:
            errors.append(f"{folder.relative_to(ROOT)}: patch target {target} matches nothing")
        for i in hits:
            try:
                doc = json_patch(out[i][0], yaml.safe_load(patch["patch"]))
                out[i] = (doc, f"{out[i][1]} patched by {folder.relative_to(ROOT)}")
            except (KeyError, IndexError, ValueError) as err:
                errors.append(f"{folder.relative_to(ROOT)}: patch on {target}: {err!r}")
    return out


def find(docs, kind):
    return [d for d, _ in docs if d.get("kind") == kind]


def gateway_listener(route_config, http_filters):
    return {
        "name": "gateway",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8080}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "gateway",
                "route_config": route_config,
                "http_filters": http_filters,
            },
        }]}],
    }


def wasm_filter(name, plugin_config, wasm_path):
    return {
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "failure_policy": "FAIL_OPEN",
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": json.dumps(plugin_config)},
                "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": str(wasm_path)}}},
            },
        },
    }


ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def service_cluster(name, host, port):
    return {"name": name, "type": "STRICT_DNS", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]}}


def http_route_routes(docs, cluster_of):
    """The routes a gateway generates for the HTTPRoutes (path-prefix rules to a Service)."""
    routes = []
    for hr in find(docs, "HTTPRoute"):
        for i, rule in enumerate(hr["spec"]["rules"]):
            backend = rule["backendRefs"][0]
            for m in rule.get("matches", [{"path": {"type": "PathPrefix", "value": "/"}}]):
                routes.append({"name": f"{hr['metadata']['name']}-{i}",
                               "match": {"prefix": m["path"]["value"]},
                               "route": {"cluster": cluster_of(hr, backend), "timeout": "0s"}})
    return routes


def envoy_gateway_bootstrap(docs, wasm_path, errors):
    ns = "kvroute"
    gw = find(docs, "Gateway")[0]
    listener_name = gw["spec"]["listeners"][0]["name"]
    rc_name = f"{ns}/{gw['metadata']['name']}/{listener_name}"

    def cluster_of(hr, backend):
        return f"httproute/{ns}/{hr['metadata']['name']}/rule/0"

    clusters = {}
    for hr in find(docs, "HTTPRoute"):
        backend = hr["spec"]["rules"][0]["backendRefs"][0]
        name = cluster_of(hr, backend)
        clusters[name] = service_cluster(name, f"{backend['name']}.{ns}.svc.cluster.local", backend["port"])
    route_config = {"name": rc_name, "virtual_hosts": [
        {"name": f"{rc_name}/*", "domains": ["*"], "routes": http_route_routes(docs, cluster_of)}]}
    filters = []
    btp = find(docs, "BackendTrafficPolicy")
    if btp and "requestBuffer" in btp[0]["spec"]:
        limit = btp[0]["spec"]["requestBuffer"]["limit"]
        units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
        size = int(limit[:-2]) * units[limit[-2:]] if str(limit)[-2:] in units else int(limit)
        filters.append({"name": "envoy.filters.http.buffer", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": size}})
    for eep in find(docs, "EnvoyExtensionPolicy"):
        for w in eep["spec"].get("wasm", []):
            filters.append(wasm_filter(w.get("rootID", w["name"]), w.get("config", {}), wasm_path))
    filters.append(ROUTER)
    for epp in find(docs, "EnvoyPatchPolicy"):
        for p in epp["spec"]["jsonPatches"]:
            kind = p["type"].rsplit(".", 1)[-1]
            try:
                if kind == "Cluster":
                    clusters[p["name"]] = json_patch(clusters.get(p["name"], {}), [p["operation"]])
                elif kind == "RouteConfiguration":
                    if p["name"] != rc_name:
                        errors.append(f"EnvoyPatchPolicy: no route configuration {p['name']} (gateway has {rc_name})")
                        continue
                    route_config = json_patch(route_config, [p["operation"]])
                else:
                    errors.append(f"EnvoyPatchPolicy: patch type {p['type']} not modelled")
            except (KeyError, IndexError, ValueError) as err:
                errors.append(f"EnvoyPatchPolicy {p['name']}: {err!r}")
    indexer_cluster = None
    for eep in find(docs, "EnvoyExtensionPolicy"):
        for w in eep["spec"].get("wasm", []):
            indexer_cluster = w.get("config", {}).get("indexer_cluster")
    if indexer_cluster not in clusters:
        errors.append(f"envoy-gateway: the filter's indexer_cluster {indexer_cluster!r} is no cluster")
    return {"static_resources": {"listeners": [gateway_listener(route_config, filters)],
                                 "clusters": list(clusters.values())}}


def istio_bootstrap(docs, wasm_path, errors):
    ns = "kvroute"
    gw = find(docs, "Gateway")[0]
    port = gw["spec"]["listeners"][0]["port"]

    def cluster_of(hr, backend):
        return f"outbound|{backend['port']}||{backend['name']}.{ns}.svc.cluster.local"

    clusters = {}
    for svc in find(docs, "Service"):
        if svc["spec"].get("clusterIP") == "None":
            continue
        for p in svc["spec"]["ports"]:
            name = f"outbound|{p['port']}||{svc['metadata']['name']}.{ns}.svc.cluster.local"
            clusters[name] = service_cluster(name, f"{svc['metadata']['name']}.{ns}.svc.cluster.local", p["port"])
    route_config = {"name": f"http.{port}", "virtual_hosts": [
        {"name": "*:80", "domains": ["*"], "routes": http_route_routes(docs, cluster_of)}]}
    filters = []
    plugin = None
    for wp in find(docs, "WasmPlugin"):
        plugin = wp["spec"].get("pluginConfig", {})
        filters.append(wasm_filter(wp["spec"].get("pluginName", wp["metadata"]["name"]), plugin, wasm_path))
    filters.append(ROUTER)
    for ef in find(docs, "EnvoyFilter"):
        for cp in ef["spec"]["configPatches"]:
            op, value = cp["patch"]["operation"], cp["patch"].get("value")
            if cp["applyTo"] == "CLUSTER" and op == "ADD":
                clusters[value["name"]] = value
            elif cp["applyTo"] == "HTTP_FILTER":
                sub = cp["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"]
                idx = [f["name"] for f in filters].index(sub)
                filters.insert(idx + (op == "INSERT_AFTER"), value)
            elif cp["applyTo"] == "HTTP_ROUTE" and op == "INSERT_FIRST":
                if cp["match"]["routeConfiguration"].get("portNumber") != port:
                    errors.append(f"EnvoyFilter: HTTP_ROUTE patch matches no gateway port ({port})")
                for vh in route_config["virtual_hosts"]:
                    vh["routes"].insert(0, value)
            else:
                errors.append(f"EnvoyFilter: {cp['applyTo']} {op} not modelled")
    if plugin is not None and plugin.get("indexer_cluster") not in clusters:
        errors.append(f"istio: the filter's indexer_cluster {plugin.get('indexer_cluster')!r} is no cluster")
    names = [f["name"] for f in filters]
    return {"static_resources": {"listeners": [gateway_listener(route_config, filters)],
                                 "clusters": list(clusters.values())}}, names


def leb(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def minimal_proxy_wasm_module():
    """The smallest module Envoy's v8 accepts as a proxy-wasm plugin (ABI 0.2.1): it lets the
    Envoy check run in a second without the real filter; --wasm gives the real one."""
    def section(sid, body):
        return bytes([sid]) + leb(len(body)) + body

    def vec(items):
        return leb(len(items)) + b"".join(items)

    def name(s):
        return leb(len(s)) + s.encode()

    i32 = 0x7F
    types = [b"\x60" + vec([]) + vec([]),                          # () -> ()
             b"\x60" + vec([bytes([i32])]) + vec([bytes([i32])]),  # (i32) -> i32
             b"\x60" + vec([bytes([i32])] * 2) + vec([]),          # (i32, i32) -> ()
             b"\x60" + vec([bytes([i32])] * 2) + vec([bytes([i32])])]  # (i32, i32) -> i32
    funcs = [b"\x00", b"\x01", b"\x02", b"\x03"]
    exports = [name("memory") + b"\x02\x00",
               name("proxy_abi_version_0_2_1") + b"\x00\x00",
               name("proxy_on_memory_allocate") + b"\x00\x01",
               name("proxy_on_context_create") + b"\x00\x02",
               name("proxy_on_vm_start") + b"\x00\x03",
               name("proxy_on_configure") + b"\x00\x03"]
    bodies = [b"\x00\x0b", b"\x00\x41\x80\x08\x0b", b"\x00\x0b", b"\x00\x41\x01\x0b"]
    return (b"\0asm\x01\0\0\0" + section(1, vec(types)) + section(3, vec(funcs))
            + section(5, vec([b"\x00\x01"])) + section(7, vec(exports))
            + section(10, vec([leb(len(b)) + b for b in bodies])))


def main():
    global K8S, SCHEMAS, ROOT
    ap = argparse.ArgumentParser()
    ap.add_argument("--envoy", default=str(ROOT / ".bin" / "envoy"))
    ap.add_argument("--k8s-version", default="1.33")
    ap.add_argument("--wasm", help="filter module for the Envoy check (default: a minimal module)")
    ap.add_argument("--keep", help="write the generated Envoy configs here")
    ap.add_argument("--k8s-dir", help="validate this copy of k8s/ (schemas from it too)")
    args = ap.parse_args()
    if args.k8s_dir:
        K8S = pathlib.Path(args.k8s_dir).resolve()
        SCHEMAS = K8S / "schemas"
        ROOT = K8S.parent
    errors = []
    checked = 0

    for path in sorted(K8S.rglob("*.yaml")):
        if SCHEMAS in path.parents or path.name in NOT_MANIFESTS:
            continue
        for i, doc in enumerate(load_docs(path)):
            validate_doc(doc, f"{path.relative_to(ROOT)}#{i}", args.k8s_version, errors)
            checked += 1

    overlays = {}
    for kfile in sorted(K8S.rglob("kustomization.yaml")):
        folder = kfile.parent
        kind = yaml.safe_load(kfile.read_text()).get("kind")
        if kind == "Component":
            base = kustomization_docs(K8S / "base", errors)
            rendered = apply_patches(base, yaml.safe_load(kfile.read_text()), folder, errors)
        else:
            rendered = kustomization_docs(folder, errors)
            overlays[folder.name] = rendered
        for doc, where in rendered:
            validate_doc(doc, f"{where} (in {folder.relative_to(ROOT)})", args.k8s_version, errors)
            checked += 1

    envoy_checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(args.keep) if args.keep else pathlib.Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        wasm = pathlib.Path(args.wasm) if args.wasm else out / "module.wasm"
        if not args.wasm:
            wasm.write_bytes(minimal_proxy_wasm_module())
        configs = {}
        if "envoy-gateway" in overlays:
            configs["envoy-gateway"] = envoy_gateway_bootstrap([(d, w) for d, w in overlays["envoy-gateway"]], wasm, errors)
        if "istio" in overlays:
            cfg, names = istio_bootstrap(overlays["istio"], wasm, errors)
            if names[-3:] != ["kvroute", "envoy.filters.http.buffer", "envoy.filters.http.router"]:
                errors.append(f"istio: filter chain {names} is not wasm -> buffer -> router")
            configs["istio"] = cfg
        for name, cfg in configs.items():
            path = out / f"{name}.envoy.json"
            path.write_text(json.dumps(cfg, indent=1))
            res = subprocess.run([args.envoy, "--mode", "validate", "-c", str(path), "-l", "error"],
                                 capture_output=True, text=True, timeout=60)
            if res.returncode != 0:
                errors.append(f"{name}: envoy --mode validate failed:\n{res.stdout}{res.stderr}")
            envoy_checked += 1

    for e in errors:
        print(e)
    print(f"{checked} documents checked, {envoy_checked} Envoy configs validated, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
