//! Where the tests find the repository's artefacts: the Envoy binary, the tokenizers, the
//! Envoy template and the filter's wasm module (built once per test process).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context};

// The repository root and the tokenizers: one loader for every crate's tests.
pub use kvroute_testdata::{repo_root, tokenizers_dir};

/// The real Envoy: `ENVOY_BIN`, else `<repo>/.bin/envoy` (scripts/setup.sh links it).
pub fn envoy_bin() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".bin/envoy"));
    if !p.exists() {
        bail!("Envoy not found at {} (run scripts/setup.sh)", p.display());
    }
    Ok(p)
}

pub fn envoy_template() -> PathBuf {
    repo_root().join("envoy/kvroute.yaml.tmpl")
}

/// The ext_proc (endpoint picker) configuration template.
pub fn envoy_epp_template() -> PathBuf {
    repo_root().join("envoy/epp.yaml.tmpl")
}

/// The shrunk filter module, built by scripts/build_filter.sh once per test process
/// (cargo makes the build a no-op when nothing changed).
pub fn filter_wasm() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = repo_root();
            let out = Command::new("bash")
                .arg(root.join("scripts/build_filter.sh"))
                .arg("--print-path")
                .current_dir(&root)
                .output()
                .map_err(|e| format!("cannot run build_filter.sh: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "build_filter.sh failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok(PathBuf::from(path))
        })
        .clone()
        .map_err(anyhow::Error::msg)
        .context("building the filter")
}

/// The `kvroute` binary of this workspace, built (or found up to date) by cargo once per
/// test process, so a test never runs a stale indexer. `KVROUTE_BIN` overrides it.
pub fn kvroute_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("KVROUTE_BIN") {
        return Ok(PathBuf::from(p));
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = repo_root();
            let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["build", "-q", "-p", "kvroute", "--bin", "kvroute"])
                .current_dir(&root)
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err("cargo build -p kvroute failed".into());
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            Ok(target.join("debug").join("kvroute"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
        .context("building kvroute")
}
