//! Regenerates envoy/local.yaml from envoy/kvroute.yaml.tmpl, and envoy/local-epp.yaml
//! from envoy/epp.yaml.tmpl, with the local defaults
//! (`cargo run -p kvroute-harness --bin render-local-envoy`); a test keeps them in sync.

use kvroute_harness::envoy::EnvoyConfig;

fn main() -> anyhow::Result<()> {
    let root = kvroute_harness::paths::repo_root();
    for (config, file) in [
        (EnvoyConfig::local(), "envoy/local.yaml"),
        (EnvoyConfig::local_epp(), "envoy/local-epp.yaml"),
    ] {
        let template = std::fs::read_to_string(config.template_path())?;
        std::fs::write(root.join(file), config.render(&template))?;
    }
    Ok(())
}
