#!/usr/bin/env python3
"""Offline validation of everything under k8s/, run by tests/tests/k8s_manifests.rs.

Why: manifests a user applies must be right without a cluster. Each document is checked
against a schema: Kubernetes built-in kinds with the pip package kubernetes-validate
(the upstream OpenAPI JSON schemas, strict: unknown fields are errors), and the CRD kinds
(Envoy Gateway, Gateway API, Istio) with the openAPIV3Schema of their released CRDs checked
in under k8s/schemas/ (see SOURCES.md). Kustomizations must name files that exist; the
engines-bind component's patches are applied to the base and the results validated too.
Every filter attachment (EnvoyExtensionPolicy, WasmPlugin) must pin the module by digest
(all of them the same image) and keep debug_headers off. Finally, the Envoy configuration each attachment produces (the gateway's listener: wasm ->
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
import re
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The Envoy template the suite runs for real: its failover is the overlays' reference.
LOCAL_TEMPLATE = ROOT / "envoy" / "kvroute.yaml.tmpl"
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


HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_attachment(doc, where, errors, image_digests):
    """A shipped filter attachment: pinned by digest, debug headers off (they name pod IPs)."""
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    configs = []
    if kind == "EnvoyExtensionPolicy":
        for w in spec.get("wasm", []):
            code = w.get("code", {})
            source = code.get("image") if code.get("type") == "Image" else code.get("http")
            pin = (source or {}).get("sha256", "")
            if not HEX64.match(str(pin)):
                errors.append(f"{where}: EnvoyExtensionPolicy wasm {w.get('name')}: not pinned by digest (code.{str(code.get('type')).lower()}.sha256)")
            elif code.get("type") == "Image":
                image_digests.add(pin)
            configs.append(w.get("config") or {})
    elif kind == "WasmPlugin":
        pin = str(spec.get("sha256", ""))
        url = str(spec.get("url", ""))
        if not HEX64.match(pin) or not url.endswith(f"@sha256:{pin}"):
            errors.append(f"{where}: WasmPlugin: not pinned by digest (url @sha256: and sha256 must name the same digest)")
        else:
            image_digests.add(pin)
        configs.append(spec.get("pluginConfig") or {})
    for config in configs:
        if config.get("debug_headers") not in (None, False):
            errors.append(f"{where}: {kind}: debug_headers on in a shipped configuration (x-kvroute-* headers name pod IPs)")


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
        docs = apply_component(docs, target, errors)
    docs = apply_patches(docs, kust, folder, errors)
    if "namespace" in kust:
        for doc, _ in docs:
            if doc.get("kind") != "Namespace":
                doc.setdefault("metadata", {})["namespace"] = kust["namespace"]
    return docs


def apply_component(docs, folder, errors):
    """A kustomize Component: its own resources added, then its patches applied."""
    comp = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs = list(docs)
    for res in comp.get("resources", []):
        target = (folder / res).resolve()
        if not target.exists():
            errors.append(f"{folder.relative_to(ROOT)}: resource {res} does not exist")
            continue
        docs += [(d, f"{target.relative_to(ROOT)}") for d in load_docs(target)]
    return apply_patches(docs, comp, folder, errors)


def apply_patches(docs, kust, folder, errors):
    """JSON 6902 patches, and the strategic-merge `$patch: delete` that drops a resource."""
    out = [(copy.deepcopy(d), w) for d, w in docs]
    for patch in kust.get("patches", []):
        target = patch["target"]
        hits = [i for i, (d, _) in enumerate(out)
                if d.get("kind") == target.get("kind") and d["metadata"].get("name") == target.get("name")]
        if not hits:
            errors.append(f"{folder.relative_to(ROOT)}: patch target {target} matches nothing")
        body = yaml.safe_load(patch["patch"])
        if isinstance(body, dict):
            if body.get("$patch") != "delete" or body.get("kind") != target.get("kind") \
                    or body.get("metadata", {}).get("name") != target.get("name"):
                errors.append(f"{folder.relative_to(ROOT)}: patch on {target}: only JSON patches and $patch: delete are modelled")
            out = [x for i, x in enumerate(out) if i not in hits]
            continue
        for i in hits:
            try:
                doc = json_patch(out[i][0], body)
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


def filter_config(docs):
    for d in find(docs, "EnvoyExtensionPolicy"):
        for w in d["spec"].get("wasm", []):
            return w.get("config") or {}
    for d in find(docs, "WasmPlugin"):
        return d["spec"].get("pluginConfig") or {}
    return {}


def gateway_pod_sidecars(docs, errors):
    """Containers the gateway's own pods get besides Envoy: Envoy Gateway's EnvoyProxy
    (envoyDeployment initContainers) or Istio's Deployment customisation ConfigMap
    (`deployment`, a patch of the Deployment it generates), named by the Gateway's
    infrastructure.parametersRef. Istio's patch is validated here as a Deployment."""
    out = []
    for gw in find(docs, "Gateway"):
        ref = (gw["spec"].get("infrastructure") or {}).get("parametersRef")
        if not ref:
            continue
        hits = [d for d in find(docs, ref["kind"]) if d["metadata"]["name"] == ref["name"]]
        if not hits:
            errors.append(f"Gateway {gw['metadata']['name']}: parametersRef {ref['kind']} {ref['name']} does not exist")
            continue
        if ref["kind"] == "EnvoyProxy":
            dep = hits[0]["spec"]["provider"]["kubernetes"].get("envoyDeployment", {})
            out += dep.get("initContainers", []) + dep.get("containers", [])
        elif ref["kind"] == "ConfigMap":
            patch = yaml.safe_load(hits[0].get("data", {}).get("deployment", "{}")) or {}
            pod = copy.deepcopy(patch.get("spec", {}).get("template", {}).get("spec", {}))
            pod["containers"] = [{"name": "istio-proxy", "image": "auto"}] + pod.get("containers", [])
            deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "gateway"},
                          "spec": {"selector": {"matchLabels": {"gw": "x"}},
                                   "template": {"metadata": {"labels": {"gw": "x"}}, "spec": pod}}}
            validate_doc(deployment, f"ConfigMap {ref['name']} data.deployment", "1.33", errors)
            out += pod.get("initContainers", []) + pod["containers"][1:]
    return out


def check_indexer_reachable(name, docs, bootstrap, errors):
    """The filter's indexer cluster leads to an indexer: a Service of the overlay on that
    port, or (loopback) a sidecar in the gateway's own pod listening on that address."""
    config = filter_config(docs)
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    cluster = clusters.get(config.get("indexer_cluster"))
    if cluster is None:
        return  # reported by the bootstrap builder
    sock = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    addr, port = sock["address"], sock["port_value"]
    if config.get("indexer_authority") not in (None, f"{addr}:{port}"):
        errors.append(f"{name}: indexer_authority {config.get('indexer_authority')} is not the indexer cluster's {addr}:{port}")
    if addr.startswith("127."):
        listens = {a.split("=", 1)[1] for c in gateway_pod_sidecars(docs, errors)
                   for a in c.get("args", []) if a.startswith("--listen=")}
        if f"{addr}:{port}" not in listens:
            errors.append(f"{name}: the filter calls {addr}:{port} but no sidecar of the gateway pod listens there ({sorted(listens)})")
        return
    service = addr.split(".")[0]
    if not any(s["metadata"]["name"] == service and any(p["port"] == port for p in s["spec"]["ports"])
               for s in find(docs, "Service")):
        errors.append(f"{name}: the filter calls {addr}:{port} but the overlay has no Service {service} with that port")


def check_indexer_replicas(name, docs, errors):
    """A filter calling standalone indexer replicas sends each completion to every one of
    them (each knows only its own decisions): its indexer_replicas is their count."""
    config = filter_config(docs)
    deployments = [d for d in find(docs, "Deployment") if d["metadata"]["name"] == "kvroute-indexer"]
    if not config or not deployments:
        return  # no filter, or the indexer is a sidecar of each gateway pod (one each)
    replicas = deployments[0]["spec"].get("replicas", 1)
    try:
        told = int(config.get("indexer_replicas", 1))
    except (TypeError, ValueError):
        errors.append(f"{name}: the filter's indexer_replicas {config.get('indexer_replicas')!r} is not a number")
        return
    for rule in find(docs, "DestinationRule"):
        if rule["spec"].get("host", "").split(".")[0] == "kvroute-indexer":
            lb = rule["spec"].get("trafficPolicy", {}).get("loadBalancer", {}).get("simple")
            if lb != "ROUND_ROBIN":
                shown = lb or "Istio's default"
                errors.append(f"{name}: DestinationRule {rule['metadata']['name']} balances the indexer with {shown}, "
                              "not ROUND_ROBIN (the filter's retry and completion copies need distinct replicas)")
    if told != replicas:
        errors.append(f"{name}: the filter's indexer_replicas is {told} but kvroute-indexer runs {replicas} replicas "
                      "(each completion must reach every replica)")


PICK_STATE = "envoy.network.transport_socket.original_dst_address"
PICK_HEADER = "x-gateway-destination-endpoint"


def local_template_failover():
    """The picked route's retry policy in envoy/kvroute.yaml.tmpl: the one
    tests/tests/dead_pod_failover.rs proves against a SIGKILLed engine in the real Envoy."""
    lines = LOCAL_TEMPLATE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "retry_policy: &connect_retry")
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    return yaml.safe_load("\n".join(block))


def check_picked_failover(name, docs, bootstrap, errors):
    """The route for requests the filter picked a pod for keeps the local template's
    failover: the pods' cluster balanced by override_host on the GIE header (filled from
    the filter's state), and connection failures retried on another pod, so a dead pod
    the index still lists costs no request."""
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = [r for vh in hcm["typed_config"]["route_config"]["virtual_hosts"] for r in vh["routes"]]
    picked = [r for r in routes if any(f.get("key") == PICK_STATE for f in r["match"].get("filter_state", []))]
    if len(picked) != 1:
        errors.append(f"{name}: {len(picked)} routes match the filter's pick (want 1)")
        return
    route = picked[0]
    if route["route"].get("retry_policy") != local_template_failover():
        errors.append(f"{name}: the picked route's retry_policy is not envoy/kvroute.yaml.tmpl's "
                      f"(connect-failure retries on another host): {route['route'].get('retry_policy')}")
    header = [h["header"] for h in route.get("request_headers_to_add", [])
              if h["header"]["key"] == PICK_HEADER]
    if not header or f"%FILTER_STATE({PICK_STATE}:PLAIN)%" != header[0]["value"]:
        errors.append(f"{name}: the picked route does not set {PICK_HEADER} from the filter state")
    cluster = clusters.get(route["route"].get("cluster"))
    if cluster is None:
        errors.append(f"{name}: the picked route's cluster {route['route'].get('cluster')!r} is no cluster")
        return
    policies = cluster.get("load_balancing_policy", {}).get("policies", [])
    ext = policies[0]["typed_extension_config"] if policies else {}
    sources = ext.get("typed_config", {}).get("override_host_sources", [])
    if ext.get("name") != "envoy.load_balancing_policies.override_host" or \
            {"header": PICK_HEADER} not in sources:
        errors.append(f"{name}: cluster {cluster['name']} does not balance by override_host on {PICK_HEADER}")
    sock = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    service = sock["address"].split(".")[0]
    pods = [s for s in find(docs, "Service") if s["metadata"]["name"] == service]
    if not pods or pods[0]["spec"].get("clusterIP") != "None" or \
            not any(p["port"] == sock["port_value"] for p in pods[0]["spec"]["ports"]):
        errors.append(f"{name}: cluster {cluster['name']} resolves {sock['address']}:{sock['port_value']}, "
                      "not a headless Service of the pods with that port (override_host needs every pod as a host)")


def container_port(container, port):
    """A Service targetPort (number or name) resolved against a container's ports."""
    for p in container.get("ports", []):
        if port in (p["containerPort"], p.get("name")):
            return p["containerPort"]
    return None


def check_inference_pools(name, docs, errors):
    """An InferencePool leads somewhere: routes name existing pools; the pool selects the
    pods of a Deployment and each target port is one of their container ports; its endpoint
    picker is a Service of the overlay whose port reaches a container serving --epp-listen
    on that port."""
    pools = {p["metadata"]["name"]: p for p in find(docs, "InferencePool")}
    for hr in find(docs, "HTTPRoute"):
        for rule in hr["spec"]["rules"]:
            for b in rule.get("backendRefs", []):
                if b.get("kind") == "InferencePool" and b["name"] not in pools:
                    errors.append(f"{name}: HTTPRoute {hr['metadata']['name']} names no InferencePool {b['name']}")
    deployments = find(docs, "Deployment")
    for pool_name, pool in pools.items():
        spec = pool["spec"]
        want = spec["selector"]["matchLabels"]
        pods = [d for d in deployments
                if want.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items()]
        if not pods:
            errors.append(f"{name}: InferencePool {pool_name} selects no Deployment's pods ({want})")
        for tp in spec["targetPorts"]:
            if not any(container_port(c, tp["number"]) for d in pods
                       for c in d["spec"]["template"]["spec"]["containers"]):
                errors.append(f"{name}: InferencePool {pool_name} target port {tp['number']} is no container port of its pods")
        ref = spec["endpointPickerRef"]
        svc = [s for s in find(docs, "Service") if s["metadata"]["name"] == ref["name"]]
        port = [p for s in svc for p in s["spec"]["ports"] if p["port"] == ref["port"]["number"]]
        if not port:
            errors.append(f"{name}: InferencePool {pool_name} picker {ref['name']}:{ref['port']['number']} is no Service port")
            continue
        picker_pods = [d for d in deployments if svc[0]["spec"]["selector"].items()
                       <= d["spec"]["template"]["metadata"].get("labels", {}).items()]
        served = False
        for d in picker_pods:
            for c in d["spec"]["template"]["spec"]["containers"]:
                number = container_port(c, port[0].get("targetPort", port[0]["port"]))
                if number and any(a.startswith("--epp-listen=") and a.endswith(f":{number}") for a in c.get("args", [])):
                    served = True
        if not served:
            errors.append(f"{name}: InferencePool {pool_name}: no container behind {ref['name']} serves --epp-listen on its port")


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

    image_digests = set()
    for path in sorted(K8S.rglob("*.yaml")):
        if SCHEMAS in path.parents or path.name in NOT_MANIFESTS:
            continue
        for i, doc in enumerate(load_docs(path)):
            validate_doc(doc, f"{path.relative_to(ROOT)}#{i}", args.k8s_version, errors)
            if isinstance(doc, dict):
                check_attachment(doc, f"{path.relative_to(ROOT)}#{i}", errors, image_digests)
            checked += 1
    if len(image_digests) > 1:
        errors.append(f"filter attachments pin different images: {sorted(image_digests)}")

    overlays = {}
    for kfile in sorted(K8S.rglob("kustomization.yaml")):
        folder = kfile.parent
        kind = yaml.safe_load(kfile.read_text()).get("kind")
        if kind == "Component":
            base = kustomization_docs(K8S / "base", errors)
            rendered = apply_component(base, folder, errors)
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
        for name, rendered in sorted(overlays.items()):
            kinds = {d.get("kind") for d, _ in rendered}
            if "InferencePool" in kinds:
                check_inference_pools(name, rendered, errors)
            if "EnvoyExtensionPolicy" in kinds:
                configs[name] = envoy_gateway_bootstrap(rendered, wasm, errors)
            elif "WasmPlugin" in kinds:
                cfg, names = istio_bootstrap(rendered, wasm, errors)
                if names[-3:] != ["kvroute", "envoy.filters.http.buffer", "envoy.filters.http.router"]:
                    errors.append(f"{name}: filter chain {names} is not wasm -> buffer -> router")
                configs[name] = cfg
            else:
                continue
            check_indexer_reachable(name, rendered, configs[name], errors)
            check_indexer_replicas(name, rendered, errors)
            check_picked_failover(name, rendered, configs[name], errors)
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
