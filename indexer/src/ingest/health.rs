//! What the engines' HTTP side says, checked continuously whether or not an engine ever
//! published: `GET /health` every `--health-interval-ms` and `GET /metrics` every
//! `--scrape-interval-ms`, every engine at once so one hung engine delays no other. A
//! refused, failed or late answer takes the engine out of routing; the next good answer
//! puts it back (static lists and DNS alike). The metrics give load and vLLM's
//! `process_start_time_seconds`: a new value means the engine restarted and lost its cache,
//! so its index entry is emptied before it is routed to again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Interval, MissedTickBehavior};

use super::Ingest;
use crate::load::{parse_vllm_metrics, EngineGauges, InFlight};
use crate::types::Health;

/// The engines' HTTP client, every request bounded by `timeout`; built at start so a
/// failure stops the daemon instead of silently disabling the checks.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().timeout(timeout).build()
}

/// `GET http://{endpoint}{path}`: the body of a 2xx answer, or why there was none.
async fn get(client: &reqwest::Client, endpoint: &str, path: &str) -> Result<String, String> {
    let response = client
        .get(format!("http://{endpoint}{path}"))
        .send()
        .await
        .map_err(|e| format!("{path}: {}", describe(&e)))?;
    if !response.status().is_success() {
        return Err(format!("{path}: HTTP {}", response.status()));
    }
    response
        .text()
        .await
        .map_err(|e| format!("{path}: {}", describe(&e)))
}

fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "connection refused or unreachable"
    } else {
        "request failed"
    }
}

/// Every known endpoint's `path`, all at once.
async fn ask_all(ingest: &Ingest, path: &'static str) -> Vec<(Arc<str>, Result<String, String>)> {
    let mut checks = JoinSet::new();
    for endpoint in ingest.registry.endpoints() {
        let client = ingest.http.clone();
        checks.spawn(async move {
            let answer = get(&client, &endpoint, path).await;
            (endpoint, answer)
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = checks.join_next().await {
        if let Ok(answer) = done {
            answers.push(answer);
        }
    }
    answers
}

/// A ticker that, after a slow round, waits a whole interval again (no burst of catch-up
/// rounds against engines that were slow to answer).
fn ticker(interval: Duration) -> Interval {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// Waits for the next round: false once shutdown is signalled.
async fn next_tick(tick: &mut Interval, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = shutdown.changed() => false,
        _ = tick.tick() => true,
    }
}

/// `GET /health` of every engine each `interval` until shutdown.
pub async fn health_loop(
    ingest: Arc<Ingest>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = ticker(interval);
    while next_tick(&mut tick, &mut shutdown).await {
        for (endpoint, answer) in ask_all(&ingest, "/health").await {
            match answer {
                Err(why) => ingest.engine_failed(&endpoint, why),
                Ok(_) if ingest.registry.health(&endpoint) == Health::Up => {}
                Ok(_) => {
                    // Before routing to it (again): did it restart since it was last seen?
                    // Until its metrics say, it is not routed to (its blocks may be gone).
                    match get(&ingest.http, &endpoint, "/metrics").await {
                        Ok(page) => ingest.engine_answered(
                            &endpoint,
                            parse_vllm_metrics(&page).process_start_time,
                        ),
                        Err(why) => ingest.engine_failed(&endpoint, why),
                    }
                }
            }
        }
    }
}

/// `GET /metrics` of every engine each `interval` until shutdown: load, restarts, and (with
/// health checks on) a failed scrape as a failed check. Expires in-flight decisions too.
pub async fn scrape_loop(
    ingest: Arc<Ingest>,
    in_flight: Arc<InFlight>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = ticker(interval);
    while next_tick(&mut tick, &mut shutdown).await {
        in_flight.expire(&ingest.registry);
        // Every scrape leaves now: the queue each page shows is the queue as of now.
        let sent = Instant::now();
        for (endpoint, answer) in ask_all(&ingest, "/metrics").await {
            match answer {
                Ok(page) => {
                    let gauges = parse_vllm_metrics(&page);
                    set_load(&ingest, &in_flight, &endpoint, &gauges, sent);
                    if let Some(start) = gauges.process_start_time {
                        ingest.observe_start_time(&endpoint, start);
                    }
                }
                Err(why) if ingest.config.health_checked() => ingest.engine_failed(&endpoint, why),
                Err(_) => {}
            }
        }
    }
}

fn set_load(
    ingest: &Ingest,
    in_flight: &InFlight,
    endpoint: &str,
    gauges: &EngineGauges,
    sent: Instant,
) {
    for pod in ingest.registry.ranks_of(endpoint) {
        ingest.registry.set_load(&pod, |l| {
            l.waiting = gauges.waiting;
            l.running = gauges.running;
            l.kv_usage = gauges.kv_usage;
        });
        if let Some(slot) = ingest.registry.slot_of(&pod) {
            in_flight.observe_queue(slot, gauges.waiting, sent);
        }
    }
}
