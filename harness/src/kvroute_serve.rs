//! The real `kvroute serve` on its own (no Envoy), for tests of what engines publish: start
//! it with any flags, wait until ready, ask it where a prompt should go and what it knows of
//! each engine.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;

use crate::http;
use crate::paths;
use crate::ports::free_port;
use crate::process::{wait_until, ManagedProcess};

pub struct KvrouteServe {
    pub addr: SocketAddr,
    process: ManagedProcess,
}

impl KvrouteServe {
    /// `kvroute serve --listen 127.0.0.1:<free> <args>`, log in `dir`, ready on return.
    pub fn start(args: &[String], dir: &Path) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut full = vec!["serve".to_string(), "--listen".into(), addr.to_string()];
        full.extend(args.iter().cloned());
        let process = ManagedProcess::spawn(
            "kvroute serve",
            &paths::kvroute_bin()?,
            &full,
            dir.join(format!("indexer-{}.log", addr.port())),
        )?;
        let ready = wait_until(Duration::from_secs(20), || {
            http::send(addr, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200)
        });
        if !ready {
            bail!(
                "kvroute serve did not become ready\n{}",
                process.log_tail(4000)
            );
        }
        Ok(Self { addr, process })
    }

    /// `POST /v1/route/prompt?path=<path>` with a raw OpenAI body.
    pub fn route_prompt(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let r = http::post_json(
            self.addr,
            &format!("/v1/route/prompt?path={path}"),
            body.to_string().as_bytes(),
        )?;
        if r.status != 200 {
            bail!("route: {} {}", r.status, String::from_utf8_lossy(&r.body));
        }
        r.json()
    }

    /// Reports a route's request complete (`POST /v1/route/complete`), as the filter does,
    /// so the decision stops counting as load.
    pub fn complete(&self, route: &serde_json::Value) -> anyhow::Result<()> {
        if let Some(ticket) = route["ticket"].as_u64() {
            let body = serde_json::json!({ "ticket": ticket }).to_string();
            http::post_json(self.addr, "/v1/route/complete", body.as_bytes())?;
        }
        Ok(())
    }

    /// `GET /v1/pods`: the engine whose endpoint is `endpoint`, if known.
    pub fn pod(&self, endpoint: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let pods = http::send(self.addr, "GET", "/v1/pods", &[], b"")?.json()?;
        Ok(pods["pods"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["endpoint"] == endpoint))
            .cloned())
    }

    pub fn log_tail(&self, max_bytes: usize) -> String {
        self.process.log_tail(max_bytes)
    }
}
