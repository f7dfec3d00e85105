//! The Kubernetes packaging is checked offline: every manifest under k8s/ against the
//! Kubernetes and CRD schemas and the Envoy config each gateway attachment produces with the
//! real Envoy (scripts/validate_k8s.py), and the filter's OCI image layout
//! (packaging/wasm_oci.py) for digests, sizes and media types a registry would check.

use std::path::{Path, PathBuf};
use std::process::Command;

use kvroute_harness::paths::{envoy_bin, repo_root};
use sha2::{Digest, Sha256};

fn python() -> PathBuf {
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn run_validator(k8s_dir: Option<&Path>) -> (bool, String) {
    let envoy = envoy_bin().expect("Envoy (scripts/setup.sh)");
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("scripts/validate_k8s.py"))
        .arg("--envoy")
        .arg(envoy);
    if let Some(dir) = k8s_dir {
        cmd.arg("--k8s-dir").arg(dir);
    }
    let out = cmd.output().expect("run scripts/validate_k8s.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvroute-k8s-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn every_manifest_and_both_envoy_attachments_validate() {
    let (ok, text) = run_validator(None);
    assert!(ok, "k8s validation failed:\n{text}");
    // envoy-gateway, istio and their sidecar variants; the InferencePool overlay has no filter.
    assert!(text.contains("4 Envoy configs validated"), "{text}");
}

/// The checks can fail: a field no schema knows (in a manifest and in Istio's Deployment
/// patch), a route the real Envoy refuses, a kustomization naming a missing file, debug
/// headers on, an unpinned filter, a sidecar not where the filter calls it, a filter told of
/// fewer indexer replicas than run, indexer replicas not balanced round robin, and a picker
/// port nothing serves are each reported.
#[test]
fn broken_manifests_are_refused() {
    let cases: [(&str, &str, &str, &str); 12] = [
        (
            "base/indexer.yaml",
            "readinessProbe:",
            "readinessProb:",
            "readinessProb",
        ),
        (
            "overlays/envoy-gateway/patch-policy.yaml",
            "dns_refresh_rate: 1s",
            "dns_refresh_rate: -1s",
            "envoy --mode validate failed",
        ),
        // A dead picked pod would cost its request: the failover the suite proves on the
        // local template (dead_pod_failover) is required in the overlays too.
        (
            "overlays/istio/envoyfilter.yaml",
            "retry_on: connect-failure,reset-before-request,reset",
            "retry_on: 5xx",
            "the picked route's retry_policy is not envoy/kvroute.yaml.tmpl's",
        ),
        (
            "overlays/envoy-gateway/patch-policy.yaml",
            "header: x-gateway-destination-endpoint\n",
            "header: x-picked\n",
            "does not balance by override_host on x-gateway-destination-endpoint",
        ),
        (
            "overlays/istio/kustomization.yaml",
            "- wasmplugin.yaml",
            "- wasm-plugin.yaml",
            "does not exist",
        ),
        (
            "overlays/istio/wasmplugin.yaml",
            "debug_headers: false",
            "debug_headers: true",
            "debug_headers on in a shipped configuration",
        ),
        (
            "overlays/envoy-gateway/extension-policy.yaml",
            "        sha256: ",
            "        # sha256: ",
            "not pinned by digest",
        ),
        (
            "overlays/envoy-gateway-sidecar/envoyproxy.yaml",
            "--listen=127.0.0.1:8081",
            "--listen=127.0.0.1:8082",
            "no sidecar of the gateway pod listens there",
        ),
        (
            "overlays/istio-sidecar/gateway-options.yaml",
            "            restartPolicy: Always\n",
            "            restartPolicy: Always\n            restartPolicyy: Always\n",
            "restartPolicyy",
        ),
        // Two standalone replicas (engines-bind) with a filter told of one: half of the
        // completions would miss the replica that decided.
        (
            "overlays/envoy-gateway/kustomization.yaml",
            "resources:\n",
            "components:\n- ../../components/engines-bind\nresources:\n",
            "the filter's indexer_replicas is 1 but kvroute-indexer runs 2 replicas",
        ),
        (
            "overlays/istio/destinationrule.yaml",
            "simple: ROUND_ROBIN",
            "simple: LEAST_REQUEST",
            "not ROUND_ROBIN",
        ),
        (
            "overlays/inferencepool/kustomization.yaml",
            "--epp-listen=0.0.0.0:9002",
            "--epp-listen=0.0.0.0:9003",
            "serves --epp-listen on its port",
        ),
    ];
    for (i, (file, from, to, expect)) in cases.iter().enumerate() {
        let dir = scratch(&format!("broken{i}"));
        copy_tree(&repo_root().join("k8s"), &dir);
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).expect("read manifest");
        assert!(text.contains(from), "{file} no longer holds {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
        let (ok, out) = run_validator(Some(&dir));
        assert!(!ok, "{file}: {to:?} was accepted:\n{out}");
        assert!(
            out.contains(expect),
            "{file}: expected {expect:?} in:\n{out}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("json")
}

/// Reads a descriptor's blob and checks it is where its digest says, of the size it says.
fn blob(layout: &Path, desc: &serde_json::Value) -> Vec<u8> {
    let digest = desc["digest"].as_str().expect("digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let data = std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob present");
    assert_eq!(sha256_hex(&data), hex, "blob content matches its digest");
    assert_eq!(desc["size"].as_u64(), Some(data.len() as u64), "size");
    data
}

fn build_layout(module: &Path, variant: &str) -> PathBuf {
    let out = scratch(&format!("oci-{variant}"));
    let status = Command::new(python())
        .arg(repo_root().join("packaging/wasm_oci.py"))
        .args(["--wasm", &module.to_string_lossy()])
        .args(["--out", &out.to_string_lossy()])
        .args(["--tag", "v1", "--variant", variant])
        .status()
        .expect("run wasm_oci.py");
    assert!(status.success());
    out
}

/// A real module: the filter when built (scripts/test.sh builds it first), else the
/// Envoy-valid minimal module the validator writes.
fn some_module() -> PathBuf {
    let built = repo_root().join("target/wasm32-wasip1/release/kvroute_filter.wasm");
    if built.exists() {
        return built;
    }
    let dir = scratch("module");
    let path = dir.join("module.wasm");
    let status = Command::new(python())
        .arg("-c")
        .arg(format!(
            "import sys; sys.path.insert(0, {:?}); import validate_k8s, pathlib; pathlib.Path({:?}).write_bytes(validate_k8s.minimal_proxy_wasm_module())",
            repo_root().join("scripts").to_string_lossy(),
            path.to_string_lossy()
        ))
        .status()
        .expect("python");
    assert!(status.success());
    path
}

#[test]
fn wasm_oci_layouts_are_well_formed() {
    let module_path = some_module();
    let module = std::fs::read(&module_path).expect("module");
    for variant in ["compat", "oci"] {
        let layout = build_layout(&module_path, variant);
        assert_eq!(
            json(&layout.join("oci-layout"))["imageLayoutVersion"],
            "1.0.0"
        );
        let index = json(&layout.join("index.json"));
        assert_eq!(index["schemaVersion"], 2);
        let manifests = index["manifests"].as_array().expect("manifests");
        assert_eq!(manifests.len(), 1);
        let mdesc = &manifests[0];
        assert_eq!(
            mdesc["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            mdesc["annotations"]["org.opencontainers.image.ref.name"],
            "v1"
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(&blob(&layout, mdesc)).expect("manifest json");
        assert_eq!(manifest["schemaVersion"], 2);
        let layers = manifest["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), 1, "a wasm image has exactly one layer");
        let config: serde_json::Value =
            serde_json::from_slice(&blob(&layout, &manifest["config"])).expect("config json");
        let layer = blob(&layout, &layers[0]);
        if variant == "oci" {
            assert_eq!(
                layers[0]["mediaType"],
                "application/vnd.module.wasm.content.layer.v1+wasm"
            );
            assert_eq!(
                manifest["config"]["mediaType"],
                "application/vnd.module.wasm.config.v1+json"
            );
            assert!(layer == module, "the layer is the module itself");
        } else {
            assert_eq!(
                layers[0]["mediaType"],
                "application/vnd.oci.image.layer.v1.tar+gzip"
            );
            // An independent reader (Python's gzip/tarfile) must find plugin.wasm, byte
            // for byte the module, and the tar's digest must be the config's diff id.
            let check = Command::new(python())
                .arg("-c")
                .arg(
                    "import gzip,hashlib,io,sys,tarfile\n\
                     raw=gzip.decompress(open(sys.argv[1],'rb').read())\n\
                     t=tarfile.open(fileobj=io.BytesIO(raw))\n\
                     print(t.getnames()[0], hashlib.sha256(t.extractfile('plugin.wasm').read()).hexdigest(), 'sha256:'+hashlib.sha256(raw).hexdigest())",
                )
                .arg(layout.join("blobs/sha256").join(
                    layers[0]["digest"].as_str().expect("digest").trim_start_matches("sha256:"),
                ))
                .output()
                .expect("python");
            let out = String::from_utf8_lossy(&check.stdout).to_string();
            let fields: Vec<&str> = out.split_whitespace().collect();
            assert_eq!(fields.first(), Some(&"plugin.wasm"), "{out}");
            assert_eq!(fields.get(1), Some(&sha256_hex(&module).as_str()));
            assert_eq!(
                config["rootfs"]["diff_ids"][0].as_str(),
                fields.get(2).copied()
            );
        }
        let _ = std::fs::remove_dir_all(&layout);
    }
}

/// `scripts/build_wasm_oci.sh --pin`'s last step (packaging/pin_filter.py) writes the digests
/// of the layout packaging/wasm_oci.py produced into every shipped attachment: the image
/// manifest's digest for the OCI sources (Envoy Gateway `code.image.sha256`, Istio `url
/// ...@sha256:` and `sha256`), the module's sha256 for the HTTP source. The pinned copy of
/// k8s/ still validates, and the shipped k8s/ is pinned the same way (one digest for all).
#[test]
fn the_packaging_pins_every_attachment_to_the_built_filter() {
    let module_path = some_module();
    let module = std::fs::read(&module_path).expect("module");
    let layout = build_layout(&module_path, "compat");
    let index = json(&layout.join("index.json"));
    let manifest = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .strip_prefix("sha256:")
        .expect("sha256")
        .to_string();
    let dir = scratch("pinned");
    copy_tree(&repo_root().join("k8s"), &dir);
    let out = Command::new(python())
        .arg(repo_root().join("packaging/pin_filter.py"))
        .args(["--layout", &layout.to_string_lossy()])
        .args(["--wasm", &module_path.to_string_lossy()])
        .args(["--k8s-dir", &dir.to_string_lossy()])
        .output()
        .expect("run pin_filter.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |rel: &str| std::fs::read_to_string(dir.join(rel)).expect(rel);
    let image = read("overlays/envoy-gateway/extension-policy.yaml");
    assert!(image.contains(&format!("sha256: {manifest}\n")), "{image}");
    let http = read("overlays/envoy-gateway/extension-policy-http.yaml");
    assert!(
        http.contains(&format!("sha256: {}\n", sha256_hex(&module))),
        "{http}"
    );
    let istio = read("overlays/istio/wasmplugin.yaml");
    assert!(istio.contains(&format!("@sha256:{manifest}\n")), "{istio}");
    assert!(istio.contains(&format!("sha256: {manifest}\n")), "{istio}");
    let (ok, text) = run_validator(Some(&dir));
    assert!(ok, "the pinned copy does not validate:\n{text}");

    // The shipped attachments carry a pin of the same shape (which build: the release's).
    let shipped = std::fs::read_to_string(repo_root().join("k8s/overlays/istio/wasmplugin.yaml"))
        .expect("wasmplugin");
    let pinned = shipped
        .lines()
        .find_map(|l| l.trim().strip_prefix("sha256: "))
        .expect("shipped WasmPlugin has sha256");
    assert_eq!(pinned.len(), 64, "{pinned}");
    assert!(shipped.contains(&format!("@sha256:{pinned}")));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&layout);
}
