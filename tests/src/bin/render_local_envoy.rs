//! Regenerates envoy/local.yaml from envoy/kvroute.yaml.tmpl with the local defaults
//! (`cargo run -p kvroute-tests --bin render-local-envoy`); a test keeps them in sync.

fn main() -> anyhow::Result<()> {
    let root = kvroute_tests::paths::repo_root();
    let template = std::fs::read_to_string(kvroute_tests::paths::envoy_template())?;
    let text = kvroute_tests::envoy::EnvoyConfig::local().render(&template);
    std::fs::write(root.join("envoy/local.yaml"), text)?;
    Ok(())
}
