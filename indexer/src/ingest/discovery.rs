//! DNS discovery (`--engine-dns`, a Kubernetes headless Service): every engine the name
//! resolves to is allowed (and dialed, unless engines connect to us); an engine that stops
//! resolving is dropped with its blocks.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::engines::EngineSpec;
use super::receive::connect_loop;
use super::Ingest;

/// Resolve `name` every `--dns-interval-secs` until shutdown; engines listen on `zmq_port`.
pub async fn discovery_loop(
    ingest: Arc<Ingest>,
    name: String,
    zmq_port: u16,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut known: HashMap<String, Option<JoinHandle<()>>> = HashMap::new();
    let mut tick =
        tokio::time::interval(Duration::from_secs(ingest.config.dns_interval_secs.max(1)));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        let found: BTreeSet<String> = match tokio::net::lookup_host((name.as_str(), zmq_port)).await
        {
            Ok(addrs) => addrs.map(|a| a.ip().to_string()).collect(),
            Err(e) => {
                tracing::warn!(%name, "discovery lookup failed: {e}");
                continue;
            }
        };
        let new: Vec<&String> = found.iter().filter(|h| !known.contains_key(*h)).collect();
        for host in new {
            tracing::info!(%host, "engine discovered");
            let spec = EngineSpec::new(host, zmq_port, ingest.config.engine_port);
            ingest.allow(spec.clone());
            if ingest.config.zmq_bind.is_some() {
                ingest.relearn(spec.endpoint.clone());
            }
            let task = ingest
                .config
                .zmq_bind
                .is_none()
                .then(|| tokio::spawn(connect_loop(ingest.clone(), spec, shutdown.clone())));
            known.insert(host.clone(), task);
        }
        let vanished: Vec<String> = known
            .keys()
            .filter(|h| !found.contains(*h))
            .cloned()
            .collect();
        for host in vanished {
            tracing::info!(%host, "engine vanished: dropping it and its blocks");
            if let Some(Some(task)) = known.remove(&host) {
                task.abort();
            }
            ingest.disallow(&host);
        }
    }
    for task in known.into_values().flatten() {
        task.abort();
    }
}
