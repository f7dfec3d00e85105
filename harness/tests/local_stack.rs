//! The README's main job, as `scripts/demo.sh` runs it: the `local-stack` binary brings up
//! the real `kvroute serve`, three simulated vLLM engines and the real Envoy with the filter,
//! sends the seed's round1 and round2 through Envoy, and exits. round2 must land on round1's
//! engine and reuse exactly the prompt tokens real vLLM 0.32 reused for it.

use std::process::Command;

use kvroute_harness::ports::free_port;
use kvroute_harness::sim_engine::seed_requests;
use serde_json::Value;

#[test]
fn the_local_stack_sends_round2_to_round1s_engine_with_its_prefix_cached() {
    let summary = std::env::temp_dir().join(format!("local-stack-{}.json", std::process::id()));
    let addr = |ip: &str| format!("{ip}:{}", free_port().unwrap());
    // Every listener's address is an option; Envoy's listener on the wildcard address is
    // reached through loopback. The seed's PYTHONHASHSEED is given to engines and indexer.
    let out = Command::new(env!("CARGO_BIN_EXE_local-stack"))
        .args([
            "--exit",
            "--time-scale",
            "20",
            "--hash-seed",
            "42",
            "--summary",
        ])
        .arg(&summary)
        .args(["--listen", &addr("0.0.0.0")])
        .args(["--admin", &addr("127.0.0.1")])
        .args(["--indexer-listen", &addr("127.0.0.1")])
        .args(["--engine-port", &free_port().unwrap().to_string()])
        .args(["--zmq-listen", &addr("127.0.0.1")])
        .output()
        .expect("running local-stack");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    let result: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let _ = std::fs::remove_file(&summary);
    let engines: Vec<&str> = result["engines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(engines.len(), 3);
    let [round1, round2] = result["requests"].as_array().unwrap().as_slice() else {
        panic!("{result}");
    };
    let first = round1["served_by"].as_str().unwrap();
    assert!(engines.contains(&first), "{result}");
    assert_eq!(round2["served_by"], first, "{stdout}");
    assert_eq!(round2["routed_to"], first, "the filter routed it: {result}");
    let real = seed_requests().unwrap();
    let real_round2 = real.iter().find(|r| r["name"] == "round2").unwrap();
    assert_eq!(round2["prompt_tokens"], real_round2["prompt_tokens"]);
    assert_eq!(round2["cached_tokens"], real_round2["cached_tokens"]);
    assert!(round2["cached_tokens"].as_u64().unwrap() > 0);
    assert_eq!(round1["cached_tokens"], 0);
    assert!(
        stdout.contains("round2 went to round1's engine"),
        "{stdout}"
    );
}
