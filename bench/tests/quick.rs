//! CI's run of the benchmark: `kvroute-bench --quick` with kvroute precise through the real
//! Envoy, filter and indexer to simulated engines. Asserts what a smoke run below saturation
//! can judge: precise routing's measured prompt-token hit ratio is at least 90% of the
//! schedule's hit-ratio upper bound (each request's longest prefix shared with any earlier
//! request, caches unlimited) on the same requests; the binary exits non-zero otherwise.

use std::process::Command;

#[test]
fn quick_benchmark_precise_reaches_ninety_percent_of_the_hit_ratio_bound() {
    let out = std::env::temp_dir().join(format!("kvroute-bench-quick-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_kvroute-bench"))
        .args(["--quick", "--policies", "precise", "--no-plots"])
        .args(["--require-hit-vs-bound", "0.9", "--out"])
        .arg(&out)
        .status()
        .expect("run kvroute-bench");
    let results = std::fs::read_to_string(out.join("results.md")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&out);
    assert!(status.success(), "kvroute-bench --quick failed\n{results}");
}
