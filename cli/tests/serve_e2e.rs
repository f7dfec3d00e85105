//! `kvroute serve` as deployed: the real binary binds its ZeroMQ socket, a publisher sends
//! the real vLLM 0.32 frames to it over TCP (as vLLM does with the seed's config), and the
//! HTTP API answers for the captured requests with the pod that holds their prefix.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zeromq::{Socket, SocketSend, ZmqMessage};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn captured_until(stop_at: &str) -> Vec<Vec<Vec<u8>>> {
    kvroute_testdata::vllm_capture("sha256_cbor_seed42")
        .messages
        .into_iter()
        .take_while(|m| m.entry["attributed_request"] != stop_at)
        .map(|m| m.frames)
        .collect()
}

fn request_body(name: &str) -> Value {
    kvroute_testdata::vllm_request(name)["request"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_frames_over_zeromq_route_to_the_engine_that_holds_them() {
    let http_port = free_port();
    let zmq_port = free_port();
    let qwen3 = kvroute_testdata::tokenizer_dir("qwen3");
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_kvroute"))
            .args(["serve", "--listen", &format!("127.0.0.1:{http_port}")])
            .args(["--zmq-bind", &format!("tcp://127.0.0.1:{zmq_port}")])
            .args(["--engine", "127.0.0.1", "--engine", "127.0.0.2"])
            .arg("--model")
            .arg(format!("Qwen3-32B={}", qwen3.display()))
            .args(["--hash-seed", "42", "--scrape-interval-ms", "60000"])
            // The engines here are publishers only (no HTTP side to health-check).
            .args(["--health-interval-ms", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{http_port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "kvroute serve did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut publisher = zeromq::PubSocket::new();
    publisher
        .connect(&format!("tcp://127.0.0.1:{zmq_port}"))
        .await
        .unwrap();
    // A PUB drops messages until the subscription reaches it (ZeroMQ's slow joiner).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stream = captured_until("evict_0");
    let last_seq = stream.len() as u64 - 1;
    for frames in stream {
        let mut msg = ZmqMessage::from(frames[0].clone());
        msg.push_back(frames[1].clone().into());
        msg.push_back(frames[2].clone().into());
        publisher.send(msg).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pods: Value = http
            .get(format!("{base}/v1/pods"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let seq = pods["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["endpoint"] == "127.0.0.1:8000")
            .and_then(|p| p["last_seq"].as_u64());
        if seq == Some(last_seq) {
            assert_eq!(pods["pods"][0]["key_mode"], "native");
            break;
        }
        assert!(Instant::now() < deadline, "events not ingested: {pods}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // round2 through the raw-body endpoint: tokenized, hashed and matched in the indexer.
    let answer: Value = http
        .post(format!("{base}/v1/route/prompt?path=/v1/chat/completions"))
        .body(request_body("round2").to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["endpoint"], "127.0.0.1:8000", "{answer}");
    assert_eq!(answer["matched_blocks"], 4, "{answer}");
    assert_eq!(answer["reason"], "cache_hit");

    // Errors are JSON with the right status.
    for (path, body, status) in [
        (
            "/v1/route",
            json!({"model": "nope", "block_hashes": [1]}).to_string(),
            404,
        ),
        ("/v1/route", "{not json".to_string(), 400),
        (
            "/v1/route/prompt",
            json!({"model": "Qwen3-32B"}).to_string(),
            400,
        ),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].is_string());
    }
    let tok = http
        .get(format!(
            "{base}/v1/tokenizers/Qwen3-32B/tokenizer_config.json"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(tok.status().as_u16(), 200);
    assert!(tok.text().await.unwrap().contains("chat_template"));
    let complete: Value = http
        .post(format!("{base}/v1/route/complete"))
        .body(json!({"ticket": answer["ticket"]}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(complete["released"], true);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kvroute_route_decisions_total{reason=\"cache_hit\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kvroute_kv_events_total{type=\"block_stored\"}"));
}
