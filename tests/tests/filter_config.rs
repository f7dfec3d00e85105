//! The Envoy configurations users run are the ones the tests run: `envoy/local.yaml` is
//! the template rendered with local defaults, and the real Envoy accepts it, with and
//! without the filter block; `envoy/local-epp.yaml` likewise for the endpoint picker.

use std::process::Command;

use kvroute_harness::envoy::EnvoyConfig;
use kvroute_harness::paths;

fn template() -> String {
    std::fs::read_to_string(paths::envoy_template()).expect("template")
}

fn validate(yaml: &str, name: &str) {
    let dir = std::env::temp_dir().join(format!("kvroute-validate-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = Command::new(paths::envoy_bin().expect("envoy"))
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .current_dir(paths::repo_root())
        .output()
        .expect("run envoy");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{name} rejected by Envoy:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn local_yaml_is_the_rendered_template() {
    let local = std::fs::read_to_string(paths::repo_root().join("envoy/local.yaml"))
        .expect("envoy/local.yaml");
    let rendered = EnvoyConfig::local().render(&template());
    assert!(
        local == rendered,
        "envoy/local.yaml differs from the rendered template: regenerate it"
    );
}

#[test]
fn envoy_accepts_the_configs_with_and_without_the_filter() {
    paths::filter_wasm().expect("filter build");
    validate(&EnvoyConfig::local().render(&template()), "local");
    let mut bare = EnvoyConfig::local();
    bare.wasm_path = None;
    let text = bare.render(&template());
    assert!(
        !text.contains("envoy.filters.http.wasm") && !text.contains("envoy.filters.http.buffer")
    );
    validate(&text, "without-filter");
}

#[test]
fn local_epp_yaml_is_the_rendered_epp_template_and_envoy_accepts_it() {
    let config = EnvoyConfig::local_epp();
    let template = std::fs::read_to_string(config.template_path()).expect("epp template");
    let local = std::fs::read_to_string(paths::repo_root().join("envoy/local-epp.yaml"))
        .expect("envoy/local-epp.yaml");
    let rendered = config.render(&template);
    assert!(
        local == rendered,
        "envoy/local-epp.yaml differs from the rendered template: regenerate it"
    );
    assert!(rendered.contains("envoy.filters.http.ext_proc") && !rendered.contains("{{"));
    validate(&rendered, "local-epp");
}
