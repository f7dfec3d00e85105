//! The open-loop load generator: every scheduled request is sent at its instant (virtual time
//! divided by the engines' time scale) whether or not earlier ones finished, as the seed's
//! Poisson benchmark does, and its stream is read to time the first content chunk and to take
//! the final usage (prompt, cached and completion tokens). A closed loop would hide queueing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::schedule::Scheduled;
use crate::sse::StreamReader;
use crate::stats::RequestRecord;
use crate::workload::Workload;

/// Wall clock to virtual (engine) seconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    pub time_scale: f64,
}

impl Clock {
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * self.time_scale
    }
    pub fn wall_of(&self, virtual_seconds: f64) -> Instant {
        self.start + Duration::from_secs_f64(virtual_seconds / self.time_scale)
    }
}

pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .build()
}

/// Sends the whole schedule and returns one record per request, in schedule order.
pub async fn run(
    client: reqwest::Client,
    url: String,
    workload: Arc<Workload>,
    schedule: &[Scheduled],
    clock: Clock,
) -> Vec<RequestRecord> {
    let url = Arc::new(url);
    let mut tasks = Vec::with_capacity(schedule.len());
    for s in schedule.iter().copied() {
        tokio::time::sleep_until(clock.wall_of(s.at).into()).await;
        let (client, url, workload) = (client.clone(), url.clone(), workload.clone());
        tasks.push(tokio::spawn(async move {
            let arrival = clock.now();
            let mut record = RequestRecord {
                step: s.step,
                scheduled: s.at,
                arrival,
                ..Default::default()
            };
            let body = workload.prompts[s.prompt].body(s.max_tokens);
            if let Err(e) = one(&client, &url, body, clock, &mut record).await {
                record.error = Some(e);
            }
            record
        }));
    }
    let mut records = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(r) => records.push(r),
            Err(e) => records.push(RequestRecord {
                error: Some(format!("task: {e}")),
                ..Default::default()
            }),
        }
    }
    records
}

async fn one(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    clock: Clock,
    record: &mut RequestRecord,
) -> Result<(), String> {
    let mut response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(format!(
            "status {status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    let mut reader = StreamReader::default();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("stream: {e}"))? {
        let had_first = reader.first_content_seen();
        reader.feed(&chunk);
        if !had_first && reader.first_content_seen() {
            record.ttft = Some(clock.now() - record.arrival);
        }
    }
    record.end = Some(clock.now());
    let usage = reader.usage().ok_or("the stream ended without usage")?;
    record.prompt_tokens = usage.prompt_tokens;
    record.cached_tokens = usage.cached_tokens;
    record.output_tokens = usage.completion_tokens;
    if !reader.done() {
        return Err("the stream ended without [DONE]".into());
    }
    Ok(())
}
